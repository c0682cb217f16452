"""The token ledger against a real Redis: mints once, signed transfers, adversarial input,
thousands of concurrent transfers, and a Redis crash mid-run (AOF on)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.ledger import audit, book as ledger
from hydra_tasks.trust import identity
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.embedded import EmbeddedRedis
from hydra_tasks.errors import LedgerError
from hydra_tasks.ledger.rewards import Reward
from hydra_webapp import create_app

pytestmark = pytest.mark.integration

TOKEN = 1_000_000


def fund(client: redis.Redis, account: str, amount: int, key: str) -> bool:
    """Mint with the script an accepted chunk's merge uses (``key`` as the chunk id)."""
    reward = Reward(amount, amount, 0, 0, 0, amount, False)
    return ledger.mint(client, account, reward, job_id="job", chunk_id=key, reason="test grant")


def new_account(client: redis.Redis) -> SigningKey:
    key = SigningKey.generate()
    ledger.open_account(client, identity.public_hex(key))
    return key


def state(client: redis.Redis) -> dict[str, Any]:
    return {name: client.hgetall(k) for name, k in (("balances", keys.LEDGER_BALANCES),
                                                     ("nonces", keys.LEDGER_NONCES), ("stats", keys.LEDGER_STATS))} | {
        "journal": client.xlen(keys.LEDGER_JOURNAL)}


@pytest.fixture(scope="module")
def web(redis_only: HydraCelery) -> FlaskClient:
    return create_app(celery_app=redis_only).test_client()


def test_a_chunk_is_paid_exactly_once(redis_only: HydraCelery) -> None:
    client = redis_only.redis
    account = identity.public_hex(new_account(client))
    assert [fund(client, account, 5 * TOKEN, key="chunk-once") for _ in range(3)] == [True, False, False]
    assert ledger.balance(client, account)["balance_micro"] == 5 * TOKEN
    assert audit.verify(client).ok


def test_a_signed_transfer_moves_tokens_once_even_if_retried(redis_only: HydraCelery, web: FlaskClient) -> None:
    client = redis_only.redis
    alice, bob = new_account(client), new_account(client)
    a, b = identity.public_hex(alice), identity.public_hex(bob)
    fund(client, a, 10 * TOKEN, key="alice-1")
    body = ledger.signed_transfer(alice, b, 2_500_000, nonce=1)
    first = web.post("/api/transfer_tokens", json=body)
    assert first.status_code == 201 and first.get_json()["amount"] == "2.500000"
    again = web.post("/api/transfer_tokens", json=body)  # a client retrying after a lost reply
    assert again.status_code == 200 and again.get_json()["repeated"]
    assert again.get_json()["entry"] == first.get_json()["entry"]
    assert web.get(f"/api/worker_balance/{a}").get_json()["balance_micro"] == 7_500_000
    assert web.get(f"/api/worker_balance/{b}").get_json()["balance"] == "2.500000"
    board = web.get("/api/leaderboard?limit=100").get_json()
    assert {"account": a, "micro": 7_500_000} in [{k: r[k] for k in ("account", "micro")} for r in board["by_balance"]]
    assert any(r["account"] == a and r["micro"] == 10 * TOKEN for r in board["by_earned"])
    metrics = web.get("/api/token_metrics").get_json()
    assert metrics["supply_micro"] == metrics["minted_micro"] and metrics["transfers"] >= 1
    assert sum(metrics["minted_per_day_micro"].values()) == metrics["minted_micro"]
    assert audit.verify(client).ok


