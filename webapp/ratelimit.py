"""Rate limits on the endpoints anyone can call: Flask-Limiter, counting in Hydra's own Redis.

Every endpoint that changes state without the operator token is limited per client address
(:data:`WRITE_LIMITS`): signed transfers, signed grid reports, self-enrolment and signed profiles, each with its
``HYDRA_RATE_LIMIT_*`` setting. Reads share one optional budget per address
(``HYDRA_RATE_LIMIT_READS``, off by default; ``/healthz`` and ``/metrics`` are never limited).
Endpoints behind the operator token are not limited here: the token already says who is calling.

The counters are shared by every webapp process on the same Redis (gunicorn workers, several
hosts): the limiter's client comes from :mod:`hydra_tasks.redis_conn`, so a ``rediss://`` server
is verified against ``HYDRA_REDIS_CA`` and a Unix socket or an ACL user works as for every other
client. A request over a limit gets 429 in the API's problem+json error format, with ``Retry-After``
(seconds) and a message naming the limit. If Redis is down the request fails with the same 503
as any other request that needs Redis, never silently unlimited.

The client address is ``request.remote_addr``: the TCP peer, unless ``HYDRA_TRUSTED_PROXIES``
says how many reverse proxies in front append to ``X-Forwarded-For`` (:func:`trust_proxies`).
An IPv6 client is counted by its /64, which one host usually holds whole.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, cast

from flask import Flask, Response, request
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.errors import ConfigError
from hydra_tasks.redis_conn import client_for
from hydra_tasks.settings import RATE_LIMIT_OFF, Settings

LIMITER_EXTENSION_KEY = "hydra_limiter"
# Flask-Limiter's sliding window counter: two counters per limit and address, no burst of twice the
# limit at a window's edge (as a fixed window allows), and no per-request list (as a moving window keeps).
STRATEGY = "sliding-window-counter"
READS_SCOPE = "reads"
NEVER_LIMITED = frozenset({"/healthz", "/metrics"})  # health checks and Prometheus scrapes


@dataclass(frozen=True)
class WriteLimit:
    """One limited endpoint: its Flask endpoint name, and the settings field holding its limit."""

    endpoint: str
    setting: str


#: Every endpoint that changes state without the operator token (tests/integration/test_rate_limits.py
#: checks that the app has no other).
WRITE_LIMITS: tuple[WriteLimit, ...] = (
    WriteLimit("tokens.transfer_tokens", "rate_limit_transfers"),  # HYDRA_RATE_LIMIT_TRANSFERS
    WriteLimit("grid.update_grid_info", "rate_limit_grid_reports"),  # HYDRA_RATE_LIMIT_GRID_REPORTS
    WriteLimit("volunteers.enrol", "rate_limit_enrolment"),  # HYDRA_RATE_LIMIT_ENROLMENT
    WriteLimit("profiles.set_profile", "rate_limit_profiles"),  # HYDRA_RATE_LIMIT_PROFILES
)


def trust_proxies(app: Flask, settings: Settings) -> None:
    """With ``HYDRA_TRUSTED_PROXIES=N`` > 0, take the client address from the N-th last
    ``X-Forwarded-For`` entry (werkzeug's ProxyFix); with 0 the header is ignored, so a client
    cannot pick its own address."""
    if settings.trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]


def client_key() -> str:
    """The address a request is counted against: the client's IPv4 address, or its IPv6 /64."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def install(app: Flask, settings: Settings, celery_app: HydraCelery) -> Limiter | None:
    """Limit ``app``'s endpoints as the settings say; call after every blueprint is registered.

    Without a Redis to count in (no ``HYDRA_REDIS_URL`` and no embedded Redis running when the app is
    built) the limited endpoints answer 503 saying so, rather than run unlimited; None is returned."""
    try:
        url = celery_app.redis_url
    except ConfigError as exc:
        _refuse_limited_endpoints(app, settings, str(exc))
        return None
    pool = client_for(settings, url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30).connection_pool
    limiter = Limiter(
        key_func=client_key,
        strategy=STRATEGY,
        # The URI only selects limits' Redis backend; the connection (URL, password, TLS CA, Unix
        # socket) is the pool above, so no secret is passed as, or logged from, a URI.
        storage_uri="redis://",
        storage_options=cast(dict[str, Any], {"connection_pool": pool, "key_prefix": keys.RATE_LIMIT_PREFIX}),
        on_breach=_too_many_requests,
        headers_enabled=False,  # Retry-After only on a 429 (Flask-Limiter would put it on every answer)
    )
    limiter.init_app(app)
    for limit in WRITE_LIMITS:
        value = getattr(settings, limit.setting)
        if value != RATE_LIMIT_OFF:
            _wrap(app, limit.endpoint, limiter.limit(value))
    if settings.rate_limit_reads != RATE_LIMIT_OFF:
        shared = limiter.shared_limit(settings.rate_limit_reads, scope=READS_SCOPE)
        for endpoint in read_endpoints(app):
            _wrap(app, endpoint, shared)
    app.register_error_handler(RateLimitExceeded, _rate_limit_exceeded)
    app.extensions[LIMITER_EXTENSION_KEY] = limiter
    return limiter


def limited_endpoints(settings: Settings, app: Flask) -> list[str]:
    """The endpoints a limit applies to under ``settings``."""
    found = [limit.endpoint for limit in WRITE_LIMITS if getattr(settings, limit.setting) != RATE_LIMIT_OFF]
    return found + (read_endpoints(app) if settings.rate_limit_reads != RATE_LIMIT_OFF else [])


def _refuse_limited_endpoints(app: Flask, settings: Settings, why: str) -> None:
    message = (f"{why} This endpoint is rate-limited, and its limits are counted in Redis, which must run when the "
               "webapp starts: restart the webapp once Redis runs.")

    def refuse(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
        @functools.wraps(view)
        def refused(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            raise ConfigError(message)  # 503, like every request that needs a Redis that is not there

        return refused

    for endpoint in limited_endpoints(settings, app):
        _wrap(app, endpoint, refuse)


def read_endpoints(app: Flask) -> list[str]:
    """Endpoints that only read (GET), except static files, health checks and Prometheus scrapes."""
    found = {rule.endpoint for rule in app.url_map.iter_rules()
             if rule.methods and "GET" in rule.methods and not rule.methods - {"GET", "HEAD", "OPTIONS"}
             and rule.rule not in NEVER_LIMITED and rule.endpoint.rpartition(".")[2] != "static"}
    return sorted(found)


def _wrap(app: Flask, endpoint: str, decorator: Any) -> None:
    # Flask-Limiter checks a decorated limit when the decorated view runs, so the app's view is replaced.
    app.view_functions[endpoint] = decorator(app.view_functions[endpoint])


def retry_after_s(limit: RequestLimit, *, now: float | None = None) -> int:
    """Whole seconds until the limit lets one more request through (at least 1)."""
    reset_at = limit.window.reset_time  # exact; RequestLimit.reset_at rounds up to the next second and adds one
    now = time.time() if now is None else now
    return max(1, math.ceil(reset_at - now))


def describe(limit: RequestLimit) -> str:
    """``30 per minute``, ``10 per hour``, ``100 per 5 minutes``."""
    item = limit.limit
    unit = item.GRANULARITY.name
    window = unit if item.multiples == 1 else f"{item.multiples} {unit}s"
    return f"{item.amount} per {window}"


def _too_many_requests(limit: RequestLimit) -> Response:
    from .errors import error_response

    wait_s = retry_after_s(limit)
    what = "reads" if limit.shared else f"{request.method} {request.path}"
    message = (f"Too many requests: {what} allows {describe(limit)} from one client address. "
               f"Try again in {wait_s} s.")
    body, status = error_response(message, 429, limit=describe(limit), retry_after_s=wait_s)
    response = body if isinstance(body, Response) else Response(body, status=status, mimetype="text/html")
    response.status_code = status
    response.headers["Retry-After"] = str(wait_s)
    return response


def _rate_limit_exceeded(exc: RateLimitExceeded) -> ResponseReturnValue:
    if exc.response is not None:
        return exc.response
    return Response("Too many requests.", status=429)  # pragma: no cover - on_breach always answers
