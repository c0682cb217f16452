"""Which task names a worker runs: only those of the queues it consumes, never Celery's built-ins.

Every Hydra worker (control, intake, volunteer) uses :class:`GatedConsumer` (Celery's
``worker_consumer`` setting). It keeps Celery's own consumer but narrows the table of runnable
tasks to the role the worker's queues give it:

* a worker consuming ``hydra.intake`` runs only ``hydra.intake`` (and must consume nothing else:
  anyone with a volunteer's credentials can put anything on that queue);
* a control worker (``hydra.control``) runs dispatch, sweep and checkpoint;
* a volunteer (region and direct queues) runs only ``hydra.compute_chunk`` and ``hydra.compute_bundle``.

Any other task name, a message that is not a task, or one in a refused format (pickle) is
rejected without running and without writing a result; on the intake worker it is counted in
``hydra:intake:dropped``. Celery's built-in tasks (``celery.accumulate``, ``celery.backend_cleanup``,
chords, ...) are therefore callable by nobody.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Iterable

import redis
from celery.worker.consumer import Consumer
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from .. import keys
from ..errors import ConfigError
from ..intake import Dropped

log = logging.getLogger(__name__)

INTAKE_TASKS = frozenset({"hydra.intake"})
CONTROL_TASKS = frozenset({"hydra.dispatch", "hydra.sweep", "hydra.checkpoint"})
VOLUNTEER_TASKS = frozenset({"hydra.compute_chunk", "hydra.compute_bundle"})


def allowed_tasks(queues: Iterable[str]) -> frozenset[str]:
    """The task names a worker consuming ``queues`` may run; ConfigError for a mix that would let
    volunteers' messages reach control tasks."""
    names = set(queues)
    if keys.INTAKE_QUEUE in names:
        others = {q for q in names if q != keys.INTAKE_QUEUE and not q.endswith(".dq2")}
        if others:
            raise ConfigError(f"The intake worker must consume {keys.INTAKE_QUEUE} alone (got also "
                              f"{', '.join(sorted(others))}): volunteers may publish anything there.")
        return INTAKE_TASKS
    if keys.CONTROL_QUEUE in names:
        return CONTROL_TASKS
    return VOLUNTEER_TASKS


def _frees_the_slot(original: Any) -> Any:
    def method(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, delivery_tag, *args, **kwargs)
        except BaseException:
            virtual.QoS.ack(self, delivery_tag)  # only forgets the message here; Redis keeps it as unacked
            raise

    method.hydra_frees_the_slot = True  # type: ignore[attr-defined]
    return method


def release_prefetch_slots_on_failed_acks() -> None:
    """Work around a kombu bug (5.7.0, kombu/transport/redis.py ``QoS.ack`` and ``reject``): the
    prefetch slot of a message is freed only after the Redis call that removes it from the unacked
    index succeeded. When that call fails (the connection died while the task ran: Celery logs
    "Couldn't ack ..., reason: network:TimeoutError"), the slot stays taken for ever; with prefetch 1
    ``can_consume()`` is then False, the consumer never sends another BRPOP, so it never notices that
    its connection is dead either, and the worker idles while its heartbeats (another connection) say
    it is fine: a worker stuck after a broker outage until restarted (measured with the silent
    partition of tests/fault/test_broker_outage.py). With the slot freed, the next BRPOP goes out, a
    dead connection is dropped by kombu's BRPOP health check and the consumer reconnects. The message
    itself stays in Redis's unacked set and is redelivered after the visibility timeout; a chunk
    computed twice is a duplicate the intake ignores."""
    for name in ("ack", "reject"):
        original = getattr(kombu_redis.QoS, name)
        if not getattr(original, "hydra_frees_the_slot", False):
            setattr(kombu_redis.QoS, name, _frees_the_slot(original))


release_prefetch_slots_on_failed_acks()


def _refuses_without_a_client(original: Any) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.exceptions.ConnectionError(
                "the broker connection is closed already (kombu closes this channel a second time)")
        return original(self, *args, **kwargs)

    method.hydra_refuses_without_a_client = True  # type: ignore[attr-defined]
    return method


def survive_a_second_close_after_a_lost_connection() -> None:
    """Work around a Celery/kombu 5.7.0 bug that makes a worker exit ("Unrecoverable error:
    AttributeError: 'NoneType' object has no attribute 'hostname'") when its Redis connection is reset
    while it holds an unacknowledged message. After a connection loss the consumer
    (``on_connection_error_after_connected``) first calls ``connection.collect()``: closing the channel
    there fails on the dead socket before the channel counts as closed, and the transport then lets go
    of its client. Then ``connection.close()`` closes the channel again, and restoring the unacked
    messages builds a new connection pool from that missing client. Raising a connection error there
    instead lets Celery ignore it as it does every other error of a dead connection, and reconnect;
    the unacked message stays in Redis and is restored when its visibility timeout passes (a chunk
    computed twice is a duplicate the intake ignores). Seen in tests/fault/test_broker_outage.py: the
    intake worker died in 1 of 2 runs of the kill -9 test here, and in CI."""
    original = kombu_redis.Channel._connparams
    if not getattr(original, "hydra_refuses_without_a_client", False):
        setattr(kombu_redis.Channel, "_connparams", _refuses_without_a_client(original))


