"""The jobs API: list, submit, read, cancel, re-open, delete, prune old finished jobs, and the Mandelbrot image.

Reads are open; anything that changes state needs the operator token (:func:`require_token`).
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, url_for
from werkzeug.exceptions import NotFound

from hydra_tasks.jobs import retention, store
from hydra_tasks.jobs.submit import job_png, partial_png, submit_job

from .auth import require_token
from .context import hydra
from .inputs import query_int
from .openapi import validated_body

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")
#: actions on many jobs at once (not under /api/jobs/, where a name would also match /api/jobs/<job_id>)
bulk_bp = Blueprint("jobs_bulk", __name__, url_prefix="/api")

JOB_ID_RE = re.compile(r"[0-9a-f]{1,64}")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def checked_job_id(raw: str) -> str:
    """A syntactically valid job id, else 404 (never pass arbitrary text into Redis key names)."""
    if not JOB_ID_RE.fullmatch(raw):
        raise NotFound(f"No job {raw[:80]!r}: job ids are 1-64 lowercase hex digits; list jobs with GET /api/jobs.")
    return raw


@bp.get("")
def list_jobs() -> Response:
    limit = query_int("limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    return jsonify(jobs=[job.to_json() for job in store.list_jobs(hydra().redis, limit=limit)])


@bp.post("")
@require_token
def create_job() -> tuple[Response, int, dict[str, str]]:
    job = submit_job(hydra(), validated_body())
    return jsonify(job.to_json()), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(store.get_job(hydra().redis, checked_job_id(job_id)).to_json())


@bp.post("/<job_id>/cancel")
@require_token
def cancel_job(job_id: str) -> Response:
    app = hydra()
    return jsonify(store.cancel_job(app.redis, checked_job_id(job_id), detail_s=app.settings.job_detail_s).to_json())


@bp.post("/<job_id>/reopen")
@require_token
def reopen_job(job_id: str) -> Response:
    """Recompute a done job's suspect results (from a worker caught cheating after they were merged)."""
    return jsonify(store.reopen_job(hydra().redis, checked_job_id(job_id)).to_json())


@bulk_bp.post("/prune_jobs")
@require_token
def prune_jobs() -> Response:
    """Remove finished jobs that ended more than ``older_than_s`` ago, oldest first, at most
    retention.PRUNE_PER_REQUEST of them (``more``: send the request again); ``dry_run`` only lists them."""
    body = validated_body()
    age, client = float(body["older_than_s"]), hydra().redis
    if body.get("dry_run", False):
        due = retention.due(client, age, limit=retention.PRUNE_PER_REQUEST + 1)
        return jsonify(jobs=due[:retention.PRUNE_PER_REQUEST], removed=False, more=len(due) > retention.PRUNE_PER_REQUEST,
                       older_than_s=age)
    removed: list[str] = []
    while len(removed) < retention.PRUNE_PER_REQUEST:
        batch = retention.prune(client, age, limit=min(retention.PRUNE_BATCH, retention.PRUNE_PER_REQUEST - len(removed)))
        if not batch:
            break
        removed += batch
    return jsonify(jobs=removed, removed=True, more=bool(retention.due(client, age, limit=1)), older_than_s=age)


@bp.delete("/<job_id>")
@require_token
def delete_job(job_id: str) -> Response:
    """Delete a finished (done, failed or cancelled) job and all its data: ``{"deleted": "<job id>"}``.
    409 for a queued or running job (cancel it first), 404 for an unknown one. The token ledger keeps
    the job's mints (jobs/store.delete_job)."""
    store.delete_job(hydra().redis, checked_job_id(job_id))
    return jsonify(deleted=job_id)


@bp.get("/<job_id>/image.png")
def job_image(job_id: str) -> Response:
    job = store.get_job(hydra().redis, checked_job_id(job_id))
    png = job_png(hydra(), job_id) if job.is_final else None  # (a running job's stored preview is superseded)
    if png is not None:
        response = Response(png, mimetype="image/png")
        response.cache_control.private = True
        response.cache_control.max_age = 3600  # a finished image never changes
        return response
    if job.kind != "mandelbrot":
        raise NotFound(f"Job {job_id} is a {job.kind} job; only Mandelbrot jobs have an image.")
    partial = partial_png(hydra(), job_id)  # a running job: its image so far, preview first, then tiles
    if partial is None:
        raise NotFound(f"Job {job_id} has no image: it is {job.state}, and nothing of it is computed yet.")
    response = Response(partial, mimetype="image/png")
    response.cache_control.no_store = True
    response.headers["X-Hydra-Partial"] = "1"
    return response
