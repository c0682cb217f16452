"""The dispatcher: lease chunks to workers, within a bounded window each, and publish them.

A lease is granted atomically in Redis (``lua.GRANT``) only while the worker holds fewer
chunks than its window (``HYDRA_INFLIGHT_PER_SLOT`` x its processes), so however many control
workers dispatch at once, no worker is overloaded. Each chunk goes to the worker it was sized
for, through that worker's own queue (Celery ``worker_direct``). A chunk is leased *before* it
is published: if publishing fails, the lease simply expires and the sweeper sends it again.
"""

from __future__ import annotations

import json
import logging
import math
import time

import redis

from .. import keys
from ..jobs import handler
from ..lua import Scripts
from ..models import JobKind, JobState
from ..settings import Settings
from . import Publish
from .cluster import ClusterSnapshot, snapshot
from .planner import range_chunk_size
from .router import UNBOUNDED, GridAwareRouter, Router
from .shifting import HOUR_S, MAX_HORIZON_H, Demand, forecast_intensity, plan
from .stragglers import backup_stragglers, chunk_work

log = logging.getLogger(__name__)



def dispatch(client: redis.Redis, settings: Settings, router: Router, publish: Publish, *,
             now: float | None = None) -> int:
    """Fill every worker's window from the active jobs, highest priority first. Returns chunks sent."""
    now = time.time() if now is None else now
    snap = snapshot(client, settings, now=now)
    if not snap.workers:
        return 0
    scripts = Scripts(client)
    sent = 0
    reads = client.pipeline(transaction=False)
    reads.zrange(keys.JOBS_ACTIVE, 0, -1)
    reads.zrange(keys.JOBS_DEADLINES, 0, -1)
    for wid in snap.workers:
        reads.scard(keys.worker_inflight(wid))
    job_ids, with_deadline, *inflight = reads.execute()
    free = {wid: snap.slots[wid] - int(n) for wid, n in zip(snap.workers, inflight)}
    thresholds = carbon_thresholds(client, settings, snap, router, job_ids, with_deadline, now=now)
    for job_id in job_ids:
        job_reads = client.pipeline(transaction=False)
        job_reads.hmget(keys.job(job_id), "kind", "spec", "units_total", "cursor")
        for wid in snap.workers:  # which live workers have not yet returned a chunk of this job
            job_reads.hexists(keys.job_workers(job_id), f"{wid}|chunks")
        (kind_name, spec_json, units_total, cursor), *seen = job_reads.execute()
        if kind_name is None:
            continue
        kind = JobKind(kind_name)
        prefix = handler(kind).range_prefix(job_id, json.loads(spec_json)["params"]) or ""
        remaining = int(units_total or 0) - int(cursor or 0)
        first = {wid: not was_seen for wid, was_seen in zip(snap.workers, seen)}  # they get a short first chunk
        limit = thresholds.get(job_id, UNBOUNDED)
        while True:
            worker_id = router.choose(snap, free, kind.value, limit)
            if worker_id is None:
                if limit < UNBOUNDED:
                    break  # no clean enough worker free for this deferrable job; later jobs may run
                return sent
            worker = snap.workers[worker_id]
            size = 0
            if prefix:
                size = range_chunk_size(settings, worker_rate=worker.rate(kind.value),
                                        total_rate=snap.total_rate(kind.value), remaining=remaining,
                                        first=first[worker_id], units_total=int(units_total or 0)).units
            grant = scripts.grant(job_id, worker_id, worker.region, capacity=snap.slots[worker_id],
                                  deadline=now + lease_seconds(settings, size, worker.rate(kind.value)), now=now,
                                  cut_size=size, spec_prefix=prefix, pick=heavy_or_light(snap, worker_id, kind.value))
            if grant.code == 0:
                free[worker_id] = 0
                continue
            if grant.code < 0 or grant.spec_json is None:
                # Nothing left to hand out: idle capacity may back up this job's stragglers.
                if settings.adaptive and limit == UNBOUNDED:
                    sent += backup_stragglers(client, snap, free, router, publish, job_id, kind.value, now=now)
                break
            spec = json.loads(grant.spec_json)
            # The lease was granted with a provisional deadline; fit it to the chunk actually granted
            # (a re-queued chunk may have been cut for a faster worker).
            client.zadd(keys.LEASES, {keys.lease_member(job_id, grant.chunk_id or ""):
                                      now + lease_seconds(settings, chunk_work(spec), worker.rate(kind.value))},
                        xx=True)
            try:
                publish(spec, grant.attempt, worker_id, worker.region)
            except Exception:  # noqa: BLE001 - broker trouble: the lease expires and the sweeper retries
                log.exception("publishing chunk %s of job %s to %s failed; it will be re-sent",
                              grant.chunk_id, job_id, worker_id)
                return sent
            if prefix:
                remaining -= spec["units"] if grant.attempt == 1 else 0
            first[worker_id] = False
            free[worker_id] -= 1
            sent += 1
    return sent


PLAN_TTL_S = 10.0
_plans: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[float, dict[str, float]]] = {}


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
    for job_id, (kind, spec_json, total, done, per_px) in zip(job_ids, pipe.execute()):
        if kind is None or spec_json is None:
            continue
        spec = json.loads(spec_json)
        left = float(max(int(total or 0) - int(done or 0), 0))
        if kind == JobKind.MANDELBROT.value:  # pixels -> iterations (from the preview once it is in)
            left *= float(per_px) if per_px else 0.5 * float(spec["params"].get("max_iter", 1000))
        demands.append(Demand(job_id, kind, float(left), spec.get("deadline_ts")))
    deadlines = [d.deadline_ts for d in demands if d.deadline_ts is not None]
    if not deadlines:
        return {}
    key = (tuple(job_ids), tuple(sorted(snap.workers)))
    cached = _plans.get(key)
    if cached is not None and 0 <= now - cached[0] < min(PLAN_TTL_S, settings.sweep_interval_s):
        return cached[1]
    hours = max(1, min(MAX_HORIZON_H, math.ceil((max(deadlines) - now) / HOUR_S) + 1))
    hourly = router.hourly
    intensity = forecast_intensity(snap.workers.values(), router.scores(snap)[1],
                                   lambda w, h: hourly(w, h, now), hours)
    reserve = max(30.0, 2.0 * settings.target_chunk_s)  # the last chunks and the finalizer
    thresholds = plan(demands, snap.workers.values(), intensity, now=now, safety=settings.shift_safety,
                      reserve_s=reserve, horizon_h=hours)
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


def heavy_or_light(snap: ClusterSnapshot, worker_id: str, kind: str) -> str:
    """Heaviest waiting tile for a worker at least as fast as the fleet's median, else the lightest."""
    rates = sorted(w.rate(kind) for w in snap.workers.values())
    median = rates[len(rates) // 2]
    return "max" if snap.workers[worker_id].rate(kind) >= median else "min"


def lease_seconds(settings: Settings, units: float, rate: float) -> float:
    """A lease long enough for the chunk on its worker (3x the expected time) and at least HYDRA_LEASE_S."""
    return max(settings.lease_s, 3.0 * units / max(rate, 1.0))
