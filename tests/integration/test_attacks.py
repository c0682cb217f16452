"""Issue 11's attack suite: a volunteer enrolled exactly as a user would be (`hydra volunteer add`,
then its own credentials) tries every attack the issue lists against a real multi-machine stack
(Redis 7 over TLS only, with per-volunteer ACL users; control, intake and volunteer worker processes
that verify the server against the CA they were given). Each attack must fail
(NOPERM, dropped or rejected) and leave jobs, ledger and worker records unchanged, while an honest
volunteer of the same kind completes jobs and is paid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue
from nacl.signing import SigningKey
from redis.backoff import NoBackoff
from redis.retry import Retry

from hydra_tasks import compute, intake, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import store
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.ledger import audit
from hydra_tasks.lua import LEDGER_KEYS, scripts
from hydra_tasks.redis_conn import connect, kombu_ssl
from hydra_tasks.stack import LocalStack
from hydra_tasks.trust import envelope, identity
from hydra_tasks.trust import results as signed_results
from hydra_tasks.trust.envelope import Action
from hydra_tasks.trust.volunteers import Credentials
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import decline, run_chunk
from support import require_redis7, running_stack, wait_for, wait_for_job

pytestmark = pytest.mark.integration

SEED = 20261202


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_redis7()
    with running_stack(tmp_path_factory.mktemp("attacks"), {"eu-west": 1}, isolate=True, tls=True, adaptive=False,
                       pi_chunk_samples=20_000_000) as stack:
        yield stack


@pytest.fixture(scope="module")
def op(stack: LocalStack) -> HydraCelery:
    return create_app(stack.child_settings())


def hydra_cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(stack.settings.data_dir))  # the operator on the control host: hydra finds its Redis
    return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def mallory(stack: LocalStack) -> Credentials:
    added = hydra_cli(stack, "volunteer", "add", "mallory", "--region", "eu-west")
    assert added.returncode == 0, added.stderr
    return Credentials.load(added.stdout.strip())  # the token, as a user would paste it


@pytest.fixture(scope="module")
def mallory_key(op: HydraCelery, mallory: Credentials) -> SigningKey:
    """Mallory joins (her first signed registration carries the join secret) so that her key is bound."""
    key = SigningKey.generate()
    facts = intake.worker_facts("whatever", "eu-west", concurrency=1,
                                speeds={"pi_samples_per_s": 1e13, "mandelbrot_iters_per_s": 1e13},
                                settings=op.settings, isa="avx512")
    body = {**facts, "join": {"name": mallory.name, "secret": mallory.join_secret}}
    out = intake.handle(op.redis, op.settings, envelope.seal(key, Action.REGISTER, body), publish=lambda *a: None)
    assert out == "registered"
    return key


def ca_of(creds: Credentials) -> str:
    """The CA the credentials carry, as a file (what `hydra worker --join` stores)."""
    assert creds.ca_pem and "BEGIN CERTIFICATE" in creds.ca_pem
    path = Path(tempfile.mkdtemp(prefix="hydra-ca-")) / "ca.pem"
    path.write_text(creds.ca_pem)
    return str(path)


def as_mallory(creds: Credentials) -> redis.Redis:
    return connect(creds.redis_url, ca=ca_of(creds), decode_responses=True, retry=Retry(NoBackoff(), 0))


def celery_as(creds: Credentials) -> Celery:
    """A plain Celery client with Mallory's credentials (what `celery call`/`send_task` would use)."""
    app = Celery("mallory", broker=creds.redis_url, broker_use_ssl=kombu_ssl(creds.redis_url, ca_of(creds)))
    intake_queue = Queue(keys.INTAKE_QUEUE, Exchange(keys.INTAKE_QUEUE), routing_key=keys.INTAKE_QUEUE,
                         no_declare=True)
    app.conf.update(task_serializer="json", accept_content=["json"], task_queues=[intake_queue],
                    task_create_missing_queues=True, broker_connection_retry_on_startup=False,
                    broker_connection_max_retries=0)
    return app


