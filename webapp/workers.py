"""The workers API: the volunteer workers registered in Redis, live or not (an offline worker is
listed until it is pruned, ``HYDRA_WORKER_RETENTION_S`` after its last heartbeat)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from werkzeug.exceptions import NotFound

from hydra_tasks.worker.details import MAX_RECENT_CHUNKS, RECENT_CHUNKS, is_worker_id, worker_details
from hydra_tasks.worker.registry import list_workers

from .context import hydra
from .inputs import query_int

bp = Blueprint("workers", __name__, url_prefix="/api/workers")


def worker_views() -> list[dict[str, Any]]:
    """Every registered worker as JSON (see ``WorkerInfo.to_json``), sorted by id."""
    return [worker.to_json() for worker in list_workers(hydra().redis)]


def checked_worker(raw: str, *, recent: int = RECENT_CHUNKS) -> dict[str, Any]:
    """The worker's details, or 404 for an id that is malformed or not registered (pruned, or never)."""
    found = worker_details(hydra().redis, raw, recent=recent) if is_worker_id(raw) else None
    if found is None:
        raise NotFound(f"No worker {raw[:80]!r}: worker ids are Celery node names such as 'eu-west-1@host' "
                       "(letters, digits, '_', '.', '@', '-'); a worker offline for longer than "
                       "HYDRA_WORKER_RETENTION_S is pruned. List workers with GET /api/workers.")
    return found


@bp.get("")
def workers() -> Response:
    """``{"workers": [worker, ...]}``: every registered worker (``WorkerInfo.to_json``), sorted by id."""
    return jsonify(workers=worker_views())


@bp.get("/<worker_id>")
def worker(worker_id: str) -> Response:
    """One worker: everything ``GET /api/workers`` lists for it (``worker_id``, ``region``, ``host``,
    ``state``, ``pause_reason``, ``last_seen``, ``isa``, ``cpu_limit``, ``grid_zone``, calibrated speeds
    ``pi_samples_per_s`` and ``mandelbrot_iters_per_s``, measured ``speed_pi`` and ``speed_mandelbrot``,
    ``reliability``, ``reputation``, ``quarantined``, ...) plus

    * ``audit_status``: ``{level, clean_audits, failed_audits, pi_blocks_checked, pi_blocks,
      mandelbrot_pixels_checked, text}``, level one of quarantined, probation, established, trusted, veteran;
    * ``results_logged``: merged results in its results log;
    * ``recent_chunks``: its newest merged chunks, newest first (``?recent=N``, 1..200, default 20):
      ``[{job, chunk, amount_micro, tokens, account, job_exists}]``.

    404 for a malformed or unknown worker id."""
    recent = query_int("recent", default=RECENT_CHUNKS, low=1, high=MAX_RECENT_CHUNKS)
    return jsonify(checked_worker(worker_id, recent=recent))
