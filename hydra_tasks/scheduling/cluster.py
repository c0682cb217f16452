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
    slots: int          # chunks that may be in flight at once in the region
    capacity: float     # measured π samples/s summed over its live workers


@dataclass(frozen=True)
class ClusterSnapshot:
    taken_at: float
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)  # worker id -> chunks it may hold at once

    @property
    def live_workers(self) -> int:
        return len(self.workers)

    @property
    def regions(self) -> dict[str, RegionView]:
        by_region: dict[str, list[WorkerInfo]] = {}
        for w in self.workers.values():
            by_region.setdefault(w.region, []).append(w)
        return {name: RegionView(name, tuple(ws), sum(self.slots[w.worker_id] for w in ws),
                                 sum(w.rate("pi") for w in ws))
                for name, ws in sorted(by_region.items())}

    def total_rate(self, kind: str) -> float:
        return sum(w.rate(kind) for w in self.workers.values())


def snapshot(client: redis.Redis, settings: Settings, *, now: float | None = None) -> ClusterSnapshot:
    """Live workers (fresh heartbeat, not paused) and the number of chunks each may hold."""
    now = time.time() if now is None else now
    live = {w.worker_id: w for w in list_workers(client) if w.is_live(now, settings.worker_timeout_s)}
    return ClusterSnapshot(taken_at=now, workers=live,
                           slots={wid: w.concurrency * settings.inflight_per_slot for wid, w in live.items()})