def state_of(op: HydraCelery) -> dict[str, Any]:
    """Everything an attack could corrupt: jobs, the ledger, and every worker's record bar its heartbeat."""
    client = op.redis
    jobs = {j.id: (j.state.value, j.chunks_done, json.dumps(dict(j.result or {}), sort_keys=True)) for j in store.list_jobs(client)}
    workers = {w.worker_id: {k: v for k, v in client.hgetall(keys.worker(w.worker_id)).items() if k != "last_seen"}
               for w in registry.list_workers(client)}
    return {"jobs": jobs, "workers": workers, "balances": client.hgetall(keys.LEDGER_BALANCES),
            "stats": client.hgetall(keys.LEDGER_STATS), "journal": client.xlen(keys.LEDGER_JOURNAL),
            "config": op.redis.config_get("appendfsync"), "users": sorted(client.acl_users())}


def noperm(call: Callable[[], Any]) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        call()


def any_chunk(op: HydraCelery, job_id: str) -> dict[str, Any]:
    """One chunk of the job as it was sent to a worker (π chunks are cut as they are leased): from the
    job's chunk specs while it runs, else (it ended, and its specs were compacted) from the entry a
    worker's results log keeps for a chunk of it."""
    def find() -> dict[str, Any] | None:
        specs = op.redis.hvals(keys.job_chunks(job_id))
        if specs:
            return dict(json.loads(specs[0]))
        for worker_id in op.redis.smembers(keys.WORKERS):
            for entry in map(json.loads, op.redis.lrange(keys.worker_results(worker_id), -100, -1)):
                if entry["job"] == job_id and entry.get("spec"):
                    return dict(json.loads(entry["spec"]))
        return None
    return dict(wait_for(find, timeout_s=30, what="a chunk to be cut"))


def balance(op: HydraCelery, account: str) -> int:
    return int(op.redis.hget(keys.LEDGER_BALANCES, account) or 0)


def alice(op: HydraCelery) -> registry.WorkerInfo:
    (worker,) = [w for w in registry.list_workers(op.redis) if w.worker_id == "eu-west-1@hydra"]
    return worker


def test_an_honest_volunteer_joins_with_its_credentials_computes_and_is_paid(op: HydraCelery,
                                                                            stack: LocalStack) -> None:
    worker = alice(op)
    assert stack.procs["eu-west-1"].log_tail(200).count("Connected to rediss://eu-west-1:**@") >= 1
    job = wait_for_job(op, submit_job(op, {"kind": "pi", "params": {"samples": 60_000_000, "seed": SEED}}).id)
    assert job.state == "done" and job.result["hits"] == compute.pi_hits(SEED, 0, 60_000_000)
    assert balance(op, worker.public_key) > 0
    denied = [e for e in op.redis.acl_log() if e.get("username") == "eu-west-1"]
    assert denied == [], f"the honest volunteer was refused something: {denied}"


