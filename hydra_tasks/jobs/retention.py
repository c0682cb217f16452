"""Retention of finished jobs (issue 15, item 3): a finished job keeps its result and summary (its
working state was compacted by FINISH) until ``HYDRA_JOB_RETENTION_S`` after it finished; then the
sweep, ``hydra jobs prune`` or an operator's ``DELETE /api/jobs/<id>`` removes it for good.

Finished jobs wait in ``hydra:jobs:finished`` (job id -> finished_at), so finding the ones due costs
O(log n + due), however many jobs Redis holds. The removal is :func:`store.delete_job` (one
WATCH/MULTI per job; a job re-opened meanwhile is kept). The token ledger keeps the jobs' mints.
"""

from __future__ import annotations

import time

import redis

from .. import keys
from ..errors import JobNotFound, JobStateError
from ..settings import Settings
from . import store

#: the most finished jobs one sweep removes (the rest wait for the next sweep)
PRUNE_BATCH = 200
#: the most one operator request (``POST /api/prune_jobs``) removes: it answers ``more`` for the rest
PRUNE_PER_REQUEST = 1000


def due(client: redis.Redis, older_than_s: float, *, now: float | None = None,
        limit: int = PRUNE_BATCH) -> list[str]:
    """Finished jobs that ended more than ``older_than_s`` ago, oldest first, at most ``limit``."""
    now = time.time() if now is None else now
    return list(client.zrangebyscore(keys.JOBS_FINISHED, "-inf", f"({now - older_than_s!r}", start=0, num=limit))


def prune(client: redis.Redis, older_than_s: float, *, now: float | None = None,
          limit: int = PRUNE_BATCH) -> list[str]:
    """Remove finished jobs that ended more than ``older_than_s`` ago (at most ``limit``); return their ids."""
    removed = []
    for job_id in due(client, older_than_s, now=now, limit=limit):
        try:
            store.delete_job(client, job_id)
        except JobNotFound:  # deleted meanwhile: only its index entry was left
            client.zrem(keys.JOBS_FINISHED, job_id)
            continue
        except JobStateError:  # re-opened meanwhile: it is live again, and left its index
            continue
        removed.append(job_id)
    return removed


def prune_expired(client: redis.Redis, settings: Settings, *, now: float | None = None) -> list[str]:
    """The sweep's share: finished jobs past ``HYDRA_JOB_RETENTION_S`` (nothing if it is 0)."""
    if settings.job_retention_s <= 0:
        return []
    return prune(client, settings.job_retention_s, now=now)
