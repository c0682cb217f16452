"""The dispatcher's time-shifting thresholds (dispatcher.carbon_thresholds) read from real job hashes in
a real Redis: a Mandelbrot job is deferred on the size its preview measured, never on a guess."""

from __future__ import annotations

import json
import math
import time

import pytest
import redis

from hydra_tasks import keys
from hydra_tasks.grid.regions import RegionSignal
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import dispatcher
from hydra_tasks.scheduling.cluster import ClusterSnapshot
from hydra_tasks.scheduling.router import GridAwareRouter
from hydra_tasks.settings import Settings
from hydra_tasks.worker.registry import WorkerInfo

NOW_G, LATER_G = 500.0, 50.0  # every region is dirty now and clean from hour 5 on
RATE = 1e9


def router() -> GridAwareRouter:
    signals = {"north": RegionSignal(NOW_G, None, None, "test"), "south": RegionSignal(NOW_G + 100, None, None, "test")}
    r = GridAwareRouter.by_region(signals, carbon_weight=1.0, cost_weight=0.0, renewable_weight=0.0)
    r.hourly = lambda worker, hours, now: [NOW_G if k < 5 else LATER_G for k in range(hours)]
    return r


def snapshot(now: float) -> ClusterSnapshot:
    workers = {f"{region}-1@h": WorkerInfo(worker_id=f"{region}-1@h", region=region, host="h", pid=1, cores=4,
                                          concurrency=4, pi_samples_per_s=RATE, mandelbrot_iters_per_s=RATE,
                                          state=WorkerState.ONLINE, started_at=now - 60, last_seen=now)
               for region in ("north", "south")}
    return ClusterSnapshot(now, workers, {w: 4 for w in workers})


def add_job(client: redis.Redis, job_id: str, kind: str, params: dict[str, object], units: int, deadline: float,
            **fields: str) -> None:
    client.hset(keys.job(job_id), mapping={"kind": kind, "spec": json.dumps({"kind": kind, "params": params,
                                                                            "deadline_ts": deadline}),
                                           "units_total": str(units), "units_done": "0", **fields})


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    dispatcher._plans.clear()
    return client


def test_a_mandelbrot_job_runs_its_preview_at_once_and_is_deferred_once_its_size_is_measured(
        client: redis.Redis) -> None:
    now = time.time()
    deadline = now + 12 * 3600
    params = {"width": 1920, "height": 1080, "max_iter": 5000}
    add_job(client, "m", "mandelbrot", params, 1920 * 1080, deadline)
    add_job(client, "p", "pi", {"samples": int(RATE * 3600)}, int(RATE * 3600), deadline)  # an hour of one process
    settings = Settings().with_(adaptive=True)
    thresholds = dispatcher.carbon_thresholds(client, settings, snapshot(now), router(), ["m", "p"], ["m", "p"],
                                              now=now)
    assert thresholds["m"] == math.inf  # its only chunk, the preview, goes now, wherever
    assert thresholds["p"] == pytest.approx(LATER_G)  # the π job waits for the clean hours
    assert client.hget(keys.job("m"), "carbon_threshold") == "inf"
    # the preview is in: 200 iterations per pixel, a few seconds of the fleet; the next plan defers it
    client.hset(keys.job("m"), "iters_per_px", "200.0")
    thresholds = dispatcher.carbon_thresholds(client, settings, snapshot(now + 1), router(), ["m", "p"], ["m", "p"],
                                              now=now + 1)
    assert thresholds["m"] == pytest.approx(LATER_G) and thresholds["p"] == pytest.approx(LATER_G)
    assert client.hget(keys.job("m"), "carbon_threshold") == f"{LATER_G:.1f}"


def test_with_static_tiles_there_is_no_preview_and_the_guess_is_planned(client: redis.Redis) -> None:
    now = time.time()
    add_job(client, "m", "mandelbrot", {"width": 640, "height": 480, "max_iter": 1000}, 640 * 480, now + 12 * 3600)
    thresholds = dispatcher.carbon_thresholds(client, Settings().with_(adaptive=False), snapshot(now), router(),
                                              ["m"], ["m"], now=now)
    assert thresholds["m"] == pytest.approx(LATER_G)
