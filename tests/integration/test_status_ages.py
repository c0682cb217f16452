"""`hydra status` shows how long ago each worker was seen, never a negative age."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from hydra_tasks.celery_app import HydraCelery
from hydra_tasks.models import WorkerState
from hydra_tasks.worker import registry


def test_a_worker_whose_clock_runs_ahead_is_shown_as_seen_0s_ago(redis_only: HydraCelery) -> None:
    now = time.time()
    registry.register(redis_only.redis, registry.WorkerInfo(
        worker_id="ahead@host", region="eu-west", host="host", pid=1, cores=1, concurrency=1,
        pi_samples_per_s=1e8, mandelbrot_iters_per_s=1e8, state=WorkerState.ONLINE, started_at=now,
        last_seen=now + 5.0))  # its heartbeats carry its own clock, 5 s ahead of ours
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env.update(HYDRA_REDIS_URL=str(redis_only.settings.redis_url), COLUMNS="200")
    out = subprocess.run([sys.executable, "-m", "hydra_tasks", "status"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "ahead@host" in line)
    assert re.search(r"(-?\d+)s ago", row).group(1) == "0", row