def test_adversarial_transfers_are_refused_with_a_reason_and_change_nothing(
        redis_only: HydraCelery, web: FlaskClient) -> None:
    client = redis_only.redis
    alice, bob, mallory = new_account(client), new_account(client), new_account(client)
    a, b = identity.public_hex(alice), identity.public_hex(bob)
    stranger = identity.public_hex(SigningKey.generate())  # never opened
    fund(client, a, 3 * TOKEN, key="alice-adv")
    assert web.post("/api/transfer_tokens", json=ledger.signed_transfer(alice, b, 1, nonce=100)).status_code == 201
    good = ledger.signed_transfer(alice, b, TOKEN, nonce=200)
    cases: dict[str, tuple[Any, int, str]] = {
        "forged by mallory": ({**ledger.signed_transfer(mallory, b, TOKEN, nonce=300), "from": a}, 401, "signature"),
        "amount raised after signing": ({**good, "amount": 2 * TOKEN}, 401, "signature"),
        "recipient changed after signing": ({**good, "to": identity.public_hex(mallory)}, 401, "signature"),
        "replayed nonce": (ledger.signed_transfer(alice, b, 2, nonce=100), 409, "nonce"),
        "older nonce": (ledger.signed_transfer(alice, b, 2, nonce=50), 409, "nonce"),
        "overdraft": (ledger.signed_transfer(alice, b, 4 * TOKEN, nonce=400), 409, "balance"),
        "unknown sender": (ledger.signed_transfer(SigningKey.generate(), b, 1, nonce=1), 404, "sending account"),
        "unknown recipient": (ledger.signed_transfer(alice, stranger, 1, nonce=401), 404, "receiving account"),
        "to self": (ledger.signed_transfer(alice, a, 1, nonce=402), 400, "same account"),
        "zero": (ledger.signed_transfer(alice, b, 0, nonce=403), 400, "between 1"),
        "negative": (ledger.signed_transfer(alice, b, -5, nonce=404), 400, "between 1"),
        "huge": (ledger.signed_transfer(alice, b, 10**25, nonce=405), 400, "between 1"),
        "fractional": ({**good, "amount": 1.5}, 400, "whole number"),
        "string amount": ({**good, "amount": "1000000"}, 400, "whole number"),
        "boolean amount": ({**good, "amount": True}, 400, "whole number"),
        "huge nonce": ({**good, "nonce": 2**64}, 400, "nonce"),
        "bad account id": ({**good, "to": "bob"}, 400, "64 lowercase hex"),
        "missing signature": ({k: v for k, v in good.items() if k != "signature"}, 400, "missing"),
        "extra field": ({**good, "memo": "hi"}, 400, "unknown"),
        "garbage signature": ({**good, "signature": "ab" * 10}, 401, "128"),
        "not an object": ([good], 400, "JSON object"),
    }
    before = state(client)
    for name, (body, status, text) in cases.items():
        response = web.post("/api/transfer_tokens", json=body)
        error = (response.get_json() or {}).get("error", "")
        assert (response.status_code, text.lower() in error.lower()) == (status, True), (name, response.status_code, error)
    assert state(client) == before  # every balance, nonce, total and the journal untouched
    assert web.post("/api/transfer_tokens", json=good).status_code == 201  # and the honest one still works
    assert audit.verify(client).ok


