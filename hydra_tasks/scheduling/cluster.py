"""A point-in-time view of the live compute plane, built from the worker registry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from ..settings import Settings
from ..worker.registry import WorkerInfo, list_workers


@dataclass(frozen=True)
class RegionView:
    name: str
    workers: tuple[WorkerInfo, ...]
    slots: int          # chunks that may be in flight at once (concurrency x inflight_per_slot)
    capacity: float     # measured π samples/s summed over live workers x concurrency


@dataclass(frozen=True)
class ClusterSnapshot:
    taken_at: float
    regions: dict[str, RegionView] = field(default_factory=dict)

    @property
    def live_workers(self) -> int:
        return sum(len(r.workers) for r in self.regions.values())


def snapshot(client: redis.Redis, settings: Settings, *, now: float | None = None) -> ClusterSnapshot:
    """Live workers grouped by region, with slots and capacity per region."""
    now = time.time() if now is None else now
    by_region: dict[str, list[WorkerInfo]] = {}
    for w in list_workers(client):
        if w.is_live(now, settings.worker_timeout_s):
            by_region.setdefault(w.region, []).append(w)
    regions = {
        name: RegionView(
            name=name, workers=tuple(ws),
            slots=sum(w.concurrency for w in ws) * settings.inflight_per_slot,
            capacity=sum(w.concurrency * max(w.pi_samples_per_s, 1.0) for w in ws),
        )
        for name, ws in sorted(by_region.items())
    }
    return ClusterSnapshot(taken_at=now, regions=regions)
