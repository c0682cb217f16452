"""Thin Celery tasks: (de)serialisation, routing and retries only. Logic lives in plain modules."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.utils import worker_direct

from . import keys
from .jobs import collect, store
from .scheduling import dispatcher, sweeper
from .scheduling.router import router_for
from .trust import identity, results
from .worker.compute import decline, run_chunk
from .worker.throttle import on_battery


def publish_chunk(chunk: dict[str, Any], attempt: int, worker_id: str, region: str) -> None:
    """Send a chunk to the worker it was sized for, through that worker's own queue."""
    compute_chunk.apply_async(args=[chunk, attempt, region], queue=worker_direct(worker_id))


@shared_task(name="hydra.compute_chunk", bind=True, ignore_result=True)
def compute_chunk(self: Any, chunk: dict[str, Any], attempt: int, region: str = "unknown") -> None:
    """Volunteer side: compute one chunk and send the result to the control queue."""
    client = self.app.redis
    state = store.job_state(client, str(chunk.get("job_id")))
    if state is None or state.is_final:
        return  # cancelled or finished meanwhile: don't spend the volunteer's CPU
    worker_id = self.request.hostname or "unknown"
    key = results.worker_key(identity.key_path(self.app.settings))  # every result is signed with it
    # Checked here, in the process that computes (prefork children do not see the heartbeat thread).
    if self.app.settings.pause_on_battery and on_battery():
        result = decline(chunk, attempt=attempt, worker_id=worker_id, region=region, reason="on battery", key=key)
    else:
        result = run_chunk(chunk, attempt=attempt, worker_id=worker_id, region=region,
                           threads=self.app.settings.kernel_threads, cpu_limit=self.app.settings.cpu_limit, key=key)
    collect_chunk.apply_async(args=[result], queue=keys.CONTROL_QUEUE)


@shared_task(name="hydra.collect_chunk", bind=True, ignore_result=True)
def collect_chunk(self: Any, result: dict[str, Any]) -> str:
    """Control plane: verify + merge once + finalize, then refill the windows."""
    outcome = collect.collect(self.app.redis, self.app.settings, result)
    dispatcher.dispatch(self.app.redis, self.app.settings, router_for(self.app.settings, self.app.redis),
                        publish_chunk)
    return outcome


@shared_task(name="hydra.dispatch", bind=True, ignore_result=True)
def dispatch(self: Any) -> int:
    return dispatcher.dispatch(self.app.redis, self.app.settings, router_for(self.app.settings, self.app.redis),
                               publish_chunk)


@shared_task(name="hydra.sweep", bind=True, ignore_result=True)
def sweep(self: Any) -> dict[str, Any]:
    report = sweeper.sweep(self.app.redis, self.app.settings, router_for(self.app.settings, self.app.redis),
                           publish_chunk)
    return {"requeued": len(report.requeued), "dispatched": report.dispatched,
            "offline": report.offline_workers, "failed": report.failed_jobs, "finalized": report.finalized_jobs}


@shared_task(name="hydra.checkpoint", bind=True, ignore_result=True)
def checkpoint(self: Any) -> int | None:
    """Control plane: sign a checkpoint of the ledger's journal into the data dir, if it grew."""
    from .ledger import chain

    taken = chain.checkpoint_now(self.app.redis, self.app.settings.data_dir)
    return taken.length if taken else None
