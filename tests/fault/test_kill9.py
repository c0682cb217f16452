"""kill -9 a worker mid-job: the job still finishes, with exactly the undisturbed π hit count,
recovered by lease expiry in seconds rather than Celery's one-hour visibility timeout."""

from __future__ import annotations

import signal
import time
from typing import Iterator

import pytest

from hydra_tasks import compute, keys
from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.jobs import store
from hydra_tasks.jobs.submit import submit_job
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



def test_a_job_survives_kill_9_of_a_worker_with_the_same_hit_count(stack: LocalStack, app: HydraCelery) -> None:
    spec = {"kind": "pi", "params": {"samples": SAMPLES, "seed": SEED}}
    undisturbed = wait_for_job(app, submit_job(app, spec)["id"])
    assert undisturbed["state"] == "done"

    job = submit_job(app, spec)
    # Wait until the victim holds work: some chunks merged, and leases out on both workers' queue.
    wait_for(lambda: store.get_job(app.redis, job["id"])["chunks_done"] >= 2, timeout_s=60, what="progress")
    t_kill = time.monotonic()
    stack.kill("eu-west-2", signal.SIGKILL)  # the worker and its pool children, no chance to clean up
    disturbed = wait_for_job(app, job["id"], timeout_s=120)
    recovery_s = time.monotonic() - t_kill

    print(f"kill -9 at chunk {disturbed['chunks_total']}: job done {recovery_s:.1f}s after the kill; "
          f"re-sent {disturbed['redispatched']}, duplicates {disturbed['duplicates']}")
    assert disturbed["state"] == "done", disturbed
    assert disturbed["result"]["hits"] == undisturbed["result"]["hits"] == compute.pi_hits(SEED, 0, SAMPLES)
    assert disturbed["result"]["samples"] == SAMPLES
    assert disturbed["redispatched"] >= 1, "the killed worker's chunk should have been taken back by its lease"
    assert recovery_s < 120 < 3600  # far sooner than Celery's visibility timeout
    assert app.redis.zcard(keys.LEASES) == 0
    wait_for(lambda: {w.worker_id.split("@")[0]: w.state for w in list_workers(app.redis)}.get("eu-west-2")
             is WorkerState.OFFLINE, timeout_s=15, what="the killed worker to be marked offline")
