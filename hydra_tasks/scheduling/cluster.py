"""A point-in-time view of the live compute plane, built from the worker registry."""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import redis

from .. import keys
from ..settings import Settings
from ..worker.performance import Performance
from ..worker.registry import WorkerInfo, list_workers


T = TypeVar("T")


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
    reference: dict[str, float] = field(default_factory=dict)  # kind -> the speed an unconfirmed claim is capped at
    # fleet-wide figures derived from this view, computed once per view (see memo)
    _memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: Any, compute: Callable[[], T]) -> T:
        """A figure derived from the whole view (a median speed, the carbon-blind intensity), computed
        once however many chunks use it while this view is reused."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def median_rate(self, kind: str) -> float | None:
        """The median speed of the live workers for ``kind`` (the reward's reference), None if none."""
        def compute() -> float | None:
            rates = sorted(w.rate(kind) for w in self.workers.values())
            return rates[len(rates) // 2] if rates else None
        return self.memo(("median_rate", kind), compute)

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


def references(workers: Iterable[WorkerInfo]) -> dict[str, float]:
    """Per kind, the speed an unconfirmed claim counts for at most: the median speed of the workers
    whose speed is confirmed, else the lower median of all (see :func:`confirmed_view`)."""
    ws = list(workers)
    reference: dict[str, float] = {}
    for kind, _, perf_attr in _SPEEDS:
        confirmed = sorted(w.rate(kind) for w in ws if getattr(w, perf_attr).observations >= CONFIRMED_AFTER)
        pool = confirmed or sorted(w.rate(kind) for w in ws)
        reference[kind] = pool[(len(pool) - 1) // 2] if pool else math.inf
    return reference


def capped(worker: WorkerInfo, reference: dict[str, float]) -> WorkerInfo:
    """The worker with each unconfirmed speed capped at the kind's reference."""
    out = worker
    for kind, calibration, perf_attr in _SPEEDS:
        perf = getattr(out, perf_attr)
        limit = reference.get(kind, math.inf)
        if perf.observations >= CONFIRMED_AFTER or out.rate(kind) <= limit:
            continue
        out = out.with_(**{calibration: min(getattr(out, calibration), limit),
                           perf_attr: Performance(min(perf.rate, limit), perf.deviation, perf.observations)})
    return out


def confirmed_view(workers: Iterable[WorkerInfo]) -> dict[str, WorkerInfo]:
    """The workers as the scheduler takes them: a speed that rests on the worker's own claim (its
    start-up calibration, or fewer than CONFIRMED_AFTER accepted chunks) counts for no more than a
    reference: the median speed of the workers whose speed is confirmed, else the lower median of
    all. So a new worker, or one that claims 10^13 samples/s, cannot buy most of a job with its
    first results; once its chunks confirm its speed, it is taken at that speed."""
    ws = list(workers)
    reference = references(ws)
    return {w.worker_id: capped(w, reference) for w in ws}


def slots_of(worker: WorkerInfo, settings: Settings) -> int:
    """Chunks the worker may hold at once: its processes' windows, or one process' window until its
    speed is confirmed."""
    return (worker.concurrency if is_confirmed(worker) else 1) * settings.inflight_per_slot


def is_confirmed(worker: WorkerInfo) -> bool:
    """Whether accepted chunks have confirmed the worker's speed for some kind."""
    return any(getattr(worker, perf_attr).observations >= CONFIRMED_AFTER for _, _, perf_attr in _SPEEDS)


def _build(client: redis.Redis, settings: Settings, now: float) -> ClusterSnapshot:
    ws = [w for w in list_workers(client) if w.is_live(now, settings.worker_timeout_s) and not w.quarantined]
    reference = references(ws)
    live = {w.worker_id: capped(w, reference) for w in ws}
    return ClusterSnapshot(taken_at=now, workers=live, slots={wid: slots_of(w, settings) for wid, w in live.items()},
                           reference=reference)


#: each client's last view: (the registry generation it was read at, when, how long it is good for, how long
#: reading it took, the view)
_views: "weakref.WeakKeyDictionary[redis.Redis, tuple[str | None, float, float, float, ClusterSnapshot]]" = \
    weakref.WeakKeyDictionary()
#: a view is reused for at least this many times the time it took to read, so that reading the fleet
#: never takes more than about a tenth of a control process's time, however large the fleet
REUSE_FACTOR = 10.0
#: a read of the fleet slower than this is not repeated on every change of the registry's generation
SLOW_READ_S = 0.05


def last_view(client: redis.Redis) -> ClusterSnapshot | None:
    """This process's last view of the fleet through ``client``, valid or not (a caller may queue reads
    for its workers in the same round trip as the generation that says whether it is still valid)."""
    seen = _views.get(client)
    return seen[4] if seen is not None else None


def snapshot(client: redis.Redis, settings: Settings, *, now: float | None = None, fresh: bool = False,
             generation: str | None = None, generation_read: bool = False) -> ClusterSnapshot:
    """Live workers (fresh heartbeat, not paused, not quarantined), their speeds as far as they are confirmed
    (:func:`confirmed_view`), and the number of chunks each may hold: its processes' windows, or,
    until its speed is confirmed, one process' window whatever number of cores it claims (so a
    ghost claiming 256 processes cannot hoard a job's chunks until their leases expire).

    Reading every worker's record is O(fleet), so a process reuses its view for up to
    ``HYDRA_FLEET_VIEW_S`` (issue 15), or REUSE_FACTOR times as long as it took to read if that is more,
    unless the registry's generation (``hydra:workers:gen``, a new token with every registration, state
    change, quarantine, prune and grid report) moved: one GET instead of the fleet. A
    reused view is safe: GRANT checks the worker's state, quarantine and window itself, and a merge
    reads the returning worker's own record fresh; only fleet-wide figures (medians, the carbon-blind
    mix, a new worker's first chunk) may lag by that long. ``fresh``: read the fleet now.
    ``generation_read``: the caller read ``hydra:workers:gen`` (``generation``) in one of its own round trips."""
    now = time.time() if now is None else now
    if not generation_read:
        generation = client.get(keys.WORKERS_GEN)
    seen = _views.get(client)
    if not fresh and seen is not None and settings.fleet_view_s > 0:
        age = now - seen[1]
        if 0.0 <= age < seen[2] and seen[0] == generation:
            return seen[4]
        # The registry changed: read it again, but for a fleet whose read is slow never more often than
        # REUSE_FACTOR x that read's time (many workers registering and reporting must not cost a read per chunk).
        if seen[3] > SLOW_READ_S and 0.0 <= age < REUSE_FACTOR * seen[3]:
            return seen[4]
    started = time.perf_counter()
    view = _build(client, settings, now)
    took = time.perf_counter() - started
    good_for = max(settings.fleet_view_s, REUSE_FACTOR * took) if settings.fleet_view_s > 0 else 0.0
    _views[client] = (generation, now, good_for, took, view)
    return view