def test_a_volunteers_credentials_reach_nothing_of_the_control_plane(
        op: HydraCelery, stack: LocalStack, mallory: Credentials, mallory_key: SigningKey, tmp_path: Path) -> None:
    before = state_of(op)
    victim = alice(op)
    r = as_mallory(mallory)
    assert r.ping()
    # Her credentials over plaintext, or without the CA, get nowhere: the server speaks TLS only.
    assert mallory.redis_url.startswith("rediss://")
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(mallory.redis_url.replace("rediss://", "redis://"), socket_timeout=5,
                             retry=Retry(NoBackoff(), 0)).ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        connect(mallory.redis_url, ca=None, retry=Retry(NoBackoff(), 0)).ping()  # the system's CAs: refused
    # Redis administration: files on the control host, durability, modules, replication, users, debugging.
    noperm(lambda: r.config_set("dir", str(tmp_path)))
    noperm(lambda: r.config_set("dbfilename", "authorized_keys"))
    noperm(lambda: r.save())
    noperm(lambda: r.bgsave())
    noperm(lambda: r.config_set("appendfsync", "no"))
    # MODULE and DEBUG are also off in Redis 7's own config; the ACL refuses them for the volunteer too.
    for command in (("MODULE", "LOAD", "/tmp/evil.so"), ("DEBUG", "SLEEP", "0"), ("SHUTDOWN", "NOSAVE")):
        answer = op.redis.execute_command("ACL", "DRYRUN", mallory.name, *command)
        assert "no permissions" in str(answer).lower(), answer
        with pytest.raises(redis.exceptions.ResponseError):
            r.execute_command(*command)
    noperm(lambda: r.execute_command("REPLICAOF", "127.0.0.1", "1"))
    noperm(lambda: r.execute_command("ACL", "SETUSER", "mallory", "+@all", "~*"))
    noperm(lambda: r.execute_command("CLIENT", "KILL", "USER", "hydra"))
    noperm(lambda: r.keys("*"))
    # The ledger: the MINT script itself, any script, a flush.
    forged_mint = json.dumps({"account": identity.public_hex(mallory_key), "amount": 10**12, "key": "x:y"})
    noperm(lambda: r.evalsha(scripts(op.redis)._mint.sha, len(LEDGER_KEYS), *LEDGER_KEYS, forged_mint))
    noperm(lambda: r.eval("return redis.call('flushall')", 0))
    noperm(lambda: r.flushall())
    noperm(lambda: r.flushdb())
    noperm(lambda: r.execute_command("FUNCTION", "FLUSH"))
    # State: a victim's payment key, its record (cpu_limit 0, region), a ghost record, the journal.
    noperm(lambda: r.hset(keys.worker(victim.worker_id), "public_key", identity.public_hex(mallory_key)))
    noperm(lambda: r.hset(keys.worker(victim.worker_id), mapping={"cpu_limit": "0", "region": "nowhere"}))
    noperm(lambda: r.hset(keys.worker("ghost@x"), mapping={"pi_samples_per_s": "1e13", "state": "online"}))
    noperm(lambda: r.sadd(keys.WORKERS, "ghost@x"))
    noperm(lambda: r.xadd(keys.LEDGER_JOURNAL, {"reason": "chunk accepted"}))
    noperm(lambda: r.hgetall(keys.LEDGER_BALANCES))
    # Queues: the control queue, the intake queue's contents, another volunteer's queue.
    noperm(lambda: r.lpush(keys.CONTROL_QUEUE, "{}"))
    noperm(lambda: r.brpop([keys.INTAKE_QUEUE], timeout=1))
    noperm(lambda: r.lrange(keys.INTAKE_QUEUE, 0, -1))
    noperm(lambda: r.delete(keys.INTAKE_QUEUE))
    noperm(lambda: r.brpop([keys.direct_queue(victim.worker_id)], timeout=1))
    # Remote control: broadcast shutdown to every node (the pidbox channel).
    noperm(lambda: r.publish("/0.celery.pidbox", "{}"))
    thief = celery_as(mallory)
    with pytest.raises(Exception) as refused:
        thief.control.broadcast("shutdown")
    assert "NOPERM" in repr(refused.value) or "no permissions" in str(refused.value).lower()
    # 5,000 dispatch messages cannot reach the control queue at all.
    with pytest.raises(Exception) as refused:
        thief.send_task("hydra.dispatch", queue=keys.CONTROL_QUEUE)
    assert "NOPERM" in repr(refused.value) or "no permissions" in str(refused.value).lower()
    assert stack.procs["control"].alive and stack.procs["intake"].alive
    assert state_of(op) == before


