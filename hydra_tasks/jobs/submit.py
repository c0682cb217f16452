"""Submitting a job: validate, plan, store atomically, then ask the control plane to dispatch; and
reading a Mandelbrot job's image back (finished, or so far)."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from kombu.exceptions import OperationalError

from .. import keys
from ..celery_app import HydraCelery
from ..redis_conn import confirm_or_warn
from ..models import JobKind, JobState
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
    confirm_or_warn(app.redis, f"Job {job_id}")  # on a replica before its id is given out (Sentinel HA)
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


def partial_png(app: HydraCelery, job_id: str) -> bytes | None:
    """A running Mandelbrot job's image so far (the preview, then tile by tile; counts only, without
    the smooth colouring the final image gets), or None if the job is not a live Mandelbrot job or
    nothing of it is computed yet."""
    from ..imaging import render_png
    from . import mandelbrot

    kind, state, spec_json = app.redis.hmget(keys.job(job_id), "kind", "state", "spec")
    if kind != JobKind.MANDELBROT.value or state is None or JobState(state).is_final:
        return None
    params = json.loads(spec_json)["params"]
    reads = app.redis.pipeline(transaction=False)
    reads.hgetall(keys.job_parts(job_id))
    reads.hgetall(keys.job_chunks(job_id))
    parts, chunks = reads.execute()
    if not parts:
        return None  # nothing computed yet
    return render_png(mandelbrot.partial_counts(params, parts, chunks), int(params["max_iter"]))
