"""The intake: volunteers' messages are signed envelopes, authenticated before anything is written.

The first half drives :func:`hydra_tasks.intake.handle` against a real Redis; the second half
runs a real stack (control, intake and volunteer worker processes) and attacks its intake queue
with a plain Celery client, as anyone holding broker credentials could.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from nacl.signing import SigningKey

from hydra_tasks import intake, keys
from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.lua import scripts
from hydra_tasks.models import WorkerState
from hydra_tasks.stack import LocalStack
from hydra_tasks.trust import envelope, identity
from hydra_tasks.trust.envelope import Action
from hydra_tasks.worker import registry
from support import running_stack, wait_for, wait_for_job

pytestmark = pytest.mark.integration

SPEEDS = {"pi_samples_per_s": 5e7, "mandelbrot_iters_per_s": 5e7}


@pytest.fixture
def app(redis_only: HydraCelery) -> HydraCelery:
    redis_only.redis.flushdb()
    return redis_only


def facts(app: HydraCelery, worker_id: str, **changes: Any) -> dict[str, Any]:
    return {**intake.worker_facts(worker_id, "eu-west", concurrency=1, speeds=SPEEDS, settings=app.settings,
                                  isa="test"), **changes}


def send(app: HydraCelery, message: object) -> str:
    return intake.handle(app.redis, app.settings, message, publish=lambda *a: None)


def test_first_registration_binds_the_worker_id_to_its_key_and_stamps_the_control_planes_clock(
        app: HydraCelery) -> None:
    key = SigningKey.generate()
    stamp = time.time() - 7200  # the volunteer's clock is 2 h behind: nothing it sends uses it
    assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w1@h"), sent_at=stamp)) == "registered"
    worker = registry.get_worker(app.redis, "w1@h")
    assert worker is not None and worker.public_key == identity.public_hex(key)
    assert abs(worker.last_seen - time.time()) < 5 and worker.state is WorkerState.ONLINE
    assert app.redis.hexists(keys.LEDGER_ACCOUNTS, identity.public_hex(key))  # its account is open
    assert send(app, envelope.seal(key, Action.HEARTBEAT, facts(app, "w1@h", state="paused",
                                                                pause_reason="on battery"))) == "heartbeat"
    worker = registry.get_worker(app.redis, "w1@h")
    assert worker is not None and worker.state is WorkerState.PAUSED and worker.pause_reason == "on battery"
    assert send(app, envelope.seal(key, Action.OFFLINE, {"worker_id": "w1@h"})) == "offline"
    assert registry.get_worker(app.redis, "w1@h").state is WorkerState.OFFLINE  # type: ignore[union-attr]
    assert intake.dropped_counts(app.redis) == {}


def test_a_goodbye_is_not_undone_by_a_heartbeat_sent_before_it_and_delivered_after(app: HydraCelery) -> None:
    # A worker's messages travel through the broker and are applied by several intake processes, so a
    # heartbeat sent just before the worker said goodbye can be applied after the goodbye (CI saw a
    # cleanly stopped volunteer listed online again). It is stale: the worker stays offline.
    key, now = SigningKey.generate(), time.time()
    assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w1@h"), sent_at=now - 2)) == "registered"
    late = envelope.seal(key, Action.HEARTBEAT, facts(app, "w1@h"), sent_at=now - 1)
    assert send(app, envelope.seal(key, Action.OFFLINE, {"worker_id": "w1@h"}, sent_at=now)) == "offline"
    assert send(app, late) == "stale"
    assert registry.get_worker(app.redis, "w1@h").state is WorkerState.OFFLINE  # type: ignore[union-attr]
    # The same race inside one step: the intake read the record as online, then the goodbye was applied.
    assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w2@h"), sent_at=now)) == "registered"
    registry.set_offline(app.redis, "w2@h", said_at=now + 1)
    assert not scripts(app.redis).beat("w2@h", now=now + 2, state="online", pause_reason="")
    assert registry.get_worker(app.redis, "w2@h").state is WorkerState.OFFLINE  # type: ignore[union-attr]
    # A heartbeat sent after the goodbye (the worker was only marked offline, or came back) registers it again,
    # as does a new process's registration.
    assert send(app, envelope.seal(key, Action.HEARTBEAT, facts(app, "w1@h"), sent_at=now + 5)) == "registered"
    assert registry.get_worker(app.redis, "w1@h").state is WorkerState.ONLINE  # type: ignore[union-attr]
    assert intake.dropped_counts(app.redis) == {}


def test_nobody_else_can_speak_for_a_registered_worker(app: HydraCelery) -> None:
    victim, thief = SigningKey.generate(), SigningKey.generate()
    send(app, envelope.seal(victim, Action.REGISTER, facts(app, "victim@h")))
    before = app.redis.hgetall(keys.worker("victim@h"))
    attacks = [
        envelope.seal(thief, Action.REGISTER, facts(app, "victim@h", region="us-east", cpu_limit=1.0)),
        envelope.seal(thief, Action.HEARTBEAT, facts(app, "victim@h", state="paused", pause_reason="x")),
        envelope.seal(thief, Action.OFFLINE, {"worker_id": "victim@h"}),
        envelope.seal(thief, Action.GRID, {"worker_id": "victim@h", "zone": "FR", "renewable_share": 1.0,
                                           "timestamp": time.time()}),
        envelope.seal(thief, Action.RESULT, {"worker_id": "victim@h", "job_id": "0" * 16, "chunk_id": "c0"}),
    ]
    assert [send(app, a) for a in attacks] == ["dropped: wrong worker"] * len(attacks)
    # The victim's own envelope with its body altered after signing, and one with its key swapped.
    honest = envelope.seal(victim, Action.HEARTBEAT, facts(app, "victim@h"))
    assert send(app, {**honest, "body": {**honest["body"], "cpu_limit": 1.0}}) == "dropped: bad signature"
    assert send(app, {**honest, "key": identity.public_hex(thief)}) == "dropped: bad signature"
    # Not envelopes at all.
    for junk in (None, "x", [1], {"worker_id": "victim@h"}, {**honest, "v": 2}, {**honest, "action": "mint"},
                 {**honest, "extra": 1}):
        assert send(app, junk) == "dropped: malformed"
    assert app.redis.hgetall(keys.worker("victim@h")) == before
    assert intake.dropped_counts(app.redis) == {"wrong worker": 5, "bad signature": 2, "malformed": 7}


def test_a_worker_registers_the_generators_its_kernels_compute_and_one_that_names_none_gets_the_first(
        app: HydraCelery) -> None:
    assert facts(app, "new@h")["generators"] == ["splitmix64", "philox4x32-10"]
    assert send(app, envelope.seal(SigningKey.generate(), Action.REGISTER, facts(app, "new@h"))) == "registered"
    old = {k: v for k, v in facts(app, "old@h").items() if k != "generators"}  # code from before generators
    assert send(app, envelope.seal(SigningKey.generate(), Action.REGISTER, old)) == "registered"
    new_worker, old_worker = registry.get_worker(app.redis, "new@h"), registry.get_worker(app.redis, "old@h")
    assert new_worker is not None and new_worker.computes("philox4x32-10") and new_worker.computes("splitmix64")
    assert old_worker is not None and old_worker.computes("splitmix64") and not old_worker.computes("philox4x32-10")


def test_a_body_that_does_not_fit_its_action_is_dropped_whole(app: HydraCelery) -> None:
    key = SigningKey.generate()
    for bad in ({"cores": 0}, {"pi_samples_per_s": 1e20}, {"region": "EU WEST"}, {"state": "offline"},
                {"concurrency": "8"}, {"host": "h" * 500}, {"generators": ["mt19937"]}, {"generators": "philox4x32-10"},
                {"generators": []}):
        assert send(app, envelope.seal(key, Action.REGISTER, facts(app, "w@h", **bad))) == "dropped: malformed", bad
    assert registry.get_worker(app.redis, "w@h") is None
    assert not app.redis.exists(keys.LEDGER_ACCOUNTS)


def test_in_isolated_mode_only_enrolled_keys_are_heard(app: HydraCelery) -> None:
    isolated = create_app(app.settings.with_(isolate=True))
    stranger = SigningKey.generate()
    out = intake.handle(isolated.redis, isolated.settings, envelope.seal(stranger, Action.REGISTER,
                                                                         facts(app, "ghost@h")),
                        publish=lambda *a: None)
    assert out == "dropped: unknown key"
    assert registry.get_worker(app.redis, "ghost@h") is None and not app.redis.smembers(keys.WORKERS)


# --- a real stack: the intake worker runs only intake tasks ---------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("intake"), {"eu-west": 1}, adaptive=False,
                       pi_chunk_samples=20_000_000) as stack:
        yield stack


@pytest.fixture(scope="module")
def live(stack: LocalStack) -> HydraCelery:
    return create_app(stack.child_settings())


def test_workers_register_through_the_intake_and_jobs_complete(live: HydraCelery, stack: LocalStack) -> None:
    (worker,) = registry.list_workers(live.redis)
    key = identity.load_key(Path(stack.settings.data_dir / "keys" / "eu-west-1.key"))
    assert worker.public_key == identity.public_hex(key)
    assert "registered worker eu-west-1@" in stack.procs["intake"].log_tail(400)
    job = wait_for_job(live, submit_job(live, {"kind": "pi", "params": {"samples": 60_000_000, "seed": 3}}).id)
    assert job.state == "done" and job.chunks_done == 3


def test_the_intake_worker_refuses_every_other_task_and_counts_it(live: HydraCelery, stack: LocalStack) -> None:
    before = intake.dropped_counts(live.redis).get("unknown task", 0)
    for name in ("hydra.dispatch", "hydra.sweep", "hydra.compute_chunk", "celery.accumulate",
                 "celery.backend_cleanup", "hydra.collect_chunk"):
        live.send_task(name, args=[], queue=keys.INTAKE_QUEUE)
    wait_for(lambda: intake.dropped_counts(live.redis).get("unknown task", 0) - before >= 6, timeout_s=30,
             what="the intake to refuse six foreign tasks")
    log = stack.procs["intake"].log_tail(400)
    assert "task 'celery.accumulate' is not run by this worker" in log
    assert "Task hydra.dispatch" not in log and "Task celery.accumulate" not in log  # none of them ran


def test_the_control_worker_runs_no_celery_builtins(live: HydraCelery, stack: LocalStack) -> None:
    live.send_task("celery.accumulate", args=[1, 2], queue=keys.CONTROL_QUEUE)
    stack.wait_for_log("control", "task 'celery.accumulate' is not run by this worker", timeout_s=30)
    assert "Task celery.accumulate" not in stack.procs["control"].log_tail(400)


def test_a_pickle_message_on_the_intake_is_refused_and_counted(live: HydraCelery) -> None:
    before = intake.dropped_counts(live.redis).get("malformed", 0)
    with live.connection_for_write() as conn:
        producer = conn.Producer(serializer="pickle")
        producer.publish({"task": "hydra.intake"}, routing_key=keys.INTAKE_QUEUE,
                         headers={"task": "hydra.intake", "id": "x"})
    wait_for(lambda: intake.dropped_counts(live.redis).get("malformed", 0) > before, timeout_s=30,
             what="the intake to refuse a pickle message")
