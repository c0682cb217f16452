"""``GET /healthz``: the webapp answers, and says whether Redis does."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, jsonify
from redis.backoff import NoBackoff
from redis.retry import Retry

from hydra_tasks.errors import HydraError
from hydra_tasks.redis_conn import client_for

from .context import hydra

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

PING_TIMEOUT_S = 2.0


def redis_is_up() -> bool:
    """One authenticated PING on a fresh connection with a short timeout and no retries."""
    try:
        app = hydra()
        url = app.redis_url  # raises ConfigError if no Redis is configured or running
        client = client_for(app.settings, url, socket_timeout=PING_TIMEOUT_S, socket_connect_timeout=PING_TIMEOUT_S,
                            retry=Retry(NoBackoff(), 0))
    except (HydraError, ValueError) as exc:
        log.warning("health check: no usable Redis URL: %s", exc)
        return False
    try:
        return bool(client.ping())
    except redis.RedisError as exc:
        log.warning("health check: Redis did not answer: %s", exc)
        return False
    finally:
        client.close()


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(ok=True, redis=redis_is_up())
