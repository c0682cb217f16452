"""The two kombu workarounds in hydra_tasks/worker/gate.py, at the level where they act. The faults they
fix are seen end to end, with real Redis outages, in tests/fault/test_broker_outage.py."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis

from hydra_tasks.worker import gate


def test_a_channel_whose_transport_let_go_of_its_client_refuses_with_a_connection_error() -> None:
    """kombu 5.7 closes a channel a second time after a lost connection, when the transport has no
    client any more: the new pool must fail as a dead connection does (which Celery ignores and
    reconnects), not with an AttributeError that ends the worker."""
    gate.survive_a_second_close_after_a_lost_connection()  # idempotent: applied at import already
    assert getattr(kombu_redis.Channel._connparams, "hydra_refuses_without_a_client", False)
    conn = Connection("redis://127.0.0.1:1/0")  # nothing is sent: no server needed
    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)
    channel.connection = conn.transport
    assert channel._connparams()["port"] == 1  # with its client: kombu's own parameters
    conn.transport.client = None
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._connparams()
    # ... one of the errors Celery's consumer ignores while it closes a dead connection:
    with ignore_errors(Connection("redis://127.0.0.1:1/0")):
        channel._connparams()


def test_the_workarounds_are_applied_once() -> None:
    before = (kombu_redis.Channel._connparams, kombu_redis.QoS.ack, kombu_redis.QoS.reject)
    gate.survive_a_second_close_after_a_lost_connection()
    gate.release_prefetch_slots_on_failed_acks()
    assert (kombu_redis.Channel._connparams, kombu_redis.QoS.ack, kombu_redis.QoS.reject) == before


def test_a_channel_publishes_consumes_and_acks_through_one_redis_client_per_pool(redis_url: str) -> None:
    """Real Redis: messages still go out, arrive and are acked, with one client built per connection
    pool instead of one per call (a reconnect's new pool gets its own)."""
    gate.reuse_one_redis_client_per_channel()  # idempotent: applied at import already
    built = []
    init = redis.Redis.__init__

    def counting(self: redis.Redis, *args: object, **kwargs: object) -> None:
        built.append(self)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    redis.Redis.__init__ = counting  # type: ignore[method-assign]
    try:
        with Connection(redis_url) as conn:
            queue = conn.SimpleQueue("hydra-test-one-client")
            for k in range(20):
                queue.put({"k": k})
            got = []
            for _ in range(20):
                message = queue.get(timeout=5)
                got.append(message.payload["k"])
                message.ack()
            assert got == list(range(20))
            channel = queue.channel
            sync = [c for c in built if c.connection_pool is channel.pool]
            assert len(sync) == 1, f"{len(sync)} clients built for one pool"
            channel._pool = None  # what a reconnect does: the next call gets a new pool, and a new client
            queue.put({"k": 20})
            assert channel._create_client() is not sync[0]
            assert channel._create_client().connection_pool is channel.pool
            message = queue.get(timeout=5)
            assert message.payload == {"k": 20}
            message.ack()
            queue.clear()
            queue.close()
    finally:
        redis.Redis.__init__ = init  # type: ignore[method-assign]


def test_redis_py_parses_replies_and_packs_commands_with_hiredis(redis_url: str) -> None:
    """pyproject installs hiredis: redis-py then parses replies (and packs commands) in C, about 8% of
    the intake's CPU per near-empty chunk (benchmarks/README.md)."""
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE, "hiredis is missing: `pip install -e .` installs it (pyproject.toml)"
    client = redis.Redis.from_url(redis_url)
    client.ping()
    connection = client.connection_pool.get_connection()
    try:
        assert type(connection._parser).__name__ == "_HiredisParser"
    finally:
        client.connection_pool.release(connection)
        client.close()
