"""Regions on the real hourly carbon traces: the simulator's grid.

The trace is the shared Electricity Maps 2022 hourly lifecycle file (read in place with Hydra's own
:class:`~hydra_tasks.grid.trace.TraceProvider`; never copied into the project). Regions are Hydra's
default region names, mapped with :func:`~hydra_tasks.grid.regions.parse_regions` (the
``HYDRA_REGIONS`` syntax) to zones that are columns of the trace; the signals the router sees come
from :func:`~hydra_tasks.grid.regions.region_signals`, as in the control plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ..grid import GridError
from ..grid.regions import Region, RegionSignal, parse_regions, region_signals
from ..grid.trace import TraceProvider
from . import CarbonDataMissing

#: ../shared/data/carbon beside the project (see its README); override with --trace
DEFAULT_TRACE = (Path(__file__).resolve().parents[3] / "shared" / "data" / "carbon" / "derived"
                 / "em2022_hourly_lca_25zones.csv")
#: region -> zone of the 25-zone trace (the default regions' zones, at the trace's granularity)
REGION_ZONES = {
    "eu-west": "IE", "eu-central": "DE", "eu-north": "SE-SE3", "eu-south": "ES", "eu-france": "FR",
    "uk-south": "GB", "us-east": "US-MIDA-PJM", "us-west": "US-CAL-CISO", "us-south": "US-TEX-ERCO",
    "ca-east": "CA-QC", "ap-south": "IN-WE", "ap-southeast": "SG", "ap-northeast": "JP-TK", "au-east": "AU-NSW",
    "sa-east": "BR-CS",
}
HOUR_S = 3600.0
FORECAST_H = 72


@dataclass
class Grid:
    """Hourly gCO2/kWh per region from ``start`` (hour 0) on, for the run and a forecast beyond it."""

    regions: list[str]
    zones: dict[str, str]
    start: datetime
    g_per_kwh: np.ndarray          # shape (regions, hours)
    table: dict[str, Region]
    source: str

    def hour(self, t: float) -> int:
        return min(int(t // HOUR_S), self.g_per_kwh.shape[1] - 1)

    def signals(self, hour: int) -> dict[str, RegionSignal]:
        return {r: RegionSignal(float(self.g_per_kwh[i, hour]), self.table[r].price_per_kwh,
                                self.table[r].renewable_share, self.source) for i, r in enumerate(self.regions)}


def load(regions: list[str], *, start: datetime, horizon_s: float, trace: Path | None = None) -> Grid:
    """The grid for ``regions`` from ``start`` on; CarbonDataMissing if the trace file is absent."""
    path = trace or DEFAULT_TRACE
    if not path.is_file():
        raise CarbonDataMissing(f"carbon trace {path} is not there (it lives in the shared data beside the project, "
                                "../shared/data/carbon/derived); pass --trace FILE or --no-carbon")
    provider = TraceProvider(path)
    table = parse_regions(",".join(f"{r}={REGION_ZONES[r]}" for r in regions))
    hours = int(math.ceil(horizon_s / HOUR_S)) + FORECAST_H
    values = np.empty((len(regions), hours))
    for i, r in enumerate(regions):
        zone = table[r].zone
        if zone is None:
            raise CarbonDataMissing(f"region {r} has no zone")
        try:
            values[i] = [x.g_co2_per_kwh for x in provider.forecast(zone, hours, at=start)]
        except GridError as exc:
            raise CarbonDataMissing(str(exc)) from None
    # The router's signals are region_signals' (the control plane's own function) at each hour.
    check = region_signals(table, set(regions), provider, at=start)
    assert all(abs(check[r].g_co2_per_kwh - values[i, 0]) < 1e-9 for i, r in enumerate(regions)
               if check[r].g_co2_per_kwh is not None)
    return Grid(regions, {r: REGION_ZONES[r] for r in regions}, start, values, table, f"trace:{path.name}")


def flat(regions: list[str], *, start: datetime, horizon_s: float, g_per_kwh: float = 475.0) -> Grid:
    """A grid with the same intensity everywhere (no carbon data: routing and accounting still run)."""
    hours = int(math.ceil(horizon_s / HOUR_S)) + FORECAST_H
    table = {r: Region(r, None) for r in regions}
    return Grid(regions, {r: "-" for r in regions}, start, np.full((len(regions), hours), g_per_kwh), table, "flat")


def parse_start(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def at(grid: Grid, t: float) -> datetime:
    return grid.start + timedelta(seconds=t)