def _sender(url: str, exported: list[str], accounts: list[str], count: int, seed: int,
            results: Any) -> None:
    """One process: random transfers from its own accounts to anyone (nonces increase per sender)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    rng = random.Random(seed)
    mine = [identity.decode_export(text) for text in exported]
    nonce = {identity.public_hex(k): 0 for k in mine}
    ok = refused = 0
    for _ in range(count):
        key = rng.choice(mine)
        sender = identity.public_hex(key)
        recipient = rng.choice([x for x in accounts if x != sender])
        nonce[sender] += 1
        try:
            ledger.transfer(client, ledger.signed_transfer(key, recipient, rng.randint(1, 3 * TOKEN), nonce[sender]))
            ok += 1
        except LedgerError:
            refused += 1  # overdrafts, mostly
    results.put((ok, refused))


def test_thousands_of_concurrent_transfers_conserve_supply(redis_only: HydraCelery) -> None:
    client = redis_only.redis
    url = redis_only.settings.redis_url or ""
    keys_ = [new_account(client) for _ in range(12)]
    accounts = [identity.public_hex(k) for k in keys_]
    for i, account in enumerate(accounts):
        fund(client, account, 20 * TOKEN, key=f"conc-{i}")
    supply = int(client.hget(keys.LEDGER_STATS, "supply") or 0)
    transfers_before = int(client.hget(keys.LEDGER_STATS, "transfers") or 0)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_sender, args=(url, [identity.export_text(k) for k in keys_[2 * p:2 * p + 2]],
                                               accounts, 500, p, results)) for p in range(6)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    ok = sum(o[0] for o in outcomes)
    print(f"{ok} transfers applied, {sum(o[1] for o in outcomes)} refused")
    assert ok > 1000
    assert int(client.hget(keys.LEDGER_STATS, "transfers") or 0) - transfers_before == ok
    balances = [int(client.hget(keys.LEDGER_BALANCES, a) or 0) for a in accounts]
    assert min(balances) >= 0 and sum(balances) == 12 * 20 * TOKEN  # conserved among them
    assert int(client.hget(keys.LEDGER_STATS, "supply") or 0) == supply
    report = audit.verify(client)
    assert report.ok, report.problems[:5]


def test_a_redis_crash_mid_run_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    first = EmbeddedRedis(data)
    url = first.start()
    port = first.port
    client = redis.Redis.from_url(url, decode_responses=True)
    alice, bob = SigningKey.generate(), SigningKey.generate()
    for k in (alice, bob):
        ledger.open_account(client, identity.public_hex(k))
    fund(client, identity.public_hex(alice), 10**6 * TOKEN, key="crash-fund")
    acknowledged: list[str] = []
    stop = threading.Event()

    def run() -> None:
        c = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2)
        nonce = 0
        while not stop.is_set():
            nonce += 1
            body = ledger.signed_transfer(alice, identity.public_hex(bob), 1_000, nonce)
            while not stop.is_set():
                try:
                    acknowledged.append(ledger.transfer(c, body)["entry"])  # a retry of the same body is idempotent
                    break
                except (redis.ConnectionError, redis.TimeoutError):
                    time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    second: EmbeddedRedis | None = None
    try:
        time.sleep(1.0)
        before_crash = len(acknowledged)
        os.kill(first.pid or 0, signal.SIGKILL)  # a crash, not a clean shutdown
        time.sleep(0.3)
        second = EmbeddedRedis(data, port=port)
        second.start()
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(timeout=10)
    try:
        client = redis.Redis.from_url(second.url if second else url, decode_responses=True)
        entries = {entry_id for entry_id, _ in audit.journal(client)}
        assert before_crash > 50 and len(acknowledged) > before_crash  # it ran on both sides of the crash
        missing = [e for e in acknowledged if e not in entries]
        assert not missing, f"{len(missing)} acknowledged transfers lost"
        assert len(set(acknowledged)) == len(acknowledged)
        report = audit.verify(client)
        assert report.ok, report.problems[:5]
    finally:
        if second is not None:
            second.stop()


def test_the_merge_mints_in_the_same_step_and_only_for_a_new_chunk(redis_only: HydraCelery) -> None:
    from hydra_tasks.lua import Scripts

    client = redis_only.redis
    client.hset(keys.job("mj"), mapping={"state": "running", "units_total": 2, "units_done": 0})
    account = identity.public_hex(new_account(client))
    mint = ledger.mint_json(account, Reward(3, 3, 0, 0, 0, 3, False), job_id="mj", chunk_id="c1", now=time.time())
    scripts = Scripts(client)
    client.hset(keys.lease("mj", "c1"), mapping={"worker": "w@h", "leased:w@h": "1"})  # as GRANT leaves it
    for expected in (1, 0):  # the second delivery of the same chunk is a duplicate
        code, _, _, _ = scripts.merge("mj", "c1", "w@h", "{}", now=time.time(), elapsed_ms=1, units=1,
                                   increments={"units_done": 1}, mint_json=mint)
        assert code == expected
        assert ledger.balance(client, account)["balance_micro"] == 3  # paid with the first merge, once


def test_an_overdraft_on_a_large_balance_says_the_exact_balance(redis_only: HydraCelery, web: FlaskClient) -> None:
    client = redis_only.redis
    rich, other = new_account(client), new_account(client)
    fund(client, identity.public_hex(rich), 123_456_789_012_345, key="rich")  # beyond Lua's 14 printed digits
    response = web.post("/api/transfer_tokens", json=ledger.signed_transfer(
        rich, identity.public_hex(other), 123_456_789_012_346, nonce=1))
    assert response.status_code == 409 and "123456789.012345 tokens" in response.get_json()["error"]


def test_a_leaderboard_limit_that_is_not_a_plain_number_is_a_400(web: FlaskClient) -> None:
    for bad in ("²", "0", "101", "-1", "1e2", "9" * 50):
        response = web.get(f"/api/leaderboard?limit={bad}")
        assert response.status_code == 400 and "limit" in response.get_json()["error"], bad
