"""The jobs API: list, submit, read, cancel, and the Mandelbrot image.

Reads are open; anything that changes state needs the operator token (:func:`require_token`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from werkzeug.exceptions import BadRequest, NotFound

from hydra_tasks.jobs import store
from hydra_tasks.jobs.submit import job_png, submit_job

from .auth import require_token
from .context import hydra

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

JOB_ID_RE = re.compile(r"[0-9a-f]{1,64}")
LIMIT_RE = re.compile(r"[0-9]{1,6}")
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def checked_job_id(raw: str) -> str:
    """A syntactically valid job id, else 404 (never pass arbitrary text into Redis key names)."""
    if not JOB_ID_RE.fullmatch(raw):
        raise NotFound(f"No job {raw[:80]!r}: job ids are 1-64 lowercase hex digits; list jobs with GET /api/jobs.")
    return raw


def parse_limit(raw: str | None) -> int:
    """``?limit=N`` with N in 1..MAX_LIMIT, else 400."""
    if raw is None:
        return DEFAULT_LIMIT
    value = int(raw) if LIMIT_RE.fullmatch(raw) else 0
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}, got {raw[:20]!r}.")
    return value


def json_object_body() -> dict[str, Any]:
    """The request body as a JSON object, or 400 saying exactly what is wrong with it."""
    if not request.is_json:
        raise BadRequest(f"Send the body as a JSON object with 'Content-Type: application/json' "
                         f"(got {request.mimetype or 'no Content-Type'!r}).")
    body = request.get_data(cache=False)  # 413 if bigger than MAX_CONTENT_LENGTH
    if not body.strip():
        raise BadRequest("The request body is empty; send a JSON object, e.g. a job: "
                         '{"kind": "pi", "params": {"samples": 100000000}}.')
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"The request body is not valid JSON ({_short(exc)}).") from None
    if not isinstance(data, dict):
        raise BadRequest(f"The request body must be a JSON object, got a JSON {_json_type(data)}.")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _short(exc: BaseException) -> str:
    return str(exc)[:200] or type(exc).__name__


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


@bp.get("")
def list_jobs() -> Response:
    limit = parse_limit(request.args.get("limit"))
    return jsonify(jobs=[job.to_json() for job in store.list_jobs(hydra().redis, limit=limit)])


@bp.post("")
@require_token
def create_job() -> tuple[Response, int, dict[str, str]]:
    job = submit_job(hydra(), json_object_body())
    return jsonify(job.to_json()), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(store.get_job(hydra().redis, checked_job_id(job_id)).to_json())


@bp.post("/<job_id>/cancel")
@require_token
def cancel_job(job_id: str) -> Response:
    return jsonify(store.cancel_job(hydra().redis, checked_job_id(job_id)).to_json())


@bp.get("/<job_id>/image.png")
def job_image(job_id: str) -> Response:
    job = store.get_job(hydra().redis, checked_job_id(job_id))
    png = job_png(hydra(), job_id)
    if png is None:
        if job.kind != "mandelbrot":
            raise NotFound(f"Job {job_id} is a {job.kind} job; only Mandelbrot jobs have an image.")
        raise NotFound(f"Job {job_id} has no image: it is {job.state}; the image exists once it is done.")
    response = Response(png, mimetype="image/png")
    response.cache_control.private = True
    response.cache_control.max_age = 3600  # a finished image never changes
    return response
