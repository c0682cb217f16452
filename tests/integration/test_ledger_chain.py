"""The journal cannot be forged or erased quietly: it is hash-chained, and the control plane's
signed checkpoints, kept outside Redis, pin it. Runs against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.ledger import audit, book as ledger, chain
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.trust import identity
from hydra_webapp import create_app as create_webapp

pytestmark = pytest.mark.integration

TOKEN = 1_000_000


@pytest.fixture
def app(redis_only: HydraCelery, tmp_path: Path) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(data_dir=tmp_path / "control"))


def busy_ledger(client: redis.Redis) -> tuple[SigningKey, SigningKey]:
    """Two accounts, three mints and two transfers."""
    alice, bob = SigningKey.generate(), SigningKey.generate()
    for key in (alice, bob):
        ledger.open_account(client, identity.public_hex(key))
    for n, key in enumerate((alice, alice, bob)):
        reward = Reward(5 * TOKEN, 5 * TOKEN, 0, 0, 0, 5 * TOKEN, False)
        assert ledger.mint(client, identity.public_hex(key), reward, job_id="j", chunk_id=f"c{n}", reason="test")
    for nonce in (1, 2):
        ledger.transfer(client, ledger.signed_transfer(alice, identity.public_hex(bob), TOKEN, nonce=nonce))
    return alice, bob


def verify(app: HydraCelery) -> audit.Audit:
    control = identity.public_hex(chain.control_key(app.settings.data_dir))
    return audit.verify(app.redis, checkpoints=chain.load(app.settings.data_dir), control_key=control)


def test_every_entry_names_the_hash_of_the_one_before_and_an_honest_ledger_verifies(app: HydraCelery) -> None:
    busy_ledger(app.redis)
    entries = list(audit.journal(app.redis))
    assert len(entries) == 5
    assert entries[0][1]["prev"] == chain.GENESIS
    for (_, before), (_, after) in zip(entries, entries[1:]):
        assert after["prev"] == before["hash"]
    assert app.redis.hget(keys.LEDGER_HEAD, "hash") == entries[-1][1]["hash"]
    assert chain.checkpoint_now(app.redis, app.settings.data_dir) is not None
    assert chain.checkpoint_now(app.redis, app.settings.data_dir) is None  # nothing new to pin
    report = verify(app)
    assert report.ok, report.problems


def test_an_entry_rewritten_in_place_breaks_the_chain(app: HydraCelery) -> None:
    busy_ledger(app.redis)
    entries = list(audit.journal(app.redis))
    app.redis.delete(keys.LEDGER_JOURNAL)  # an attacker with Redis access rewrites history: 3rd mint to alice
    for n, (entry_id, fields) in enumerate(entries):
        if n == 2:
            fields = {**fields, "to": entries[0][1]["to"]}
        app.redis.xadd(keys.LEDGER_JOURNAL, fields, id=entry_id)
    report = audit.verify(app.redis)
    assert any("hash does not match its fields" in p for p in report.problems), report.problems


def test_a_consistent_forgery_passes_the_chain_but_not_the_signed_checkpoint(app: HydraCelery) -> None:
    """Whoever can write Redis can rebuild a whole consistent ledger; the checkpoint outside Redis
    is what still tells."""
    busy_ledger(app.redis)
    chain.checkpoint_now(app.redis, app.settings.data_dir)
    thief = identity.public_hex(SigningKey.generate())
    app.redis.flushdb()
    ledger.open_account(app.redis, thief)
    for n in range(5):  # as many entries as before, all to the thief, chained and balanced
        assert ledger.mint(app.redis, thief, Reward(3 * TOKEN, 3 * TOKEN, 0, 0, 0, 3 * TOKEN, False), job_id="j",
                           chunk_id=f"x{n}", reason="forged")
    assert audit.verify(app.redis).ok  # the chain alone is consistent ...
    report = verify(app)
    assert not report.ok and any("was rewritten before it" in p for p in report.problems), report.problems


@pytest.mark.parametrize("erase", ["flushall", "xtrim", "xdel-last"])
def test_an_erased_or_truncated_journal_fails_verify(app: HydraCelery, erase: str) -> None:
    busy_ledger(app.redis)
    chain.checkpoint_now(app.redis, app.settings.data_dir)
    if erase == "flushall":
        app.redis.flushall()
    elif erase == "xtrim":
        app.redis.xtrim(keys.LEDGER_JOURNAL, maxlen=2, approximate=False)
    else:
        last_id = app.redis.xrevrange(keys.LEDGER_JOURNAL, count=1)[0][0]
        app.redis.xdel(keys.LEDGER_JOURNAL, last_id)
    report = verify(app)
    assert not report.ok
    assert any("erased" in p or "removed" in p for p in report.problems), report.problems


def test_a_checkpoint_edited_on_disk_is_refused(app: HydraCelery) -> None:
    busy_ledger(app.redis)
    chain.checkpoint_now(app.redis, app.settings.data_dir)
    path = app.settings.data_dir / chain.CHECKPOINT_FILE
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "length": record["length"] - 1}) + "\n")
    report = verify(app)
    assert any("not signed by the control plane" in p for p in report.problems), report.problems
    other = SigningKey.generate()  # a checkpoint signed by someone else's key, correctly
    forged = chain.take(app.redis, other)
    path.write_text(json.dumps(forged.__dict__) + "\n")
    report = verify(app)
    assert any("another key" in p for p in report.problems), report.problems


def test_the_cli_and_the_api_show_and_check_the_checkpoints(app: HydraCelery) -> None:
    busy_ledger(app.redis)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")} | app.settings.to_env()

    def hydra(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    web = create_webapp(celery_app=app).test_client()
    assert web.get("/api/ledger/checkpoint").status_code == 404
    taken = hydra("ledger", "checkpoint")
    assert taken.returncode == 0 and "5 entries" in taken.stdout, taken.stdout + taken.stderr
    body = web.get("/api/ledger/checkpoint").get_json()
    assert body["count"] == 1 and body["checkpoint"]["length"] == 5
    chain.Checkpoint.from_json(body["checkpoint"]).verify()  # anyone can check it with the key it names
    ok = hydra("ledger", "verify")
    assert ok.returncode == 0 and "1 signed checkpoint" in ok.stdout, ok.stdout + ok.stderr
    app.redis.flushall()
    failed = hydra("ledger", "verify")
    assert failed.returncode == 1 and "erased" in failed.stderr, failed.stdout + failed.stderr
