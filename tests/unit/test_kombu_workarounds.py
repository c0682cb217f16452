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
