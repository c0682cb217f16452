"""Routers choose the worker (and so the region) for the next chunk.

The interface is one method, :meth:`Router.choose`, given the cluster snapshot, the free slots
per worker, and the dirtiest electricity the job may use now (``max_intensity``, from time
shifting, :mod:`.shifting`; unbounded for jobs without a deadline).

* :class:`CapacityRouter` is the carbon-blind policy: among workers with a free slot it prefers
  the one with the most free capacity (free share of its slots x its measured speed), so work
  spreads in proportion to capacity and the fastest idle worker goes first.
* :class:`GridAwareRouter` (``HYDRA_GRID_AWARE``) scores each live worker by the carbon
  intensity, electricity price and renewable share of where it draws power (its region's grid
  zone, or the zone and on-site renewables it reported itself), weighted by
  ``HYDRA_CARBON_WEIGHT``, ``HYDRA_COST_WEIGHT`` and ``HYDRA_RENEWABLE_WEIGHT``, and fills the
  best workers' free slots first. Windows still bound every worker, so a clean region never gets
  more than its capacity and dirtier ones take what it cannot: a job is not starved.
"""

from __future__ import annotations

import functools
import json
import math
import time
from datetime import datetime, timezone
from typing import Callable, Mapping, Protocol

import redis

from .. import keys
from ..grid import GridError
from ..grid.chain import ProviderChain, ProviderFailure
from ..grid.configure import build_chain
from ..grid.observed import ObservedIntensities
from ..grid.regions import Region, RegionSignal, parse_regions
from ..grid.site import reported_site, worker_signals
from ..settings import Settings
from ..worker.registry import WorkerInfo
from .cluster import ClusterSnapshot

UNBOUNDED = math.inf


class Router(Protocol):
    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str,
               max_intensity: float = UNBOUNDED) -> str | None:
        """The worker id for the next chunk of a ``kind`` job, or None if no worker can take one."""
        ...


class CapacityRouter:
    """Capacity-proportional routing: the worker whose free share of capacity is largest.
    Carbon-blind, so it ignores ``max_intensity`` (and time shifting is off with it)."""

    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str,
               max_intensity: float = UNBOUNDED) -> str | None:
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


def effective_intensities(signals: Mapping[str, RegionSignal]) -> dict[str, float]:
    """gCO2/kWh each worker's power really carries: grid intensity net of on-site renewables.
    An unknown intensity counts as the mean of the known ones (475, the world mean, if none is)."""
    known = [s.g_co2_per_kwh for s in signals.values() if s.g_co2_per_kwh is not None]
    fallback = sum(known) / len(known) if known else 475.0
    return {k: (fallback if s.g_co2_per_kwh is None else s.g_co2_per_kwh) * (1.0 - (s.renewable_share or 0.0))
            for k, s in signals.items()}


SignalSource = Callable[[ClusterSnapshot], Mapping[str, RegionSignal]]  # worker id -> signal
#: hourly(worker, hours, now) -> the worker's effective gCO2/kWh for each of the next hours (None: unknown)
HourlySource = Callable[[WorkerInfo, int, float], list[float | None]]


