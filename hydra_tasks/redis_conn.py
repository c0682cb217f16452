"""Every redis-py client Hydra makes comes from here, so a ``rediss://`` server is always verified.

For a ``rediss://`` URL the client requires a certificate chaining to ``HYDRA_REDIS_CA`` (else to
the system's CAs) whose names include the host in the URL; a server that does not present one is
refused. A plain ``redis://`` URL gets no TLS options. Celery (kombu) gets the same rule through
:func:`kombu_ssl`, used in ``celery_app.celery_config``.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import redis

from .settings import Settings

TLS_SCHEME = "rediss://"


def is_tls(url: str) -> bool:
    return url.strip().lower().startswith(TLS_SCHEME)


def ca_file(settings: Settings) -> str | None:
    """The CA a ``rediss://`` server must be signed by: ``HYDRA_REDIS_CA``; else, when the URL is the
    embedded Redis of this data dir (``HYDRA_REDIS_URL`` unset), the CA `hydra up --tls` made there;
    else None (the system's CAs)."""
    if settings.redis_ca:
        return str(os.path.expanduser(settings.redis_ca))
    if not settings.redis_url:
        from .trust.tls import tls_files

        local = tls_files(settings).ca
        if local.is_file():
            return str(local)
    return None


def kombu_url(url: str) -> str:
    """``url`` as kombu and Celery's result backend spell it: a Unix socket ``unix://user:pw@/path?db=0``
    becomes ``redis+socket://user:pw@/path``; anything else is unchanged."""
    if not url.startswith("unix://"):
        return url
    return "redis+socket://" + url[len("unix://"):].split("?", 1)[0]


def tls_options(url: str, ca: str | os.PathLike[str] | None) -> dict[str, Any]:
    """redis-py keyword arguments for ``url``: none for ``redis://``; verification for ``rediss://``."""
    if not is_tls(url):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if ca:
        options["ssl_ca_certs"] = os.fspath(ca)
    return options


def kombu_ssl(url: str, ca: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` / ``redis_backend_use_ssl`` for ``url`` (None for ``redis://``)."""
    if not is_tls(url):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if ca:
        options["ssl_ca_certs"] = os.fspath(ca)
    return options


def connect(url: str, *, ca: str | os.PathLike[str] | None = None, **options: Any) -> redis.Redis:
    """``redis.Redis.from_url(url, **options)``, verifying a ``rediss://`` server against ``ca``
    (a PEM file; None: the system's CAs). Connects lazily, like redis-py."""
    return redis.Redis.from_url(url, **tls_options(url, ca), **options)


def client_for(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """:func:`connect` with the CA that ``settings`` name (:func:`ca_file`)."""
    return connect(url, ca=ca_file(settings), **options)
