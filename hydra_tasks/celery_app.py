"""The Celery app factory: queues, routes, JSON only, late acks, and the sweep schedule.

Settings are read when Celery first needs its configuration (``on_configure``), not at
import, so ``import hydra_tasks`` never touches the environment or the network.
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

import click
import redis
from celery import Celery, signals
from kombu.exceptions import OperationalError
from kombu.utils.url import sanitize_url

from . import keys
from .errors import ConfigError, HydraError
from .redis_conn import ca_file, client_for, is_sentinel, kombu_ssl, kombu_transport_options, kombu_url, redact
from .settings import Settings

#: What a client sees when Redis is down or unreachable (redis-py directly, or through kombu).
REDIS_DOWN_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError,
)


def resolve_redis_url(settings: Settings) -> str:
    """HYDRA_REDIS_URL, else the embedded server `hydra up` runs for this data dir."""
    if settings.redis_url:
        return settings.redis_url
    from .embedded import running_url

    url = running_url(settings.redis_dir)
    if url is None:
        raise ConfigError(
            f"HYDRA_REDIS_URL is not set and no embedded Redis is running for {settings.redis_dir}. "
            "Start one with `hydra up` (or `hydra demo`), or set HYDRA_REDIS_URL=redis://:PASSWORD@HOST:6379/0."
        )
    return url


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    if is_sentinel(url):
        return redact(url)
    try:
        return str(sanitize_url(url))
    except Exception:  # noqa: BLE001 - never let a malformed URL leak through an error message
        return "(the configured Redis URL)"


def redis_down_message(url: str | None, exc: BaseException) -> str:
    """One line saying which Redis could not be used, why, and what to do."""
    where = f" at {redacted(url)}" if url else ""
    chain = _causes(exc)
    bad_cert = [e for e in chain if isinstance(e, ssl.SSLCertVerificationError)]
    if bad_cert:
        why = bad_cert[0].verify_message or str(bad_cert[0])
        return (f"Redis{where} presented a certificate this machine does not trust ({why}); set HYDRA_REDIS_CA "
                "to the CA file (ca.pem) the operator gave you, and check the host name in HYDRA_REDIS_URL is one "
                "the certificate names")
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return (f"the TLS handshake with Redis{where} failed ({_reason(chain)}); check that the server speaks "
                "TLS (rediss://) and that HYDRA_REDIS_CA is the operator's CA")
    if any(isinstance(e, redis.exceptions.AuthenticationError) for e in chain):
        return (f"Redis{where} refused the credentials ({_reason(chain)}); "
                "fix the password in HYDRA_REDIS_URL (redis://:PASSWORD@HOST:PORT/DB)")
    return f"cannot reach Redis{where} ({_reason(chain)}); start it with `hydra up` or fix HYDRA_REDIS_URL"


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _reason(chain: list[BaseException]) -> str:
    for err in reversed(chain):  # the root cause first: "Connection refused", "Name or service not known"
        if isinstance(err, OSError) and err.strerror:
            return str(err.strerror)
    return str(chain[0]).strip().rstrip(".") or type(chain[0]).__name__


def tcp_keepalive_options(timeout_s: float) -> dict[int, int]:
    """redis-py's ``socket_keepalive_options``: a connection whose peer has vanished without a FIN
    (a partition, a NAT that forgot it, a host that lost power) is dropped by the kernel within
    ``timeout_s``, not after Linux's ~15 min of retransmissions (tcp_retries2) or 2 h of idle
    keepalive. Idle: the first probe after timeout_s/3, then 3 probes timeout_s/6 apart (15 s: 5 +
    3 x 2 = 11 s). Unacknowledged data (a publish into the void): TCP_USER_TIMEOUT, timeout_s.
    Options this OS lacks are left out (macOS has no TCP_KEEPIDLE or TCP_USER_TIMEOUT)."""
    import socket

    wanted = {"TCP_KEEPIDLE": max(1, int(timeout_s / 3)), "TCP_KEEPINTVL": max(1, int(timeout_s / 6)),
              "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": int(timeout_s * 1000)}
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def broker_timeouts(settings: Settings) -> dict[str, Any]:
    """The connection options of kombu's Redis transport (``broker_transport_options``), so that a
    worker notices a broker that went away silently within about ``HYDRA_BROKER_TIMEOUT_S`` (t) and
    reconnects by itself (ARCHITECTURE.md, Broker outages). Without them kombu waits for ever on a
    dead socket: a publish (a result, a heartbeat) hangs, and so does the consumer's BRPOP."""
    t = settings.broker_timeout_s
    return {
        # A command (publish, ack, the unacked bookkeeping) waits at most t for Redis's reply. Over a
        # WAN a big result must still fit (a 128 px Mandelbrot tile's counts are 64 KiB before encoding;
        # 15 s carries ~0.5 MB at 300 kbit/s). Redis answers in milliseconds: a longer wait means it is gone.
        "socket_timeout": t,
        # A new connection (the reconnect loop) waits at most t/3 (5 s; a TCP + TLS handshake at 300 ms
        # RTT takes ~1 s), not the kernel's 127 s of SYN retries, before the next attempt.
        "socket_connect_timeout": max(1.0, t / 3),
        "socket_keepalive": True,
        "socket_keepalive_options": tcp_keepalive_options(t),
        # kombu drops a BRPOP connection whose reply is overdue by brpop_timeout (1 s) + this, checked
        # every this: a consumer on a frozen or blackholed server reconnects within 1 + 2 x t/3 s
        # (11 s for 15; kombu's default 25 gives 51 s); redis-py pings a connection idle this long.
        "health_check_interval": max(1, int(t / 3)),
    }


