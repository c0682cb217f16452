"""The HTML dashboard: the job list with live progress, one job in detail, the workers, one worker in
detail (``/workers/<id>``), and the job forms (``static/controls.js``).

Pages are rendered on the server (Jinja autoescapes everything) and then kept live by
``static/app.js``, which listens to the live updates the server pushes (``GET /api/events``, Server-Sent
Events; polling the JSON API once a second where streams are refused) and writes with ``textContent``.
The index page also draws charts over time (``static/charts.js``, from ``GET /api/history``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, render_template

from hydra_tasks.ledger import book as ledger
from hydra_tasks.jobs import store

from .context import hydra
from .jobs import DEFAULT_LIMIT, checked_job_id
from .tokens import leaderboard_view
from .workers import checked_worker, worker_views

DEFAULT_PRUNE_S = 30 * 86_400.0  # what the dashboard's "remove old jobs" offers when HYDRA_JOB_RETENTION_S is 0

bp = Blueprint("pages", __name__)



@bp.app_template_filter("when")
def when(ts: float | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS UTC`` (the same format app.js writes)."""
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("count")
def count(value: Any) -> str:
    """An integer with thousands separators."""
    return f"{int(value):,}" if isinstance(value, (int, float)) else "—"


@bp.app_template_filter("seconds")
def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


@bp.app_template_filter("percent")
def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


@bp.app_context_processor
def flower_link() -> dict[str, str]:
    """Flower's URL for the header's link (HYDRA_FLOWER_URL; "" for none)."""
    return {"flower_url": hydra().settings.flower_url}


@bp.get("/")
def index() -> str:
    client = hydra().redis
    board = leaderboard_view(10)
    retention_s = hydra().settings.job_retention_s
    return render_template("index.html", jobs=store.list_jobs(client, limit=DEFAULT_LIMIT), workers=worker_views(),
                           board=board["by_balance"], teams=board["by_team"], tokens=ledger.token_metrics(client),
                           retention_days=(retention_s if retention_s > 0 else DEFAULT_PRUNE_S) / 86_400)


@bp.get("/workers/<worker_id>")
def worker_page(worker_id: str) -> str:
    return render_template("worker.html", w=checked_worker(worker_id))


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = store.get_job(hydra().redis, checked_job_id(job_id))
    return render_template("job.html", job=job, final=job.is_final)
