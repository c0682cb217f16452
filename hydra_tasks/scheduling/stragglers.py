"""Backup copies for stragglers: when a job has nothing left to hand out, a chunk still held by a
slow or silent worker gets a second copy on a faster worker with a free slot. The first valid
result wins; the merge's done-set counts the chunk once and both leases are released.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Mapping

import redis

from .. import keys
from ..lua import scripts
from . import Publish
from .cluster import ClusterSnapshot
from .router import Router

log = logging.getLogger(__name__)

#: A backup is sent if the idle helper would finish before the holder is expected to (the helper
#: has nothing else to do), or if the holder is late: past LATE_FACTOR x its expected time and
#: LATE_MARGIN_S seconds.
LATE_FACTOR = 1.5
LATE_MARGIN_S = 0.5


def chunk_work(spec: Mapping[str, object]) -> float:
    """A chunk's work in the unit of worker speeds: π samples, Mandelbrot estimated iterations."""
    params = spec.get("params") or {}
    est = params.get("est_cost") if isinstance(params, dict) else None
    return float(est) if est is not None else float(spec["units"])  # type: ignore[arg-type]


def expected_finish(lease: Mapping[str, str], units: float, snap: ClusterSnapshot, kind: str) -> float:
    """When the holder should finish the chunk (infinity if the holder is no longer live)."""
    holder = snap.workers.get(lease.get("worker", ""))
    if holder is None:
        return math.inf
    return float(lease.get("dispatched_at", 0.0)) + units / holder.rate(kind)


def worth_a_backup(holder_finish: float, helper_finish: float, now: float, *, dispatched_at: float) -> bool:
    """Back up a chunk if the idle helper would finish it before the holder is expected to, or if
    the holder is already late (it may have queued the chunk behind others, or slowed down:
    either way it is the straggler)."""
    if holder_finish > helper_finish:
        return True
    expected = holder_finish - dispatched_at
    return math.isfinite(expected) and now - dispatched_at > max(LATE_FACTOR * expected, expected + LATE_MARGIN_S)


def backup_stragglers(client: redis.Redis, snap: ClusterSnapshot, free: dict[str, int], router: Router,
                      publish: Publish, job_id: str, kind: str, *, now: float) -> int:
    """Send backup copies of this job's slowest in-flight chunks to idle faster workers."""
    members = [keys.lease_member(job_id, c) for c in client.zrange(keys.job_leases(job_id), 0, -1)]
    if not members or not any(v > 0 for v in free.values()):
        return 0
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.hgetall(keys.lease(*keys.split_lease_member(member)))
        pipe.hget(keys.job_chunks(job_id), keys.split_lease_member(member)[1])
    replies = pipe.execute()
    candidates = []
    for member, lease, spec in zip(members, replies[::2], replies[1::2]):
        chunk_id = keys.split_lease_member(member)[1]
        if lease and spec and "backup" not in lease and not keys.is_audit_chunk(chunk_id):  # audits: chosen auditors only
            units = chunk_work(json.loads(spec))
            finish = expected_finish(lease, units, snap, kind)
            if units > 0 or not math.isfinite(finish):  # no estimate (the preview): only if the holder is gone
                candidates.append((finish, member, lease, units))
    candidates.sort(key=lambda c: c[0], reverse=True)  # the latest expected finish first
    lua, sent = scripts(client), 0
    for holder_finish, member, lease, units in candidates:
        others = {w: n for w, n in free.items() if w != lease.get("worker")}
        helper_id = router.choose(snap, others, kind)
        if helper_id is None:
            break
        helper = snap.workers[helper_id]
        if not worth_a_backup(holder_finish, now + units / helper.rate(kind), now,
                              dispatched_at=float(lease.get("dispatched_at", now))):
            continue
        chunk_id = keys.split_lease_member(member)[1]
        spec_json = lua.backup(job_id, chunk_id, helper_id, capacity=snap.slots[helper_id])
        if spec_json is None:
            continue
        try:
            publish(json.loads(spec_json), int(lease.get("attempt", 1)), helper_id, helper.region)
        except Exception:  # noqa: BLE001 - broker trouble: the original lease still stands
            log.exception("publishing a backup of %s to %s failed", member, helper_id)
            return sent
        free[helper_id] -= 1
        sent += 1
    return sent