#: How a publish (a volunteer's result or heartbeat, a chunk sent to a worker, beat's sweep) retries
#: while Redis is away: at once, then 1, 2, 3, 4 s later, then every 5 s; 12 retries, ~45 s of waiting
#: (plus up to HYDRA_BROKER_TIMEOUT_S per attempt on a server that does not answer). A restart of Redis
#: (a few seconds) so loses no computed result; after a longer outage the chunk's lease (60 s) has
#: expired and it is computed again anyway. (Celery's default: 3 retries 0.2 s apart, which loses
#: every result finished while Redis restarts.)
PUBLISH_RETRY_POLICY: dict[str, float] = {"max_retries": 12, "interval_start": 0, "interval_step": 1,
                                          "interval_max": 5}


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    config = _celery_config(settings, redis_url)
    # rediss://: kombu and the result backend verify the server like every other client (redis_conn)
    use_ssl = kombu_ssl(redis_url, ca_file(settings))
    if use_ssl is not None:
        config.update(broker_use_ssl=use_ssl, redis_backend_use_ssl=dict(use_ssl))
    return follow_sentinels(config, settings, redis_url)


def follow_sentinels(config: dict[str, Any], settings: Settings, redis_url: str) -> dict[str, Any]:
    """For a Sentinel URL (redis_conn: ``redis+sentinel://``), make the broker follow the primary:
    kombu's ``sentinel://`` URL is already in ``broker_url`` (``kombu_url``); this adds the transport
    options ``master_name`` and ``sentinel_kwargs`` to whatever ``broker_transport_options`` hold, and
    drops the result backend (Hydra ignores results). Other URLs: ``config`` unchanged."""
    extra = kombu_transport_options(redis_url, ca_file(settings))
    if extra:
        config["broker_transport_options"] = {**config.get("broker_transport_options", {}), **extra}
        config.pop("result_backend", None)
        config.pop("redis_backend_use_ssl", None)
    return config


def _celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    return {
        "broker_url": kombu_url(redis_url),
        "result_backend": kombu_url(redis_url),
        "hydra_redis_url": redis_url,  # the same server as redis-py spells it (HydraCelery.redis_url)
        # JSON only: a pickle message is refused by every worker, so no message can run code.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # At-least-once: ack after the task ran; a killed worker's task goes back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Every worker also consumes its own queue (<hostname>.dq2): chunks sized for a worker go there.
        "worker_direct": True,
        "task_ignore_result": True,
        "task_default_queue": keys.CONTROL_QUEUE,
        "task_create_missing_queues": True,
        "task_routes": {**{name: {"queue": keys.CONTROL_QUEUE}
                           for name in ("hydra.dispatch", "hydra.sweep", "hydra.checkpoint")},
                        "hydra.intake": {"queue": keys.INTAKE_QUEUE}},
        # Each worker runs only its role's tasks, never Celery's built-ins (worker/gate.py).
        "worker_consumer": "hydra_tasks.worker.gate:GatedConsumer",
        # A backstop only: lost work is recovered by lease expiry + the sweeper, within seconds.
        "broker_transport_options": {"visibility_timeout": 3600, **broker_timeouts(settings)},
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        # A chunk being computed when the connection drops runs on: its result is published (with the
        # retries above) once Redis is back. (True would kill it to have it redelivered: work lost.)
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A worker (or beat) that cannot reach Redis logs one line and tries again, at most 30 s apart,
        # for as long as it runs: a volunteer's machine keeps waiting for the coordinator to come back.
        # (Celery's default gives up after 100 tries, ~50 min, with a traceback.)
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Task events cost ~20% of pipeline throughput, so they are off until Flower starts: it
        # turns them on in every worker with the `enable_events` control command.
        "worker_send_task_events": False,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "beat_schedule": {
            "hydra-sweep": {
                "task": "hydra.sweep",
                "schedule": settings.sweep_interval_s,
                "options": {"queue": keys.CONTROL_QUEUE, "expires": max(settings.sweep_interval_s * 2, 1.0)},
            },
            "hydra-ledger-checkpoint": {
                "task": "hydra.checkpoint",
                "schedule": settings.checkpoint_interval_s,
                "options": {"queue": keys.CONTROL_QUEUE, "expires": max(settings.checkpoint_interval_s, 1.0)},
            },
        },
    }


