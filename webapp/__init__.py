"""The Hydra dashboard and HTTP API: a Flask app factory with one blueprint per area.

Run it with ``flask --app hydra_webapp:create_app run`` (settings come from ``HYDRA_*``), or
build it in code with explicit settings::

    app = create_app(Settings.from_env())

Areas: ``jobs`` (``/api/jobs``), ``workers`` (``/api/workers``), ``volunteers`` (self-enrolment,
``/api/volunteers``), ``profiles`` (display names and teams, ``/api/profile``), ``pages`` (the HTML
dashboard), ``events`` (live updates pushed, ``/api/events``), ``history`` (the charts' time series,
``/api/history``), ``health`` (``/healthz``) and ``openapi`` (``/api/openapi.json``, ``/api/docs``: the API's
contract, whose schemas also validate request bodies). Errors are mapped to HTTP
(``application/problem+json`` for the API) in :mod:`.errors`;
request bodies and query parameters are read (the same way for every endpoint) in
:mod:`.inputs`; the operator API token is handled in :mod:`.auth`.
"""

from __future__ import annotations

import logging

from flask import Flask, Response

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.celery_app import create_app as create_celery_app
from hydra_tasks.errors import ConfigError
from hydra_tasks.settings import Settings

from . import (auth, errors, events, grid, health, history, jobs, metrics, openapi, pages, profiles, ratelimit, tokens,
               volunteers, workers)
from .context import EXTENSION_KEY, TOKEN_EXTENSION_KEY
from .inputs import MAX_REQUEST_BYTES

__all__ = ["create_app", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

# The dashboard loads nothing from elsewhere (no CDNs) and runs no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(settings: Settings | None = None, *, celery_app: HydraCelery | None = None) -> Flask:
    """Build the webapp.

    ``settings`` defaults to ``celery_app.settings`` if a Celery app is given, else to
    :meth:`Settings.from_env`. ``celery_app`` defaults to ``hydra_tasks.celery_app.create_app(settings)``.
    The operator API token is resolved (and its file created, if needed) here, at start-up.
    """
    if celery_app is None:
        settings = settings if settings is not None else Settings.from_env()
        celery_app = create_celery_app(settings)
    elif settings is None:
        settings = celery_app.settings
    elif settings != celery_app.settings:
        raise ConfigError("create_app() got settings that differ from celery_app.settings; "
                          "pass only one of them, or build the Celery app from the same settings.")

    app = Flask(__name__)
    # Bodies are read by inputs.read_body(), which refuses (413) rather than cuts a chunked body;
    # this is only a backstop for anything that reads request.data directly.
    app.config.update(MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES)
    app.extensions[EXTENSION_KEY] = celery_app
    token = auth.load_api_token(settings)
    app.extensions[TOKEN_EXTENSION_KEY] = token
    log.info("Operator API token: %s.", token.source)  # where it lives, never the token itself

    for blueprint in (jobs.bp, jobs.bulk_bp, workers.bp, grid.bp, tokens.bp, metrics.bp, metrics.prometheus_bp, pages.bp,
                      health.bp, volunteers.bp, profiles.bp, history.bp, openapi.bp):
        app.register_blueprint(blueprint)
    events.install(app)  # GET /api/events: live updates pushed (Server-Sent Events)
    errors.register(app)
    ratelimit.trust_proxies(app, settings)
    ratelimit.install(app, settings, celery_app)  # after every blueprint: it limits the endpoints it finds
    app.after_request(_security_headers)
    return app


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response
