"""Issue 15, item 2: requests and sweeps cost O(job) or O(limit), not O(every job or account).

On a real Redis: the leaderboards come from sorted sets kept by every mint, transfer, reversal and
team change (checked against the hashes by ``hydra ledger verify``), and FINISH and the straggler
pass read the job's own lease set, not every lease in flight. ``INFO commandstats`` shows which
commands a request sent, so a whole-hash read (HGETALL, HVALS, HSCAN ...) cannot sneak back in.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

import pytest
import redis
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.ledger import audit, book as ledger, profiles
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.lua import Scripts
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.trust import identity
from hydra_tasks.worker import registry

pytestmark = pytest.mark.integration

WHOLE_READS = {"hgetall", "hvals", "hkeys", "hscan", "smembers", "sscan", "scan", "keys", "lrange", "xrange"}


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=1_000, inflight_per_slot=2))


def commands_sent(client: redis.Redis, action: Callable[[], Any]) -> dict[str, int]:
    """The commands ``action`` sent to Redis, by name, with their counts (INFO commandstats)."""
    client.config_resetstat()
    action()
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
            if name not in ("cmdstat_info", "cmdstat_config|resetstat")}


def fund(client: redis.Redis, account: str, amount: int, key: str) -> None:
    assert ledger.mint(client, account, Reward(amount, amount, 0, 0, 0, amount, False), job_id="job", chunk_id=key,
                       reason="test grant")


def expected_top(raw: dict[str, str], limit: int) -> list[tuple[str, int]]:
    return sorted(((a, int(v)) for a, v in raw.items()), key=lambda r: (-r[1], r[0]))[:limit]


def test_the_leaderboard_is_read_from_sorted_sets_and_agrees_with_the_ledger(app: HydraCelery) -> None:
    client, rng = app.redis, random.Random(15)
    keys_by_account = {}
    for _ in range(1500):
        key = SigningKey.generate()
        account = identity.public_hex(key)
        ledger.open_account(client, account)
        keys_by_account[account] = key
    accounts = sorted(keys_by_account)
    for i, account in enumerate(accounts):
        # Few distinct amounts: many ties, also across the top-10 cut, which must be settled by name.
        fund(client, account, rng.choice([3, 5, 5, 8, 13]) * 1_000_000, key=f"c{i}")
    for _ in range(60):  # transfers move balances (not earnings) between accounts
        sender, recipient = rng.sample(accounts, 2)
        spendable = int(client.hget(keys.LEDGER_BALANCES, sender))
        ledger.transfer(client, ledger.signed_transfer(keys_by_account[sender], recipient, rng.randint(1, spendable)))

    for limit in (1, 10, 37):
        board = {}
        sent = commands_sent(client, lambda: board.update(ledger.leaderboard(client, limit)))
        assert not WHOLE_READS & set(sent), f"the leaderboard read whole structures: {sent}"
        for name, key in (("by_balance", keys.LEDGER_BALANCES), ("by_earned", keys.LEDGER_EARNED)):
            want = expected_top(client.hgetall(key), limit)
            assert [(r["account"], r["micro"]) for r in board[name]] == want
            assert [r["rank"] for r in board[name]] == list(range(1, limit + 1))

    metrics: dict[str, Any] = {}
    sent = commands_sent(client, lambda: metrics.update(ledger.token_metrics(client)))
    assert "hvals" not in sent and "hscan" not in sent  # the stats and the per-day hashes are small: HGETALL is fine
    assert metrics["holders"] == sum(1 for v in client.hvals(keys.LEDGER_BALANCES) if int(v) > 0)
    checked = audit.verify(client)
    assert checked.ok, checked.problems


def test_team_totals_follow_mints_transfers_and_team_changes(app: HydraCelery) -> None:
    client = app.redis
    members = {name: SigningKey.generate() for name in ("ann", "bob", "cy", "dee")}
    account = {name: identity.public_hex(k) for name, k in members.items()}
    for name in members:
        ledger.open_account(client, account[name])
    teams = {"ann": "red", "bob": "red", "cy": "blue", "dee": ""}
    for name, team in teams.items():
        profiles.set_profile(client, profiles.signed_profile(members[name], name, team))
    for i, (name, amount) in enumerate([("ann", 7), ("bob", 4), ("cy", 9), ("dee", 20), ("ann", 1)]):
        fund(client, account[name], amount * 1_000_000, key=f"t{i}")
    # A transfer moves a balance, not what the sender earned: team totals do not change.
    ledger.transfer(client, ledger.signed_transfer(members["ann"], account["cy"], 2_000_000))
    assert [(t["team"], t["members"], t["micro"]) for t in profiles.team_leaderboard(client)] == [
        ("red", 2, 12_000_000), ("blue", 1, 9_000_000)]

    profiles.set_profile(client, profiles.signed_profile(members["bob"], "bob", "blue"))  # bob carries his 4
    profiles.set_profile(client, profiles.signed_profile(members["dee"], "dee", "green"))
    profiles.set_profile(client, profiles.signed_profile(members["ann"], "ann", "blue"))  # red is now empty
    fund(client, account["bob"], 1_000_000, key="t9")
    board: list[dict[str, Any]] = []
    sent = commands_sent(client, lambda: board.extend(profiles.team_leaderboard(client, 5)))
    assert not WHOLE_READS & set(sent), f"the team leaderboard read whole structures: {sent}"
    assert [(t["rank"], t["team"], t["members"], t["micro"]) for t in board] == [
        (1, "blue", 3, 22_000_000), (2, "green", 1, 20_000_000)]
    assert client.hget(keys.TEAMS_MEMBERS, "red") is None and client.zscore(keys.TEAMS_EARNED, "red") is None
    checked = audit.verify(client)
    assert checked.ok, checked.problems

    client.zincrby(keys.TEAMS_EARNED, 1, "blue")  # the audit notices a team total out of step with the ledger
    assert any("team 'blue'" in p for p in audit.verify(client).problems)
    client.zadd(keys.LEDGER_RANK_EARNED, {account["cy"]: 1})
    assert any("leaderboard by earned" in p for p in audit.verify(client).problems)


def test_finishing_a_job_reads_and_releases_only_its_own_leases(app: HydraCelery) -> None:
    client, now = app.redis, time.time()
    workers = [f"w{i}@test" for i in range(3)]
    for worker_id in workers:
        registry.register(client, registry.WorkerInfo(
            worker_id=worker_id, region="r", host="test", pid=1, cores=1, concurrency=1, pi_samples_per_s=1e8,
            mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now, last_seen=now))
    jobs = []
    for seed, samples in ((1, 3_000), (2, 40_000)):  # the first fills half the 6 slots, the second the rest
        spec = parse_job_spec({"kind": "pi", "params": {"samples": samples, "seed": seed}})
        job_id = store.new_job_id()
        store.create_job(client, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
        jobs.append(job_id)
    sent: list[tuple[dict[str, Any], int, str]] = []
    dispatch(client, app.settings, CapacityRouter(), lambda c, a, w, r: sent.append((c, a, w)))
    leased = {j: sorted(c["chunk_id"] for c, _, _ in sent if c["job_id"] == j) for j in jobs}
    assert all(leased.values()), leased
    for job_id in jobs:  # the job's own set mirrors the fleet-wide expiry index
        assert sorted(client.zrange(keys.job_leases(job_id), 0, -1)) == leased[job_id]
        for chunk_id in leased[job_id]:
            assert client.zscore(keys.job_leases(job_id), chunk_id) == client.zscore(
                keys.LEASES, keys.lease_member(job_id, chunk_id))

    store.cancel_job(client, jobs[0])
    assert not client.exists(keys.job_leases(jobs[0]))
    remaining = sorted(client.zrange(keys.LEASES, 0, -1))
    assert remaining == sorted(keys.lease_member(jobs[1], c) for c in leased[jobs[1]])
    assert sorted(client.zrange(keys.job_leases(jobs[1]), 0, -1)) == leased[jobs[1]]
    inflight = sorted(m for w in workers for m in client.smembers(keys.worker_inflight(w)))
    assert inflight == remaining  # the cancelled job's slots are free, the other job's are held

    # A lease given back (a failure, re-queued) leaves both sets; a merge-free FINISH then ends the job.
    chunk_id = leased[jobs[1]][0]
    holder = client.hget(keys.lease(jobs[1], chunk_id), "worker")
    taken = Scripts(client).requeue(jobs[1], chunk_id, now=time.time(), counter="failures", force=True,
                                    reporter=holder)
    assert taken.count == 1
    assert client.zscore(keys.job_leases(jobs[1]), chunk_id) is None
    assert client.zscore(keys.LEASES, keys.lease_member(jobs[1], chunk_id)) is None
    store.cancel_job(client, jobs[1])
    assert client.zcard(keys.LEASES) == 0 and not client.exists(keys.job_leases(jobs[1]))
    assert all(client.scard(keys.worker_inflight(w)) == 0 for w in workers)


def test_the_metrics_scrape_reads_live_jobs_only_and_finished_jobs_from_totals(app: HydraCelery) -> None:
    from hydra_tasks.exporter import HydraCollector

    client = app.redis
    ids = []
    for seed in range(6):
        spec = parse_job_spec({"kind": "pi", "params": {"samples": 2_000, "seed": seed}})
        job_id = store.new_job_id()
        store.create_job(client, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
        ids.append(job_id)
    for job_id in ids[:4]:
        client.hincrby(keys.job(job_id), "dispatched", 3)
        store.cancel_job(client, job_id)
    client.hincrby(keys.job(ids[4]), "dispatched", 5)  # live: counted from its own hash
    store.delete_job(client, ids[0])  # held no more: out of the state count, still in the counter sums

    def scrape() -> dict[str, float]:
        return {f"{m.name}{dict(s.labels)}" if s.labels else m.name: s.value
                for m in HydraCollector(client, app.settings)._jobs() for s in m.samples if s.name.endswith(
                    ("_total", "hydra_jobs"))}

    got: dict[str, float] = {}
    sent = commands_sent(client, lambda: got.update(scrape()))
    assert sent.get("hmget") == 2, sent  # the two live jobs, one read each; none of the four finished ones
    assert got["hydra_jobs{'state': 'cancelled'}"] == 3
    assert got["hydra_jobs{'state': 'queued'}"] == 2
    assert got["hydra_chunks_dispatched"] == 4 * 3 + 5
