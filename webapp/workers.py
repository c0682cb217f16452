"""The workers API: the volunteer workers registered in Redis, live or not."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from hydra_tasks.worker.registry import list_workers

from .context import hydra

bp = Blueprint("workers", __name__, url_prefix="/api/workers")


def worker_views() -> list[dict[str, Any]]:
    """Every registered worker as JSON (see ``WorkerInfo.to_json``), sorted by id."""
    return [worker.to_json() for worker in list_workers(hydra().redis)]


@bp.get("")
def workers() -> Response:
    return jsonify(workers=worker_views())
