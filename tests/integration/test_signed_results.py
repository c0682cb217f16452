"""A worker with a registered key speaks only through results signed with it: a result in its name
that is unsigned, or signed by another key, is dropped and counted, and changes nothing. Every
chunk reward carries the signed result that earned it, and `ledger verify` checks it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from nacl.signing import SigningKey

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import collect, store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.ledger import audit, book
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.trust import identity, reputation
from hydra_tasks.trust import results as signed_results
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import decline, run_chunk
from support import keyed_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000))


def one_chunk(app: HydraCelery, samples: int = 2_000) -> tuple[str, dict[str, Any], int, str]:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": samples, "seed": 5}})
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    sent: list[tuple[dict[str, Any], int, str]] = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    chunk, attempt, holder = sent[0]
    return job_id, chunk, attempt, holder


def snapshot_of(app: HydraCelery, job_id: str) -> dict[str, Any]:
    job = store.get_job(app.redis, job_id).to_json()
    job.pop("updated_at")
    return {"job": job, "todo": app.redis.lrange(keys.job_todo(job_id), 0, -1),
            "leases": app.redis.zrange(keys.LEASES, 0, -1), "journal": app.redis.xlen(keys.LEDGER_JOURNAL),
            "balances": app.redis.hgetall(keys.LEDGER_BALANCES)}


def test_results_in_a_keyed_workers_name_count_only_when_signed_by_its_key(app: HydraCelery) -> None:
    victim = keyed_worker(app, "victim@test")
    job_id, chunk, attempt, holder = one_chunk(app)
    assert holder == "victim@test"
    before = snapshot_of(app, job_id)
    attacker = SigningKey.generate()
    honest_unsigned = run_chunk(chunk, attempt=attempt, worker_id=holder, region="r")
    forgeries = [
        honest_unsigned,                                                   # no signature
        signed_results.sign(honest_unsigned, attacker),                    # someone else's key
        {**run_chunk(chunk, attempt=attempt, worker_id=holder, region="r", key=victim), "elapsed_s": 0.001},
        {**signed_results.sign({**honest_unsigned, "error": "KernelError: forged"}, attacker)},
        decline(chunk, attempt=attempt, worker_id=holder, region="r", reason="forged", key=attacker),
    ]
    for forged in forgeries * 3:  # three forged failures used to fail any job
        assert collect.collect(app.redis, app.settings, forged) == "forged"
    assert snapshot_of(app, job_id) == before  # nothing re-queued, failed, merged or paid
    dropped = app.redis.hgetall(keys.RESULTS_DROPPED)
    assert dropped == {"unsigned": "3", "bad signature": "12"}
    honest = run_chunk(chunk, attempt=attempt, worker_id=holder, region="r", key=victim)
    assert collect.collect(app.redis, app.settings, honest) == "merged"
    [mint] = [f for _, f in audit.journal(app.redis) if f["type"] == "mint"]
    proof = json.loads(mint["result"])
    assert proof["job_id"] == job_id and proof["chunk_id"] == chunk["chunk_id"] and proof["worker_id"] == holder
    identity.verify(identity.public_hex(victim), proof, mint["result_signature"])
    assert audit.verify(app.redis).ok


def test_ledger_verify_refuses_a_chunk_reward_without_the_signed_result_that_earned_it(app: HydraCelery) -> None:
    victim = keyed_worker(app, "victim@test")
    job_id, chunk, attempt, holder = one_chunk(app)
    assert collect.collect(app.redis, app.settings, run_chunk(chunk, attempt=attempt, worker_id=holder, region="r",
                                                              key=victim)) == "merged"
    assert audit.verify(app.redis).ok
    thief = SigningKey.generate()
    book.open_account(app.redis, identity.public_hex(thief))
    reward = Reward(7, 7, 0, 0, 0, 7, False)
    # Someone with Redis access calls the mint script for a "chunk" with no report behind it ...
    book.mint(app.redis, identity.public_hex(thief), reward, job_id="j", chunk_id="c9", reason=book.CHUNK_REWARD)
    report = audit.verify(app.redis)
    assert any("names no signed result" in p for p in report.problems), report.problems
    # ... or copies a real report into a mint to another account.
    [real] = [f for _, f in audit.journal(app.redis) if f.get("result")]
    forged = json.loads(book.mint_json(identity.public_hex(thief), reward, job_id=job_id, chunk_id="copy",
                                       now=time.time(), proof={"result": real["result"],
                                                               "result_signature": real["result_signature"]}))
    from hydra_tasks.lua import scripts

    scripts(app.redis).mint(json.dumps(forged))
    report = audit.verify(app.redis)
    assert any("for another chunk" in p or "not signed by the account" in p for p in report.problems), report.problems


def test_a_worker_that_fabricates_plausible_block_counts_is_caught_by_an_exact_spot_check(app: HydraCelery) -> None:
    """Issue 12, item 1: the cheater signs its own fabricated result (so signatures cannot stop it);
    every block is off by one with the total unchanged, so only recomputing tells."""
    from hydra_tasks.models import payload_digest

    cheater = keyed_worker(app, "cheater@test")
    job_id, chunk, attempt, holder = one_chunk(app, samples=200_000)
    honest = run_chunk(chunk, attempt=attempt, worker_id=holder, region="r")
    blocks = list(honest["payload"]["block_hits"])
    for b in range(0, len(blocks) - 1, 2):
        blocks[b], blocks[b + 1] = blocks[b] + 1, blocks[b + 1] - 1
    payload = {**honest["payload"], "block_hits": blocks}
    forged = signed_results.sign({**honest, "payload": payload,
                                  "digest": payload_digest(job_id, chunk["chunk_id"], payload)}, cheater)
    assert collect.collect(app.redis, app.settings, forged) == "rejected"
    checks = app.redis.hgetall(keys.SPOT_CHECKS)
    assert checks.pop("failed") == "1" and float(checks.pop("last_caught_at")) > time.time() - 60 and not checks
    # That chunk and every other chunk it held go back to be re-sent elsewhere.
    todo = app.redis.lrange(keys.job_todo(job_id), 0, -1)
    assert chunk["chunk_id"] in todo and len(todo) == 2 and not app.redis.smembers(keys.worker_inflight(holder))
    assert app.redis.xlen(keys.LEDGER_JOURNAL) == 0 and store.get_job(app.redis, job_id).chunks_done == 0
    cheat = registry.get_worker(app.redis, "cheater@test")
    assert cheat is not None and "block" in cheat.quarantined and cheat.audits_failed == 1 and cheat.reputation == 0
    # Quarantined: nothing it sends counts, the scheduler leaves it out, GRANT refuses it even so.
    real = run_chunk(chunk, attempt=attempt, worker_id=holder, region="r", key=cheater)
    assert collect.collect(app.redis, app.settings, real) == "ignored"
    from hydra_tasks.lua import GrantCode, Scripts
    from hydra_tasks.scheduling.cluster import snapshot

    assert "cheater@test" not in snapshot(app.redis, app.settings).workers
    grant = Scripts(app.redis).grant(job_id, "cheater@test", "r", capacity=2, now=time.time(), lease_s=1.0,
                                     rate=1e8)
    assert grant.code is GrantCode.FULL and app.redis.zcard(keys.LEASES) == 0
    # An operator lifts it: it is back, with a reputation of 0 (audited heavily), and its true result merges.
    assert reputation.lift(app.redis, "cheater@test") and not reputation.lift(app.redis, "cheater@test")
    assert "cheater@test" in snapshot(app.redis, app.settings).workers
    assert collect.collect(app.redis, app.settings, real) == "merged"
    checks = app.redis.hgetall(keys.SPOT_CHECKS)
    assert checks["failed"] == "1" and checks["passed"] == "1"
    count = chunk["params"]["count"]
    assert 32 * (count // 64) <= int(checks["units:pi"]) <= 32 * (count // 64 + 1)  # reputation 0: 32 blocks
    job = store.get_job(app.redis, job_id)
    assert job.chunks_done == 1 and job.hits == compute.pi_hits(5, 0, count)
    assert registry.get_worker(app.redis, "cheater@test").reputation == 1  # type: ignore[union-attr]


def test_hydra_quarantine_lists_and_lifts_a_caught_worker(app: HydraCelery, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    keyed_worker(app, "caught@test")
    reputation.caught(app.redis, "caught@test", "π chunk c9: block 3 differs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_REDIS_URL=str(app.settings.redis_url), HYDRA_DATA_DIR=str(tmp_path))

    def hydra(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    listed = hydra("quarantine", "list")
    assert listed.returncode == 0 and "caught@test" in listed.stdout and "block 3 differs" in listed.stdout
    assert hydra("quarantine", "lift", "caught@test").returncode == 0
    assert "no worker is quarantined" in hydra("quarantine", "list").stdout
    again = hydra("quarantine", "lift", "caught@test")
    assert again.returncode != 0 and "is not quarantined" in again.stderr
    assert registry.get_worker(app.redis, "caught@test").quarantined == ""  # type: ignore[union-attr]