survive_a_second_close_after_a_lost_connection()


def _one_client_per_pool(original: Any) -> Any:
    def method(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:  # kombu keeps that one itself (Channel.client); its connection is the BRPOP's
            return original(self, asynchronous)
        pool = self.pool
        cached = self.__dict__.get("_hydra_client")
        if cached is not None and cached.connection_pool is pool:
            return cached
        client = original(self, False)
        self.__dict__["_hydra_client"] = client
        return client

    method.hydra_one_client_per_pool = True  # type: ignore[attr-defined]
    return method


def reuse_one_redis_client_per_channel() -> None:
    """kombu's Redis channel builds a new ``redis.Redis`` for every publish, every delivered message
    (its unacked bookkeeping) and every ack (``conn_or_acquire`` without a client), and redis-py 8
    builds each one's table of about 170 response callbacks: 170 µs per client here, about 1 ms of
    CPU per near-empty chunk (2 messages, 3 clients each). The client is only a handle on the
    channel's connection pool, which lends each command its own connection, so one per pool serves
    them all; a new pool (after a reconnect) gets a new client."""
    original = kombu_redis.Channel._create_client
    if not getattr(original, "hydra_one_client_per_pool", False):
        setattr(kombu_redis.Channel, "_create_client", _one_client_per_pool(original))


reuse_one_redis_client_per_channel()

#: How the consumer retries a lost broker: 1 s, then 1 s longer each time, at most 5 s apart. Celery's
#: consumer hard-codes kombu's 2, 4, 6, ... 30 s (no setting), so a worker could sit idle for up to
#: 30 s after Redis came back (measured: 5 s late after a 15 s outage). A refused connect costs Redis
#: nothing, and a server that does not answer is bounded by HYDRA_BROKER_TIMEOUT_S / 3 per attempt.
RECONNECT_INTERVALS = {"interval_start": 1, "interval_step": 1, "interval_max": 5}


class GatedConsumer(Consumer):
    """Celery's consumer with the runnable tasks narrowed by :func:`allowed_tasks`, which reconnects
    to a lost broker at most :data:`RECONNECT_INTERVALS` ``interval_max`` seconds apart."""

    def ensure_connected(self, conn: Any) -> Any:
        # Celery calls conn.ensure_connection(errback, max_retries, callback=...) with kombu's default
        # intervals; give that one call ours (ARCHITECTURE.md, Broker outages).
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_INTERVALS)
        return super().ensure_connected(conn)

    def update_strategies(self) -> None:
        super().update_strategies()
        queues = list(self.app.amqp.queues.consume_from or self.app.amqp.queues)
        self.hydra_allowed = allowed_tasks(queues)
        self.hydra_is_intake = self.hydra_allowed is INTAKE_TASKS
        for name in list(self.strategies):
            if name not in self.hydra_allowed:
                del self.strategies[name]  # the task handler holds this very dict

    def _refuse(self, message: Any, why: str, reason: str) -> None:
        log.warning("refused a message (%s) on %s", why[:200], self.hostname)
        try:
            message.reject_log_error(log, self.connection_errors)
        finally:
            if getattr(self, "hydra_is_intake", False):
                try:
                    self.app.redis.hincrby(keys.INTAKE_DROPPED, reason, 1)
                except Exception:  # noqa: BLE001 - counting must not stop the consumer
                    log.warning("could not count a dropped intake message", exc_info=True)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None) or {}
        name = str(headers.get("task", "?"))[:100]
        self._refuse(message, f"task {name!r} is not run by this worker", Dropped.UNKNOWN_TASK.value)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._refuse(message, "not a task message", Dropped.MALFORMED.value)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._refuse(message, f"invalid task message: {exc}", Dropped.MALFORMED.value)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        log.warning("refused a message in a format that is not accepted (%s) on %s",
                    getattr(message, "content_type", "?"), self.hostname)
        message.ack()  # as Celery does: it can never be decoded, so never redeliver it
        if getattr(self, "hydra_is_intake", False):
            try:
                self.app.redis.hincrby(keys.INTAKE_DROPPED, Dropped.MALFORMED.value, 1)
            except Exception:  # noqa: BLE001
                log.warning("could not count a dropped intake message", exc_info=True)
