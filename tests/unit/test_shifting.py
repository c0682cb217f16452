"""Time shifting: deadline jobs book the cleanest (worker, hour) slots that still finish in time."""

from __future__ import annotations

import math

import pytest

from hydra_tasks.grid.regions import RegionSignal
from hydra_tasks.models import WorkerState
from hydra_tasks.scheduling.cluster import ClusterSnapshot
from hydra_tasks.scheduling.router import GridAwareRouter
from hydra_tasks.scheduling.shifting import HOUR_S, Demand, plan
from hydra_tasks.worker.registry import WorkerInfo

NOW = 1_000 * HOUR_S  # on the hour, so hour 0 is a full hour


def worker(name: str, rate: float = 1e9, concurrency: int = 1) -> WorkerInfo:
    return WorkerInfo(worker_id=name, region=name, host="h", pid=1, cores=concurrency, concurrency=concurrency,
                      pi_samples_per_s=rate, mandelbrot_iters_per_s=rate, state=WorkerState.ONLINE,
                      started_at=0.0, last_seen=0.0)


def flat(values: dict[str, float]):  # type: ignore[no-untyped-def]
    return lambda wid, k: values[wid]


def test_a_job_with_slack_runs_only_where_power_is_clean() -> None:
    workers = [worker("clean"), worker("dirty")]
    half_hour = 1e9 * 1800
    thresholds = plan([Demand("j", "pi", half_hour, NOW + 4 * HOUR_S)], workers,
                      flat({"clean": 30.0, "dirty": 600.0}), now=NOW, safety=1.0)
    assert thresholds == {"j": 30.0}
    snap = ClusterSnapshot(0.0, {w.worker_id: w for w in workers}, {"clean": 1, "dirty": 1})
    router = GridAwareRouter.by_region({"clean": RegionSignal(30.0, None, None, "t"),
                                        "dirty": RegionSignal(600.0, None, None, "t")},
                                       carbon_weight=1.0, cost_weight=0.0, renewable_weight=0.0)
    assert router.choose(snap, {"clean": 0, "dirty": 1}, "pi", thresholds["j"]) is None  # held, not sent dirty
    assert router.choose(snap, {"clean": 0, "dirty": 1}, "pi") == "dirty"  # a job without deadline takes it


def test_a_job_waits_for_a_cleaner_hour_if_the_deadline_allows() -> None:
    hours = [500.0, 400.0, 90.0, 80.0, 600.0, 600.0]
    one_hour = 1e9 * HOUR_S
    thresholds = plan([Demand("j", "pi", one_hour, NOW + 5 * HOUR_S)], [worker("w")], lambda wid, k: hours[k],
                      now=NOW, safety=1.0, horizon_h=6)
    assert thresholds["j"] == 80.0  # books hour 3 (80): nothing runs now at 500
    two_hours = 2 * one_hour
    thresholds = plan([Demand("j", "pi", two_hours, NOW + 5 * HOUR_S)], [worker("w")], lambda wid, k: hours[k],
                      now=NOW, safety=1.0, horizon_h=6)
    assert thresholds["j"] == 90.0  # hours 2 and 3


def test_the_delay_weight_prices_waiting() -> None:
    """gCO2/kWh per hour of waiting: the job waits only for hours cleaner by more than the wait is worth."""
    hours = [500.0, 400.0, 90.0, 80.0, 600.0, 600.0]
    one_hour = 1e9 * HOUR_S

    def threshold(weight: float) -> float:
        return plan([Demand("j", "pi", one_hour, NOW + 5 * HOUR_S, weight)], [worker("w")], lambda wid, k: hours[k],
                    now=NOW, safety=1.0, horizon_h=6)["j"]

    assert threshold(0.0) == 80.0     # hour 3, the cleanest
    assert threshold(10.0) == 110.0   # hour 2 at 90 + 2*10 beats hour 3 at 80 + 3*10; still waits
    assert threshold(300.0) == 500.0  # waiting costs more than it saves: runs now (500 <= 500)