class HydraCelery(Celery):
    """A Celery app that carries Hydra's settings and a Redis client for its state."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._hydra_settings = settings
        self._hydra_redis: redis.Redis | None = None
        super().__init__("hydra_tasks", include=["hydra_tasks.tasks"], **kwargs)

    @property
    def settings(self) -> Settings:
        if self._hydra_settings is None:
            self._hydra_settings = Settings.from_env()
        return self._hydra_settings

    @property
    def redis_url(self) -> str:
        """The Redis URL as redis-py takes it (kombu spells a Unix socket ``redis+socket://``)."""
        return str(self.conf.get("hydra_redis_url") or self.conf.broker_url)

    @property
    def redis(self) -> redis.Redis:
        """A client for Hydra's state (same server as the broker), strings decoded."""
        if self._hydra_redis is None:
            # TCP: a connection to a vanished server is dropped by the kernel (tcp_keepalive_options);
            # a Unix socket (the control plane beside its Redis) has no keepalive and needs none
            tcp = {} if self.redis_url.startswith("unix:") else {
                "socket_keepalive": True,
                "socket_keepalive_options": tcp_keepalive_options(self.settings.broker_timeout_s)}
            self._hydra_redis = client_for(self.settings, self.redis_url, decode_responses=True,
                                           health_check_interval=30, socket_timeout=15, socket_connect_timeout=5,
                                           **tcp)
        return self._hydra_redis

    def on_configure(self) -> None:  # called by Celery when the config is first needed
        try:
            if self.settings.join_file:  # a volunteer: its own Redis user, its own queues only
                from .worker import join

                creds = join.load(self.settings)
                url = self.settings.redis_url or creds.redis_url
                config = join.celery_settings(creds, celery_config(self.settings, url),
                                              prefetch=self.settings.inflight_per_slot)
            else:
                url = resolve_redis_url(self.settings)
                config = celery_config(self.settings, url)
        except HydraError as exc:
            _exit_under_celery_cli(str(exc))
            raise
        # config_from_object, not conf.update: an update runs Celery's change callbacks, which read
        # the configuration that is being loaded (infinite recursion in e.g. `celery purge`).
        self.config_from_object(config)
        _check_redis_under_celery_cli(self.settings, url)


# --- the plain `celery -A hydra_tasks ...` commands -------------------------------------------
# Their errors would otherwise be tracebacks. A click.ClickException is what celery's own commands
# raise for a one-line "Error: ..." and an exit code; it passes through their error handlers.
# Long-running commands (worker, beat, flower, events) keep retrying a Redis that is down, with one
# log line per attempt; commands that need no broker (report, graph, ...) do not check it; every other
# command (inspect, status, control, purge, call, result, ...) checks Redis once and exits 2 if it is down.
_NO_REDIS_CHECK = frozenset({"worker", "beat", "flower", "events", "multi", "report", "graph", "upgrade",
                             "logtool", "shell"})


class CeleryCommandError(click.ClickException):
    exit_code = 2


def _celery_cli_command() -> str | None:
    """The subcommand when running under the `celery` command line (e.g. "worker"), else None."""
    celery_cli = sys.modules.get("celery.bin.celery")
    ctx = click.get_current_context(silent=True)
    if celery_cli is None or ctx is None:
        return None
    root = ctx.find_root()
    if root.command is not getattr(celery_cli, "celery", None):
        return None
    return root.invoked_subcommand or ""


def _exit_under_celery_cli(message: str) -> None:
    if _celery_cli_command() is not None:
        raise CeleryCommandError(message)


def _check_redis_under_celery_cli(settings: Settings, url: str) -> None:
    command = _celery_cli_command()
    if command is None or command in _NO_REDIS_CHECK:
        return
    client = client_for(settings, url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except REDIS_DOWN_ERRORS as exc:
        raise CeleryCommandError(redis_down_message(url, exc)) from None
    finally:
        client.close()


def create_app(settings: Settings | None = None) -> HydraCelery:
    """Build the app. Pass settings explicitly (tests), or let it read HYDRA_* once on first use."""
    app = HydraCelery(settings)
    _connect_worker_signals()
    return app


_signals_connected = False


def _connect_worker_signals() -> None:
    global _signals_connected
    if _signals_connected:
        return
    from .worker import runtime

    signals.worker_ready.connect(lambda sender, **_: runtime.on_worker_ready(sender), weak=False)
    signals.worker_shutdown.connect(lambda sender, **_: runtime.on_worker_shutdown(_app_of(sender)), weak=False)
    _signals_connected = True


def _app_of(sender: Any) -> Any:
    from celery import current_app

    return getattr(sender, "app", None) or current_app
