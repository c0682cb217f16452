"""The scenario of ``benchmarks/heterogeneous.py`` (adaptive mode) in the simulator, to compare with
the real cluster: four single-process workers capped at 100, 50, 25 and 12.5% CPU; a 2·10^8-sample
π warm-up job; then a π job of 1.5·10^9 x 1.875 x ``seconds`` samples; then the seahorse-valley
Mandelbrot job at max_iter 10^6 (its real preview is computed here with the kernel, and the real
tiling cuts its tiles; a tile costs what the preview estimates, the real estimates' median error
being 2.8%). Settings as that benchmark's: adaptive, target 1 s, min 0.2 s, lease 120 s, and
tests/support.FAST's sweep, heartbeat and worker timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

from .. import compute as kernels
from ..jobs import mandelbrot, tiling
from ..models import JobKind
from ..settings import Settings
from . import grid as sim_grid
from .engine import Engine, EngineConfig
from .fleet import Fleet
from .model import Job

CAPS = (100.0, 50.0, 25.0, 12.5)  # benchmarks/heterogeneous.CAPS, bench-1 .. bench-4
SCENE = {"center_x": -0.745, "center_y": 0.113, "span": 0.01, "max_iter": 1_000_000, "colouring": "bands"}
SETTINGS = {"adaptive": True, "target_chunk_s": 1.0, "min_chunk_s": 0.2, "lease_s": 120.0,
            "sweep_interval_s": 0.5, "heartbeat_s": 0.5, "worker_timeout_s": 3.0}


@dataclass(frozen=True)
class Speeds:
    pi: tuple[float, ...]           # π samples/s each worker really computes
    mandelbrot: tuple[float, ...]   # Mandelbrot work iterations/s
    source: str


@dataclass(frozen=True)
class Workload:
    samples: int
    params: dict[str, Any]
    work_map: Any
    stride: int
    preview_work: float
    preview_s: float                # the preview's compute time in this process (one core)


def workload(seconds: float = 16.0) -> Workload:
    fleet = sum(CAPS) / 100
    samples = int(1.5e9 * fleet * seconds)
    width = int((seconds * fleet / 1.3e-6 / 0.75) ** 0.5)
    params = mandelbrot.parse_params({**SCENE, "width": width, "height": int(width * 0.75)})
    preview = tiling.preview_chunk("v", params)
    t0 = time.perf_counter()
    payload = mandelbrot.compute(preview)
    took = time.perf_counter() - t0
    p = preview.params
    work_map = mandelbrot.decode_array(payload["work_map"], int(p["height"]), int(p["width"]))
    return Workload(samples, params, work_map, int(p["stride"]), float(payload["work"]), took)


def nominal_speeds(load: Workload) -> Speeds:
    """One core's kernel speed measured in this process, times each worker's CPU cap."""
    t0 = time.perf_counter()
    kernels.pi_hits(7, 0, 400_000_000)
    pi_rate = 400_000_000 / (time.perf_counter() - t0)
    m_rate = load.preview_work / max(load.preview_s, 1e-9)
    return Speeds(tuple(pi_rate * c / 100 for c in CAPS), tuple(m_rate * c / 100 for c in CAPS),
                  f"in-process kernel x caps ({pi_rate / 1e9:.2f} G samples/s, {m_rate / 1e9:.2f} G work it/s per core)")


def measured_speeds(real: Mapping[str, Any]) -> Speeds:
    """Each worker's speed in the real run: its work / its compute time (the job log), per kind."""
    out: dict[str, list[float]] = {}
    for res in real["results"]:
        per = res["per_worker"]
        names = sorted(per, key=lambda w: int(w.split("@")[0].rsplit("-", 1)[1]))  # bench-1 .. bench-4
        out[res["kind"]] = [per[w]["work"] / per[w]["busy_s"] for w in names]
    return Speeds(tuple(out["pi"]), tuple(out["mandelbrot"]), "measured in the real run (work / compute time)")


def simulate(load: Workload, speeds: Speeds, *, merge_s: float = 0.02, latency_s: float = 0.003,
             seed: int = 0) -> dict[str, float]:
    """Makespans (first dispatch to last merge) of the π and Mandelbrot jobs in the simulator."""
    settings = Settings().with_(**SETTINGS)
    n = len(CAPS)
    calibration = [speeds.pi[0] * 100 / CAPS[0]] * n       # calibration runs uncapped
    m_calibration = [speeds.mandelbrot[0] * 100 / CAPS[0]] * n
    fleet = Fleet(settings, region=[0] * n, regions=["bench"], cores=[1] * n, pi_speed=list(speeds.pi),
                  mandel_speed=list(speeds.mandelbrot), pi_calibration=calibration, mandel_calibration=m_calibration,
                  cpu_limit=list(CAPS), exact=True)
    horizon = 3600.0
    grid = sim_grid.flat(["bench"], start=sim_grid.parse_start("2022-06-13T00:00:00"), horizon_s=horizon)
    config = EngineConfig(horizon_s=horizon, grid_aware=True, merge_s=merge_s, latency_s=latency_s,
                          replan_s=horizon, backup_every_s=0.0, reference_every_s=0.5, seed=seed)
    warm = Job("warm", JobKind.PI, 200_000_000, 0.5)
    engine = Engine(settings, fleet, grid, config, [warm], [False] * n, [(0.0, i, True) for i in range(n)])
    engine.run(until=horizon)
    pi_job = Job("pi", JobKind.PI, load.samples, 0.0)
    engine.submit(pi_job, engine.now + 0.05)
    engine.run(until=horizon)
    m_job = Job("mandelbrot", JobKind.MANDELBROT, int(load.params["width"]) * int(load.params["height"]), 0.0,
                params=dict(load.params), preview_work=load.work_map, preview_stride=load.stride,
                preview_cost=load.preview_work, tile_truth=lambda spec: float(spec.params["est_cost"]))
    engine.submit(m_job, engine.now + 0.05)
    engine.run(until=horizon)
    out = {}
    for job in (pi_job, m_job):
        assert job.finished_at is not None and job.started_at is not None, f"{job.job_id} did not finish"
        out[job.kind.value] = job.finished_at - job.started_at
    out["events"] = float(engine.stats.events)
    return out
