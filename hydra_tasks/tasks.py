"""Thin Celery tasks: (de)serialisation, routing and retries only. Logic lives in plain modules.

Three roles, each running only its own tasks (worker/gate.py):

* volunteers run ``hydra.compute_chunk`` and report through ``hydra.intake`` (signed envelopes);
* the intake worker runs ``hydra.intake``: it authenticates and applies what volunteers say;
* the control worker runs ``hydra.dispatch``, ``hydra.sweep`` and ``hydra.checkpoint`` (from beat).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.utils import worker_direct

from . import intake as intake_logic
from . import keys, redis_conn
from .scheduling import dispatcher, sweeper
from .scheduling.router import router_for
from .trust import envelope, identity, results, sealing
from .worker.compute import process, process_bundle


def publish_chunk(chunk: dict[str, Any], attempt: int, worker_id: str, region: str) -> None:
    """Send a chunk to the worker it was sized for, through that worker's own queue; with
    HYDRA_ENCRYPTION sealed to that worker (trust/sealing.py), so the broker holds only ciphertext."""
    app = compute_chunk.app
    if app.settings.encryption:
        chunk = sealing.seal_chunk_for(app.redis, app.settings, chunk, attempt, worker_id)
    compute_chunk.apply_async(args=[chunk, attempt, region], queue=worker_direct(worker_id),
                              argsrepr=_brief("chunk", chunk, f"attempt {attempt}, {region}"))


def publish_bundle(chunks: list[tuple[dict[str, Any], int]], worker_id: str, region: str) -> None:
    """Send several chunks leased to one worker as one message (scheduling/grants.bundle_size), each
    sealed to that worker as :func:`publish_chunk` seals one."""
    app = compute_bundle.app
    if app.settings.encryption:
        chunks = [(sealing.seal_chunk_for(app.redis, app.settings, chunk, attempt, worker_id), attempt)
                  for chunk, attempt in chunks]
    first = chunks[0][0]
    compute_bundle.apply_async(args=[[[chunk, attempt] for chunk, attempt in chunks], region],
                               queue=worker_direct(worker_id),
                               argsrepr=_brief("bundle", first, f"{len(chunks)} chunks, {region}"))


def send_to_intake(app: Any, action: envelope.Action, body: dict[str, Any], *,
                   retry_policy: dict[str, float] | None = None) -> None:
    """Volunteer side: seal ``body`` with this worker's key and send it to the control plane. While
    Redis is away the publish retries by ``retry_policy`` (default: celery_app.PUBLISH_RETRY_POLICY);
    with the default, a publish refused for want of replicas (a failover's new primary) is repeated
    for up to redis_conn.NOREPLICAS_WAIT_S, so that a computed result is not lost to it."""
    key = results.worker_key(identity.key_path(app.settings))
    options = {"retry_policy": retry_policy} if retry_policy is not None else {}
    message = envelope.seal(key, action, body)

    def publish() -> None:
        intake.apply_async(args=[message], queue=keys.INTAKE_QUEUE, argsrepr=_brief(action.value, body, "signed"),
                           **options)

    redis_conn.while_replicas_return(publish, within_s=redis_conn.NOREPLICAS_WAIT_S if retry_policy is None else 0)


def _brief(what: str, body: Any, note: str) -> str:
    """The message's args as the worker's log, its events and Flower show them: its kind and ids.
    Given explicitly, Celery does not saferepr the whole payload on every publish (a measurable part
    of a near-empty chunk's cost), and no payload, sealed box or signature reaches a log."""
    ids = "/".join(str(body.get(k))[:64] for k in ("job_id", "chunk_id") if k in body) if isinstance(body, dict) else ""
    return f"({what} {ids or '-'}, {note})"


@shared_task(name="hydra.compute_chunk", bind=True, ignore_result=True)
def compute_chunk(self: Any, chunk: dict[str, Any], attempt: int, region: str = "unknown") -> None:
    """Volunteer side: (open,) compute one chunk and send the signed (and sealed) result to the intake."""
    worker_id = self.request.hostname or "unknown"
    key = results.worker_key(identity.key_path(self.app.settings))  # every result is signed with it
    # The battery is checked in process(), in the process that computes (prefork children do not
    # see the heartbeat thread).
    result = process(chunk, attempt=attempt, worker_id=worker_id, region=region, settings=self.app.settings, key=key)
    send_to_intake(self.app, envelope.Action.RESULT, result)


@shared_task(name="hydra.compute_bundle", bind=True, ignore_result=True)
def compute_bundle(self: Any, chunks: list[Any], region: str = "unknown") -> None:
    """Volunteer side: compute a bundle of short chunks ([chunk, attempt] pairs) one after the other
    and send their signed (and sealed) results to the intake in one envelope."""
    worker_id = self.request.hostname or "unknown"
    key = results.worker_key(identity.key_path(self.app.settings))
    send_to_intake(self.app, envelope.Action.RESULTS,
                   {"worker_id": worker_id,
                    "results": process_bundle(chunks, worker_id=worker_id, region=region, settings=self.app.settings,
                                              key=key)})


@shared_task(name="hydra.intake", bind=True, ignore_result=True)
def intake(self: Any, message: Any) -> str:
    """Control plane (intake worker only): authenticate one volunteer message, then apply it; repeated
    while Redis refuses writes for want of replicas (applying a message twice changes nothing)."""
    return redis_conn.while_replicas_return(
        lambda: intake_logic.handle(self.app.redis, self.app.settings, message, publish=publish_chunk,
                                    publish_bundle=publish_bundle))


@shared_task(name="hydra.dispatch", bind=True, ignore_result=True)
def dispatch(self: Any) -> int:
    return dispatcher.dispatch(self.app.redis, self.app.settings, router_for(self.app.settings, self.app.redis),
                               publish_chunk, publish_bundle=publish_bundle)


@shared_task(name="hydra.sweep", bind=True, ignore_result=True)
def sweep(self: Any) -> dict[str, Any]:
    report = sweeper.sweep(self.app.redis, self.app.settings, router_for(self.app.settings, self.app.redis),
                           publish_chunk, publish_bundle=publish_bundle)
    return {"requeued": len(report.requeued), "dispatched": report.dispatched,
            "offline": report.offline_workers, "pruned": report.pruned_workers, "pruned_jobs": report.pruned_jobs, "failed": report.failed_jobs, "finalized": report.finalized_jobs}


@shared_task(name="hydra.checkpoint", bind=True, ignore_result=True)
def checkpoint(self: Any) -> int | None:
    """Control plane: sign a checkpoint of the ledger's journal into the data dir, if it grew."""
    from .ledger import chain

    taken = chain.checkpoint_now(self.app.redis, self.app.settings.data_dir)
    return taken.length if taken else None
