"""The sweeper (run by beat): take back expired leases, retire silent workers (and prune those
offline for longer than HYDRA_WORKER_RETENTION_S), remove finished jobs older than
HYDRA_JOB_RETENTION_S (:mod:`hydra_tasks.jobs.retention`), finish jobs whose last result was merged but not
finalized, refill the windows, and sample each region's carbon intensity for the dashboard's chart
once a minute (:mod:`hydra_tasks.history`).

This, not Celery's ``visibility_timeout``, is what recovers work from a dead worker: a
lease is a few times a chunk's expected duration, the visibility timeout is an hour.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis

from .. import history, keys
from ..jobs import collect, retention, store
from ..jobs.preview import plan_tiles_after_preview
from ..lua import Holders, RequeueCode, scripts
from ..models import JobState
from ..settings import Settings
from ..worker.performance import record_expiry
from ..worker.registry import mark_silent_offline, prune_offline
from . import Publish, PublishBundle
from .dispatcher import dispatch
from .router import Router, carbon_provider

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)
    offline_workers: list[str] = field(default_factory=list)
    pruned_workers: list[str] = field(default_factory=list)
    pruned_jobs: list[str] = field(default_factory=list)
    finalized_jobs: list[str] = field(default_factory=list)
    dispatched: int = 0


def requeue_expired(client: redis.Redis, settings: Settings, report: SweepReport, now: float) -> None:
    lua = scripts(client)
    expired = [keys.split_lease_member(m) for m in client.zrangebyscore(keys.LEASES, "-inf", now)]
    reads = client.pipeline(transaction=False)  # every expired lease's holders, in one round trip
    for job_id, chunk_id in expired:
        reads.hmget(keys.lease(job_id, chunk_id), "worker", "backup")
    for (job_id, chunk_id), (holder, backup) in zip(expired, reads.execute() if expired else []):
        taken = lua.requeue(job_id, chunk_id, now=now, counter="expiries", force=False,
                            holders=Holders.of(holder, backup))
        if taken.code is not RequeueCode.REQUEUED:
            continue
        expiries, worker_id = taken.count, taken.worker
        if worker_id:
            record_expiry(client, worker_id)
        log.warning("lease of chunk %s (job %s) expired (%d time(s)); re-queued", chunk_id, job_id, expiries)
        _requeued(client, settings, report, job_id, chunk_id, expiries, now)


def requeue_worker_leases(client: redis.Redis, settings: Settings, worker_id: str, *,
                          now: float | None = None) -> SweepReport:
    """Take back at once every chunk leased to ``worker_id`` (as holder or backup), as if its leases
    had expired: the same REQUEUE script, forced in that worker's name, so a lease that moved on
    meanwhile (merged, re-leased to someone else) is left alone. Used when a volunteer is revoked."""
    now = time.time() if now is None else now
    report = SweepReport()
    lua = scripts(client)
    for member in sorted(client.smembers(keys.worker_inflight(worker_id))):
        job_id, chunk_id = keys.split_lease_member(member)
        taken = lua.requeue(job_id, chunk_id, now=now, counter="expiries", force=True, reporter=worker_id)
        if taken.code is RequeueCode.REQUEUED:
            log.warning("chunk %s (job %s) taken back from %s; re-queued", chunk_id, job_id, worker_id)
            _requeued(client, settings, report, job_id, chunk_id, taken.count, now)
        elif taken.code is RequeueCode.OVER or not client.exists(keys.lease(job_id, chunk_id)):
            client.srem(keys.worker_inflight(worker_id), member)  # a slot nothing holds any more
    return report


def _requeued(client: redis.Redis, settings: Settings, report: SweepReport, job_id: str, chunk_id: str,
              expiries: int, now: float) -> None:
    report.requeued.append(keys.lease_member(job_id, chunk_id))
    if keys.is_audit_chunk(chunk_id):  # a lost audit is settled on the control plane, never fails its job
        from ..trust import audits

        audits.expired_twice(client, settings, job_id, chunk_id, expiries, now=now)
        return
    if expiries >= settings.max_chunk_expiries:
        msg = (f"chunk {chunk_id} was lost {expiries} times (lease {settings.lease_s:g}s); "
               "raise HYDRA_LEASE_S if chunks legitimately take longer")
        if store.fail_job(client, job_id, msg, now=now, detail_s=settings.job_detail_s):
            report.failed_jobs.append(job_id)


def finalize_stragglers(client: redis.Redis, settings: Settings, report: SweepReport) -> None:
    """A job whose chunks are all merged but which is still live (its finalizer died), or whose
    preview is merged but whose tiles were never cut (its collector died)."""
    for job_id in client.zrange(keys.JOBS_ACTIVE, 0, -1):
        try:
            if client.sismember(keys.job_done(job_id), "preview") and not client.hget(keys.job(job_id), "tiled"):
                plan_tiles_after_preview(client, settings, job_id)
            done, total, state = client.hmget(keys.job(job_id), "units_done", "units_total", "state")
            if state is not None and not JobState(state).is_final and done is not None and done == total:
                if collect.finalize(client, job_id, detail_s=settings.job_detail_s):
                    report.finalized_jobs.append(job_id)
        except redis.ConnectionError:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken job must not stop the sweep for all others
            log.exception("sweeping job %s failed", job_id)
            if store.fail_job(client, job_id, f"the control plane could not finish it: {exc!r}",
                              detail_s=settings.job_detail_s):
                report.failed_jobs.append(job_id)


def sweep(client: redis.Redis, settings: Settings, router: Router, publish: Publish, *,
          now: float | None = None, publish_bundle: PublishBundle | None = None) -> SweepReport:
    now = time.time() if now is None else now
    report = SweepReport()
    requeue_expired(client, settings, report, now)
    report.offline_workers = mark_silent_offline(client, settings, now=now)
    report.pruned_workers = prune_offline(client, settings, now=now)
    if report.pruned_workers:
        log.info("pruned %d worker(s) offline for over %gs: %s", len(report.pruned_workers),
                 settings.worker_retention_s, ", ".join(report.pruned_workers))
    finalize_stragglers(client, settings, report)
    report.pruned_jobs = retention.prune_expired(client, settings, now=now)
    if report.pruned_jobs:
        log.info("pruned %d finished job(s) older than %gs", len(report.pruned_jobs), settings.job_retention_s)
    report.dispatched = dispatch(client, settings, router, publish, now=now, publish_bundle=publish_bundle)
    history.sample_carbon(client, settings, carbon_provider(settings, client), now=now)  # once a minute, fleet-wide
    return report
