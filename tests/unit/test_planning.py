"""The planner cuts jobs into chunks that cover the work exactly once; the router respects capacity."""

from __future__ import annotations

import pytest

from hydra_tasks.jobs.spec import parse_job_spec
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling import planner
from hydra_tasks.scheduling.cluster import ClusterSnapshot
from hydra_tasks.scheduling.planner import range_chunk_size
from hydra_tasks.scheduling.router import CapacityRouter
from hydra_tasks.settings import Settings
from hydra_tasks.worker.registry import WorkerInfo


@pytest.mark.parametrize(("width", "height", "tile"), [(1, 1, 8), (100, 37, 16), (640, 480, 128)])
def test_mandelbrot_tiles_cover_every_pixel_exactly_once(width: int, height: int, tile: int) -> None:
    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": width, "height": height}})
    chunks = planner.plan("job", spec, Settings().with_(tile_px=tile, adaptive=False))
    cover = [[0] * width for _ in range(height)]
    for chunk in chunks:
        p = chunk.params
        assert chunk.units == p["width"] * p["height"]
        for r in range(p["row0"], p["row0"] + p["height"]):
            for c in range(p["col0"], p["col0"] + p["width"]):
                cover[r][c] += 1
    assert all(v == 1 for row in cover for v in row)


def _worker(name: str, rate: float) -> WorkerInfo:
    return WorkerInfo(worker_id=name, region="r", host="h", pid=1, cores=1, concurrency=1, pi_samples_per_s=rate,
                      mandelbrot_iters_per_s=rate, state=WorkerState.ONLINE, started_at=0.0, last_seen=0.0)


def _snapshot(**rates: float) -> ClusterSnapshot:
    return ClusterSnapshot(taken_at=0.0, workers={n: _worker(n, r) for n, r in rates.items()},
                           slots={n: 2 for n in rates})


def test_the_capacity_router_prefers_the_fastest_worker_with_a_free_slot() -> None:
    snap = _snapshot(slow=1e8, fast=4e8)
    router = CapacityRouter()
    assert router.choose(snap, {"slow": 2, "fast": 2}, "pi") == "fast"
    assert router.choose(snap, {"slow": 2, "fast": 0}, "pi") == "slow"
    assert router.choose(snap, {"slow": 0, "fast": 0}, "pi") is None
    assert router.choose(ClusterSnapshot(taken_at=0.0), {}, "pi") is None


ADAPTIVE = Settings().with_(adaptive=True, target_chunk_s=3.0, min_chunk_s=0.5)


def test_a_chunk_takes_about_the_target_time_on_the_worker_it_is_cut_for() -> None:
    for rate in (1e7, 1e8, 1e9):
        sizing = range_chunk_size(ADAPTIVE, worker_rate=rate, total_rate=4 * rate, remaining=10**15, first=False)
        assert sizing.rule == "target" and sizing.seconds == pytest.approx(3.0, rel=1e-6)
        assert sizing.units == pytest.approx(3 * rate, rel=1e-6)


def test_a_workers_first_chunk_is_short_for_fast_first_progress() -> None:
    sizing = range_chunk_size(ADAPTIVE, worker_rate=1e8, total_rate=1e8, remaining=10**15, first=True)
    assert sizing.rule == "first" and sizing.seconds == pytest.approx(0.75)


def test_chunks_shrink_near_the_end_so_that_workers_finish_together() -> None:
    # 4 s of work left on 4e8 units/s of capacity: each worker takes half of its share, 2 s.
    fast = range_chunk_size(ADAPTIVE, worker_rate=3e8, total_rate=4e8, remaining=int(16e8), first=False)
    slow = range_chunk_size(ADAPTIVE, worker_rate=1e8, total_rate=4e8, remaining=int(16e8), first=False)
    assert fast.rule == slow.rule == "tail"
    assert fast.seconds == pytest.approx(2.0, rel=1e-6) and slow.seconds == pytest.approx(2.0, rel=1e-6)
    assert fast.units == pytest.approx(3 * slow.units, rel=1e-6)


def test_chunks_never_get_so_small_that_overhead_dominates() -> None:
    sizing = range_chunk_size(ADAPTIVE, worker_rate=1e8, total_rate=1e9, remaining=5 * 10**8, first=False)
    assert sizing.rule == "floor" and sizing.seconds == pytest.approx(0.5)
    last = range_chunk_size(ADAPTIVE, worker_rate=1e8, total_rate=1e9, remaining=1234, first=False)
    assert last.units == 1234  # never more than what is left


def test_static_mode_cuts_uniform_chunks_whoever_runs_them() -> None:
    static = Settings().with_(adaptive=False, pi_chunk_samples=5_000)
    for rate in (1e6, 1e9):
        assert range_chunk_size(static, worker_rate=rate, total_rate=rate, remaining=10**9, first=True).units == 5000


def test_a_job_that_needs_too_many_chunks_is_refused_before_anything_is_built() -> None:
    from hydra_tasks.errors import InvalidJobSpec

    spec = parse_job_spec({"kind": "mandelbrot", "params": {"width": 16000, "height": 3000}})
    with pytest.raises(InvalidJobSpec, match="would need 750,000 chunks"):
        planner.plan("job", spec, Settings().with_(tile_px=8, adaptive=False))


