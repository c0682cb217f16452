"""Confidential jobs run only on workers whose attestation the control plane verified; with none (as on
these machines, which have no TEE), they wait with a visible reason and are never leased.

The first half registers workers through the intake and dispatches against a real Redis with a
captured ``publish``; the last test runs a real stack (control and volunteer worker processes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from hydra_tasks import intake, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs import store
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.models import JobState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.trust import envelope
from hydra_tasks.trust.envelope import Action
from hydra_tasks.worker import registry
from support import running_stack, wait_for_job

pytestmark = pytest.mark.integration

SPEEDS = {"pi_samples_per_s": 5e7, "mandelbrot_iters_per_s": 5e7}


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return create_app(redis_only.settings.with_(attestation="sev-snp"))


def register(app: HydraCelery, worker_id: str, **changes: Any) -> str:
    body = {**intake.worker_facts(worker_id, "eu-west", concurrency=1, speeds=SPEEDS, settings=app.settings,
                                  isa="test"), **changes}
    return intake.handle(app.redis, app.settings, envelope.seal(SigningKey.generate(), Action.REGISTER, body),
                         publish=lambda *a: None)


def new_job(app: HydraCelery, *, confidential: bool) -> str:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": 2e6, "seed": 3}, "confidential": confidential},
                          attestation=app.settings.attestation)
    job_id = store.new_job_id()
    store.create_job(app.redis, spec, planner.plan(job_id, spec, app.settings), job_id=job_id)
    return job_id


def run_dispatch(app: HydraCelery) -> list[tuple[Any, ...]]:
    sent: list[tuple[Any, ...]] = []
    dispatch(app.redis, app.settings, CapacityRouter(), lambda *a: sent.append(a))
    return sent


def test_a_workers_tee_claim_is_recorded_but_not_counted_as_attested(app: HydraCelery) -> None:
    assert register(app, "snp@h", tee="sev-snp") == "registered"
    assert register(app, "plain@h") == "registered"
    snp, plain = registry.get_worker(app.redis, "snp@h"), registry.get_worker(app.redis, "plain@h")
    assert snp is not None and plain is not None
    assert (snp.tee, snp.attestation) == ("sev-snp", "unverified") and "no attestation evidence" in snp.attestation_note
    assert (plain.tee, plain.attestation, plain.attestation_note) == ("none", "none", "")
    assert snp.to_json()["attestation"] == "unverified"


def test_an_unknown_tee_is_dropped_as_malformed(app: HydraCelery) -> None:
    assert register(app, "odd@h", tee="nitro") == "dropped: malformed"
    assert register(app, "odd@h", tee=True) == "dropped: malformed"
    assert registry.get_worker(app.redis, "odd@h") is None


def test_a_confidential_job_with_only_unattested_workers_is_never_leased_and_says_why(app: HydraCelery) -> None:
    register(app, "snp@h", tee="sev-snp")   # claims a TEE: unverified
    register(app, "plain@h")
    secret = new_job(app, confidential=True)
    for _ in range(3):
        assert run_dispatch(app) == []
    assert app.redis.zcard(keys.LEASES) == 0
    job = store.get_job(app.redis, secret)
    assert job.state is JobState.QUEUED and job.dispatched == 0 and job.confidential
    assert job.waiting is not None and "sev-snp attestation verified" in job.waiting and "2 live" in job.waiting
    assert job.to_json()["waiting"] == job.waiting and job.to_json()["confidential"] is True
    # An ordinary job behind it still runs on the same workers; the confidential one still waits.
    ordinary = new_job(app, confidential=False)
    sent = run_dispatch(app)
    assert sent and {chunk["job_id"] for chunk, *_ in sent} == {ordinary}
    leased = app.redis.zrange(keys.LEASES, 0, -1)
    assert leased and all(m.startswith(keys.lease_member(ordinary, "")) for m in leased)
    assert store.get_job(app.redis, secret).dispatched == 0
    assert store.get_job(app.redis, ordinary).waiting is None


def test_a_confidential_job_goes_only_to_a_verified_worker(app: HydraCelery) -> None:
    register(app, "snp@h", tee="sev-snp")
    register(app, "plain@h")
    # No verifier here can accept evidence, so stand in for one that did: the record a verified worker
    # would have. This checks the dispatcher's filter, not attestation (see tests/unit/test_attestation.py).
    app.redis.hset(keys.worker("snp@h"), mapping={"attestation": "verified", "attestation_note": ""})
    secret = new_job(app, confidential=True)
    sent = run_dispatch(app)
    assert sent and {worker for _, _, worker, _ in sent} == {"snp@h"}
    assert store.get_job(app.redis, secret).waiting is None
    # Under another policy the same worker no longer qualifies.
    tdx = create_app(app.settings.with_(attestation="tdx"))
    other = new_job(tdx, confidential=True)
    app.redis.zrem(keys.JOBS_ACTIVE, secret)
    assert [s for s in run_dispatch(tdx) if s[0]["job_id"] == other] == []
    assert "tdx attestation" in (store.get_job(app.redis, other).waiting or "")


def test_real_workers_never_run_a_confidential_job_but_still_run_ordinary_ones(tmp_path: Path) -> None:
    with running_stack(tmp_path, {"eu-west": 2}, attestation="auto", confidential=True) as stack:
        app = create_app(stack.child_settings())
        assert all(w.tee == "none" or w.attestation != "verified" for w in registry.list_workers(app.redis))
        secret = submit_job(app, {"kind": "pi", "params": {"samples": 1e7, "seed": 1}})  # confidential by default
        ordinary = submit_job(app, {"kind": "pi", "params": {"samples": 1e7, "seed": 2}, "confidential": False})
        assert secret.confidential and not ordinary.confidential
        assert wait_for_job(app, ordinary.id, timeout_s=60).state is JobState.DONE
        time.sleep(2.0)  # several more dispatch rounds and sweeps
        job = store.get_job(app.redis, secret.id)
        assert job.state is JobState.QUEUED and job.dispatched == 0 and job.chunks_done == 0
        assert job.waiting and "a TEE (any kind) attestation verified" in job.waiting
        assert not [m for m in app.redis.zrange(keys.LEASES, 0, -1) if m.startswith(keys.lease_member(secret.id, ""))]
