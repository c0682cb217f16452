"""kill -9 a worker mid-job: the job still finishes, with exactly the undisturbed π hit count, and
the chunks the dead worker held are taken back by the sweeper within one sweep interval (plus
scheduling slack) of their leases expiring (a lease is HYDRA_LEASE_S, or 3x the chunk's expected
time if longer): seconds, not Celery's one-hour visibility timeout."""

from __future__ import annotations

import signal
import time
from typing import Iterator

import pytest

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import store
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.jobs.view import JobView
from hydra_tasks.models import WorkerState
from hydra_tasks.stack import LocalStack
from hydra_tasks.worker.registry import list_workers
from support import running_stack, wait_for, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.fault]

SAMPLES, SEED, CHUNK = 8_000_000_000, 20261128, 400_000_000  # ~0.25 s chunks on AVX-512
LEASE_S = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("kill9"), {"eu-west": 2}, adaptive=False, pi_chunk_samples=CHUNK,
                       lease_s=LEASE_S) as stack:
        yield stack


VICTIM = "eu-west-2"
# Between a lease's expiry and its chunk being re-queued: beat's next tick (every sweep interval),
# then the control worker taking the sweep task from its queue and running it, on a loaded 2-core
# machine.
SWEEP_SLACK_S = 5.0


def worker_id(app: HydraCelery, name: str) -> str:
    ids = [w.worker_id for w in list_workers(app.redis) if w.worker_id.split("@")[0] == name]
    assert len(ids) == 1, ids
    return ids[0]


def leases_held(app: HydraCelery, wid: str) -> dict[str, float]:
    """``{job}:{chunk}`` -> lease deadline (unix s) for each chunk leased to the worker."""
    members = sorted(app.redis.smembers(keys.worker_inflight(wid)))
    deadlines = [app.redis.zscore(keys.LEASES, m) for m in members]
    return {m: d for m, d in zip(members, deadlines) if d is not None}


def expiries(app: HydraCelery, member: str) -> int | None:
    """How often the chunk's lease has expired (the sweeper counts each take-back); None once the
    chunk is merged (its lease is deleted)."""
    lease_key = keys.lease(*keys.split_lease_member(member))
    with app.redis.pipeline() as pipe:
        exists, count = pipe.exists(lease_key).hget(lease_key, "expiries").execute()
    return int(count or 0) if exists else None


def slowest_mean_chunk_s(job: JobView) -> float:
    """The longest mean chunk time of any worker of a finished job."""
    return max(w.elapsed_ms / w.chunks / 1000 for w in job.workers.values() if w.chunks)


def test_after_kill_9_a_workers_chunks_are_taken_back_as_their_leases_expire_and_the_job_gets_the_same_hits(
        stack: LocalStack, app: HydraCelery) -> None:
    spec = {"kind": "pi", "params": {"samples": SAMPLES, "seed": SEED}}
    undisturbed = wait_for_job(app, submit_job(app, spec).id)
    assert undisturbed.state == "done"

    job = submit_job(app, spec)
    victim = worker_id(app, VICTIM)
    wait_for(lambda: store.get_job(app.redis, job.id).chunks_done >= 2, timeout_s=60, what="progress")
    # Freeze the victim so that what it holds cannot change, and kill it only once it holds work.
    held: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while not held:
        assert time.monotonic() < deadline, "the victim never held a lease while the job ran"
        stack.kill(VICTIM, signal.SIGSTOP)
        held = leases_held(app, victim)
        if not held:
            stack.kill(VICTIM, signal.SIGCONT)
            time.sleep(0.02)
    t_kill = time.time()
    stack.kill(VICTIM, signal.SIGKILL)  # the worker and its pool children, no chance to clean up

    # Each chunk the dead worker held must be taken back within a sweep (+ slack) of its lease expiring.
    settings = app.settings
    before = {m: expiries(app, m) for m in held}
    due_s = {m: max(d - t_kill, 0.0) + settings.sweep_interval_s + SWEEP_SLACK_S for m, d in held.items()}
    taken_back_s: dict[str, float] = {}
    while len(taken_back_s) < len(held) and time.time() - t_kill <= max(due_s.values()):
        for m in held.keys() - taken_back_s.keys():
            count, previous = expiries(app, m), before[m]
            if count is None or previous is None or count > previous:
                taken_back_s[m] = time.time() - t_kill
        time.sleep(0.05)
    report = {m: (round(held[m] - t_kill, 2), taken_back_s.get(m)) for m in held}
    print(f"kill -9 holding {len(held)} chunk(s): (lease expiry, taken back) in s after the kill: {report}; "
          f"mean chunk of the undisturbed run {slowest_mean_chunk_s(undisturbed):.2f}s")
    late = {m: report[m] for m in held if taken_back_s.get(m, float("inf")) > due_s[m]}
    assert not late, (f"not taken back within {settings.sweep_interval_s:g}s (the sweep interval) + {SWEEP_SLACK_S:g}s "
                      f"of the lease expiring: {late}")

    disturbed = wait_for_job(app, job.id, timeout_s=120)
    print(f"job done {time.time() - t_kill:.1f}s after the kill; re-sent {disturbed.redispatched}, "
          f"duplicates {disturbed.duplicates}")
    assert disturbed.state == "done", disturbed
    assert disturbed.result["hits"] == undisturbed.result["hits"] == compute.pi_hits(SEED, 0, SAMPLES)
    assert disturbed.result["samples"] == SAMPLES
    assert disturbed.redispatched >= len(held), "each chunk the killed worker held should have been re-sent"
    # The leases themselves are short: HYDRA_LEASE_S, or 3x a chunk's expected time when that is longer
    # (expected from the worker's speed model; allow it to be 3x too pessimistic).
    chunk_s = slowest_mean_chunk_s(undisturbed)
    last_expiry_s = max(held.values()) - t_kill
    assert last_expiry_s <= max(LEASE_S, 9 * chunk_s), (
        f"the dead worker's leases ran {last_expiry_s:.1f}s past the kill; chunks took {chunk_s:.2f}s on average")
    assert app.redis.zcard(keys.LEASES) == 0
    wait_for(lambda: {w.worker_id.split("@")[0]: w.state for w in list_workers(app.redis)}.get(VICTIM)
             is WorkerState.OFFLINE, timeout_s=15, what="the killed worker to be marked offline")
