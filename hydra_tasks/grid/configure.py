"""The carbon provider chain the settings ask for.

``HYDRA_CARBON_PROVIDERS`` lists live providers in the order to try them, each optionally with
a base URL: ``electricitymaps``, ``uk`` (Great Britain only), ``watttime`` — e.g.
``electricitymaps,uk`` or ``electricitymaps=https://api-access.electricitymaps.com/free-tier``.
After them come the trace (``HYDRA_CARBON_TRACE``, if set) and the embedded annual table, which
never fails for a known zone, so routing keeps working with every outside provider down. Given an
:class:`~hydra_tasks.grid.observed.ObservedIntensities`, the chain records what it reads there and
forecasts from it (``ObservedForecaster``, before the table) for zones no earlier provider forecasts.
Credentials: ``HYDRA_ELECTRICITYMAPS_TOKEN``; ``HYDRA_WATTTIME_USERNAME`` and
``HYDRA_WATTTIME_PASSWORD`` with ``HYDRA_WATTTIME_REGIONS`` (``ZONE=REGION,...``, e.g.
``US-CAL-CISO=CAISO_NORTH``), since WattTime names its own regions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError
from . import CarbonProvider
from .chain import ProviderChain, ProviderFailure
from .clients import ElectricityMapsClient, UKCarbonIntensityClient, WattTimeClient
from .observed import ObservedForecaster, ObservedIntensities
from .table import EmbeddedTableProvider
from .trace import TraceProvider

if TYPE_CHECKING:
    from ..settings import Settings

KNOWN = ("electricitymaps", "uk", "watttime")
_URL = re.compile(r"^https?://[^\s,]+$")


def parse_providers(text: str) -> list[tuple[str, str | None]]:
    """``[(name, base_url or None), ...]`` from ``HYDRA_CARBON_PROVIDERS``; ConfigError if bad."""
    out: list[tuple[str, str | None]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, url = item.partition("=")
        if name not in KNOWN or (url and not _URL.match(url)) or name in [n for n, _ in out]:
            raise ConfigError(f"HYDRA_CARBON_PROVIDERS entry {item!r} is not one of {', '.join(KNOWN)} "
                              "(each at most once), optionally =http(s)://base-url.")
        out.append((name, url or None))
    return out


def parse_watttime_regions(text: str) -> dict[str, str]:
    regions: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        zone, _, region = item.partition("=")
        if not zone or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", region):
            raise ConfigError(f"HYDRA_WATTTIME_REGIONS entry {item!r} is not ZONE=REGION (e.g. US-CAL-CISO=CAISO_NORTH).")
        regions[zone] = region
    return regions


def check(settings: "Settings") -> None:
    """ConfigError unless every listed provider has what it needs."""
    names = [name for name, _ in parse_providers(settings.carbon_providers)]
    if "electricitymaps" in names and not settings.electricitymaps_token:
        raise ConfigError("HYDRA_CARBON_PROVIDERS names electricitymaps; set HYDRA_ELECTRICITYMAPS_TOKEN.")
    if "watttime" in names:
        if not (settings.watttime_username and settings.watttime_password):
            raise ConfigError("HYDRA_CARBON_PROVIDERS names watttime; set HYDRA_WATTTIME_USERNAME and "
                              "HYDRA_WATTTIME_PASSWORD.")
        if not parse_watttime_regions(settings.watttime_regions):
            raise ConfigError("HYDRA_CARBON_PROVIDERS names watttime; map zones to WattTime regions in "
                              "HYDRA_WATTTIME_REGIONS (e.g. US-CAL-CISO=CAISO_NORTH).")


def build_chain(settings: "Settings", *, on_failure: Callable[[ProviderFailure], None] | None = None,
                ttl_s: float = 300.0, observed: ObservedIntensities | None = None) -> ProviderChain:
    """Live providers (in the configured order), then the trace, then (with ``observed``) forecasts
    from the intensities recorded, then the embedded table."""
    providers: list[CarbonProvider] = []
    for name, url in parse_providers(settings.carbon_providers):
        extra: dict[str, Any] = {"base_url": url} if url else {}
        if name == "electricitymaps":
            providers.append(ElectricityMapsClient(token=settings.electricitymaps_token or "", **extra))
        elif name == "uk":
            providers.append(UKCarbonIntensityClient(**extra))
        else:
            providers.append(WattTimeClient(username=settings.watttime_username or "",
                                            password=settings.watttime_password or "",
                                            regions=parse_watttime_regions(settings.watttime_regions), **extra))
    if settings.carbon_trace:
        providers.append(TraceProvider(settings.carbon_trace))
    if observed is not None:
        providers.append(ObservedForecaster(observed))
    providers.append(EmbeddedTableProvider())
    return ProviderChain(providers, ttl_s=ttl_s, on_failure=on_failure,
                         on_reading=observed.record if observed is not None else None)
