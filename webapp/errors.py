"""Map exceptions to HTTP: ``application/problem+json`` (RFC 9457) under /api/, /healthz and /metrics,
a small HTML page elsewhere.

Every API error has one shape::

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "detail": "Unknown job kind 'x'; use one of: pi, mandelbrot.", "error": "<the same as detail>"}

``title`` is the HTTP status phrase (``type`` is ``about:blank``: the status says what kind of
problem it is); ``detail`` says what went wrong and what to send instead. ``error`` repeats
``detail`` for clients written before problem+json. Extension members: ``errors`` (a body that breaks
its schema: one ``{"field", "message"}`` per violation), ``retry_after_s`` and ``limit`` (429, with a
``Retry-After`` header). The schema is ``Problem`` in ``GET /api/openapi.json``.

HydraError messages are written for users (what went wrong, what to do next), so they are
shown as-is, except that the data dir is written as ``$HYDRA_DATA_DIR``. Anything unexpected becomes a generic 500 and is logged with its traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import redis
from flask import Flask, Response, jsonify, render_template, request
from kombu.exceptions import OperationalError as BrokerError
from werkzeug.exceptions import HTTPException, NotFound

from hydra_tasks.errors import (
    ConfigError, EnrolmentClosed, EnrolmentError, EnrolmentRateLimited, HydraError, IdentityError,
    InfrastructureError, InsufficientFunds, InvalidJobSpec, JobError, JobNotFound, JobStateError, JoinRefused,
    LedgerError, NonceReused, SignatureError, UnknownAccount, UnknownVolunteer, VolunteerExists,
)
from hydra_tasks.grid import GridError

from .context import hydra
from .inputs import TOO_LARGE_MESSAGE, BodyBreaksSchema

log = logging.getLogger(__name__)

# First match wins, so subclasses come before their roots.
STATUS_BY_ERROR: tuple[tuple[type[HydraError], int], ...] = (
    (InvalidJobSpec, 400),
    (JobNotFound, 404),
    (JobStateError, 409),
    (JobError, 400),
    (GridError, 400),
    (SignatureError, 401),
    (UnknownAccount, 404),
    (InsufficientFunds, 409),
    (NonceReused, 409),
    (LedgerError, 400),
    (IdentityError, 403),
    (EnrolmentClosed, 403),
    (EnrolmentRateLimited, 429),
    (VolunteerExists, 409),
    (UnknownVolunteer, 404),
    (JoinRefused, 403),
    (EnrolmentError, 400),
    (InfrastructureError, 503),
    (ConfigError, 503),  # e.g. no HYDRA_REDIS_URL and no embedded Redis running
)

PROBLEM_JSON = "application/problem+json"
JSON_PREFIXES = ("/api/",)
JSON_PATHS = frozenset({"/healthz", "/metrics"})


def status_for(exc: HydraError) -> int:
    """The HTTP status for a HydraError; 500 for kinds that should not reach a client."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def wants_json() -> bool:
    """True for the API (/api/, /healthz, /metrics): errors as problem+json, not the HTML page."""
    return request.path.startswith(JSON_PREFIXES) or request.path in JSON_PATHS


def problem(message: str, status: int, **fields: Any) -> Response:
    """An ``application/problem+json`` response: type, title, status, detail (= ``error``), ``fields``."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:  # pragma: no cover - every status used here is a standard one
        title = "Error"
    response = jsonify(type="about:blank", title=title, status=status, detail=message, error=message, **fields)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def error_response(message: str, status: int, **fields: Any) -> tuple[Response | str, int]:
    """A problem+json body (with any extension ``fields``) for the API, the error page for the dashboard."""
    message = without_host_paths(message)
    if wants_json():
        return problem(message, status, **fields), status
    return render_template("error.html", message=message, status=status), status


def without_host_paths(message: str) -> str:
    """The message with the data dir (where the API token file lives) written as ``$HYDRA_DATA_DIR``:
    clients get told where to look, not the layout of the webapp's host."""
    data_dir = hydra().settings.data_dir
    for path in sorted({str(data_dir), str(data_dir.expanduser().resolve())}, key=len, reverse=True):
        if path.startswith("/") and path != "/":  # a relative one reveals nothing, and may be a common word
            message = message.replace(path, "$HYDRA_DATA_DIR")
    return message


def _hydra_error(exc: HydraError) -> tuple[Response | str, int] | tuple[Response | str, int, dict[str, str]]:
    status = status_for(exc)
    if status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
    if isinstance(exc, EnrolmentRateLimited) and exc.retry_after_s is not None:  # like webapp/ratelimit.py's 429
        body, status = error_response(str(exc), status, retry_after_s=exc.retry_after_s)
        return body, status, {"Retry-After": str(exc.retry_after_s)}
    schema_errors = getattr(exc, "schema_errors", None)  # webapp/openapi.validated_body: the body broke its schema too
    return error_response(str(exc), status, **({"errors": schema_errors} if schema_errors else {}))


def _redis_unavailable(exc: redis.exceptions.RedisError) -> tuple[Response | str, int]:
    log.error("%s %s: Redis is unavailable: %s", request.method, request.path, exc)
    return error_response(
        f"Redis is unavailable ({exc}). Check that it is running (`hydra up`) and that HYDRA_REDIS_URL "
        "points at it, then try again.", 503)


def _broker_unavailable(exc: BrokerError) -> tuple[Response | str, int]:
    log.error("%s %s: the Celery broker is unavailable: %s", request.method, request.path, exc)
    return error_response(
        f"The Celery broker is unavailable ({exc}). Check that Redis is running and reachable, then try "
        "again; a job that was already stored will be dispatched by the next sweep.", 503)


def _http_error(exc: HTTPException) -> HTTPException | tuple[Response | str, int, dict[str, str]]:
    if exc.code is None or exc.code < 400:
        return exc  # redirects and the like are not errors
    if exc.code == 500:
        message = "Internal server error; the details are in the webapp's log."
    elif exc.code == 413:
        message = TOO_LARGE_MESSAGE  # also when Werkzeug's own MAX_CONTENT_LENGTH check refused it
    elif exc.code == 404 and exc.description == NotFound.description and wants_json():  # no such route
        message = (f"There is no {request.path[:200]} in this API; its endpoints are listed in GET /api/openapi.json "
                   "(readable at /api/docs).")
    elif exc.code == 405:
        allowed = ", ".join(sorted(set(getattr(exc, "valid_methods", None) or []) - {"HEAD", "OPTIONS"}))
        message = f"{request.method} is not allowed on {request.path[:200]}; use {allowed or 'another method'}."
    else:
        message = exc.description or exc.name
    fields = {"errors": exc.errors} if isinstance(exc, BodyBreaksSchema) else {}
    body, status = error_response(message, exc.code, **fields)
    # Keep the exception's own headers (Allow on a 405, WWW-Authenticate), not its Content-Type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return body, status, headers


def register(app: Flask) -> None:
    """Install the handlers on ``app``."""
    app.register_error_handler(HydraError, _hydra_error)
    app.register_error_handler(redis.exceptions.ConnectionError, _redis_unavailable)
    app.register_error_handler(redis.exceptions.TimeoutError, _redis_unavailable)
    app.register_error_handler(BrokerError, _broker_unavailable)
    app.register_error_handler(HTTPException, _http_error)