def test_the_dispatch_plan_fills_every_free_slot_with_short_first_chunks_then_target_sized_ones() -> None:
    from hydra_tasks.scheduling.grants import JobSupply, plan_job

    snap = _snapshot(slow=1e8, fast=4e8)
    supply = JobSupply("j", "pi", cuts=True, remaining_units=10**12, units_total=10**12, waiting=0,
                       fresh=frozenset({"slow", "fast"}))
    job_plan = plan_job(ADAPTIVE, snap, CapacityRouter(), {"slow": 2, "fast": 2}, supply)
    assert [r.worker_id for r in job_plan.requests] == ["fast", "fast", "slow", "slow"]
    by_worker = {w: [r.cut_units for r in job_plan.requests if r.worker_id == w] for w in ("slow", "fast")}
    assert by_worker["fast"] == [pytest.approx(0.75 * 4e8), pytest.approx(3 * 4e8)]  # first chunk: a quarter
    assert by_worker["slow"] == [pytest.approx(0.75 * 1e8), pytest.approx(3 * 1e8)]
    assert not job_plan.exhausted and job_plan.blocked  # more work than slots: later jobs get nothing


def test_the_dispatch_plan_hands_out_waiting_chunks_first_and_stops_when_the_job_runs_dry() -> None:
    from hydra_tasks.scheduling.grants import JobSupply, plan_job

    snap = _snapshot(a=1e8, b=1e8)
    free = {"a": 2, "b": 2}
    supply = JobSupply("j", "pi", cuts=True, remaining_units=150, units_total=150, waiting=2, fresh=frozenset())
    job_plan = plan_job(Settings().with_(adaptive=False, pi_chunk_samples=100), snap, CapacityRouter(), free, supply)
    assert len(job_plan.requests) == 4 and job_plan.exhausted and not job_plan.blocked  # 2 waiting + 100 + 50
    assert free == {"a": 2, "b": 2}  # the plan is pure: the caller's view is not changed
    tiles = JobSupply("m", "mandelbrot", cuts=False, remaining_units=0, units_total=4096, waiting=0, fresh=frozenset())
    assert plan_job(ADAPTIVE, snap, CapacityRouter(), free, tiles).requests == ()


def test_a_worker_record_copied_with_changes_equals_dataclasses_replace_and_leaves_the_original_alone() -> None:
    from dataclasses import replace

    from hydra_tasks.worker.performance import Performance

    w = WorkerInfo(worker_id="w1", region="eu", host="h", pid=1, cores=4, concurrency=4, pi_samples_per_s=1e8,
                   mandelbrot_iters_per_s=5e7, state=WorkerState.ONLINE, started_at=1.0, last_seen=2.0)
    changes = {"ok": 3, "perf_pi": Performance(2e8, 1e6, 3), "quarantined": "caught"}
    copied = w.with_(**changes)
    assert copied == replace(w, **changes) and copied is not w
    assert (w.ok, w.perf_pi.observations, w.quarantined) == (0, 0, "")
    assert hash(copied) == hash(replace(w, **changes))
    with pytest.raises(TypeError, match="no field"):
        w.with_(speed=1)


# --- bundles (issue 15): short chunks travel several to a message -------------------------------------
TINY = Settings().with_(adaptive=False, pi_chunk_samples=1_000, bundle_s=0.05, bundle_max=16)


def _bundling_snapshot(**rates: float) -> ClusterSnapshot:
    return ClusterSnapshot(taken_at=0.0, workers={n: _worker(n, r).with_(bundle_max=16) for n, r in rates.items()},
                           slots={n: 2 for n in rates})


def test_a_bundle_holds_about_bundle_s_of_work_within_both_limits() -> None:
    from hydra_tasks.scheduling.grants import bundle_size, bundling

    assert bundle_size(TINY, 16, 0.001) == 16       # 50 would fit: HYDRA_BUNDLE_MAX caps it
    assert bundle_size(TINY, 4, 0.001) == 4         # the worker's own limit
    assert bundle_size(TINY, 16, 0.01) == 5         # 5 x 10 ms
    assert bundle_size(TINY, 16, 0.03) == 1         # two would exceed bundle_s: alone
    assert bundle_size(TINY, 16, 0.05) == bundle_size(TINY, 16, 3.0) == 1
    assert bundle_size(TINY, 1, 1e-6) == 1          # a worker that takes no bundles
    assert bundle_size(TINY.with_(bundle_s=0.0), 16, 1e-6) == 1
    assert bundling(TINY) and not bundling(TINY.with_(bundle_max=1))
    assert not bundling(ADAPTIVE.with_(bundle_s=0.05))  # adaptive chunks never go under HYDRA_MIN_CHUNK_S (0.5 s)
    assert bundling(ADAPTIVE.with_(bundle_s=1.0))


