"""Forecasts from the past only (hydra_tasks.grid.forecast)."""

from __future__ import annotations

import numpy as np
import pytest

from hydra_tasks.grid import GridError
from hydra_tasks.grid.forecast import mape_by_lead, seasonal


def daily(hours: int, zones: int = 2) -> np.ndarray:
    t = np.arange(hours)
    return np.array([300 + 100 * np.sin(2 * np.pi * (t + 5 * z) / 24) for z in range(zones)])


def test_a_signal_that_repeats_every_day_is_forecast_exactly() -> None:
    history = daily(24 * 10)
    now = 24 * 8 + 7
    fc = seasonal(history[:, :now + 1], 40)
    np.testing.assert_allclose(fc, history[:, now:now + 40], rtol=1e-12)


def test_the_forecast_never_reads_after_now() -> None:
    rng = np.random.default_rng(1)
    history = daily(24 * 9) + rng.normal(0, 20, (2, 24 * 9))
    now = 24 * 6 + 3
    base = seasonal(history[:, :now + 1], 30)
    # whatever happens afterwards cannot change it, and a longer array cannot be passed by mistake:
    # the function only gets the past
    changed = history.copy()
    changed[:, now + 1:] = 1e6
    np.testing.assert_array_equal(seasonal(changed[:, :now + 1], 30), base)


def test_lead_zero_is_the_current_observation_and_a_level_shift_fades_with_lead() -> None:
    history = daily(24 * 8, zones=1)[0]
    history[-1] += 90.0  # today is dirtier than usual right now
    fc = seasonal(history, 72, level_decay_h=24.0)
    assert fc[0] == history[-1]
    usual = daily(24 * 8 + 72, zones=1)[0][24 * 8 - 1:24 * 8 - 1 + 72]
    excess = fc - usual
    assert excess[1] > excess[24] > excess[48] > 0   # decays, never flips sign
    assert excess[1] == pytest.approx(90.0 * np.exp(-1 / 24.0), rel=1e-9)


def test_with_less_than_a_day_of_history_it_is_persistence() -> None:
    history = np.array([[100.0, 120.0, 140.0]])
    np.testing.assert_array_equal(seasonal(history, 5), np.full((1, 5), 140.0))


@pytest.mark.parametrize("kwargs", [dict(horizon=0), dict(horizon=3, days=0), dict(horizon=3, level_decay_h=0.0)])
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(GridError):
        seasonal(daily(48), **kwargs)
    with pytest.raises(GridError, match="non-empty"):
        seasonal(np.zeros((2, 0)), 3)


def test_mape_is_zero_on_a_repeating_day_and_grows_with_lead_on_noise() -> None:
    assert all(v < 1e-12 for v in mape_by_lead(daily(24 * 12), [1, 6, 24], step=7).values())
    rng = np.random.default_rng(3)
    walk = 300 + np.cumsum(rng.normal(0, 5, 24 * 30))  # a random walk: persistence-like
    errors = mape_by_lead(walk, [1, 6, 24], step=3)
    assert 0 < errors[1] < errors[6] < errors[24]
