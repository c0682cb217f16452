"""The planner cuts jobs into chunks that cover the work exactly once; the router respects capacity."""

from __future__ import annotations

import pytest

from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.cluster import ClusterSnapshot, RegionView
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.settings import Settings
from hydra_tasks.worker.registry import WorkerInfo


@pytest.mark.parametrize(("samples", "step"), [(1, 1000), (1000, 1000), (12_345, 1000), (10**9 + 7, 50_000_000)])
def test_pi_chunks_cover_every_sample_exactly_once(samples: int, step: int) -> None:
    spec = parse_job_spec({"kind": "pi", "params": {"samples": samples, "seed": 1}})
    chunks = planner.plan("job", spec, Settings().with_(pi_chunk_samples=step))
    position = 0
    for chunk in chunks:
        assert chunk.params["start"] == position and 0 < chunk.params["count"] <= step
        position += chunk.params["count"]
    assert position == samples
    assert len({c.chunk_id for c in chunks}) == len(chunks)


@pytest.mark.parametrize(("width", "height", "tile"), [(1, 1, 8), (100, 37, 16), (640, 480, 128)])
def test_mandelbrot_tiles_cover_every_pixel_exactly_once(width: int, height: int, tile: int) -> None:
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": width, "height": height}})
    chunks = planner.plan("job", spec, Settings().with_(tile_px=tile))
    cover = [[0] * width for _ in range(height)]
    for chunk in chunks:
        p = chunk.params
        assert chunk.units == p["width"] * p["height"]
        for r in range(p["row0"], p["row0"] + p["height"]):
            for c in range(p["col0"], p["col0"] + p["width"]):
                cover[r][c] += 1
    assert all(v == 1 for row in cover for v in row)


def _region(name: str, slots: int, speed: float) -> RegionView:
    worker = WorkerInfo(worker_id=f"{name}@h", region=name, host="h", pid=1, cores=1, concurrency=1,
                        pi_samples_per_s=speed, mandelbrot_iters_per_s=speed, state=WorkerState.ONLINE,
                        started_at=0.0, last_seen=0.0)
    return RegionView(name=name, workers=(worker,), slots=slots, capacity=speed * slots / 2)


def test_the_capacity_router_spreads_chunks_in_proportion_to_capacity() -> None:
    snap = ClusterSnapshot(taken_at=0.0, regions={"a": _region("a", 2, 1e8), "b": _region("b", 6, 1e8)})
    free = {"a": 2, "b": 6}
    picks = []
    router = CapacityRouter()
    while (region := router.choose(snap, free)) is not None:
        picks.append(region)
        free[region] -= 1
    assert picks.count("a") == 2 and picks.count("b") == 6
    assert picks[0] == "b"  # the region with the most free capacity goes first


def test_the_router_returns_none_when_every_region_is_full() -> None:
    snap = ClusterSnapshot(taken_at=0.0, regions={"a": _region("a", 2, 1e8)})
    assert CapacityRouter().choose(snap, {"a": 0}) is None
    assert CapacityRouter().choose(ClusterSnapshot(taken_at=0.0), {}) is None


def test_a_job_that_needs_too_many_chunks_is_refused_before_anything_is_built() -> None:
    from hydra_tasks.errors import InvalidJobSpec

    spec = parse_job_spec({"kind": "pi", "params": {"samples": 10**13, "seed": 1}})
    with pytest.raises(InvalidJobSpec, match="would need 10,000,000,000 chunks"):
        planner.plan("job", spec, Settings().with_(pi_chunk_samples=1_000))