def test_what_a_volunteer_may_send_the_intake_cannot_forge_or_disrupt(
        op: HydraCelery, stack: LocalStack, mallory: Credentials, mallory_key: SigningKey) -> None:
    victim = alice(op)
    thief = celery_as(mallory)
    job = submit_job(op, {"kind": "pi", "params": {"samples": 400_000_000, "seed": SEED + 1}})
    chunk = any_chunk(op, job.id)
    before_drops = intake.dropped_counts(op.redis)
    forged = run_chunk(chunk, attempt=1, worker_id=victim.worker_id, region="eu-west", key=mallory_key)
    messages: list[tuple[str, list[Any]]] = [
        # Results, failures and declines in the victim's name, signed by Mallory's key.
        ("hydra.intake", [envelope.seal(mallory_key, Action.RESULT, forged)]),
        ("hydra.intake", [envelope.seal(mallory_key, Action.RESULT, {**forged, "error": "KernelError: forged"})]),
        ("hydra.intake", [envelope.seal(mallory_key, Action.RESULT, decline(
            chunk, attempt=1, worker_id=victim.worker_id, region="eu-west", reason="on battery",
            key=mallory_key))]),
        # The victim's registration, heartbeat and grid report, with Mallory's key.
        ("hydra.intake", [envelope.seal(mallory_key, Action.OFFLINE, {"worker_id": victim.worker_id})]),
        # A ghost in a region Mallory was not admitted to, claiming 10^13 samples/s.
        ("hydra.intake", [envelope.seal(mallory_key, Action.REGISTER, intake.worker_facts(
            "ghost@x", "us-east", concurrency=64, speeds={"pi_samples_per_s": 1e13, "mandelbrot_iters_per_s": 1e13},
            settings=op.settings, isa="avx512"))]),
        # Unsigned and tampered messages, the old result task, Celery built-ins, and a flood of dispatches.
        ("hydra.intake", [{"worker_id": victim.worker_id, "hits": 1}]),
        ("hydra.collect_chunk", [forged]),
        ("celery.accumulate", [1, 2]),
        ("celery.backend_cleanup", []),
    ] + [("hydra.dispatch", [])] * 200
    for name, args in messages:
        thief.send_task(name, args=args, queue=keys.INTAKE_QUEUE)
    expected = len(messages)

    def all_dropped() -> bool:
        now = intake.dropped_counts(op.redis)
        return sum(now.values()) - sum(before_drops.values()) >= expected - 1  # the offline is "offline", see below
    wait_for(all_dropped, timeout_s=120, what=f"the intake to drop {expected - 1} forged messages")
    after = intake.dropped_counts(op.redis)
    grew = {k: after.get(k, 0) - before_drops.get(k, 0) for k in after}
    assert grew.get("unknown task", 0) == 203 and grew.get("malformed", 0) == 1
    assert grew.get("wrong worker", 0) == 3 and grew.get("wrong region", 0) == 1
    # Mallory's OFFLINE marks Mallory (its key's worker) offline, never the victim.
    assert alice(op).state.value == "online"
    assert registry.get_worker(op.redis, "ghost@x") is None
    done = wait_for_job(op, job.id)
    assert done.state == "done" and done.result["hits"] == compute.pi_hits(SEED + 1, 0, 400_000_000)
    assert set(done.workers) == {victim.worker_id}
    assert balance(op, identity.public_hex(mallory_key)) == 0
    result = audit.verify(op.redis)
    assert result.ok, result.problems
    denied = [e for e in op.redis.acl_log() if e.get("username") == "eu-west-1"]
    assert denied == []


def test_a_signed_result_from_mallory_for_a_chunk_she_was_never_sent_is_ignored(
        op: HydraCelery, mallory_key: SigningKey) -> None:
    job = submit_job(op, {"kind": "pi", "params": {"samples": 40_000_000, "seed": SEED + 2}})
    chunk = any_chunk(op, job.id)
    mine = run_chunk(chunk, attempt=1, worker_id="mallory@hydra", region="eu-west", key=mallory_key)
    fake = signed_results.sign({**mine, "elapsed_s": 0.001}, mallory_key)
    out = intake.handle(op.redis, op.settings, envelope.seal(mallory_key, Action.RESULT, fake),
                        publish=lambda *a: None)
    assert out in ("ignored", "duplicate")
    done = wait_for_job(op, job.id)
    assert "mallory@hydra" not in done.workers