def test_the_plan_gives_a_bundling_worker_whole_bundles_in_a_window_that_many_times_larger() -> None:
    from hydra_tasks.scheduling.grants import JobSupply, plan_job

    snap = _bundling_snapshot(fast=1e8, slow=1e5)  # 1,000 samples: 10 µs (a bundle of 16) and 10 ms (of 5)
    supply = JobSupply("j", "pi", cuts=True, remaining_units=10**9, units_total=10**8, waiting=0, fresh=frozenset())
    job_plan = plan_job(TINY, snap, CapacityRouter(), {"fast": 2, "slow": 2}, supply)
    by = {w: [r for r in job_plan.requests if r.worker_id == w] for w in ("fast", "slow")}
    assert len(by["fast"]) == 32 and {(r.bundle, r.capacity, r.extra) for r in by["fast"]} == {(16, 32, 30)}
    assert len(by["slow"]) == 10 and {(r.bundle, r.capacity, r.extra) for r in by["slow"]} == {(5, 10, 8)}
    runs = [len(list(g)) for _, g in __import__("itertools").groupby(r.worker_id for r in job_plan.requests)]
    assert all(n % 16 == 0 or n % 5 == 0 for n in runs)  # a worker's bundle is planned in one piece
    assert job_plan.blocked and not job_plan.exhausted


def test_a_window_with_less_than_a_whole_bundle_free_waits_unless_the_job_has_less_left() -> None:
    from hydra_tasks.scheduling.grants import JobSupply, plan_job

    snap = _bundling_snapshot(fast=1e8)
    # 20 of its 32 in flight: 12 free, less than a bundle of 16: nothing (its results are still merging).
    busy = plan_job(TINY, snap, CapacityRouter(), {"fast": 2 - 20},
                    JobSupply("j", "pi", cuts=True, remaining_units=10**9, units_total=10**8, waiting=0,
                              fresh=frozenset()))
    assert busy.requests == () and busy.blocked
    # The job's last 5 chunks fit in those 12: they go now, as one bundle.
    tail = plan_job(TINY, snap, CapacityRouter(), {"fast": 2 - 20},
                    JobSupply("j", "pi", cuts=True, remaining_units=5_000, units_total=10**8, waiting=0,
                              fresh=frozenset()))
    assert [r.cut_units for r in tail.requests] == [1_000] * 5 and tail.exhausted
    # Waiting chunks (re-queued ones) go alone, in the usual window.
    waiting = plan_job(TINY, snap, CapacityRouter(), {"fast": 2},
                       JobSupply("j", "pi", cuts=True, remaining_units=0, units_total=10**8, waiting=3,
                                 fresh=frozenset()))
    assert [(r.bundle, r.capacity) for r in waiting.requests] == [(1, 2), (1, 2)]


def test_a_worker_that_takes_no_bundles_keeps_the_usual_window() -> None:
    from hydra_tasks.scheduling.grants import JobSupply, plan_job

    snap = _snapshot(old=1e8)  # bundle_max 1: a volunteer from before bundles
    job_plan = plan_job(TINY, snap, CapacityRouter(), {"old": 2},
                        JobSupply("j", "pi", cuts=True, remaining_units=10**9, units_total=10**8, waiting=0,
                                  fresh=frozenset()))
    assert [(r.bundle, r.capacity, r.extra) for r in job_plan.requests] == [(1, 2, 0), (1, 2, 0)]


# --- generators (issue 16): a π job goes only to workers whose kernels compute its generator ----------------
def test_a_pi_job_goes_only_to_workers_that_compute_its_generator_and_says_why_it_waits() -> None:
    from hydra_tasks.scheduling.grants import JobSupply, plan_job

    old_worker = _worker("old", 1e8).with_(generators="splitmix64")  # as intake records a volunteer from before
    snap = ClusterSnapshot(taken_at=0.0, workers={"new": _worker("new", 1e8), "old": old_worker},
                           slots={"new": 2, "old": 2})
    assert snap.workers["new"].generators == "splitmix64,philox4x32-10"
    supply = JobSupply("j", "pi", cuts=True, remaining_units=10**9, units_total=10**9, waiting=0, fresh=frozenset(),
                       generator="philox4x32-10")
    philox = plan_job(ADAPTIVE, snap, CapacityRouter(), {"new": 2, "old": 2}, supply)
    assert {r.worker_id for r in philox.requests} == {"new"} and not philox.blocked
    legacy = plan_job(ADAPTIVE, snap, CapacityRouter(), {"new": 2, "old": 2},
                      JobSupply("j", "pi", cuts=True, remaining_units=10**9, units_total=10**9, waiting=0,
                                fresh=frozenset(), generator="splitmix64"))
    assert {r.worker_id for r in legacy.requests} == {"new", "old"}  # a job from before runs on both
    only_old = ClusterSnapshot(taken_at=0.0, workers={"old": old_worker}, slots={"old": 2})
    stuck = plan_job(ADAPTIVE, only_old, CapacityRouter(), {"old": 2}, supply)
    assert stuck.requests == () and not stuck.blocked and "philox4x32-10" in stuck.waiting
