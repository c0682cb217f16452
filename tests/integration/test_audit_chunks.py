"""Issue 12, item 1: the blocks a spot check picks are recomputed by another worker of good standing
as a small audit chunk when that is cheaper than on the control plane; the control plane still
recomputes one block itself, settles disagreements, and finalizes a job only when every audit of its
results is settled. Real Redis, the real dispatch / collect / sweep path and Lua scripts; the
workers' results are computed by the real kernel (and falsified where a test says so)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from nacl.signing import SigningKey

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import collect, pi, store
from hydra_tasks.ledger import audit
from hydra_tasks.models import payload_digest
from hydra_tasks.scheduling import sweeper
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.trust import identity
from hydra_tasks.trust import results as signed_results
from hydra_tasks.worker import registry
from hydra_tasks.worker.compute import run_chunk
from support import dispatch_in_process, keyed_worker, submit_planned

pytestmark = pytest.mark.integration

CHUNK = 12_000_000   # 31 probation blocks of 64 hold ~5.8 M samples: worth an audit chunk
Sent = list[tuple[dict[str, Any], int, str]]


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(adaptive=False, pi_chunk_samples=CHUNK))


def send(app: HydraCelery) -> Sent:
    return dispatch_in_process(app)


def submit(app: HydraCelery, samples: int, seed: int = 3) -> str:
    return submit_planned(app, {"kind": "pi", "params": {"samples": samples, "seed": seed}})


def one_block_off(result: dict[str, Any], key: SigningKey, block: int) -> dict[str, Any]:
    payload = dict(result["payload"])
    blocks = list(payload["block_hits"])
    blocks[block] += 1
    payload.update(block_hits=blocks, hits=payload["hits"] + 1)
    return signed_results.sign({**result, "payload": payload,
                                "digest": payload_digest(result["job_id"], result["chunk_id"], payload)}, key)


def audit_hits_off(result: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    payload = {**result["payload"], "audit_hits": [h + 1 for h in result["payload"]["audit_hits"]]}  # same generator
    return signed_results.sign({**result, "payload": payload,
                                "digest": payload_digest(result["job_id"], result["chunk_id"], payload)}, key)


def compute_as(chunk: dict[str, Any], attempt: int, worker: str, key: SigningKey) -> dict[str, Any]:
    return run_chunk(chunk, attempt=attempt, worker_id=worker, region="r", key=key)


def test_a_new_workers_result_is_audited_by_a_veteran_and_the_job_waits_for_the_audit(app: HydraCelery) -> None:
    new_key = keyed_worker(app, "new@test")
    job_id = submit(app, CHUNK)  # one chunk, sent to the new worker
    [(chunk, attempt, worker)] = send(app)
    vet_key = keyed_worker(app, "veteran@test", clean_audits=60)
    assert collect.collect(app.redis, app.settings, compute_as(chunk, attempt, worker, new_key)) == "merged"
    # Every unit is in, but its audit is not: the job is still running, with one audit waiting.
    job = store.get_job(app.redis, job_id)
    assert job.units_done == job.units_total and job.state.value == "running"
    assert app.redis.hget(keys.job(job_id), "audits_pending") == "1" and app.redis.zcard(keys.AUDITS) == 1
    checks = app.redis.hgetall(keys.SPOT_CHECKS)
    assert int(checks["units:pi"]) == CHUNK // 64  # the control plane recomputed one block itself
    # The audit chunk goes to the veteran, never to the worker it audits, and names no worker.
    sent = send(app)
    [(spec, audit_attempt, auditor)] = sent
    assert auditor == "veteran@test" and keys.is_audit_chunk(spec["chunk_id"]) and spec["units"] == 0
    assert "new@test" not in str(spec) and len(spec["params"]["audit"]["blocks"]) == 31
    assert collect.collect(app.redis, app.settings, compute_as(spec, audit_attempt, auditor, vet_key)) == "merged"
    job = store.get_job(app.redis, job_id)
    assert job.state.value == "done" and job.result["hits"] == compute.pi_hits(3, 0, CHUNK)
    assert job.chunks_done == 1 and registry.get_worker(app.redis, "new@test").reputation == 1  # type: ignore[union-attr]
    checks = app.redis.hgetall(keys.SPOT_CHECKS)
    assert int(checks["remote:pi"]) == pi.block_samples(pi.ChunkSpec.from_json(chunk), spec["params"]["audit"]["blocks"])
    assert earned(app, vet_key) > 0  # the auditor is paid for its samples
    assert audit.verify(app.redis).ok


def earned(app: HydraCelery, key: SigningKey) -> int:
    return int(app.redis.hget(keys.LEDGER_EARNED, identity.public_hex(key)) or 0)


def run_new_workers_chunk(app: HydraCelery, new_key: SigningKey, monkeypatch: pytest.MonkeyPatch,
                          wrong_block: int | None) -> tuple[str, dict[str, Any], int, str, SigningKey]:
    """The new worker returns its chunk (one block off if ``wrong_block``); the control plane's own
    block is block 0 and the wrong one is among those sent to the auditor, a veteran who joins after
    the chunk went out. Returns the job, the audit chunk sent, its attempt, its auditor and its key."""
    monkeypatch.setattr(pi, "pick_blocks", lambda chunk, picks, rng=None: list(range(picks)))
    job_id = submit(app, CHUNK)
    [(chunk, attempt, worker)] = send(app)
    assert worker == "new@test"
    result = compute_as(chunk, attempt, worker, new_key)
    if wrong_block is not None:
        result = one_block_off(result, new_key, wrong_block)
    veteran_key = keyed_worker(app, "veteran@test", clean_audits=60)  # joins after the chunk went out
    assert collect.collect(app.redis, app.settings, result) == "merged"
    [(spec, audit_attempt, auditor)] = send(app)
    assert auditor == "veteran@test"
    return job_id, spec, audit_attempt, auditor, veteran_key


def test_an_audit_chunk_catches_a_wrong_block_and_the_value_never_reaches_the_result(
        app: HydraCelery, monkeypatch: pytest.MonkeyPatch) -> None:
    new_key = keyed_worker(app, "new@test")
    job_id, spec, attempt, auditor, vet_key = run_new_workers_chunk(app, new_key, monkeypatch, wrong_block=9)
    assert collect.collect(app.redis, app.settings, compute_as(spec, attempt, auditor, vet_key)) == "merged"
    cheat = registry.get_worker(app.redis, "new@test")
    assert cheat is not None and "block 9" in cheat.quarantined
    job = store.get_job(app.redis, job_id)
    assert job.state.value == "running" and job.units_done == 0 and job.recomputed == 1
    assert earned(app, new_key) == 0
    # The veteran recomputes the chunk (its own result is audited on the control plane: no other auditor).
    for chunk, a, w in send(app):
        assert w == "veteran@test"
        assert collect.collect(app.redis, app.settings, compute_as(chunk, a, w, vet_key)) == "merged"
    job = store.get_job(app.redis, job_id)
    assert job.state.value == "done" and job.result["hits"] == compute.pi_hits(3, 0, CHUNK)
    report = audit.verify(app.redis)
    assert report.ok and report.reversals == 1, report.problems


def test_an_auditor_that_lies_is_caught_and_the_honest_worker_keeps_its_standing(
        app: HydraCelery, monkeypatch: pytest.MonkeyPatch) -> None:
    new_key = keyed_worker(app, "new@test")
    job_id, spec, attempt, auditor, vet_key = run_new_workers_chunk(app, new_key, monkeypatch, wrong_block=None)
    lie = audit_hits_off(compute_as(spec, attempt, auditor, vet_key), vet_key)
    assert collect.collect(app.redis, app.settings, lie) == "merged"
    liar = registry.get_worker(app.redis, "veteran@test")
    honest = registry.get_worker(app.redis, "new@test")
    assert liar is not None and liar.quarantined and "audit" in liar.quarantined
    assert honest is not None and not honest.quarantined
    job = store.get_job(app.redis, job_id)
    assert job.state.value == "done" and job.result["hits"] == compute.pi_hits(3, 0, CHUNK)
    assert earned(app, vet_key) == 0 and earned(app, new_key) > 0
    assert audit.verify(app.redis).ok


def test_an_audit_nobody_takes_is_settled_on_the_control_plane(app: HydraCelery,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    new_key = keyed_worker(app, "new@test")
    job_id, *_ = run_new_workers_chunk(app, new_key, monkeypatch, wrong_block=20)
    # The veteran never answers and falls silent: its lease expires, no auditor is left, so the control
    # plane settles the audit itself (and catches the wrong block) instead of failing or stalling the job.
    report = sweeper.sweep(app.redis, app.settings, CapacityRouter(), lambda c, a, w, r: None,
                           now=time.time() + 10 * app.settings.lease_s)
    assert report.failed_jobs == []
    job = store.get_job(app.redis, job_id)
    assert app.redis.hget(keys.job(job_id), "audits_local") == "1"
    cheat = registry.get_worker(app.redis, "new@test")
    assert cheat is not None and "block 20" in cheat.quarantined and job.units_done == 0
    assert not app.redis.zcard(keys.AUDITS)


def test_an_audit_keeps_to_its_jobs_carbon_threshold(app: HydraCelery) -> None:
    # Time shifting gives a job a threshold (the dirtiest gCO2/kWh it may use now); an audit of its
    # results is its work too. The dispatcher passes the thresholds and each worker's intensity now.
    from hydra_tasks.scheduling.cluster import snapshot
    from hydra_tasks.trust import audits

    new_key = keyed_worker(app, "new@test")
    job_id = submit(app, CHUNK)
    [(chunk, attempt, worker)] = send(app)
    keyed_worker(app, "coal@test", clean_audits=60)
    keyed_worker(app, "wind@test", clean_audits=60)
    assert collect.collect(app.redis, app.settings, compute_as(chunk, attempt, worker, new_key)) == "merged"
    intensity = {"new@test": 20.0, "coal@test": 700.0, "wind@test": 30.0}

    def dispatch_audits(limit: float) -> Sent:
        sent: Sent = []
        snap = snapshot(app.redis, app.settings, fresh=True)
        free = {w: 1 for w in snap.workers}
        audits.dispatch_pending(app.redis, app.settings, snap, free, lambda c, a, w, r: sent.append((c, a, w)),
                                limits={job_id: limit}, intensity=intensity)
        return sent

    # wind is clean enough; coal, with more free room and first by name otherwise, is not
    [(spec, _, auditor)] = dispatch_audits(50.0)
    assert auditor == "wind@test" and keys.is_audit_chunk(spec["chunk_id"])
    # wind falls silent: the sweeper takes the audit back when its lease expires, and the threshold drops
    report = sweeper.SweepReport()
    sweeper.requeue_expired(app.redis, app.settings, report, time.time() + 10 * app.settings.lease_s)
    assert report.requeued == [keys.lease_member(job_id, spec["chunk_id"])] and app.redis.zcard(keys.AUDITS) == 1
    # Below every auditor's intensity: nobody may take it, so the control plane settles it at once
    # (not after LOCAL_AFTER_S) and the job ends.
    assert dispatch_audits(10.0) == []
    assert app.redis.hget(keys.job(job_id), "audits_local") == "1" and not app.redis.zcard(keys.AUDITS)
    job = store.get_job(app.redis, job_id)
    assert job.state.value == "done" and job.result["hits"] == compute.pi_hits(3, 0, CHUNK)
