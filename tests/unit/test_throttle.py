"""The CPU-use cap computes in slices and rests in between, without changing any result."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hydra_tasks import compute
from hydra_tasks.jobs import mandelbrot, pi
from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.models import ChunkSpec, JobKind
from hydra_tasks.scheduling import planner
from hydra_tasks.settings import Settings
from hydra_tasks.worker.throttle import Throttle, on_battery


def test_a_cap_of_25_percent_rests_three_times_as_long_as_it_computes() -> None:
    rests: list[float] = []
    throttle = Throttle(25, sleep=rests.append)
    covered: list[tuple[int, int]] = []
    throttle.run_sliced(400_000, lambda off, n: (covered.append((off, n)), time.sleep(n * 2e-6)))
    assert sum(n for _, n in covered) == 400_000
    assert [off for off, _ in covered] == sorted(off for off, _ in covered)
    assert len(covered) > 3
    assert sum(rests) == pytest.approx(3 * throttle.busy_s, rel=1e-9)


def test_no_cap_means_one_call_and_no_rest() -> None:
    rests: list[float] = []
    calls: list[tuple[int, int]] = []
    Throttle(100, sleep=rests.append).run_sliced(500, lambda off, n: calls.append((off, n)))
    assert calls == [(0, 500)] and rests == []


def test_a_bad_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        Throttle(0)


def test_throttled_pi_and_mandelbrot_chunks_give_the_unthrottled_results() -> None:
    chunk = ChunkSpec("j", "c0", JobKind.PI, {"seed": 5, "start": 1000, "count": 3_000_000,
                                                   "generator": "philox4x32-10"}, units=3_000_000)
    fast_sleep = Throttle(50, sleep=lambda s: None)
    assert pi.compute(chunk, throttle=fast_sleep)["hits"] == compute.pi_hits(5, 1000, 3_000_000)
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": 64, "height": 40, "max_iter": 300}})
    tile = planner.plan("j", spec, Settings().with_(tile_px=64, adaptive=False))[0]
    capped = mandelbrot.compute(tile, throttle=Throttle(20, sleep=lambda s: None))
    free = mandelbrot.compute(tile)
    assert capped == free
    counts = mandelbrot.decode_counts(capped["counts"], 40, 64)
    assert len(np.unique(counts)) > 10


def test_a_machine_without_a_battery_is_never_paused() -> None:
    assert on_battery() in (False, True)  # on a battery-less server psutil reports None -> False
    import psutil

    if psutil.sensors_battery() is None:
        assert on_battery() is False
