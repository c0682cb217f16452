"""Submitting a job: validate, plan, store atomically, then ask the control plane to dispatch."""

from __future__ import annotations

import base64
import logging
from typing import Any

from kombu.exceptions import OperationalError

from .. import keys
from ..celery_app import HydraCelery
from ..scheduling import planner
from . import store
from .view import JobView
from .spec import parse_job_spec

log = logging.getLogger(__name__)


def submit_job(app: HydraCelery, raw: Any) -> JobView:
    """Validate ``raw`` (a dict as in POST /api/jobs), store the job and its chunks, and dispatch.

    Raises InvalidJobSpec before anything is stored. If the dispatch message cannot be sent,
    the job is still safe: the next sweep dispatches it."""
    spec = parse_job_spec(raw, confidential_default=app.settings.confidential,
                          attestation=app.settings.attestation)
    job_id = store.new_job_id()
    chunks = planner.plan(job_id, spec, app.settings)
    store.create_job(app.redis, spec, chunks, job_id=job_id)
    try:
        app.send_task("hydra.dispatch", queue=keys.CONTROL_QUEUE)
    except OperationalError:
        log.warning("job %s is stored but the dispatch message could not be sent; the next sweep will "
                    "dispatch it", job_id)
    return store.get_job(app.redis, job_id)


def job_png(app: HydraCelery, job_id: str) -> bytes | None:
    """The finished Mandelbrot image of a job, or None if there is none (yet)."""
    text = app.redis.get(keys.job_image(job_id))
    return base64.b64decode(text) if text else None
