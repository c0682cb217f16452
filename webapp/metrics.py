"""Adaptive chunking and tiling metrics (read-only)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from hydra_tasks import metrics
from hydra_tasks.errors import InvalidJobSpec, JobNotFound

from .context import hydra

bp = Blueprint("metrics", __name__, url_prefix="/api")

_JOB_ID = re.compile(r"^[0-9a-f]{1,64}$")


def _args() -> tuple[str | None, int]:
    job_id = request.args.get("job")
    if job_id is not None and not _JOB_ID.match(job_id):
        raise JobNotFound(f"No job {job_id!r}.")
    try:
        limit = int(request.args.get("limit", "5"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 50:
        raise InvalidJobSpec("'limit' must be a whole number from 1 to 50.")
    return job_id, limit


@bp.get("/adaptive_chunking_metrics")
def adaptive_chunking_metrics() -> Response:
    job_id, limit = _args()
    return jsonify(metrics.chunking_metrics(hydra().redis, job_id=job_id, limit=limit))


@bp.get("/sustainability_metrics")
def sustainability_metrics() -> Response:
    job_id, limit = _args()
    return jsonify(metrics.sustainability_metrics(hydra().redis, job_id=job_id, limit=limit))


@bp.get("/adaptive_tiling_metrics")
def adaptive_tiling_metrics() -> Response:
    job_id, limit = _args()
    return jsonify(metrics.tiling_metrics(hydra().redis, job_id=job_id, limit=limit))
