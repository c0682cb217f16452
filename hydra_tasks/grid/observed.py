"""Forecasts from the intensities Hydra has seen itself, for zones no provider forecasts.

Live providers often give only the current intensity (Electricity Maps' free tier, a WattTime plan
without forecasts), and the embedded table's forecast is flat, so a deadline job there has nothing to
wait for. :class:`ObservedIntensities` keeps the hourly intensities the provider chain obtained (from
live providers or a trace, never the table's annual means) in Redis, one hash per zone
(:func:`hydra_tasks.keys.grid_observed`: UTC hour in seconds -> gCO2/kWh, the latest reading of the
hour; at most :data:`KEEP_DAYS` days), so every control process shares them and they survive a
restart. :class:`ObservedForecaster` is the provider the chain asks for a forecast after the live
ones and the trace, before the table: :func:`hydra_tasks.grid.forecast.seasonal` over the recorded
days (the same hour over the last 3 days, plus today's departure from it, fading over 24 h), from
history up to the hour asked and nothing later. It needs :data:`MIN_HOURS` of history in the last
:data:`KEEP_DAYS` days; gaps (hours with no reading) take the previous hour's value.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import redis

from .. import keys
from . import GridError, NotProvided, Reading, to_utc
from .forecast import HOURS_PER_DAY, seasonal

log = logging.getLogger(__name__)

HOUR_S = 3600
KEEP_DAYS = 8
#: A day and one hour: the same hour yesterday, and the current hour.
MIN_HOURS = HOURS_PER_DAY + 1
#: Readings from these providers are not observations (the table's annual means; this module's own
#: forecasts), so they are never recorded.
NOT_OBSERVED = ("embedded-table", "observed")


def _hour(at: datetime) -> int:
    return int(to_utc(at).timestamp()) // HOUR_S * HOUR_S


class ObservedIntensities:
    """Hourly intensities per zone in Redis. ``client`` may be set after construction (the chain is
    built once per process, before it knows its Redis); without one, nothing is kept."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client

    def record(self, reading: Reading) -> None:
        """Keep ``reading`` as its hour's value (unless it is not an observation); errors are logged,
        never raised: losing one hour of history must not stop routing."""
        if self.client is None or reading.source.split(":", 1)[0] in NOT_OBSERVED:
            return
        hour = _hour(reading.at)
        key = keys.grid_observed(reading.zone)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, str(hour), f"{reading.g_co2_per_kwh:.3f}")
            pipe.hlen(key)
            _, size = pipe.execute()
            if int(size) > KEEP_DAYS * HOURS_PER_DAY + HOURS_PER_DAY:  # prune once a day's worth is over
                oldest = hour - KEEP_DAYS * HOURS_PER_DAY * HOUR_S
                stale = [f for f in self.client.hkeys(key) if int(f) < oldest]
                if stale:
                    self.client.hdel(key, *stale)
        except redis.RedisError as exc:
            log.warning("could not record the carbon intensity of %s: %s", reading.zone, exc)

    def hours(self, zone: str, until: datetime) -> tuple[np.ndarray, int]:
        """The hourly values of ``zone`` from the first recorded hour of the last :data:`KEEP_DAYS`
        days up to the hour of ``until`` (gaps and the hours after the last reading take the previous
        value; empty if nothing was recorded), and how many of those hours were recorded."""
        if self.client is None:
            return np.empty(0), 0
        last = _hour(until)
        first = last - (KEEP_DAYS * HOURS_PER_DAY - 1) * HOUR_S
        raw = self.client.hgetall(keys.grid_observed(zone))
        values = {int(k): float(v) for k, v in raw.items() if first <= int(k) <= last}
        if not values:
            return np.empty(0), 0
        start = min(values)
        out = np.empty((last - start) // HOUR_S + 1)
        current = values[start]
        for i in range(out.size):
            current = values.get(start + i * HOUR_S, current)
            out[i] = current
        return out, len(values)


class ObservedForecaster:
    """A forecast-only provider: :func:`seasonal` over :class:`ObservedIntensities` (see the module
    docstring). It gives no current readings (those come from the providers it learnt from)."""

    name = "observed"

    def __init__(self, observed: ObservedIntensities) -> None:
        self.observed = observed

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        raise NotProvided("the observed provider only forecasts; current readings come from the live providers")

    def forecast(self, zone: str, hours: int, *, at: datetime | None = None) -> list[Reading]:
        if hours < 1:
            raise GridError(f"forecast needs at least 1 hour, got {hours}; pass hours >= 1")
        when = datetime.now(timezone.utc) if at is None else to_utc(at)
        past, recorded = self.observed.hours(zone, when)
        if recorded < MIN_HOURS:
            raise NotProvided(f"only {recorded} hours of {zone} intensities recorded in the last {KEEP_DAYS} days; "
                            f"a forecast from history needs {MIN_HOURS}")
        values = seasonal(past, hours)
        first = when.replace(minute=0, second=0, microsecond=0)
        return [Reading(zone=zone, g_co2_per_kwh=float(v) if math.isfinite(v) else 0.0,
                        at=first + timedelta(hours=k), source=f"{self.name}:seasonal:{past.size}h")
                for k, v in enumerate(values)]
