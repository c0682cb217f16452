"""High availability (issue 14, item 4): Redis replicated and watched by Sentinel, the primary killed
with SIGKILL in the middle of a job.

Real processes on 127.0.0.1, TLS only (the control host's CA and server certificate): a primary,
two replicas and three Sentinels (``replication.HaRedis``), the control worker with beat, the
intake worker and two enrolled volunteers (isolated mode: each its own Redis user, made on every
node), all given only the ``rediss+sentinel://`` URL. After the kill a replica is promoted, every
process follows it without a restart, a π job ends with the exact hits and a Mandelbrot job with
the reference counts, no chunk is minted twice, and ``hydra ledger verify`` passes against the new
primary. Prints the time from the kill to the promotion and to the first merge on the new primary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import redis

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import store
from hydra_tasks.jobs.mandelbrot import decode_counts
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.lua import scripts
from hydra_tasks.redis_conn import connect
from hydra_tasks.replication import HaOptions, HaRedis
from hydra_tasks.settings import Settings
from hydra_tasks.stack import LocalStack
from hydra_tasks.trust import volunteers
from hydra_tasks.trust.tls import ensure_tls
from hydra_tasks.worker import registry
from support import FAST, print_logs, require_redis7, wait_for, wait_for_job

pytestmark = pytest.mark.integration

SEED = 14_04_2026
SAMPLES = 3_000_000_000
CHUNK = 20_000_000          # 150 chunks
VOLUNTEERS = ("vol-a", "vol-b")
MANDELBROT = {"width": 960, "height": 720, "max_iter": 3000, "center_x": -0.745, "center_y": 0.11, "span": 0.05}
TILE_PX = 64                # 180 tiles


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hydra")


@pytest.fixture(scope="module")
def ha(data_dir: Path) -> Iterator[HaRedis]:
    """TLS only, with the control host's CA and server certificate (`hydra tls init`'s)."""
    require_redis7()
    tls = ensure_tls(Settings().with_(data_dir=data_dir))
    ha = HaRedis(data_dir / "ha-redis", replicas=2, sentinels=3,
                 options=HaOptions(down_after_ms=1000, failover_timeout_ms=3000, quorum=2, tls=True,
                                   tls_dir=str(tls.ca.parent)))
    try:
        ha.start(timeout_s=60)
        yield ha
    finally:
        ha.stop()


@pytest.fixture(scope="module")
def stack(ha: HaRedis, data_dir: Path) -> Iterator[LocalStack]:
    data = data_dir
    settings = Settings().with_(data_dir=data, redis_url=ha.url, redis_ca=str(data / "tls" / "ca.pem"),
                                isolate=True, adaptive=False,
                                pi_chunk_samples=CHUNK, tile_px=TILE_PX, redis_wait_replicas=1,
                                redis_wait_timeout_ms=2000,
                                checkpoint_interval_s=2.0, **FAST)
    stack = LocalStack(settings, log_dir=data / "logs")
    try:
        stack.start_redis()
        stack.start_control(beat=True)
        for name in VOLUNTEERS:
            stack.start_volunteer(name, ["r"])
        stack.wait_for_workers(len(VOLUNTEERS), timeout_s=90)
        stack.wait_for_log("control", "ready.", timeout_s=60)
        yield stack
    except BaseException:
        print_logs(stack)
        raise
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def op(stack: LocalStack) -> HydraCelery:
    return create_app(stack.child_settings())


def test_every_node_holds_the_volunteers_users_and_sentinels_only_answer_them(ha: HaRedis, stack: LocalStack,
                                                                             op: HydraCelery) -> None:
    """ACLs are not replicated: enrolment put each volunteer's user on the primary, both replicas and
    every Sentinel, where it may ask for the primary's address and nothing else."""
    creds = volunteers.Credentials.load(stack.settings.data_dir / "volunteers" / "vol-a" / "volunteer.json")
    assert creds.redis_url.startswith("rediss+sentinel://vol-a:") and "hydra:" not in creds.redis_url
    assert creds.ca_pem == (stack.settings.data_dir / "tls" / "ca.pem").read_text()
    primary_users = volunteers.acl_users(op.redis)
    for node in ha.nodes:
        client = ha.client_of(node.port, decode_responses=True)
        try:
            users = volunteers.acl_users(client)
        finally:
            client.close()
        for name in VOLUNTEERS:
            assert name in users, f"{name} has no user on {node.role}"
            if not node.role.startswith("sentinel"):  # the same rule (Redis may list it in another order)
                assert _words(users[name]) == _words(primary_users[name]), node.role
    sentinel_port = ha.sentinel_addresses[0][1]
    password = creds.redis_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    as_volunteer = connect(f"rediss://vol-a:{password}@127.0.0.1:{sentinel_port}/0", decode_responses=True,
                           ca=stack.settings.data_dir / "tls" / "ca.pem")
    try:
        addr = as_volunteer.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "hydra")
        assert int(addr[1]) == ha.primary_port()
        for command in (("SENTINEL", "FAILOVER", "hydra"), ("SENTINEL", "SET", "hydra", "quorum", "1"),
                        ("SENTINEL", "REMOVE", "hydra"), ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
                        ("SENTINEL", "RESET", "*"), ("ACL", "LIST")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_volunteer.execute_command(*command)
    finally:
        as_volunteer.close()

    # A replica that missed an enrolment (down at the time; here its copy is deleted by hand) catches up
    # with `python -m hydra_tasks.replication sync-acl`.
    replica = ha.client_of(ha.node("replica-2").port, decode_responses=True)
    try:
        replica.execute_command("ACL", "DELUSER", "vol-b")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
        env.update(stack.child_settings().to_env())
        synced = subprocess.run([sys.executable, "-m", "hydra_tasks.replication", "sync-acl"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert _words(volunteers.acl_users(replica)["vol-b"]) == _words(primary_users["vol-b"])
    finally:
        replica.close()


def _words(tokens: list[str]) -> list[str]:
    return sorted(" ".join(tokens).replace("(", " ").replace(")", " ").split())


# It timed out once (a π job not finished 240 s after the failover) in a fresh-clone CI run on 2026-12-02, cause
# not found then. The same timeout in tests/cluster/test_cluster_failover.py on 2026-12-03 was traced to the new
# primary refusing writes with NOREPLICAS until its other replica re-attached, which made every worker exit; that
# is fixed (redis_conn.NoReplicas), so this is asserted again. The stack's logs are printed if it fails.
def test_killing_the_primary_mid_job_loses_nothing_and_everyone_follows_the_new_one(
        ha: HaRedis, stack: LocalStack, op: HydraCelery) -> None:
    pids = {name: proc.popen.pid for name, proc in stack.procs.items()}
    old_port = ha.primary_port()
    assert ha.role_of(old_port) == "primary"
    tiles_id = submit_job(op, {"kind": "mandelbrot", "params": MANDELBROT}).id
    job_id = submit_job(op, {"kind": "pi", "params": {"samples": SAMPLES, "seed": SEED}}).id
    wait_for(lambda: store.get_job(op.redis, tiles_id).chunks_done >= 30, timeout_s=120, what="30 tiles merged")
    for running in (job_id, tiles_id):
        assert not store.get_job(op.redis, running).is_final, "a job ended before the kill: make it longer"

    # Replicas hold the scripts' effects, not the scripts: the new primary will answer NOSCRIPT to the
    # control plane's first EVALSHA, which must load the script again (redis-py's Script does).
    merge_sha = scripts(op.redis)._merge.sha
    for role in ("replica-1", "replica-2"):
        replica = ha.client_of(ha.node(role).port)
        try:
            assert replica.script_exists(merge_sha) == [False], role
        finally:
            replica.close()

    ha.kill("primary")
    killed_at = time.time()
    new_port = wait_for(lambda: (p := ha.primary_port()) not in (None, old_port) and p, timeout_s=30,
                        what="a replica to be promoted")
    promoted_s = time.time() - killed_at
    assert ha.role_of(new_port) in ("replica-1", "replica-2")

    job = wait_for_job(op, job_id, timeout_s=240)
    assert job.state == "done"
    assert job.result["hits"] == compute.pi_hits(SEED, 0, SAMPLES)
    tiles = wait_for_job(op, tiles_id, timeout_s=120)
    assert tiles.state == "done"
    p = tiles.params
    reference = compute.mandelbrot_counts(xmin=p["xmin"], ymax=p["ymax"], dx=p["dx"], dy=p["dy"], col0=0, row0=0,
                                          width=MANDELBROT["width"], height=MANDELBROT["height"],
                                          max_iter=MANDELBROT["max_iter"])
    counts = decode_counts(op.redis.get(keys.job_counts(tiles_id)), MANDELBROT["height"], MANDELBROT["width"])
    assert (counts == reference).all()

    new_primary = ha.client_of(new_port, decode_responses=True)
    try:
        assert new_primary.info("replication")["role"] == "master"
        assert new_primary.script_exists(merge_sha) == [True]  # reloaded after NOSCRIPT
        journal = new_primary.xrange(keys.LEDGER_JOURNAL)
        minted = new_primary.smembers(keys.LEDGER_MINTED)
    finally:
        new_primary.close()
    for done in (job, tiles):
        mints = Counter(f["key"] for _, f in journal if f.get("type") == "mint" and f["key"].startswith(f"{done.id}:"))
        assert mints and max(mints.values()) == 1, f"minted twice: {[k for k, n in mints.items() if n > 1]}"
        assert not {m for m in minted if m.startswith(f"{done.id}:")}  # FINISH compacted them: the job refuses more
        assert len(mints) == done.chunks_done

    # The first merge on the new primary: the first journal entry it wrote after the kill (a stream id is
    # its server's clock in ms; the old primary's entries it did not replicate are gone with it).
    after = [(int(entry_id.split("-")[0]) / 1000, f) for entry_id, f in journal
             if int(entry_id.split("-")[0]) / 1000 > killed_at and f.get("type") == "mint"]
    assert after, "nothing was minted after the kill"
    resumed_s = after[0][0] - killed_at
    later = Counter(f["key"].split(":")[0] for _, f in after)
    assert later[job_id] > 0 and later[tiles_id] > 0, "both jobs must have run across the failover"
    print(f"\nSentinel failover: promoted after {promoted_s:.2f} s, first merge on the new primary "
          f"{resumed_s:.2f} s after the kill (down-after-milliseconds 1000); merged after the kill: "
          f"{later[job_id]} of {job.chunks_done} pi chunks, {later[tiles_id]} of {tiles.chunks_done} tiles")

    # Every volunteer was paid for chunks merged after the kill, by the same processes: nothing restarted.
    accounts = {w.public_key: w.worker_id for w in registry.list_workers(op.redis)}
    paid_after = {accounts.get(f["to"]) for _, f in after}
    assert {volunteers.worker_id_for(v) for v in VOLUNTEERS} <= paid_after, paid_after
    assert {name: proc.popen.pid for name, proc in stack.procs.items() if proc.alive} == pids

    # `hydra ledger verify` on the new primary (its own address, not through the Sentinels), with the
    # checkpoints the control plane signed before and after the failover.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_DATA_DIR=str(stack.settings.data_dir),
               HYDRA_REDIS_URL=f"rediss://hydra:{ha.password}@127.0.0.1:{new_port}/0",
               HYDRA_REDIS_CA=str(stack.settings.data_dir / "tls" / "ca.pem"))
    verify = subprocess.run([sys.executable, "-m", "hydra_tasks", "ledger", "verify"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "OK" in verify.stdout
    assert (Path(stack.settings.data_dir) / "ledger-checkpoints.jsonl").is_file()


def test_a_transfer_too_few_replicas_confirm_answers_503_and_sending_it_again_is_safe(
        ha: HaRedis, stack: LocalStack, op: HydraCelery) -> None:
    """WAIT short (here: more replicas asked for than exist): the transfer is applied on the primary but
    not acknowledged; the API says so (503) and the very same signed transfer, sent again once replicas
    confirm, answers with the original entry: tokens move once."""
    import requests
    from hydra_webapp import create_app as create_webapp

    from hydra_tasks.ledger import book
    from hydra_tasks.trust import identity
    from support import serving

    sender = identity.load_key(stack.settings.data_dir / "volunteers" / "vol-a" / "worker.key")
    recipient = identity.load_key(stack.settings.data_dir / "volunteers" / "vol-b" / "worker.key")
    a, b = identity.public_hex(sender), identity.public_hex(recipient)
    if book.balance(op.redis, a)["balance_micro"] <= 1000:  # run alone: earn something first
        wait_for_job(op, submit_job(op, {"kind": "pi", "params": {"samples": 20 * CHUNK, "seed": SEED}}).id)
    assert book.balance(op.redis, a)["balance_micro"] > 1000
    transferred = int(op.redis.hget(keys.LEDGER_STATS, "transferred") or 0)
    body = book.signed_transfer(sender, b, 1000)
    strict = stack.child_settings().with_(redis_wait_replicas=5, redis_wait_timeout_ms=300)
    with serving(create_webapp(strict)) as url:
        short = requests.post(f"{url}/api/transfer_tokens", json=body, timeout=30)
    assert short.status_code == 503, short.text
    assert re.search(r"only \d of 5 replicas confirmed", short.json()["error"]) and "safe" in short.json()["error"]
    with serving(create_webapp(stack.child_settings())) as url:
        again = requests.post(f"{url}/api/transfer_tokens", json=body, timeout=30)
    assert again.status_code == 200 and again.json()["repeated"], again.text
    assert int(op.redis.hget(keys.LEDGER_STATS, "transferred") or 0) == transferred + 1000  # once
    transfers = [f for _, f in op.redis.xrange(keys.LEDGER_JOURNAL)
                 if f.get("type") == "transfer" and f.get("nonce") == str(body["nonce"])]
    assert len(transfers) == 1
