"""A point-in-time view of the live compute plane, built from the worker registry."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Iterable

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


#: Accepted chunks of a kind after which a worker's own speed for it counts in full.
CONFIRMED_AFTER = 3
_SPEEDS = (("pi", "pi_samples_per_s", "perf_pi"), ("mandelbrot", "mandelbrot_iters_per_s", "perf_mandelbrot"))


def confirmed_view(workers: Iterable[WorkerInfo]) -> dict[str, WorkerInfo]:
    """The workers as the scheduler takes them: a speed that rests on the worker's own claim (its
    start-up calibration, or fewer than CONFIRMED_AFTER accepted chunks) counts for no more than a
    reference: the median speed of the workers whose speed is confirmed, else the lower median of
    all. So a new worker, or one that claims 10^13 samples/s, cannot buy most of a job with its
    first results; once its chunks confirm its speed, it is taken at that speed."""
    ws = list(workers)
    reference: dict[str, float] = {}
    for kind, _, perf_attr in _SPEEDS:
        confirmed = sorted(w.rate(kind) for w in ws if getattr(w, perf_attr).observations >= CONFIRMED_AFTER)
        pool = confirmed or sorted(w.rate(kind) for w in ws)
        reference[kind] = pool[(len(pool) - 1) // 2] if pool else math.inf
    out = {}
    for w in ws:
        capped = w
        for kind, calibration, perf_attr in _SPEEDS:
            perf = getattr(capped, perf_attr)
            if perf.observations >= CONFIRMED_AFTER or capped.rate(kind) <= reference[kind]:
                continue
            capped = replace(capped, **{calibration: min(getattr(capped, calibration), reference[kind]),
                                        perf_attr: replace(perf, rate=min(perf.rate, reference[kind]))})
        out[w.worker_id] = capped
    return out


def is_confirmed(worker: WorkerInfo) -> bool:
    """Whether accepted chunks have confirmed the worker's speed for some kind."""
    return any(getattr(worker, perf_attr).observations >= CONFIRMED_AFTER for _, _, perf_attr in _SPEEDS)


def snapshot(client: redis.Redis, settings: Settings, *, now: float | None = None) -> ClusterSnapshot:
    """Live workers (fresh heartbeat, not paused, not quarantined), their speeds as far as they are confirmed
    (:func:`confirmed_view`), and the number of chunks each may hold: its processes' windows, or,
    until its speed is confirmed, one process' window whatever number of cores it claims (so a
    ghost claiming 256 processes cannot hoard a job's chunks until their leases expire)."""
    now = time.time() if now is None else now
    live = confirmed_view(w for w in list_workers(client)
                          if w.is_live(now, settings.worker_timeout_s) and not w.quarantined)
    return ClusterSnapshot(taken_at=now, workers=live,
                           slots={wid: (w.concurrency if is_confirmed(w) else 1) * settings.inflight_per_slot
                                  for wid, w in live.items()})