def test_no_slack_means_no_shifting() -> None:
    hours = [500.0, 50.0, 50.0]
    thresholds = plan([Demand("j", "pi", 1e9 * HOUR_S * 1.5, NOW + 2 * HOUR_S)], [worker("w")],
                      lambda wid, k: hours[k], now=NOW, safety=1.0, horizon_h=3)
    assert thresholds["j"] == 500.0  # must use the dirty hour too
    thresholds = plan([Demand("j", "pi", 1e9 * HOUR_S * 3, NOW + 2 * HOUR_S)], [worker("w")],
                      lambda wid, k: hours[k], now=NOW, safety=1.0, horizon_h=3)
    assert thresholds["j"] == math.inf  # cannot finish in time even at full speed: run everywhere


def test_the_safety_share_makes_plans_conservative() -> None:
    hours = [500.0, 50.0, 50.0, 50.0]
    demand = [Demand("j", "pi", 1e9 * HOUR_S * 2, NOW + 3 * HOUR_S)]
    assert plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=4)["j"] == 50.0
    assert plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=0.5, horizon_h=4)["j"] == 500.0


def test_headroom_for_work_not_yet_submitted_defers_less() -> None:
    """A job that could wait for the clean hours at the end of its window starts now when part of every
    later hour is kept for work still to come, so a burst of urgent jobs cannot push it past its deadline."""
    hours = [500.0, 500.0, 50.0, 50.0]
    demand = [Demand("j", "pi", 1e9 * HOUR_S * 2, NOW + 4 * HOUR_S)]
    assert plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=4)["j"] == 50.0
    assert plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=4,
                headroom=0.3)["j"] == 500.0
    # the current hour is what it is: headroom is only held back in later hours
    one = [Demand("j", "pi", 1e9 * HOUR_S, NOW + HOUR_S)]
    assert plan(one, [worker("w")], lambda w, k: 500.0, now=NOW, safety=1.0, horizon_h=1, headroom=0.5)["j"] == 500.0
    with pytest.raises(ValueError, match="headroom"):
        plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, headroom=1.0)


def test_the_margin_books_for_more_work_than_estimated() -> None:
    """Estimates err and failed chunks are redone: with a margin the job books room for more than it
    thinks it has left, here a dirty hour now as well as the clean ones later."""
    hours = [500.0, 50.0, 50.0, 600.0]
    demand = [Demand("j", "pi", 1e9 * HOUR_S * 2, NOW + 3 * HOUR_S)]
    assert plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=4)["j"] == 50.0
    assert plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=4,
                margin=0.25)["j"] == 500.0
    with pytest.raises(ValueError, match="margin"):
        plan(demand, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, margin=-0.1)


def test_two_deadline_jobs_do_not_count_on_the_same_clean_hour() -> None:
    hours = [300.0, 50.0, 200.0, 400.0]
    one_hour = 1e9 * HOUR_S
    demands = [Demand("late", "pi", one_hour, NOW + 4 * HOUR_S), Demand("early", "pi", one_hour, NOW + 3 * HOUR_S)]
    thresholds = plan(demands, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=4)
    assert thresholds == {"early": 50.0, "late": 200.0}


def test_jobs_without_deadline_take_the_first_hours() -> None:
    hours = [50.0, 300.0, 300.0]
    one_hour = 1e9 * HOUR_S
    demands = [Demand("now", "pi", one_hour), Demand("j", "pi", one_hour, NOW + 3 * HOUR_S)]
    thresholds = plan(demands, [worker("w")], lambda w, k: hours[k], now=NOW, safety=1.0, horizon_h=3)
    assert thresholds == {"j": 300.0}


def test_unknown_intensity_is_a_last_resort() -> None:
    thresholds = plan([Demand("j", "pi", 1e9 * 1800, NOW + 3 * HOUR_S)], [worker("a"), worker("b")],
                      lambda w, k: None if w == "a" else 700.0, now=NOW, safety=1.0, horizon_h=3)
    assert thresholds["j"] == 700.0
