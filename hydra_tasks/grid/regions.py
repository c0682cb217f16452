"""The region registry: which grid zone, electricity price and on-site renewable share each
region has, and the signals the grid-aware router scores regions by.

Defaults cover several continents; ``HYDRA_REGIONS`` adds or overrides entries as
``name=ZONE[:price_per_kwh[:renewable_share]]`` separated by commas, e.g.
``eu-west=IE:0.25,home-lab=FR:0.20:0.6``. Prices are in the operator's currency per kWh and have
no default: with no prices configured, ``HYDRA_COST_WEIGHT`` has no effect.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Mapping

from ..errors import ConfigError
from . import CarbonProvider, GridError

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_ZONE = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,5}){0,3}$")


@dataclass(frozen=True)
class Region:
    name: str
    zone: str | None                      # Electricity Maps zone code, None if unknown
    price_per_kwh: float | None = None
    renewable_share: float | None = None  # on-site renewables, 0..1


#: Hydra's default regions and the grid zone each one draws from.
DEFAULT_REGIONS: Mapping[str, Region] = MappingProxyType({r.name: r for r in (
    Region("eu-west", "IE"), Region("eu-central", "DE"), Region("eu-north", "SE"), Region("eu-south", "ES"),
    Region("eu-france", "FR"), Region("uk-south", "GB"), Region("us-east", "US-MIDA-PJM"),
    Region("us-west", "US-CAL-CISO"), Region("us-south", "US-TEX-ERCO"), Region("ca-east", "CA-QC"),
    Region("ap-south", "IN"), Region("ap-southeast", "SG"), Region("ap-northeast", "JP"),
    Region("au-east", "AU"), Region("sa-east", "BR"), Region("local", None),
)})


def parse_regions(text: str) -> dict[str, Region]:
    """The default regions, updated by a ``HYDRA_REGIONS`` string."""
    regions = dict(DEFAULT_REGIONS)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, rest = item.partition("=")
        fields = rest.split(":")
        if not _NAME.match(name) or not _ZONE.match(fields[0]) or len(fields) > 3:
            raise ConfigError(f"HYDRA_REGIONS entry {item!r} is not name=ZONE[:price[:renewable_share]] "
                              "(e.g. eu-west=IE:0.25:0.1).")
        try:
            price = float(fields[1]) if len(fields) > 1 and fields[1] else None
            share = float(fields[2]) if len(fields) > 2 and fields[2] else None
        except ValueError:
            raise ConfigError(f"HYDRA_REGIONS entry {item!r} has a price or share that is not a number.") from None
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise ConfigError(f"HYDRA_REGIONS entry {item!r}: the price must be a number >= 0.")
        if share is not None and not 0 <= share <= 1:
            raise ConfigError(f"HYDRA_REGIONS entry {item!r}: the renewable share must be in [0, 1].")
        regions[name] = Region(name, fields[0], price, share)
    return regions


@dataclass(frozen=True)
class RegionSignal:
    """What the grid-aware router knows about a region now."""

    g_co2_per_kwh: float | None
    price_per_kwh: float | None
    renewable_share: float | None
    source: str


def region_signals(regions: Mapping[str, Region], names: set[str], provider: CarbonProvider,
                   at: datetime | None = None) -> dict[str, RegionSignal]:
    """Signals for the named regions. A region whose zone is unknown, or whose providers all
    failed, gets ``None`` intensity: the router then treats it as average, never as clean."""
    out: dict[str, RegionSignal] = {}
    for name in names:
        region = regions.get(name, Region(name, None))
        intensity, source = None, "unknown"
        if region.zone is not None:
            try:
                reading = provider.intensity(region.zone, at)
                intensity, source = reading.g_co2_per_kwh, reading.source
            except GridError:
                source = "unavailable"
        out[name] = RegionSignal(intensity, region.price_per_kwh, region.renewable_share, source)
    return out
