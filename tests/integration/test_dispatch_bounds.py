"""Against a real Redis: the dispatcher cuts a π job into at most MAX_CHUNKS chunks even for a worker
that reports a tiny speed (a slow, throttled or lying volunteer), in adaptive and static mode."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hydra_tasks.celery_app import HydraCelery, create_app
from hydra_tasks.jobs.submit import submit_job
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling.dispatcher import dispatch
from hydra_tasks.scheduling.planner import MAX_CHUNKS
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.worker import registry

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("changes", [{"adaptive": True}, {"adaptive": False, "pi_chunk_samples": 1_000}])
def test_a_slow_worker_gets_chunks_of_at_least_a_max_chunks_share_of_the_job(
        redis_only: HydraCelery, changes: dict[str, Any]) -> None:
    redis_only.redis.flushdb()
    submitter = create_app(redis_only.settings.with_(adaptive=True))  # accepted as submitted ...
    control = create_app(redis_only.settings.with_(**changes))        # ... then cut with these settings
    now = time.time()
    registry.register(control.redis, registry.WorkerInfo(
        worker_id="slow@test", region="r", host="test", pid=1, cores=1, concurrency=4, pi_samples_per_s=1.0,
        mandelbrot_iters_per_s=1.0, state=WorkerState.ONLINE, started_at=now, last_seen=now))
    job = submit_job(submitter, {"kind": "pi", "params": {"samples": 10**13, "seed": 1}})
    sent: list[dict[str, Any]] = []
    dispatch(control.redis, control.settings, CapacityRouter(), lambda c, a, w, r: sent.append(c), now=now)
    assert sent and all(c["job_id"] == job.id for c in sent)
    assert all(c["units"] >= 10**13 // MAX_CHUNKS for c in sent), [c["units"] for c in sent]
