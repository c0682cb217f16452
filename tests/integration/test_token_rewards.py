"""Tokens end to end: real workers earn exactly one mint per accepted chunk, into the account of
their own key, and `hydra ledger verify` (a real subprocess) agrees with Redis, or says it does not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterator

import pytest

from hydra_tasks import compute, keys
from hydra_tasks.ledger import audit, book as ledger
from hydra_tasks.trust import identity
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.stack import LocalStack
from hydra_tasks.worker.registry import list_workers
from support import free_port, running_stack, wait_for, wait_for_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("tokens"), {"eu-north": 1, "eu-central": 1},
                       target_chunk_s=0.3, min_chunk_s=0.1, checkpoint_interval_s=1.0) as stack:
        yield stack


def verify_cli(stack: LocalStack) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")} | stack.child_settings().to_env()
    return subprocess.run([sys.executable, "-m", "hydra_tasks", "ledger", "verify"], env=env, capture_output=True,
                          text=True, timeout=60)


def test_each_accepted_chunk_mints_once_to_its_workers_key(app: HydraCelery, stack: LocalStack) -> None:
    workers = list_workers(app.redis)
    assert len({w.public_key for w in workers}) == 2 and all(identity.is_public_key(w.public_key) for w in workers)
    samples = int(3.0 * sum(w.pi_samples_per_s for w in workers))
    job = wait_for_job(app, submit_job(app, {"kind": "pi", "params": {"samples": samples, "seed": 11}}).id)
    assert job.state == "done" and job.result["hits"] == compute.pi_hits(11, 0, samples)
    mints = [f for _, f in audit.journal(app.redis) if f["type"] == "mint" and f["key"].startswith(job.id)]
    assert len(mints) == job.chunks_done == len({m["key"] for m in mints})  # one per accepted chunk
    for m in mints:  # each names the result its worker signed (ledger verify below checks the signatures)
        assert json.loads(m["result"])["chunk_id"] == m["key"].split(":")[1] and len(m["result_signature"]) == 128
    # Rewards follow work: 1 token per 10^9 samples at the default rate, before bonuses.
    base = sum(json.loads(m["detail"])["base"] for m in mints)
    assert base == pytest.approx(samples / 1e9 * 1_000_000, abs=len(mints))
    for worker in workers:
        units = job.workers[worker.worker_id].units
        paid = sum(int(m["amount"]) for m in mints if m["to"] == worker.public_key)
        assert (units > 0) == (paid > 0)
        assert ledger.balance(app.redis, worker.worker_id)["balance_micro"] == paid
    done = verify_cli(stack)
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr


def test_the_control_plane_signs_checkpoints_of_the_journal_as_it_grows(app: HydraCelery, stack: LocalStack) -> None:
    """Beat schedules hydra.checkpoint every HYDRA_CHECKPOINT_INTERVAL_S (1 s here); the control
    worker signs the journal's state into its data dir, where `hydra ledger verify` finds it."""
    from hydra_tasks.ledger import chain

    length = app.redis.xlen(keys.LEDGER_JOURNAL)
    assert length > 0  # the job above paid its workers
    data_dir = stack.child_settings().data_dir
    wait_for(lambda: any(c.length == length for c in chain.load(data_dir)), timeout_s=30,
             what="a checkpoint of the whole journal")
    control = identity.public_hex(chain.control_key(data_dir))
    assert all(c.key == control for c in chain.load(data_dir))
    done = verify_cli(stack)
    assert done.returncode == 0 and "signed checkpoint" in done.stdout, done.stdout + done.stderr


def test_ledger_verify_fails_on_a_tampered_balance(app: HydraCelery, stack: LocalStack) -> None:
    account = list_workers(app.redis)[0].public_key
    app.redis.hincrby(keys.LEDGER_BALANCES, account, 1)  # someone edits Redis by hand
    try:
        done = verify_cli(stack)
        assert done.returncode == 1 and "balance of" in done.stderr, done.stdout + done.stderr
    finally:
        app.redis.hincrby(keys.LEDGER_BALANCES, account, -1)
    assert verify_cli(stack).returncode == 0


def test_the_cli_signs_transfers_and_grid_reports_through_the_http_api(app: HydraCelery, stack: LocalStack) -> None:
    port = free_port()
    stack.start_webapp(port=port)
    url = f"http://127.0.0.1:{port}"
    stack.wait_until("the webapp", lambda: _up(url))
    payer, payee = sorted(list_workers(app.redis), key=lambda w: w.worker_id)
    before = ledger.balance(app.redis, payer.worker_id)["balance_micro"], ledger.balance(app.redis, payee.worker_id)[
        "balance_micro"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")} | stack.child_settings().to_env() | {
        "HYDRA_KEY_FILE": str(stack.settings.data_dir / "keys" / f"{payer.worker_id.split('@')[0]}.key")}

    def hydra(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hydra_tasks", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    sent = hydra("tokens", "transfer", "--to", payee.worker_id, "--amount", "0.25", "--url", url)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["amount_micro"] == 250_000
    after = ledger.balance(app.redis, payer.worker_id)["balance_micro"], ledger.balance(app.redis, payee.worker_id)[
        "balance_micro"]
    assert after == (before[0] - 250_000, before[1] + 250_000)
    broke = hydra("tokens", "transfer", "--to", payee.worker_id, "--amount", "1000000", "--url", url)
    assert broke.returncode != 0 and "409" in broke.stderr and "less than the amount" in broke.stderr
    shown = hydra("tokens", "balance", "--url", url)
    assert shown.returncode == 0 and json.loads(shown.stdout)["balance_micro"] == after[0]
    reported = hydra("grid-info", "--worker", payer.worker_id, "--zone", "FR", "--renewable-share", "0.4",
                     "--url", url)
    assert reported.returncode == 0, reported.stderr
    assert app.redis.hget(keys.worker(payer.worker_id), "grid_zone") == "FR"
    forged = hydra("grid-info", "--worker", payee.worker_id, "--zone", "FR", "--url", url)  # not this key's worker
    assert forged.returncode != 0 and "401" in forged.stderr
    assert verify_cli(stack).returncode == 0


def _up(url: str) -> bool:
    import requests

    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
