"""The dashboard's controls through the HTTP API, on a real Redis: one worker in detail, offline
workers pruned, jobs deleted (without touching the ledger), and display names and teams set with a
signed request."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from nacl.signing import SigningKey

from hydra_tasks import keys
from hydra_tasks.celery_app import HydraCelery, create_app as create_celery_app
from hydra_tasks.jobs import store
from hydra_tasks.ledger import book as ledger
from hydra_tasks.ledger import profiles
from hydra_tasks.ledger.rewards import Reward
from hydra_tasks.lua import MergeCode, scripts
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import sweeper
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.trust import identity, reputation
from hydra_tasks.worker import registry
from hydra_tasks.worker.performance import reliability
from hydra_webapp import create_app
from support import dispatch_in_process, keyed_worker, serving, submit_planned

pytestmark = pytest.mark.integration

TOKEN = "controls-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = 86_400.0


@pytest.fixture(scope="module")
def hydra(redis_only: HydraCelery) -> Iterator[HydraCelery]:
    app = create_celery_app(redis_only.settings.with_(api_token=TOKEN, worker_retention_s=7 * DAY,
                                                      pi_chunk_samples=1_000_000, adaptive=False,
                                                      rate_limit_profiles="off"))  # its limit: test_rate_limits.py
    yield app
    app.close()


@pytest.fixture(scope="module")
def web(hydra: HydraCelery) -> Flask:
    return create_app(celery_app=hydra)


@pytest.fixture
def client(web: Flask) -> FlaskClient:
    return web.test_client()


def register(app: HydraCelery, worker_id: str, *, state: WorkerState, last_seen: float,
             key: SigningKey | None = None, **fields: Any) -> SigningKey:
    key = key or SigningKey.generate()
    registry.register(app.redis, registry.WorkerInfo(
        worker_id=worker_id, region="eu-west", host="box", pid=7, cores=4, concurrency=2, pi_samples_per_s=5e7,
        mandelbrot_iters_per_s=2e8, state=state, started_at=last_seen - 60, last_seen=last_seen, isa="avx2",
        cpu_limit=50.0, public_key=identity.public_hex(key), **fields))
    ledger.open_account(app.redis, identity.public_hex(key))
    return key


def mint(app: HydraCelery, account: str, micro: int, key: str) -> None:
    ledger.mint(app.redis, account, Reward(micro, micro, 0, 0, 0, micro, False), job_id="controls", chunk_id=key,
                reason="test grant")


# --- one worker in detail ---------------------------------------------------------------------------
def test_a_worker_page_shows_its_speeds_audits_limits_and_recent_chunks_newest_first(
        hydra: HydraCelery, client: FlaskClient) -> None:
    now = time.time()
    key = register(hydra, "detail@box", state=WorkerState.PAUSED, last_seen=now, pause_reason="on battery")
    hydra.redis.hset(keys.worker("detail@box"), mapping={"audits_passed": 12, "grid_zone": "FR", "ok": 8,
                                                             "failed": 2})
    job_id = submit_planned(hydra, {"kind": "pi", "params": {"samples": 1_000_000, "seed": 3}})
    for i in range(25):  # the results log, as MERGE writes it (oldest first)
        hydra.redis.rpush(keys.worker_results("detail@box"), json.dumps(
            {"job": job_id if i == 24 else "feedfacefeedface", "chunk": f"c{i}", "amount": str(1000 * i),
             "account": identity.public_hex(key)}))

    got = client.get("/api/workers/detail@box?recent=5").get_json()
    assert (got["isa"], got["cpu_limit"], got["grid_zone"], got["region"]) == ("avx2", 50.0, "FR", "eu-west")
    assert got["state"] == "paused" and got["pause_reason"] == "on battery"
    assert got["speed_pi"] == 5e7 and got["speed_mandelbrot"] == 2e8 and got["reliability"] == reliability(8, 2, 0) < 1
    assert got["audit_status"]["level"] == "established" and got["audit_status"]["clean_audits"] == 12
    assert got["audit_status"]["pi_blocks_checked"] == reputation.picks(reputation.JobKind.PI, 12)
    assert got["results_logged"] == 25
    assert [c["chunk"] for c in got["recent_chunks"]] == ["c24", "c23", "c22", "c21", "c20"]
    assert got["recent_chunks"][0] == {"job": job_id, "chunk": "c24", "amount_micro": 24_000, "tokens": "0.024000",
                                       "account": identity.public_hex(key), "job_exists": True}
    assert got["recent_chunks"][1]["job_exists"] is False

    page = client.get("/workers/detail@box")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for shown in ("avx2", "50%", "on battery", "FR", "established: 12 clean audit(s)", "50,000,000 samples/s",
                  f'href="/jobs/{job_id}"', "feedfacefeedface</code> (deleted)"):
        assert shown in html, shown


@pytest.mark.parametrize("bad", ["nobody@nowhere", "-x", "a%20b", "x" * 201, "<script>"])
def test_an_unknown_or_malformed_worker_id_is_a_404_that_says_what_ids_look_like(client: FlaskClient,
                                                                                 bad: str) -> None:
    answer = client.get(f"/api/workers/{bad}")
    assert answer.status_code == 404
    assert "worker ids are Celery node names" in answer.get_json()["error"]
    assert client.get(f"/workers/{bad}").status_code == 404


# --- pruning ---------------------------------------------------------------------------------------------
def test_the_sweep_prunes_only_workers_offline_for_longer_than_the_retention_and_keeps_their_money(
        hydra: HydraCelery, client: FlaskClient) -> None:
    r, now = hydra.redis, time.time()
    old_key = register(hydra, "old@box", state=WorkerState.OFFLINE, last_seen=now - 8 * DAY)
    register(hydra, "recent@box", state=WorkerState.OFFLINE, last_seen=now - 6 * DAY)
    register(hydra, "live@box", state=WorkerState.ONLINE, last_seen=now)
    register(hydra, "caught@box", state=WorkerState.OFFLINE, last_seen=now - 30 * DAY)
    reputation.caught(r, "caught@box", "π chunk c1: block 3 differs")
    old_account = identity.public_hex(old_key)
    mint(hydra, old_account, 5_000_000, key="old-earnings")
    r.rpush(keys.worker_results("old@box"), json.dumps({"job": "j", "chunk": "c", "amount": "5000000",
                                                        "account": old_account}))
    queue = keys.direct_queue("old@box")
    r.rpush(queue, "stale message")
    r.rpush(keys.priority_queues(queue)[1], "stale message")

    report = sweeper.sweep(r, hydra.settings, CapacityRouter(), lambda *a: None, now=now)

    assert "old@box" in report.pruned_workers
    listed = {w["worker_id"] for w in client.get("/api/workers").get_json()["workers"]}
    assert "old@box" not in listed and {"recent@box", "live@box", "caught@box"} <= listed
    assert client.get("/api/workers/old@box").status_code == 404
    assert not r.exists(keys.worker("old@box"), *keys.priority_queues(queue))
    # What it earned, and what a later catch must be able to revoke, stays.
    assert ledger.balance(r, old_account)["balance_micro"] == 5_000_000
    assert r.llen(keys.worker_results("old@box")) == 1
    # Its id stays bound to its key: another key cannot take it over; the same key simply comes back.
    with pytest.raises(Exception, match="registered to another key"):
        register(hydra, "old@box", state=WorkerState.ONLINE, last_seen=now)
    register(hydra, "old@box", state=WorkerState.ONLINE, last_seen=now, key=old_key)
    assert "old@box" in {w["worker_id"] for w in client.get("/api/workers").get_json()["workers"]}
    assert not r.hexists(keys.WORKER_KEYS, "old@box")


def test_hydra_workers_prune_removes_due_workers_and_a_dry_run_only_lists_them(
        hydra: HydraCelery, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_tasks import cli

    now = time.time()
    register(hydra, "cli-old@box", state=WorkerState.OFFLINE, last_seen=now - 10 * DAY)
    monkeypatch.setattr(cli, "_settings", lambda: hydra.settings)
    dry = CliRunner().invoke(cli.main, ["workers", "prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "cli-old@box" in json.loads(dry.output)["would_prune"] and hydra.redis.exists(keys.worker("cli-old@box"))
    done = CliRunner().invoke(cli.main, ["workers", "prune"])
    assert done.exit_code == 0, done.output
    assert "cli-old@box" in json.loads(done.output)["pruned"] and not hydra.redis.exists(keys.worker("cli-old@box"))
    monkeypatch.setattr(cli, "_settings", lambda: hydra.settings.with_(worker_retention_s=0))
    never = CliRunner().invoke(cli.main, ["workers", "prune"])
    assert never.exit_code != 0 and "HYDRA_WORKER_RETENTION_S is 0" in never.output


# --- deleting a job ------------------------------------------------------------------------------------
def job_keys_left(app: HydraCelery, job_id: str) -> list[str]:
    return sorted(app.redis.scan_iter(match=f"hydra:*{job_id}*", count=1000))


def test_delete_refuses_a_running_job_and_an_unknown_one_and_needs_the_token(
        hydra: HydraCelery, client: FlaskClient) -> None:
    job_id = submit_planned(hydra, {"kind": "pi", "params": {"samples": 2_000_000}})
    assert client.delete(f"/api/jobs/{job_id}").status_code == 401
    running = client.delete(f"/api/jobs/{job_id}", headers=AUTH)
    assert running.status_code == 409 and "cancel it before deleting it" in running.get_json()["error"]
    assert hydra.redis.exists(keys.job(job_id))
    assert client.delete("/api/jobs/0123456789abcdef", headers=AUTH).status_code == 404
    assert client.delete("/api/jobs/NOT-HEX", headers=AUTH).status_code == 404
    store.cancel_job(hydra.redis, job_id)


def test_deleting_a_finished_job_removes_every_key_of_it_keeps_the_ledger_and_a_late_result_mints_nothing(
        hydra: HydraCelery, client: FlaskClient) -> None:
    r = hydra.redis
    worker_key = keyed_worker(hydra, "deleter@box", region="eu-west")
    account = identity.public_hex(worker_key)
    job_id = submit_planned(hydra, {"kind": "pi", "params": {"samples": 3_000_000, "seed": 5},
                                    "deadline": "+2h"})
    sent = dispatch_in_process(hydra)
    mine = [chunk for chunk, _, worker in sent if chunk["job_id"] == job_id and worker == "deleter@box"]
    assert len(mine) >= 2, sent
    lua = scripts(r)

    def merge(chunk_id: str) -> MergeCode:
        reward = Reward(1_000_000, 1_000_000, 0, 0, 0, 1_000_000, False)
        code, _, _, _ = lua.merge(job_id, chunk_id, "deleter@box", "{}", now=time.time(), elapsed_ms=10, units=1,
                                  increments={}, mint_json=ledger.mint_json(account, reward, job_id=job_id,
                                                                            chunk_id=chunk_id, now=time.time()))
        return code

    assert merge(mine[0]["chunk_id"]) is MergeCode.MERGED  # paid once, journaled
    store.cancel_job(r, job_id)
    supply, journal = ledger.token_metrics(r)["supply_micro"], r.xlen(keys.LEDGER_JOURNAL)
    assert r.zscore(keys.JOBS_DEADLINES, job_id) is not None

    answer = client.delete(f"/api/jobs/{job_id}", headers=AUTH)

    assert answer.status_code == 200 and answer.get_json() == {"deleted": job_id}
    assert job_keys_left(hydra, job_id) == []
    assert all(r.zscore(index, job_id) is None for index in (keys.JOBS, keys.JOBS_ACTIVE, keys.JOBS_DEADLINES))
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    assert job_id not in {j["id"] for j in client.get("/api/jobs").get_json()["jobs"]}
    # Late results, for the chunk already paid and for one never merged, change nothing and recreate nothing.
    assert merge(mine[0]["chunk_id"]) is MergeCode.JOB_OVER
    assert merge(mine[1]["chunk_id"]) is MergeCode.JOB_OVER
    assert job_keys_left(hydra, job_id) == []
    assert ledger.token_metrics(r)["supply_micro"] == supply and r.xlen(keys.LEDGER_JOURNAL) == journal
    # Its mint stays on the books (journal, balance); its idempotency key left the minted set when the job
    # ended (FINISH compacts them: the job's final state refuses a second mint), counted for the audit.
    assert not r.sismember(keys.LEDGER_MINTED, f"{job_id}:{mine[0]['chunk_id']}")
    assert r.hget(keys.LEDGER_STATS, "keys_compacted") == "1"
    assert ledger.balance(r, account)["balance_micro"] == 1_000_000
    assert client.delete(f"/api/jobs/{job_id}", headers=AUTH).status_code == 404


def test_what_a_merge_writes_after_its_job_was_deleted_is_no_job_and_is_cleaned_up(
        hydra: HydraCelery, client: FlaskClient) -> None:
    """A merge's bookkeeping (carbon totals on the job hash, the chunk log) runs after MERGE; an operator
    may cancel and delete the job in between. What it writes then is a remnant: not a job (404, not
    listed, never a 500), removed by the collector's own check (store.drop_remnants) or by DELETE."""
    r = hydra.redis
    job_id = submit_planned(hydra, {"kind": "pi", "params": {"samples": 2_000_000}})
    store.cancel_job(r, job_id)
    assert client.delete(f"/api/jobs/{job_id}", headers=AUTH).status_code == 200

    def late_bookkeeping() -> None:  # what collect._merge's pipeline writes for the job
        r.hincrbyfloat(keys.job(job_id), "carbon_g", 0.5)
        r.rpush(keys.job_log(job_id), json.dumps({"chunk": "c000000"}))

    late_bookkeeping()
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    assert job_id not in {j["id"] for j in client.get("/api/jobs").get_json()["jobs"]}
    store.drop_remnants(r, job_id)
    assert job_keys_left(hydra, job_id) == []
    late_bookkeeping()
    assert client.delete(f"/api/jobs/{job_id}", headers=AUTH).status_code == 200  # the remnant can be deleted
    assert job_keys_left(hydra, job_id) == []
    assert client.delete(f"/api/jobs/{job_id}", headers=AUTH).status_code == 404
    alive = submit_planned(hydra, {"kind": "pi", "params": {"samples": 2_000_000}})
    store.drop_remnants(r, alive)  # a job that exists is never touched
    assert client.get(f"/api/jobs/{alive}").status_code == 200
    store.cancel_job(r, alive)


