"""Audit chunks (issue 12, item 1): the blocks a spot check picks are recomputed by another worker of
good standing, or by the control plane when that is cheaper.

For every π result the intake picks blocks at random (:mod:`.reputation` says how many). It always
recomputes ``LOCAL_BLOCKS`` of them itself, so no verdict rests on a worker's word alone. The rest go
to an **audit chunk** when that is cheaper than recomputing them here: when they hold at least
``REMOTE_MIN_SAMPLES`` samples (about 16 ms of the control plane's time at 250 M samples/s, against
the few milliseconds of messaging an audit chunk costs it) and some live worker other than the
audited one has at least ``AUDITOR_MIN_REPUTATION`` clean audits. Otherwise all are recomputed here.
Mandelbrot spot checks (one row and single pixels) are small and always run here.

An audit chunk is a chunk of the same job with units 0, id ``a<n>`` (:func:`hydra_tasks.keys.is_audit_chunk`),
whose spec names the chunk's range and the blocks to recompute, not whose result it audits (that, and
the audited worker, stay in ``hydra:job:{id}:audits``). It waits in ``hydra:audits`` and
:func:`dispatch_pending` (called by the dispatcher first) leases it with GRANT's ``audit`` source,
which refuses the audited worker and any worker with too few clean audits; an audit of a job that is
time-shifted goes only to auditors whose power is within the job's carbon threshold. Its result is merged like
a chunk (exactly once; the auditor is paid for the samples) and :func:`settle` compares it exactly
with the blocks the audited result committed to. On a difference the control plane recomputes the
first differing block itself and catches whichever of the two is wrong (:mod:`.consequences`). An
audit no auditor took within ``LOCAL_AFTER_S``, or whose lease expired twice, is settled here.

A job is finalized only when its ``audits_pending`` is 0, so every result in a final value was
audited first, and one that failed is out of it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Mapping

import redis

from .. import keys
from ..jobs import handler, pi
from ..lua import GrantCode, scripts
from ..models import ChunkSpec, JobKind, JobState
from ..scheduling import Publish
from ..scheduling.cluster import ClusterSnapshot, snapshot
from ..settings import Settings
from . import reputation

log = logging.getLogger(__name__)

AUDITOR_MIN_REPUTATION = 50    # clean audits a worker needs to audit others
LOCAL_BLOCKS = 1               # blocks the control plane always recomputes itself
REMOTE_MIN_SAMPLES = 4_000_000  # below this, recomputing here is cheaper than an audit chunk
LOCAL_AFTER_S = 30.0           # an audit no auditor took within this long is settled here
MAX_READ = 500                 # audits looked at per dispatch


def auditors(snap: ClusterSnapshot, audited: str) -> list[str]:
    """Live workers that may audit ``audited``'s results."""
    return [w.worker_id for w in snap.workers.values()
            if w.worker_id != audited and w.reputation >= AUDITOR_MIN_REPUTATION]


def check(client: redis.Redis, settings: Settings, chunk: ChunkSpec, payload: Mapping[str, Any], worker_id: str,
          *, picks: int, now: float) -> tuple[int, list[int]]:
    """The spot check of a verified result: recompute here what is cheaper here, and return (the work
    recomputed here, the π blocks left for an audit chunk). SpotCheckFailed on a mismatch."""
    if chunk.kind is not JobKind.PI:
        return handler(chunk.kind).spot_check(chunk, payload, picks=picks), []
    blocks = pi.pick_blocks(chunk, picks)
    local, remote = blocks[:LOCAL_BLOCKS], blocks[LOCAL_BLOCKS:]
    if not remote or pi.block_samples(chunk, remote) < REMOTE_MIN_SAMPLES \
            or not auditors(snapshot(client, settings, now=now), worker_id):
        local, remote = blocks, []
    return pi.check_blocks(chunk, payload, local), remote


