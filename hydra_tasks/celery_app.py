"""The Celery app factory: queues, routes, JSON only, late acks, and the sweep schedule.

Settings are read when Celery first needs its configuration (``on_configure``), not at
import, so ``import hydra_tasks`` never touches the environment or the network.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, signals

from . import keys
from .errors import ConfigError
from .settings import Settings


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


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
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
        "task_routes": {name: {"queue": keys.CONTROL_QUEUE}
                        for name in ("hydra.collect_chunk", "hydra.dispatch", "hydra.sweep")},
        # A backstop only: lost work is recovered by lease expiry + the sweeper, within seconds.
        "broker_transport_options": {"visibility_timeout": 3600},
        "broker_connection_retry_on_startup": True,
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
    def redis(self) -> redis.Redis:
        """A client for Hydra's state (same server as the broker), strings decoded."""
        if self._hydra_redis is None:
            self._hydra_redis = redis.Redis.from_url(self.conf.broker_url, decode_responses=True,
                                                     health_check_interval=30, socket_timeout=15,
                                                     socket_connect_timeout=5)
        return self._hydra_redis

    def on_configure(self) -> None:  # called by Celery when the config is first needed
        self.conf.update(celery_config(self.settings, resolve_redis_url(self.settings)))


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
