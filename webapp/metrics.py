"""Metrics (read-only): adaptive chunking and tiling, sustainability and security as JSON under
``/api``, and Prometheus's text format at ``GET /metrics`` (hydra_tasks/exporter.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from hydra_tasks import exporter, metrics
from prometheus_client import CONTENT_TYPE_LATEST

from .context import hydra
from .inputs import query_int
from .jobs import checked_job_id

bp = Blueprint("metrics", __name__, url_prefix="/api")
prometheus_bp = Blueprint("prometheus", __name__)

DEFAULT_LIMIT, MAX_LIMIT = 5, 50


def _args() -> tuple[str | None, int]:
    job_id = request.args.get("job")
    return (None if job_id is None else checked_job_id(job_id),
            query_int("limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT))


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


@bp.get("/security_metrics")
def security_metrics() -> Response:
    """Messages the intake dropped and forged results, by reason (hydra:intake:dropped, hydra:results:dropped)."""
    return jsonify(metrics.security_metrics(hydra().redis))


@prometheus_bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus scrape endpoint: jobs, chunks, queues, workers, carbon, tokens, drops."""
    return Response(exporter.exposition(hydra().redis, hydra().settings), mimetype=CONTENT_TYPE_LATEST)
