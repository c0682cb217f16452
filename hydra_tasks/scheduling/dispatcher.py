"""The dispatcher: lease chunks to regions, within a bounded window, and publish them.

A lease is granted atomically in Redis (``lua.GRANT``) only while the region has fewer chunks
in flight than its slots, so however many control workers dispatch at once, no region gets
more than its window. A chunk is leased *before* it is published: if publishing fails, the
lease simply expires and the sweeper sends the chunk again.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

import redis

from .. import keys
from ..lua import Scripts
from ..settings import Settings
from .cluster import ClusterSnapshot, snapshot
from .router import Router

log = logging.getLogger(__name__)

# publish(chunk_json, attempt, queue): sends the compute task. Injected so this module needs no Celery.
Publish = Callable[[dict[str, Any], int, str], None]


def free_slots(client: redis.Redis, snap: ClusterSnapshot) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for name in snap.regions:
        pipe.scard(keys.region_inflight(name))
    return {name: region.slots - int(n) for (name, region), n in zip(snap.regions.items(), pipe.execute())}


def dispatch(client: redis.Redis, settings: Settings, router: Router, publish: Publish, *,
             now: float | None = None) -> int:
    """Fill every region's window from the active jobs, highest priority first. Returns chunks sent."""
    now = time.time() if now is None else now
    snap = snapshot(client, settings, now=now)
    if not snap.regions:
        return 0
    free = free_slots(client, snap)
    scripts = Scripts(client)
    sent = 0
    for job_id in client.zrange(keys.JOBS_ACTIVE, 0, -1):
        while True:
            region = router.choose(snap, free)
            if region is None:
                return sent
            queue = keys.region_queue(region)
            code, chunk_id, attempt = scripts.grant(job_id, region, queue, capacity=snap.regions[region].slots,
                                                    deadline=now + settings.lease_s, now=now)
            if code == 0:
                free[region] = 0
                continue
            if code < 0:
                break  # this job has nothing left to hand out; try the next one
            chunk_json = client.hget(keys.job_chunks(job_id), chunk_id)
            if chunk_json is None:  # job deleted meanwhile; the lease will expire harmlessly
                continue
            try:
                publish(json.loads(chunk_json), attempt, queue)
            except Exception:  # noqa: BLE001 - broker trouble: the lease expires and the sweeper retries
                log.exception("publishing chunk %s of job %s to %s failed; it will be re-sent", chunk_id, job_id, queue)
                return sent
            free[region] -= 1
            sent += 1
    return sent