class GridAwareRouter:
    """Prefer the workers with the best weighted grid score; capacity breaks ties."""

    def __init__(self, signals: SignalSource, *, carbon_weight: float, cost_weight: float,
                 renewable_weight: float, hourly: HourlySource | None = None) -> None:
        self._signals = signals
        self.hourly = hourly  # forecasts for time shifting; None: no forecast, deadline jobs run at once
        self.weights = (carbon_weight, cost_weight, renewable_weight)
        self._cache: tuple[ClusterSnapshot, dict[str, float], dict[str, float]] | None = None

    @classmethod
    def by_region(cls, signals: Mapping[str, RegionSignal], *, carbon_weight: float, cost_weight: float,
                  renewable_weight: float) -> "GridAwareRouter":
        """A router from fixed per-region signals (simulations and tests)."""
        unknown = RegionSignal(None, None, None, "unknown")
        return cls(lambda snap: {wid: signals.get(w.region, unknown) for wid, w in snap.workers.items()},
                   carbon_weight=carbon_weight, cost_weight=cost_weight, renewable_weight=renewable_weight)

    def scores(self, snapshot: ClusterSnapshot) -> tuple[dict[str, float], dict[str, float]]:
        """(score, effective gCO2/kWh) per live worker, computed once per snapshot."""
        if self._cache is None or self._cache[0] is not snapshot:
            signals = self._signals(snapshot)
            carbon = _normalised({w: s.g_co2_per_kwh for w, s in signals.items()})
            price = _normalised({w: s.price_per_kwh for w, s in signals.items()})
            cw, pw, rw = self.weights
            scores = {w: cw * carbon[w] + pw * price[w] + rw * (1.0 - (s.renewable_share or 0.0))
                      for w, s in signals.items()}
            self._cache = (snapshot, scores, effective_intensities(signals))
        return self._cache[1], self._cache[2]

    def choose(self, snapshot: ClusterSnapshot, free_slots: Mapping[str, int], kind: str,
               max_intensity: float = UNBOUNDED) -> str | None:
        scores, intensity = self.scores(snapshot)
        neutral = 0.5 * self.weights[0] + 0.5 * self.weights[1] + self.weights[2]
        best, best_key = None, None
        for worker_id, worker in snapshot.workers.items():
            free, slots = free_slots.get(worker_id, 0), snapshot.slots.get(worker_id, 0)
            if free <= 0 or slots <= 0 or intensity.get(worker_id, UNBOUNDED) > max_intensity:
                continue
            key = (scores.get(worker_id, neutral), -free / slots * worker.rate(kind))
            if best_key is None or key < best_key:
                best, best_key = worker_id, key
        return best


class FailureLog:
    """Makes provider failures visible beyond this process: newest first in ``keys.GRID_FAILURES``."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None

    def __call__(self, failure: ProviderFailure) -> None:
        if self.client is not None:
            entry = json.dumps({"provider": failure.provider, "zone": failure.zone, "message": failure.message,
                                "at": time.time()})
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(keys.GRID_FAILURES, entry)
            pipe.ltrim(keys.GRID_FAILURES, 0, keys.GRID_FAILURES_KEPT - 1)
            pipe.execute()


@functools.lru_cache(maxsize=4)
def _chain(settings: Settings) -> tuple[ProviderChain, FailureLog, ObservedIntensities]:
    failures, observed = FailureLog(), ObservedIntensities()
    return build_chain(settings, on_failure=failures, observed=observed), failures, observed


def carbon_provider(settings: Settings, client: redis.Redis | None = None) -> ProviderChain:
    """One provider chain per process and settings (it caches readings, see grid/configure.py);
    with ``client``, its failures are also logged to Redis for the metrics endpoint, and the
    intensities it reads are kept there to forecast from (grid/observed.py)."""
    chain, failures, observed = _chain(settings)
    if client is not None:
        failures.client = client
        observed.client = client
    return chain


def router_for(settings: Settings, client: redis.Redis | None = None) -> CapacityRouter | GridAwareRouter:
    """The router the settings ask for, with current grid signals for every live worker."""
    if not settings.grid_aware:
        return CapacityRouter()
    regions = parse_regions(settings.regions)
    provider = carbon_provider(settings, client)

    def hourly(worker: WorkerInfo, hours: int, now: float) -> list[float | None]:
        region = regions.get(worker.region, Region(worker.region, None))
        zone, share = reported_site(worker, now) or (region.zone, region.renewable_share)
        if zone is None:
            return [None] * hours
        try:
            readings = provider.forecast(zone, hours, at=datetime.fromtimestamp(now, timezone.utc))
        except GridError:
            return [None] * hours
        return [r.g_co2_per_kwh * (1.0 - (share or 0.0)) for r in readings]

    return GridAwareRouter(lambda snap: worker_signals(snap.workers.values(), regions, provider, now=time.time()),
                           carbon_weight=settings.carbon_weight, cost_weight=settings.cost_weight,
                           renewable_weight=settings.renewable_weight, hourly=hourly)