def request(client: redis.Redis, chunk: ChunkSpec, worker_id: str, blocks: list[int], *,
            now: float | None = None) -> str:
    """Ask for the given blocks of ``worker_id``'s merged result for ``chunk`` to be recomputed by an
    auditor; returns the audit chunk's id. Call it before the job can be finalized (collect does so
    between the merge and the finalize), since a job with audits pending is not finalized."""
    now = time.time() if now is None else now
    n = client.hincrby(keys.job(chunk.job_id), "audits_requested", 1)
    audit_id = f"{keys.AUDIT_CHUNK_PREFIX}{n:06d}"
    p = chunk.params
    spec = ChunkSpec(chunk.job_id, audit_id, JobKind.PI, {"seed": int(p["seed"]), "start": int(p["start"]),
                                                          "count": int(p["count"]), "audit": {"blocks": blocks},
                                                          **({"generator": p["generator"]} if "generator" in p else {})},
                     units=0)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.job_chunks(chunk.job_id), audit_id, json.dumps(spec.to_json()))
        pipe.hset(keys.job_audits(chunk.job_id), audit_id,
                  json.dumps({"of": chunk.chunk_id, "worker": worker_id, "blocks": blocks}))
        pipe.hincrby(keys.job(chunk.job_id), "audits_pending", 1)
        pipe.zadd(keys.AUDITS, {keys.lease_member(chunk.job_id, audit_id): now})
        pipe.execute()
    return audit_id


def settle(client: redis.Redis, settings: Settings, audit: ChunkSpec, audit_hits: list[int] | None,
           auditor: str | None, *, now: float | None = None) -> str:
    """Compare an audit's recomputed blocks (``audit_hits`` from ``auditor``; None: recompute them
    here) with what the audited result committed to. Returns "passed", "caught <worker>" or "orphaned"
    (the audited result was revoked meanwhile, or its worker caught)."""
    from . import consequences

    now = time.time() if now is None else now
    meta = json.loads(client.hget(keys.job_audits(audit.job_id), audit.chunk_id) or "{}")
    part = client.hget(keys.job_parts(audit.job_id), meta.get("of", ""))
    spec_json = client.hget(keys.job_chunks(audit.job_id), meta.get("of", ""))
    if not meta or part is None or spec_json is None or client.hget(keys.worker(str(meta["worker"])), "quarantined"):
        return "orphaned"  # its result was revoked (its worker caught meanwhile): the chunk is another's now
    audited, worker = ChunkSpec.from_json(json.loads(spec_json)), str(meta["worker"])
    blocks = [int(b) for b in meta["blocks"]]
    committed = json.loads(part)["block_hits"]
    got = pi.recompute_blocks(audited, blocks) if audit_hits is None else audit_hits
    samples = pi.block_samples(audited, blocks)
    differing = [(b, h) for b, h in zip(blocks, got) if committed[b] != h]
    if not differing:
        reputation.passed(client, worker, JobKind.PI, samples, remote=auditor is not None)
        return "passed"
    b, claimed = differing[0]
    [truth] = pi.recompute_blocks(audited, [b])  # the control plane decides who is wrong
    reputation.passed(client, worker, JobKind.PI, pi.block_samples(audited, [b]), settled=False)
    caught = []
    if committed[b] != truth:
        caught.append(worker)
        consequences.catch(client, settings, worker, f"π chunk {audited.chunk_id}: block {b} has {committed[b]} hits "
                                                     f"in its result, the kernel gives {truth} (audit {audit.chunk_id})",
                           now=now)
    if auditor is not None and claimed != truth:
        caught.append(auditor)
        consequences.catch(client, settings, auditor, f"audit {audit.chunk_id} of job {audit.job_id}: block {b} has "
                                                      f"{claimed} hits in its result, the kernel gives {truth}", now=now)
    return "caught " + " ".join(caught) if caught else "passed"


