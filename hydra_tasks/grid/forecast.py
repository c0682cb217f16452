"""Carbon-intensity forecasts built from the past only.

Where no forecast service is configured (or for a zone it does not cover), the scheduler can still
plan ahead from the intensities it has already seen: grid carbon follows the day (solar, demand)
and the week, so the mean of the same hour of day over the last few days is a usable forecast,
and the current hour's departure from that profile says whether today is cleaner or dirtier than
usual. :func:`seasonal` combines the two:

    f(now + k) = p(now + k) + (a(now) - p(now)) * exp(-k / level_decay_h)

where ``a`` is the observed intensity and ``p(t)`` the mean of ``a`` at ``t - 24 h``, ``t - 48 h``, ...
over the last ``days`` days before ``now``. Lead 0 is the current hour, as observed. With less than a
day of history the forecast is the current value (persistence).

Nothing here looks at a value after ``now``: :func:`seasonal` receives the history up to and
including the current hour and nothing else. :func:`mape_by_lead` measures the error against what
really happened, for benchmarks.
"""

from __future__ import annotations

import math

import numpy as np

from . import GridError

HOURS_PER_DAY = 24


def seasonal(history: np.ndarray, horizon: int, *, days: int = 3, level_decay_h: float = 24.0) -> np.ndarray:
    """Forecast ``horizon`` hours (lead 0 = the last hour of ``history``) for each row of ``history``.

    Args:
        history: intensities, shape (zones, hours) or (hours,), oldest first; the last column is now.
        horizon: hours to forecast, >= 1.
        days: how many past days the hour-of-day profile averages, >= 1.
        level_decay_h: how fast the current departure from the profile fades with lead (hours, > 0).

    Returns:
        Array of shape (zones, horizon) (or (horizon,) for a 1-D history).
    """
    hist = np.asarray(history, dtype=float)
    flat = hist.ndim == 1
    if flat:
        hist = hist[None, :]
    if hist.ndim != 2 or hist.shape[1] == 0:
        raise GridError("history must be a non-empty (zones, hours) array of past intensities")
    if horizon < 1 or days < 1 or not level_decay_h > 0:
        raise GridError("horizon and days must be >= 1 and level_decay_h > 0")
    now = hist.shape[1] - 1
    current = hist[:, now]
    out = np.empty((hist.shape[0], horizon))
    if now < HOURS_PER_DAY:  # not a day of history yet: persistence
        out[:] = current[:, None]
        return out[0] if flat else out
    leads = np.arange(horizon)

    def profile(t: np.ndarray) -> np.ndarray:
        """Mean over the last `days` days (all before now) of the same hour of day as each t."""
        # the latest past hour with t's hour of day: t - 24 * ceil((t - now) / 24), at or before now
        back = np.maximum(np.ceil((t - now) / HOURS_PER_DAY), 0).astype(int) * HOURS_PER_DAY
        latest = t - back
        acc = np.zeros((hist.shape[0], t.size))
        count = np.zeros(t.size)
        for d in range(days):
            idx = latest - d * HOURS_PER_DAY
            ok = idx >= 0
            acc[:, ok] += hist[:, idx[ok]]
            count += ok
        return acc / np.maximum(count, 1)

    # p(now) from the days before today (not the current value itself), so the level term measures
    # today's departure from the usual
    p_now = profile(np.array([now - HOURS_PER_DAY]))[:, 0]
    p = profile(now + leads)
    # the lead-0 value of the profile is the same hour yesterday and before; the current hour is known
    out[:] = p + (current - p_now)[:, None] * np.exp(-leads / level_decay_h)[None, :]
    out[:, 0] = current
    np.maximum(out, 0.0, out=out)
    return out[0] if flat else out


def mape_by_lead(actual: np.ndarray, leads: list[int], *, start: int = 7 * HOURS_PER_DAY, step: int = 1,
                 **kwargs: float) -> dict[int, float]:
    """Mean absolute percentage error of :func:`seasonal` at each lead in ``leads`` (hours), over
    forecasts issued every ``step`` hours from ``start`` on, against ``actual`` (zones, hours).
    Hours with an actual intensity below 1 g/kWh are left out (a percentage of ~0 means nothing)."""
    act = np.asarray(actual, dtype=float)
    if act.ndim == 1:
        act = act[None, :]
    horizon = max(leads) + 1
    errors: dict[int, list[np.ndarray]] = {k: [] for k in leads}
    for now in range(start, act.shape[1] - horizon, step):
        fc = seasonal(act[:, :now + 1], horizon, **kwargs)  # type: ignore[arg-type]
        for k in leads:
            truth = act[:, now + k]
            ok = truth >= 1.0
            errors[k].append(np.abs(fc[ok, k] - truth[ok]) / truth[ok])
    return {k: float(np.mean(np.concatenate(v))) if v else math.nan for k, v in errors.items()}