def test_prune_removes_old_finished_jobs_in_bounded_requests_and_needs_the_token(
        hydra: HydraCelery, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_tasks.jobs import retention

    now = time.time()
    old = []
    for age_days in (502, 501, 500):  # oldest first
        job_id = submit_planned(hydra, {"kind": "pi", "params": {"samples": 2_000, "seed": 3}})
        store.cancel_job(hydra.redis, job_id, now=now - age_days * DAY)
        old.append(job_id)
    recent = submit_planned(hydra, {"kind": "pi", "params": {"samples": 2_000, "seed": 4}})
    store.cancel_job(hydra.redis, recent, now=now - 2 * DAY)
    live = submit_planned(hydra, {"kind": "pi", "params": {"samples": 2_000, "seed": 5}})
    body = {"older_than_s": 499 * DAY}

    assert client.post("/api/prune_jobs", json=body).status_code == 401
    assert client.post("/api/prune_jobs", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    for bad, field in (({}, "older_than_s"), ({"older_than_s": -1}, "older_than_s"),
                       ({"older_than_s": "30d"}, "older_than_s"), ({**body, "dry": True}, "dry")):
        refused = client.post("/api/prune_jobs", json=bad, headers=AUTH)
        assert refused.status_code == 400 and field in refused.get_json()["error"], (bad, refused.get_json())
    assert all(hydra.redis.exists(keys.job(j)) for j in old)

    dry = client.post("/api/prune_jobs", json={**body, "dry_run": True}, headers=AUTH)
    assert dry.status_code == 200
    assert dry.get_json() == {"jobs": old, "removed": False, "more": False, "older_than_s": 499 * DAY}
    assert all(hydra.redis.exists(keys.job(j)) for j in old)

    monkeypatch.setattr(retention, "PRUNE_PER_REQUEST", 2)  # a bounded request: the rest on the next
    first = client.post("/api/prune_jobs", json=body, headers=AUTH).get_json()
    assert first == {"jobs": old[:2], "removed": True, "more": True, "older_than_s": 499 * DAY}
    second = client.post("/api/prune_jobs", json=body, headers=AUTH).get_json()
    assert second == {"jobs": old[2:], "removed": True, "more": False, "older_than_s": 499 * DAY}
    assert not any(hydra.redis.exists(keys.job(j)) for j in old)
    assert hydra.redis.zscore(keys.JOBS_FINISHED, old[0]) is None
    assert store.get_job(hydra.redis, recent).state == "cancelled"
    assert store.get_job(hydra.redis, live).state.value in ("queued", "running")
    again = client.post("/api/prune_jobs", json=body, headers=AUTH).get_json()
    assert again == {"jobs": [], "removed": True, "more": False, "older_than_s": 499 * DAY}


def test_hydra_jobs_delete(hydra: HydraCelery, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_tasks import cli

    monkeypatch.setattr(cli, "_settings", lambda: hydra.settings)
    job_id = submit_planned(hydra, {"kind": "pi", "params": {"samples": 1_000_000}})
    refused = CliRunner().invoke(cli.main, ["jobs", "delete", job_id])
    assert refused.exit_code == 2 and "cancel it before deleting it" in refused.output
    store.cancel_job(hydra.redis, job_id)
    done = CliRunner().invoke(cli.main, ["jobs", "delete", job_id])
    assert done.exit_code == 0 and json.loads(done.output) == {"deleted": job_id}
    assert job_keys_left(hydra, job_id) == []


# --- display names and teams ----------------------------------------------------------------------------
def new_account(app: HydraCelery, earned_micro: int = 0) -> SigningKey:
    key = SigningKey.generate()
    ledger.open_account(app.redis, identity.public_hex(key))
    if earned_micro:
        mint(app, identity.public_hex(key), earned_micro, key=f"earn-{identity.public_hex(key)[:12]}")
    return key


def test_a_signed_profile_names_the_account_on_the_leaderboard_and_its_team_sums_what_members_earned(
        hydra: HydraCelery, client: FlaskClient) -> None:
    alice, bob, carol = new_account(hydra, 70_000_000), new_account(hydra, 50_000_000), new_account(hydra, 65_000_000)
    for key, name, team in ((alice, "  Alice Ünïcode  ", "Lab 4"), (bob, "Bob", "Lab 4"), (carol, "", "")):
        answer = client.post("/api/profile", json=profiles.signed_profile(key, name, team))
        assert answer.status_code == 200, answer.get_json()
    assert client.get(f"/api/profile/{identity.public_hex(alice)}").get_json()["display_name"] == "Alice Ünïcode"

    board = client.get("/api/leaderboard?limit=100").get_json()
    rows = {row["account"]: row for row in board["by_earned"]}
    a, c = rows[identity.public_hex(alice)], rows[identity.public_hex(carol)]
    assert (a["display_name"], a["team"], a["shown"]) == ("Alice Ünïcode", "Lab 4", "Alice Ünïcode")
    assert (c["display_name"], c["team"], c["shown"]) == (None, None, identity.public_hex(carol)[:16] + "…")
    lab = next(t for t in board["by_team"] if t["team"] == "Lab 4")
    assert (lab["members"], lab["micro"], lab["tokens"]) == (2, 120_000_000, "120.000000")

    html = client.get("/").get_data(as_text=True)
    assert f'data-account="{identity.public_hex(alice)}"' in html and "Alice Ünïcode" in html and "Lab 4" in html

    # Leaving the team takes Bob's earnings out of it; a name that looks like markup is shown as text.
    assert client.post("/api/profile", json=profiles.signed_profile(bob, "<b>Bob</b>", "")).status_code == 200
    html = client.get("/").get_data(as_text=True)
    assert "&lt;b&gt;Bob&lt;/b&gt;" in html and "<b>Bob</b>" not in html
    lab = next(t for t in client.get("/api/leaderboard").get_json()["by_team"] if t["team"] == "Lab 4")
    assert (lab["members"], lab["micro"]) == (1, 70_000_000)


@pytest.mark.parametrize(("name", "team", "problem"), [
    ("x" * 41, "", "at most 40"),
    ("Eve\u202eevil", "", "U+202E"),  # a right-to-left override would reverse what others see
    ("Eve", "tab\tteam", "U+0009"),
    ("zero\u200bwidth", "", "U+200B"),
    (7, "", "must be a string"),
])
def test_a_bad_name_or_team_is_refused_with_what_to_fix(hydra: HydraCelery, client: FlaskClient, name: Any,
                                                       team: str, problem: str) -> None:
    key = new_account(hydra)
    body = profiles.signed_profile(key, "ok", team)
    body["display_name"] = name
    body["signature"] = identity.sign(key, {"action": "profile", **{k: v for k, v in body.items()
                                                                    if k != "signature"}})
    answer = client.post("/api/profile", json=body)
    assert answer.status_code == 400 and problem in answer.get_json()["error"]
    assert client.get(f"/api/profile/{identity.public_hex(key)}").status_code == 404


def test_a_profile_cannot_be_forged_replayed_or_set_for_an_account_that_does_not_exist(
        hydra: HydraCelery, client: FlaskClient) -> None:
    key = new_account(hydra)
    first = profiles.signed_profile(key, "Mallory-proof", "Blue", nonce=1000)
    forged = {**first, "display_name": "Someone else"}
    assert client.post("/api/profile", json=forged).status_code == 401
    assert client.post("/api/profile", json=first).status_code == 200
    newer = profiles.signed_profile(key, "Renamed", "Blue", nonce=2000)
    assert client.post("/api/profile", json=newer).status_code == 200
    replay = client.post("/api/profile", json=first)  # an old request sent again cannot undo the newer one
    assert replay.status_code == 409 and "nonce" in replay.get_json()["error"]
    assert client.get(f"/api/profile/{identity.public_hex(key)}").get_json()["display_name"] == "Renamed"
    stranger = SigningKey.generate()
    assert client.post("/api/profile", json=profiles.signed_profile(stranger, "Ghost", "")).status_code == 404
    assert not hydra.redis.hexists(keys.PROFILES, identity.public_hex(stranger))


def test_the_flower_link_shows_in_the_header_only_when_set(hydra: HydraCelery) -> None:
    with_link = create_app(celery_app=create_celery_app(hydra.settings.with_(flower_url="http://127.0.0.1:5555")))
    html = with_link.test_client().get("/").get_data(as_text=True)
    assert 'id="flower-link" href="http://127.0.0.1:5555"' in html
    assert "flower-link" not in create_app(celery_app=hydra).test_client().get("/").get_data(as_text=True)


# --- the volunteer's commands -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(web: Flask) -> Iterator[str]:
    with serving(web) as url:
        yield url


def test_hydra_profile_set_signs_with_the_volunteers_key_and_the_leaderboard_shows_the_name(
        hydra: HydraCelery, served: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_tasks import cli

    key_path = tmp_path / "worker.key"
    account = identity.public_hex(identity.load_or_create(key_path))
    mint(hydra, account, 2_000_000, key="cli-profile")
    monkeypatch.setattr(cli, "_settings", lambda: hydra.settings.with_(web_url=served, key_file=str(key_path)))

    done = CliRunner().invoke(cli.main, ["profile", "set", "--name", "Grace H.", "--team", "Navy"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["display_name"] == "Grace H."
    row = next(r for r in ledger_rows(served) if r["account"] == account)
    assert (row["shown"], row["team"]) == ("Grace H.", "Navy")

    refused = CliRunner().invoke(cli.main, ["profile", "set", "--name", "G" * 41])
    assert refused.exit_code == 1 and "400: 'display_name' is 41 characters long; at most 40" in refused.output


def ledger_rows(url: str) -> list[dict[str, Any]]:
    import requests

    return list(requests.get(url + "/api/leaderboard?limit=100", timeout=10).json()["by_balance"])


def test_hydra_dashboard_opens_the_dashboard_with_the_account_in_the_fragment(
        tmp_path: Any, served: str) -> None:
    import os
    import subprocess
    import sys

    key_path = tmp_path / "worker.key"
    account = identity.public_hex(identity.load_or_create(key_path))
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"  # a stand-in browser (webbrowser runs $BROWSER) that notes what it opened
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}, "HYDRA_URL": served,
           "HYDRA_KEY_FILE": str(key_path), "HYDRA_DATA_DIR": str(tmp_path), "BROWSER": str(browser)}
    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "dashboard"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{served}/#me={account}"
    assert opened.read_text().strip() == f"{served}/#me={account}"
    quiet = subprocess.run([sys.executable, "-m", "hydra_tasks", "dashboard", "--no-browser"],
                           env={**env, "BROWSER": "/bin/false"}, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stdout.strip() == f"{served}/#me={account}"


def test_a_pruned_worker_that_wakes_up_is_registered_again_by_its_next_heartbeat_and_only_with_its_key(
        hydra: HydraCelery, client: FlaskClient) -> None:
    """A laptop asleep for longer than the retention is pruned; its heartbeat thread carries on when it
    wakes, and the intake registers it again from that signed heartbeat. Another key cannot take its id."""
    from hydra_tasks import intake
    from hydra_tasks.trust import envelope

    def send(key: SigningKey, action: envelope.Action) -> str:
        facts = intake.worker_facts("sleeper@laptop", "eu-west", concurrency=1, settings=hydra.settings, isa="test",
                                    speeds={"pi_samples_per_s": 5e7, "mandelbrot_iters_per_s": 5e7})
        return intake.handle(hydra.redis, hydra.settings, envelope.seal(key, action, facts), publish=lambda *a: None)

    owner, thief = SigningKey.generate(), SigningKey.generate()
    assert send(owner, envelope.Action.REGISTER) == "registered"
    hydra.redis.hset(keys.worker("sleeper@laptop"), mapping={"state": "offline", "last_seen": time.time() - 9 * DAY})
    assert registry.prune_offline(hydra.redis, hydra.settings) == ["sleeper@laptop"]
    assert client.get("/api/workers/sleeper@laptop").status_code == 404

    assert send(thief, envelope.Action.HEARTBEAT).startswith("dropped")
    assert client.get("/api/workers/sleeper@laptop").status_code == 404
    assert send(owner, envelope.Action.HEARTBEAT) == "registered"
    back = client.get("/api/workers/sleeper@laptop").get_json()
    assert back["state"] == "online" and back["public_key"] == identity.public_hex(owner)
