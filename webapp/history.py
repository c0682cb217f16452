"""Time series for the dashboard's charts: ``GET /api/history`` (public, read-only).

Query parameters (whole numbers, validated by :func:`.inputs.query_int`): ``minutes`` (1..360,
default 60), the window of the chunk, speed and carbon series; ``days`` (1..366, default 30), the
days of tokens minted. The answer (all times unix seconds, UTC)::

    {"now": 1767225600.0, "window_s": 3600, "step_s": 10,
     "chunks_per_s": [[t, chunks merged per second in the bucket starting at t], ...],   # zeros included
     "worker_speed": {"<worker id>": {"pi": [[t, samples/s], ...], "mandelbrot": [[t, iterations/s], ...]}},
     "carbon": {"<region>": [[t, effective gCO2/kWh], ...]},                              # one point a minute
     "minted_per_day_micro": [["YYYY-MM-DD", micro-tokens], ...],                          # oldest first
     "deferred": [{"id": job id, "kind": "pi", "state": "queued", "deadline_ts": t or null,
                   "carbon_threshold": gCO2/kWh or null (any power), "progress": 0..1,
                   "waiting": true if no region is clean enough now, "why": "waits for power below ..."}]}

The series live in Redis for 6 hours (``hydra:history:{hour}``, :mod:`hydra_tasks.history`).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from hydra_tasks import history
from hydra_tasks.scheduling.router import carbon_provider

from .context import hydra
from .inputs import query_int

bp = Blueprint("history", __name__, url_prefix="/api")

DEFAULT_MINUTES, MAX_MINUTES = 60, history.MAX_WINDOW_S // 60
DEFAULT_DAYS, MAX_DAYS = 30, history.MAX_DAYS


@bp.get("/history")
def get_history() -> Response:
    minutes = query_int("minutes", default=DEFAULT_MINUTES, low=1, high=MAX_MINUTES)
    days = query_int("days", default=DEFAULT_DAYS, low=1, high=MAX_DAYS)
    app = hydra()
    return jsonify(history.read(app.redis, app.settings, carbon_provider(app.settings), window_s=minutes * 60,
                                days=days))
