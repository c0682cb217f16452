"""The dispatcher: lease chunks to workers, within a bounded window each, and publish them.

It reads what each active job can hand out, asks :func:`.grants.plan_job` (pure) which worker
gets which chunk, and carries the plan out. A lease is granted atomically in Redis
(:meth:`hydra_tasks.lua.Scripts.grant`) only while the worker holds fewer chunks than its window
(``HYDRA_INFLIGHT_PER_SLOT`` x its processes), so however many control workers dispatch at once,
no worker is overloaded. Each chunk goes to the worker it was sized for, through that worker's own
queue (Celery ``worker_direct``). A chunk is leased *before* it is published: if publishing fails,
the lease simply expires and the sweeper sends it again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import redis

from .. import keys
from ..jobs import handler
from ..jobs.pi import generator_of as pi_generator_of
from ..lua import Cut, GrantCode, Peek, scripts
from ..models import JobKind, JobState
from ..settings import Settings
from ..trust import audits
from . import Publish, PublishBundle
from .cluster import ClusterSnapshot, last_view, snapshot
from .grants import JobPlan, JobSupply, bundling, eligible, plan_job
from .router import UNBOUNDED, GridAwareRouter, Router
from .shifting import HOUR_S, MAX_HORIZON_H, Demand, forecast_intensity, plan
from .stragglers import backup_stragglers

log = logging.getLogger(__name__)


class Prefetch:
    """The reads :func:`dispatch` starts with: the registry's generation, the active jobs, and the
    windows of the workers in this process's last view of the fleet. Queued on another command's
    pipeline (the intake's MERGE, lua/__init__.py), they cost no round trip of their own."""

    def __init__(self, client: redis.Redis) -> None:
        seen = last_view(client)
        self.guessed = list(seen.workers) if seen is not None else []
        self.replies: list[Any] | None = None

    def queue(self, pipe: redis.client.Pipeline) -> None:
        pipe.get(keys.WORKERS_GEN)
        pipe.zrange(keys.JOBS_ACTIVE, 0, -1)
        pipe.zrange(keys.JOBS_DEADLINES, 0, -1)
        for wid in self.guessed:
            pipe.scard(keys.worker_inflight(wid))

    @property
    def size(self) -> int:
        return 3 + len(self.guessed)

    def take(self, replies: list[Any]) -> None:
        self.replies = replies


def dispatch(client: redis.Redis, settings: Settings, router: Router, publish: Publish, *,
             now: float | None = None, prefetch: Prefetch | None = None,
             publish_bundle: PublishBundle | None = None) -> int:
    """Fill every worker's window from the active jobs, highest priority first. Returns chunks sent.
    ``prefetch``: its reads, if another command's round trip carried them (read here otherwise).
    ``publish_bundle``: how chunks planned to travel together are sent (grants.bundle_size); without
    it every chunk goes alone, in the usual window."""
    now = time.time() if now is None else now
    # One round trip: the registry's generation, the active jobs, and the windows of the workers in this
    # process's last view of the fleet; read again only if that view is no longer current.
    if prefetch is None or prefetch.replies is None:
        prefetch = Prefetch(client)
        reads = client.pipeline(transaction=False)
        prefetch.queue(reads)
        prefetch.take(reads.execute())
    assert prefetch.replies is not None
    guessed = prefetch.guessed
    generation, job_ids, with_deadline, *inflight = prefetch.replies
    snap = snapshot(client, settings, now=now, generation=generation, generation_read=True)
    if not snap.workers:  # no one to send work to; audits no worker can take are settled here
        return audits.dispatch_pending(client, settings, snap, {}, publish, now=now)
    if list(snap.workers) != guessed:
        again = client.pipeline(transaction=False)
        for wid in snap.workers:
            again.scard(keys.worker_inflight(wid))
        inflight = again.execute()
    free = {wid: snap.slots[wid] - int(n) for wid, n in zip(snap.workers, inflight)}
    thresholds = carbon_thresholds(client, settings, snap, router, job_ids, with_deadline, now=now)
    # Audits first (jobs wait on them), within their job's threshold: an audit is that job's work too.
    sent = audits.dispatch_pending(client, settings, snap, free, publish, now=now, limits=thresholds,
                                   intensity=router.scores(snap)[1] if thresholds and isinstance(
                                       router, GridAwareRouter) else None)
    bundles = publish_bundle is not None and bundling(settings)  # without a way to send a bundle: each alone
    for job_id in job_ids:
        if not any(n > 0 for n in free.values()) and not bundles:
            break  # every window is full (with bundles, a window of bundles may still have room)
        found = read_supply(client, snap, job_id, thresholds.get(job_id, UNBOUNDED))
        if found is None:
            continue
        supply, cut, peek = found
        job_plan = plan_job(settings, snap, router, free, supply, bundles=bundles)
        if supply.confidential or job_plan.waiting or (
                supply.generator and not all(w.computes(supply.generator) for w in snap.workers.values())):
            note_waiting(client, job_id, job_plan)
        done, ok = execute(client, settings, publish, job_plan, free, cut=cut, now=now, peek=peek,
                           publish_bundle=publish_bundle)
        sent += done
        if not ok or job_plan.blocked:
            break  # broker trouble, or no worker free at all
        if job_plan.exhausted and settings.adaptive and supply.limit == UNBOUNDED:
            # Nothing left to hand out: idle capacity may back up this job's stragglers (eligible ones only).
            sent += backup_stragglers(client, eligible(settings, snap, supply), free, router, publish, job_id,
                                      supply.kind, now=now)
    return sent


def read_supply(client: redis.Redis, snap: ClusterSnapshot, job_id: str,
                limit: float) -> tuple[JobSupply, Cut | None, Peek] | None:
    """What a job can hand out now (one round trip), how to cut its new ranges, and what its first
    grant would peek at."""
    reads = client.pipeline(transaction=False)
    reads.hmget(keys.job(job_id), "kind", "spec", "units_total", "cursor")
    reads.llen(keys.job_todo(job_id))
    reads.zcard(keys.job_tiles(job_id))
    Peek.queue(reads, job_id)  # what the first grant of the plan would read (GRANT checks it still holds)
    live = list(snap.workers)
    if live:  # which live workers have not yet returned a chunk of this job
        reads.hmget(keys.job_workers(job_id), [f"{wid}|chunks" for wid in live])
    (kind_name, spec_json, units_total, cursor), todo, tiles, *rest = reads.execute()
    peek = Peek.parse(rest[:4])
    seen = rest[4] if live else []
    if kind_name is None or spec_json is None:
        return None
    kind = handler(JobKind(kind_name))
    params = json.loads(spec_json)["params"]
    cuts = kind.CUTS_LAZILY

    def cut(chunk_id: str, start: int, count: int) -> str:
        chunk = kind.cut(job_id, params, chunk_id, start, count)
        assert chunk is not None, f"{kind_name} chunks are not cut lazily"
        return json.dumps(chunk.to_json())

    total = int(units_total or 0)
    supply = JobSupply(job_id, kind_name, cuts, max(total - int(cursor or 0), 0), total, int(todo) + int(tiles),
                       frozenset(w for w, was_seen in zip(live, seen) if not was_seen), limit,
                       confidential=bool(json.loads(spec_json).get("confidential", False)),
                       generator=pi_generator_of(params) if kind_name == JobKind.PI.value else "")
    return supply, (cut if cuts else None), peek


def note_waiting(client: redis.Redis, job_id: str, job_plan: JobPlan) -> None:
    """Show why a confidential job, or a π job whose generator some workers lack, gets no worker (the
    job's ``waiting`` field), or clear it."""
    if job_plan.waiting:
        client.hset(keys.job(job_id), "waiting", job_plan.waiting)
    elif job_plan.requests:
        client.hdel(keys.job(job_id), "waiting")


def execute(client: redis.Redis, settings: Settings, publish: Publish, job_plan: JobPlan, free: dict[str, int], *,
            cut: Cut | None, now: float, peek: Peek | None = None,
            publish_bundle: PublishBundle | None = None) -> tuple[int, bool]:
    """Grant and publish a job's planned chunks; keeps ``free`` up to date. Returns (chunks sent,
    False if publishing failed). ``peek``: the job as read with its supply (the first grant's peek).
    Chunks planned in bundles (``req.bundle`` > 1) are published together once that many are leased
    to the worker, and what is left of a bundle at the end."""
    lua, sent = scripts(client), 0
    pending: dict[str, tuple[str, list[tuple[dict[str, Any], int]]]] = {}  # worker -> (region, chunks) to publish

    def send(worker_id: str) -> bool:
        nonlocal sent
        region, chunks = pending.pop(worker_id)
        try:
            if len(chunks) > 1 and publish_bundle is not None:
                publish_bundle(chunks, worker_id, region)
                sent += len(chunks)
            else:
                for chunk, attempt in chunks:
                    publish(chunk, attempt, worker_id, region)
                    sent += 1
        except Exception:  # noqa: BLE001 - broker trouble: the leases expire and the sweeper retries
            log.exception("publishing chunks of job %s to %s failed; they will be re-sent",
                          job_plan.requests[0].job_id, worker_id)
            return False
        return True

    for req in job_plan.requests:
        if free.get(req.worker_id, 0) + req.extra <= 0:
            continue
        grant = lua.grant(req.job_id, req.worker_id, req.region, capacity=req.capacity, now=now,
                          lease_s=settings.lease_s, rate=req.rate, cut=cut, cut_units=req.cut_units, order=req.order,
                          peek=peek)
        peek = grant.after  # after a cut the job moved on by exactly that cut: the next grant need not read it
        if grant.code is GrantCode.FULL:
            free[req.worker_id] = min(free.get(req.worker_id, 0), -req.extra)  # filled by another control process
            continue
        if grant.code is not GrantCode.LEASED or grant.spec_json is None:
            break  # the job has nothing more to hand out (or ended)
        free[req.worker_id] = free.get(req.worker_id, 0) - 1
        pending.setdefault(req.worker_id, (req.region, []))[1].append((json.loads(grant.spec_json), grant.attempt))
        if len(pending[req.worker_id][1]) >= req.bundle and not send(req.worker_id):
            return sent, False
    for worker_id in list(pending):
        if not send(worker_id):
            return sent, False
    return sent, True


PLAN_TTL_S = 10.0
_plans: dict[tuple[tuple[str, ...], ...], tuple[float, dict[str, float]]] = {}


def carbon_thresholds(client: redis.Redis, settings: Settings, snap: ClusterSnapshot, router: Router,
                      job_ids: list[str], with_deadline: list[str], *, now: float) -> dict[str, float]:
    """Time shifting (:mod:`.shifting`): the dirtiest power each job with a deadline may use now.
    Empty unless the router is grid-aware and has forecasts. Replanned every few seconds; the
    thresholds are also written to the job hashes (``carbon_threshold``) for the dashboard."""
    if not isinstance(router, GridAwareRouter) or router.hourly is None or not job_ids:
        return {}
    if not _deadline_jobs_active(client, job_ids, with_deadline):
        return {}  # the usual case: no job with a deadline
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys.job(job_id), "kind", "spec", "units_total", "units_done", "iters_per_px")
    demands = []
    measuring: dict[str, float] = {}
    for job_id, (kind, spec_json, total, done, per_px) in zip(job_ids, pipe.execute()):
        if kind is None or spec_json is None:
            continue
        spec = json.loads(spec_json)
        left = float(max(int(total or 0) - int(done or 0), 0))
        if kind == JobKind.MANDELBROT.value:  # pixels -> iterations (from the preview once it is in)
            if not per_px and settings.adaptive:
                # Its only chunk is the preview (1/49 of the work at 1920 x 1080), which measures the job's
                # size: it runs at once, so that the job is deferred on its measured size (ln error sd 0.045
                # over 60 views, benchmarks/preview_size.py), not on max_iter / 2 per pixel (17 times too
                # much on average there, and too little for views deep in the set).
                measuring[job_id] = UNBOUNDED
                continue
            left *= float(per_px) if per_px else 0.5 * float(spec["params"].get("max_iter", 1000))
        demands.append(Demand(job_id, kind, float(left), spec.get("deadline_ts"), float(spec.get("delay_weight", 0.0))))
    deadlines = [d.deadline_ts for d in demands if d.deadline_ts is not None]
    if not deadlines:
        return measuring
    key = (tuple(job_ids), tuple(sorted(snap.workers)), tuple(sorted(measuring)))  # a preview in: plan anew
    cached = _plans.get(key)
    if cached is not None and 0 <= now - cached[0] < min(PLAN_TTL_S, settings.sweep_interval_s):
        return cached[1]
    hours = max(1, min(MAX_HORIZON_H, math.ceil((max(deadlines) - now) / HOUR_S) + 1))
    hourly = router.hourly
    intensity = forecast_intensity(snap.workers.values(), router.scores(snap)[1],
                                   lambda w, h: hourly(w, h, now), hours)
    reserve = max(30.0, 2.0 * settings.target_chunk_s)  # the last chunks and the finalizer
    thresholds = plan(demands, snap.workers.values(), intensity, now=now, safety=settings.shift_safety,
                      reserve_s=reserve, horizon_h=hours, headroom=settings.shift_headroom,
                      margin=settings.shift_margin) | measuring
    pipe = client.pipeline(transaction=False)
    for job_id, value in thresholds.items():
        pipe.hset(keys.job(job_id), "carbon_threshold", "inf" if value == UNBOUNDED else f"{value:.1f}")
    pipe.execute()
    if len(_plans) > 64:
        _plans.clear()
    _plans[key] = (now, thresholds)
    return thresholds


def _deadline_jobs_active(client: redis.Redis, job_ids: list[str], with_deadline: list[str]) -> bool:
    """Whether any active job has a deadline; forgets indexed jobs that have ended."""
    active = set(job_ids)
    gone = [j for j in with_deadline if j not in active]
    if gone:  # ended, or submitted after job_ids was read: only drop the ones whose job is final
        states = client.pipeline(transaction=False)
        for job_id in gone:
            states.hget(keys.job(job_id), "state")
        final = [j for j, state in zip(gone, states.execute()) if state is None or JobState(state).is_final]
        if final:
            client.zrem(keys.JOBS_DEADLINES, *final)
    return len(gone) < len(with_deadline)