def settle_here(client: redis.Redis, settings: Settings, job_id: str, audit_id: str, *,
                now: float | None = None) -> str | None:
    """Settle a waiting audit on the control plane (no auditor took it in time); None if another
    process took it first (the zset member is the claim)."""
    from ..jobs import collect

    now = time.time() if now is None else now
    if not client.zrem(keys.AUDITS, keys.lease_member(job_id, audit_id)):
        return None
    with client.pipeline(transaction=True) as pipe:
        pipe.hget(keys.job(job_id), "state")
        pipe.hincrby(keys.job(job_id), "audits_pending", -1)
        pipe.hincrby(keys.job(job_id), "audits_local", 1)
        pipe.hget(keys.job_chunks(job_id), audit_id)
        pipe.delete(keys.lease(job_id, audit_id))
        state, _, _, spec_json, _ = pipe.execute()
    if state is None or JobState(state).is_final or spec_json is None:
        return "over"
    outcome = settle(client, settings, ChunkSpec.from_json(json.loads(spec_json)), None, None, now=now)
    collect.finalize(client, job_id, now=now, detail_s=settings.job_detail_s)
    return outcome


def dispatch_pending(client: redis.Redis, settings: Settings, snap: ClusterSnapshot, free: dict[str, int],
                     publish: Publish, *, now: float | None = None, limits: Mapping[str, float] | None = None,
                     intensity: Mapping[str, float] | None = None) -> int:
    """Lease waiting audit chunks to eligible auditors with a free slot (the one with most free
    slots first); settle here those no auditor took within ``LOCAL_AFTER_S`` or that no live worker
    may audit. Keeps ``free`` up to date; returns audit chunks sent.

    An audit is work of its job, so it keeps to the job's carbon threshold (time shifting): with
    ``limits`` (job id -> the dirtiest gCO2/kWh the job may use now) and ``intensity`` (worker id ->
    the gCO2/kWh its power carries now), only auditors at or below the limit may take it; with none
    live, it is settled here at once, as when no worker may audit."""
    now = time.time() if now is None else now
    limits, intensity = limits or {}, intensity or {}
    waiting = client.zrange(keys.AUDITS, 0, MAX_READ - 1, withscores=True)
    if not waiting:
        return 0
    reads = client.pipeline(transaction=False)
    for member, _ in waiting:
        job_id, audit_id = keys.split_lease_member(member)
        reads.hget(keys.job_audits(job_id), audit_id)
        reads.hget(keys.job(job_id), "state")
    replies = reads.execute()
    lua, sent = scripts(client), 0
    for (member, since), meta_json, state in zip(waiting, replies[::2], replies[1::2]):
        job_id, audit_id = keys.split_lease_member(member)
        if state is None or JobState(state).is_final or meta_json is None:  # its job ended: nothing to audit
            if client.zrem(keys.AUDITS, member):
                client.delete(keys.lease(job_id, audit_id))
            continue
        audited = json.loads(meta_json)["worker"]
        limit = limits.get(job_id, math.inf)
        allowed = [w for w in auditors(snap, audited) if intensity.get(w, 0.0) <= limit]
        candidates = sorted((w for w in allowed if free.get(w, 0) > 0), key=lambda w: (-free[w], w))
        if not candidates:
            if now - since >= LOCAL_AFTER_S or not allowed:
                settle_here(client, settings, job_id, audit_id, now=now)
            continue
        for worker_id in candidates:
            w = snap.workers[worker_id]
            grant = lua.grant_audit(job_id, audit_id, worker_id, w.region, capacity=snap.slots[worker_id], now=now,
                                    lease_s=settings.lease_s, auditor_min=AUDITOR_MIN_REPUTATION)
            if grant.code is GrantCode.FULL:
                free[worker_id] = 0
                continue
            if grant.code is GrantCode.NOT_ELIGIBLE:
                continue
            if grant.code is GrantCode.LEASED and grant.spec_json is not None:
                try:
                    publish(json.loads(grant.spec_json), grant.attempt, worker_id, w.region)
                except Exception:  # noqa: BLE001 - broker trouble: the lease expires and the sweeper retries
                    log.exception("publishing audit %s of job %s to %s failed; it will be re-sent", audit_id, job_id,
                                  worker_id)
                    return sent
                free[worker_id] -= 1
                sent += 1
            break  # leased, or taken / ended meanwhile
    return sent


def expired_twice(client: redis.Redis, settings: Settings, job_id: str, audit_id: str, expiries: int, *,
                  now: float) -> bool:
    """An audit chunk whose lease expired twice is settled here rather than failing its job."""
    if expiries < 2:
        return False
    settle_here(client, settings, job_id, audit_id, now=now)
    return True

