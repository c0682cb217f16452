"""The simulated hosts as the control plane sees them: worker records, windows, free slots, and the
candidate snapshot the real router chooses from.

Each host is one Hydra worker (``concurrency`` = its cores). Its record is a real
:class:`~hydra_tasks.worker.registry.WorkerInfo`, updated by the real performance model; the speed
the scheduler uses is capped as :func:`~hydra_tasks.scheduling.cluster.confirmed_view` caps it until three
accepted chunks confirm it, and its window follows :func:`~hydra_tasks.scheduling.cluster.is_confirmed`
(one process' window until then).

**Routing without a fleet-wide scan.** Both routers pick, among workers with a free slot, the best
key: ``CapacityRouter`` the largest ``free / slots x rate``; ``GridAwareRouter`` the best region score
(one value per region here, since simulated hosts report no zone of their own), then the largest
``free / slots x rate``. So the worker the router would pick from the whole fleet is the one it picks
from a snapshot holding, for each region, only that region's host with the largest
``free / slots x rate``. Large fleets keep one lazy max-heap per region and give the real router
that candidate snapshot (keyed by region); small fleets (``exact``) give it the whole fleet.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from ..models import WorkerState
from ..scheduling.cluster import ClusterSnapshot, capped, is_confirmed
from ..settings import Settings
from ..worker.registry import WorkerInfo

KIND = "pi"


def evolve(w: WorkerInfo, **changes: Any) -> WorkerInfo:
    """``dataclasses.replace`` for WorkerInfo, fast (:meth:`WorkerInfo.with_`)."""
    return w.with_(**changes)


class Fleet:
    """Per-host state in parallel lists (fast), plus WorkerInfo records for the real policies."""

    def __init__(self, settings: Settings, *, region: list[int], regions: list[str], cores: list[int],
                 pi_speed: list[float], mandel_speed: list[float], pi_calibration: list[float],
                 mandel_calibration: list[float], cpu_limit: list[float], exact: bool) -> None:
        self.settings = settings
        self.n = len(region)
        self.regions = regions
        self.region = region
        self.cores = cores
        self.pi_speed, self.mandel_speed = pi_speed, mandel_speed  # what one process really computes
        self.cpu_limit = cpu_limit
        self.exact = exact
        self.ids = [f"h{i}" for i in range(self.n)]
        self.index = {wid: i for i, wid in enumerate(self.ids)}
        self.raw: list[WorkerInfo] = [
            WorkerInfo(worker_id=self.ids[i], region=regions[region[i]], host="sim", pid=i, cores=cores[i],
                       concurrency=cores[i], pi_samples_per_s=pi_calibration[i],
                       mandelbrot_iters_per_s=mandel_calibration[i], state=WorkerState.ONLINE, started_at=0.0,
                       last_seen=0.0, cpu_limit=cpu_limit[i], watts_per_core=settings.watts_per_core,
                       public_key=f"key-{i}")
            for i in range(self.n)]
        self.info: list[WorkerInfo] = list(self.raw)  # as the scheduler takes them (confirmed view)
        self.reference = {KIND: math.inf, "mandelbrot": math.inf}  # confirmed_view's reference speeds
        self.reference_version = 0
        self._viewed_at = [0] * self.n    # the reference version host i's view was last computed against
        self.live = [False] * self.n      # in the snapshot (registered, heartbeat fresh, not quarantined)
        self.on = [False] * self.n        # computing (available)
        self.quarantined = [False] * self.n
        self.held = [0] * self.n          # chunks leased to it and not yet released
        self.slots = [self._slots(i) for i in range(self.n)]
        self.rate = [self.info[i].rate(KIND) for i in range(self.n)]
        self.total_rate = {KIND: 0.0, "mandelbrot": 0.0}
        self._heaps: list[list[tuple[float, int, int, int]]] = [[] for _ in regions]
        self._version = [0] * self.n
        self.record_version = [0] * self.n  # changes whenever what the scheduler takes of host i may change
        self._seq = 0
        self.free_hosts = 0               # live hosts with a free slot
        self.live_count = self.peak_live = 0
        self._has_free = [False] * self.n

    # --- records -----------------------------------------------------------------------------
    def _slots(self, i: int) -> int:
        w = self.info[i]
        return (w.concurrency if is_confirmed(w) else 1) * self.settings.inflight_per_slot

    def set_reference(self, reference: dict[str, float]) -> None:
        """The median confirmed speeds the confirmed view caps claims at (refreshed periodically).
        Only the live hosts whose view can change are refreshed: an unconfirmed speed above the old
        or the new reference (below both, ``capped`` leaves the record as it is, before and after)."""
        old, self.reference = self.reference, reference
        if old == reference:
            return
        self.reference_version += 1
        low = {kind: min(old[kind], reference[kind]) for kind in reference}
        for i in range(self.n):
            w = self.raw[i]
            if self.live[i] and ((w.perf_pi.observations < 3 and w.rate(KIND) > low[KIND]) or
                                 (w.perf_mandelbrot.observations < 3 and w.rate("mandelbrot") > low["mandelbrot"])):
                self._refresh(i)
            elif not self.live[i]:
                self._viewed_at[i] = -1  # viewed against an older reference: refreshed when it is live again

    def come_back(self, i: int) -> None:
        """Host ``i`` registers again (after being away): live, its view refreshed if the reference
        changed meanwhile (nothing else the view depends on changes while a host is away)."""
        if self._viewed_at[i] != self.reference_version:
            self._refresh(i)
        self.set_live(i, True)

    def _capped(self, w: WorkerInfo) -> WorkerInfo:
        """What the real confirmed view makes of the record: ``cluster.capped`` against the fleet's
        reference (the median confirmed speeds, which ``confirmed_view`` would compute from the whole
        fleet; here they are refreshed periodically, see ``Engine._reference``)."""
        if (w.perf_pi.observations >= 3 or w.rate(KIND) <= self.reference[KIND]) and \
                (w.perf_mandelbrot.observations >= 3 or w.rate("mandelbrot") <= self.reference["mandelbrot"]):
            return w  # what capped would return: nothing above the reference rests on a claim
        return capped(w, self.reference)

    def update(self, i: int, raw: WorkerInfo) -> None:
        """A new record for host ``i`` (after a merge, an expiry, a catch)."""
        self.raw[i] = raw
        self._refresh(i)

    def _refresh(self, i: int) -> None:
        old_pi, old_m = self.info[i].rate(KIND), self.info[i].rate("mandelbrot")
        self.info[i] = self._capped(self.raw[i])
        self._viewed_at[i] = self.reference_version
        self.record_version[i] += 1
        self.rate[i] = self.info[i].rate(KIND)
        self.slots[i] = self._slots(i)
        if self.live[i]:
            self.total_rate[KIND] += self.rate[i] - old_pi
            self.total_rate["mandelbrot"] += self.info[i].rate("mandelbrot") - old_m
        self.touch(i)

    def set_live(self, i: int, live: bool) -> None:
        if live == self.live[i] or (live and self.quarantined[i]):
            return
        sign = 1.0 if live else -1.0
        self.total_rate[KIND] += sign * self.rate[i]
        self.total_rate["mandelbrot"] += sign * self.info[i].rate("mandelbrot")
        self.live[i] = live
        self.record_version[i] += 1
        self.live_count += 1 if live else -1
        self.peak_live = max(self.peak_live, self.live_count)
        self.touch(i)

    # --- free slots and the candidate heaps ----------------------------------------------------
    def free(self, i: int) -> int:
        return max(self.slots[i] - self.held[i], 0) if self.live[i] else 0

    def touch(self, i: int) -> None:
        """Re-key host ``i`` after its free slots, window, speed or liveness changed."""
        self._version[i] += 1
        free = self.free(i)
        has = free > 0
        if has != self._has_free[i]:
            self.free_hosts += 1 if has else -1
            self._has_free[i] = has
        if has and not self.exact:
            self._seq += 1
            heapq.heappush(self._heaps[self.region[i]], (-free / self.slots[i] * self.rate[i], self._seq, i,
                                                         self._version[i]))

    def top(self, r: int) -> int | None:
        """Region ``r``'s host with the largest free share of capacity, or None if none is free."""
        heap = self._heaps[r]
        while heap:
            _, _, i, version = heap[0]
            if version == self._version[i] and self._has_free[i]:
                return i
            heapq.heappop(heap)
        return None

    def full_snapshot(self, now: float) -> ClusterSnapshot:
        live = {self.ids[i]: self.info[i] for i in range(self.n) if self.live[i]}
        return ClusterSnapshot(now, live, {self.ids[i]: self.slots[i] for i in range(self.n) if self.live[i]})