def test_revoking_a_volunteer_mid_job_resends_its_chunks_and_drops_its_later_messages(
        op: HydraCelery, stack: LocalStack) -> None:
    stack.start_volunteer("bob", ["eu-west"])
    stack.wait_for_workers(2, timeout_s=90)
    bob = registry.get_worker(op.redis, "bob@hydra")
    assert bob is not None
    samples = 3_000_000_000
    job = submit_job(op, {"kind": "pi", "params": {"samples": samples, "seed": SEED + 3}})
    wait_for(lambda: op.redis.scard(keys.worker_inflight("bob@hydra")) > 0, timeout_s=60,
             what="bob to hold a chunk")
    revoked = hydra_cli(stack, "volunteer", "revoke", "bob")
    assert revoked.returncode == 0, revoked.stderr
    assert op.redis.scard(keys.worker_inflight("bob@hydra")) == 0  # its chunks went back at once
    drops = intake.dropped_counts(op.redis).get("unknown key", 0)
    key = identity.load_key(stack.settings.data_dir / "volunteers" / "bob" / "worker.key")
    out = intake.handle(op.redis, op.settings, envelope.seal(key, Action.HEARTBEAT, intake.worker_facts(
        "bob@hydra", "eu-west", concurrency=1, speeds={"pi_samples_per_s": 1e8, "mandelbrot_iters_per_s": 1e8},
        settings=op.settings, isa="x")), publish=lambda *a: None)
    assert out == "dropped: unknown key"
    assert intake.dropped_counts(op.redis)["unknown key"] == drops + 1
    done = wait_for_job(op, job.id, timeout_s=180)
    assert done.state == "done" and done.result["hits"] == compute.pi_hits(SEED + 3, 0, samples)
    assert registry.get_worker(op.redis, "bob@hydra").state.value == "offline"  # type: ignore[union-attr]
    with pytest.raises(redis.exceptions.AuthenticationError):
        as_mallory(Credentials.load(stack.settings.data_dir / "volunteers" / "bob" / "volunteer.json")).ping()
    assert "bob" not in op.redis.acl_users()
    result = audit.verify(op.redis)
    assert result.ok, result.problems


def test_a_volunteer_joins_with_the_token_through_the_cli_and_leaves_cleanly(
        op: HydraCelery, stack: LocalStack, tmp_path: Path) -> None:
    """The user's path end to end: `hydra volunteer add` prints a token; on the volunteer's machine (its
    own data dir, no operator settings at all) `hydra worker --join TOKEN` stores it and runs; a later
    `hydra worker` needs no token; SIGTERM sends a signed offline message."""
    added = hydra_cli(stack, "volunteer", "add", "carol", "--region", "eu-west")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(tmp_path / "carol"), PYTHONUNBUFFERED="1")
    log = tmp_path / "carol.log"
    for argv in (["worker", "--join", token, "-c", "1"], ["worker", "-c", "1"]):
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "hydra_tasks", *argv], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: (w := registry.get_worker(op.redis, "carol@hydra")) is not None
                     and w.state.value == "online" and w.pid == proc.pid, timeout_s=90, what="carol to register")
        except AssertionError:
            print(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        wait_for(lambda: registry.get_worker(op.redis, "carol@hydra").state.value == "offline",  # type: ignore
                 timeout_s=30, what="carol's signed offline message")
    stored = Credentials.load(tmp_path / "carol" / "volunteer.json")
    assert stored.worker_id == "carol@hydra" and (tmp_path / "carol" / "volunteer.json").stat().st_mode & 0o077 == 0
    assert "joining as carol@hydra" in log.read_text(errors="replace")
    assert [e for e in op.redis.acl_log() if e.get("username") == "carol"] == []
