"""Carbon-intensity providers behind one interface.

Every provider answers :meth:`CarbonProvider.intensity` with a :class:`Reading` or raises
:class:`GridError`. Providers:

- :class:`~hydra_tasks.grid.table.EmbeddedTableProvider`: annual means typed into the code; never
  fails for a known zone, so it is the usual last link of a chain.
- :class:`~hydra_tasks.grid.trace.TraceProvider`: replays an hourly CSV trace.
- :mod:`hydra_tasks.grid.clients`: UK Carbon Intensity, Electricity Maps and WattTime over HTTP.
- :class:`~hydra_tasks.grid.chain.ProviderChain`: tries providers in order and caches per zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from hydra_tasks.errors import HydraError


class GridError(HydraError):
    """Carbon-intensity data could not be obtained or was not valid."""


class NotProvided(GridError):
    """A provider has, by design, nothing to say here: a forecast-only provider asked for a reading,
    or a forecaster still gathering history. A chain moves on without counting it as a failure."""


def to_utc(at: datetime) -> datetime:
    """``at`` converted to UTC; a naive datetime is refused because its zone is a guess."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise GridError(
            f"datetime {at.isoformat()} has no time zone; pass an aware datetime such as "
            "datetime.now(timezone.utc)"
        )
    return at.astimezone(timezone.utc)


def check_intensity(value: object, *, where: str) -> float:
    """``value`` as a finite, non-negative gCO2eq/kWh figure, or GridError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GridError(f"{where}: carbon intensity {value!r} is not a number; check the data source")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise GridError(
            f"{where}: carbon intensity {number!r} is negative or not finite; check the data source"
        )
    return number


@dataclass(frozen=True)
class Reading:
    """Carbon intensity of one zone's electricity at one time (UTC)."""

    zone: str
    g_co2_per_kwh: float
    at: datetime
    source: str
    renewable_share: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "g_co2_per_kwh", check_intensity(self.g_co2_per_kwh, where=self.source))
        object.__setattr__(self, "at", to_utc(self.at))
        share = self.renewable_share
        if share is not None and not (math.isfinite(share) and 0.0 <= share <= 1.0):
            raise GridError(f"{self.source}: renewable share {share!r} is outside 0..1; check the data source")


@runtime_checkable
class CarbonProvider(Protocol):
    """Anything that can tell the carbon intensity of a zone. ``forecast`` is optional."""

    name: str

    def intensity(self, zone: str, at: datetime | None = None) -> Reading:
        """The reading for ``zone`` at ``at`` (now if None); GridError on any failure."""
        ...


@runtime_checkable
class ForecastingProvider(CarbonProvider, Protocol):
    """A provider that can also look ahead."""

    def forecast(self, zone: str, hours: int) -> list[Reading]:
        """Hourly (or finer) readings for the next ``hours`` hours; GridError on any failure."""
        ...


from .chain import ProviderChain, ProviderFailure  # noqa: E402
from .clients import ElectricityMapsClient, UKCarbonIntensityClient, WattTimeClient  # noqa: E402
from .table import EmbeddedTableProvider  # noqa: E402
from .trace import TraceProvider  # noqa: E402

__all__ = [
    "CarbonProvider",
    "ElectricityMapsClient",
    "EmbeddedTableProvider",
    "ForecastingProvider",
    "GridError",
    "NotProvided",
    "ProviderChain",
    "ProviderFailure",
    "Reading",
    "TraceProvider",
    "UKCarbonIntensityClient",
    "WattTimeClient",
    "check_intensity",
    "to_utc",
]
