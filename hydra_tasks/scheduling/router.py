"""Routers choose the worker (and so the region) for the next chunk.

The interface is one method, :meth:`Router.choose`, given the cluster snapshot and the free
slots per worker.

* :class:`CapacityRouter` is the carbon-blind policy: among workers with a free slot it prefers
  the one with the most free capacity (free share of its slots x its measured speed), so work
  spreads in proportion to capacity and the fastest idle worker goes first.
* :class:`GridAwareRouter` (``HYDRA_GRID_AWARE``) scores the regions that have live workers by
  carbon intensity, electricity price and renewable share (``HYDRA_CARBON_WEIGHT``,
  ``HYDRA_COST_WEIGHT``, ``HYDRA_RENEWABLE_WEIGHT``) and fills the best region's free slots
  first. Windows still bound every worker, so a clean region never gets more than its capacity
  and dirtier regions take what it cannot: the job is not starved.
"""

from __future__ import annotations

import functools
from typing import Mapping, Protocol

from ..grid import CarbonProvider
from ..grid.chain import ProviderChain
from ..grid.regions import RegionSignal, parse_regions, region_signals
from ..grid.table import EmbeddedTableProvider
from ..grid.trace import TraceProvider
from ..settings import Settings
from .cluster import ClusterSnapshot


class Router(Protocol):
    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str) -> str | None:
        """The worker id for the next chunk of a ``kind`` job, or None if no worker can take one."""
        ...


class CapacityRouter:
    """Capacity-proportional routing: the worker whose free share of capacity is largest."""

    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str) -> str | None:
        best, best_score = None, 0.0
        for worker_id, worker in snapshot.workers.items():
            free, slots = free_slots.get(worker_id, 0), snapshot.slots.get(worker_id, 0)
            if free <= 0 or slots <= 0:
                continue
            score = free / slots * worker.rate(kind)
            if score > best_score:
                best, best_score = worker_id, score
        return best


def _normalised(values: Mapping[str, float | None]) -> dict[str, float]:
    """Min-max to [0, 1] (lower is better); unknown values sit at the middle."""
    known = [v for v in values.values() if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    return {k: 0.5 if v is None or hi == lo else (v - lo) / (hi - lo) for k, v in values.items()}


class GridAwareRouter:
    """Prefer the region with the best weighted grid score; capacity decides within a region."""

    def __init__(self, signals: Mapping[str, RegionSignal], *, carbon_weight: float, cost_weight: float,
                 renewable_weight: float) -> None:
        carbon = _normalised({r: s.g_co2_per_kwh for r, s in signals.items()})
        price = _normalised({r: s.price_per_kwh for r, s in signals.items()})
        self.scores = {r: carbon_weight * carbon[r] + cost_weight * price[r]
                       + renewable_weight * (1.0 - (s.renewable_share or 0.0)) for r, s in signals.items()}
        self.neutral = 0.5 * carbon_weight + 0.5 * cost_weight + renewable_weight  # a region nobody knows

    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str) -> str | None:
        best, best_key = None, None
        for worker_id, worker in snapshot.workers.items():
            free, slots = free_slots.get(worker_id, 0), snapshot.slots.get(worker_id, 0)
            if free <= 0 or slots <= 0:
                continue
            key = (self.scores.get(worker.region, self.neutral), -free / slots * worker.rate(kind))
            if best_key is None or key < best_key:
                best, best_key = worker_id, key
        return best


@functools.lru_cache(maxsize=4)
def carbon_provider(carbon_trace: str) -> CarbonProvider:
    """One provider chain per process (it caches readings): trace replay if configured, then the
    embedded annual table, which never fails."""
    providers: list[CarbonProvider] = [TraceProvider(carbon_trace)] if carbon_trace else []
    return ProviderChain([*providers, EmbeddedTableProvider()], ttl_s=300.0)


def router_for(settings: Settings) -> Router:
    """The router the settings ask for, with current grid signals for every known region."""
    if not settings.grid_aware:
        return CapacityRouter()
    regions = parse_regions(settings.regions)
    signals = region_signals(regions, set(regions), carbon_provider(settings.carbon_trace))
    return GridAwareRouter(signals, carbon_weight=settings.carbon_weight, cost_weight=settings.cost_weight,
                           renewable_weight=settings.renewable_weight)

