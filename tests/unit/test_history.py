"""history.explain_wait: the sentence the dashboard shows for a job waiting for cleaner power."""

from __future__ import annotations

from hydra_tasks.history import explain_wait

NOW = 1_796_169_600.0 + 1800  # 2026-12-02 00:30 UTC
DEADLINE = NOW + 5.5 * 3600   # 06:00 UTC


def test_a_job_below_every_region_waits_for_the_first_forecast_hour_clean_enough() -> None:
    waiting, why = explain_wait(120.0, DEADLINE, {"eu-west": 210.0, "eu-north": 150.0},
                                {"eu-west": [210.0, 200.0, 190.0, 100.0], "eu-north": [150.0, 140.0, 118.0, 90.0]},
                                now=NOW)
    assert waiting
    assert why == ("waits for power below 120 g/kWh: cleanest now eu-north 150 g/kWh; expected eu-north at "
                   "02:00 UTC; deadline 06:00 UTC")


def test_without_a_forecast_under_the_threshold_it_says_so() -> None:
    waiting, why = explain_wait(50.0, DEADLINE, {"eu-west": 210.0}, {"eu-west": [210.0, None, 300.0]}, now=NOW)
    assert waiting and "no forecast hour below it" in why and "cleanest now eu-west 210 g/kWh" in why


def test_a_job_that_may_run_somewhere_now_is_not_waiting() -> None:
    waiting, why = explain_wait(120.0, DEADLINE, {"eu-west": 210.0, "eu-north": 40.0}, {}, now=NOW)
    assert not waiting and why == "runs only where power is below 120 g/kWh (now: eu-north 40); deadline 06:00 UTC"
    waiting, why = explain_wait(None, DEADLINE, {"eu-west": 210.0}, {}, now=NOW)
    assert not waiting and why.startswith("runs on any power now (deadline 06:00 UTC)")
