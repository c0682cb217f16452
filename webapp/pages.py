"""The HTML dashboard: the job list with live progress, one job in detail, and the workers.

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
from .workers import worker_views

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


@bp.get("/")
def index() -> str:
    client = hydra().redis
    return render_template("index.html", jobs=store.list_jobs(client, limit=DEFAULT_LIMIT), workers=worker_views(),
                           board=ledger.leaderboard(client, 10)["by_balance"], tokens=ledger.token_metrics(client))


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> str:
    job = store.get_job(hydra().redis, checked_job_id(job_id))
    return render_template("job.html", job=job, final=job.is_final)
