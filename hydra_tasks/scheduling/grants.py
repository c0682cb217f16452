"""Which worker gets which job's next chunks: a pure plan, from a cluster snapshot and what a job
can hand out now. :func:`.dispatcher.dispatch` reads the inputs and carries the plan out.

For each job, in dispatch order, the router picks a worker with a free slot (within the job's
carbon threshold, if it has one) for every chunk the job can hand out: its waiting chunks
(re-queued, planned up front, or tiles), then, for kinds cut lazily, new ranges sized for the
worker that gets them (:func:`.planner.range_chunk_size`). A worker's first chunk of a job is short.

A confidential job is planned only onto the workers :func:`eligible` leaves (attestation verified
under ``HYDRA_ATTESTATION``; :mod:`hydra_tasks.trust.attestation`): the one place that decides it.
With none, its plan is empty and says why (``waiting``); it never runs on another worker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from ..settings import Settings
from ..trust import attestation
from .cluster import ClusterSnapshot
from .planner import range_chunk_size
from .router import UNBOUNDED, Router


@dataclass(frozen=True)
class JobSupply:
    """What one job can hand out now."""

    job_id: str
    kind: str                    # a JobKind value
    cuts: bool                   # new ranges are cut at dispatch (π)
    remaining_units: int         # units not yet cut into chunks (kinds cut lazily)
    units_total: int             # the job's units (bounds the number of chunks it is cut into)
    waiting: int                 # chunks ready to hand out: re-queued, planned, tiles
    fresh: frozenset[str]        # live workers that have not returned a chunk of this job yet
    limit: float = UNBOUNDED     # the dirtiest power (gCO2/kWh) it may use now (time shifting)
    confidential: bool = False   # only workers with verified attestation may get it
    generator: str = ""          # a π job's generator: only workers whose kernels compute it may get it


@dataclass(frozen=True)
class GrantRequest:
    """Lease the job's next chunk to this worker (see :meth:`hydra_tasks.lua.Scripts.grant`)."""

    job_id: str
    worker_id: str
    region: str
    capacity: int                # the worker's window
    rate: float                  # its speed for this kind (sets the lease's length)
    cut_units: int               # the size of a new range, if the job has nothing waiting
    order: str                   # 'max': the heaviest waiting tile (fast workers), 'min' the lightest
    bundle: int = 1              # chunks that travel together to this worker in one message (bundle_size)
    extra: int = 0               # capacity beyond the worker's usual window (a window of bundles)


@dataclass(frozen=True)
class JobPlan:
    requests: tuple[GrantRequest, ...]
    exhausted: bool              # everything the job has is planned; idle workers may back up its stragglers
    blocked: bool                # no worker at all had a free slot: later jobs get nothing either
    waiting: str = ""            # a confidential job no live worker may run: why


def plan_job(settings: Settings, snap: ClusterSnapshot, router: Router, free: Mapping[str, int],
             supply: JobSupply, *, bundles: bool = True) -> JobPlan:
    """The grants for one job, given each worker's free slots (not changed here). ``bundles``: whether
    short chunks may be planned in bundles (the caller can send them)."""
    if supply.confidential or (supply.generator and not all(w.computes(supply.generator)
                                                                for w in snap.workers.values())):
        allowed = eligible(settings, snap, supply)
        if not allowed.workers:
            why = (attestation.waiting_reason(settings.attestation, len(snap.workers)) if supply.confidential else
                   f"no live worker computes its generator {supply.generator!r} (volunteers on older code: "
                   "upgrade them)")
            return JobPlan((), exhausted=False, blocked=False, waiting=why)
        plan = plan_job(settings, allowed, router, free, replace(supply, confidential=False, generator=""),
                        bundles=bundles)
        return replace(plan, blocked=False)  # eligible workers being busy does not stop other jobs
    free, fresh = dict(free), set(supply.fresh)
    waiting, remaining = supply.waiting, supply.remaining_units if supply.cuts else 0
    total_rate = snap.total_rate(supply.kind)
    # New ranges that are short on their worker travel in bundles of k (bundle_size), in a window k
    # times larger. A bundled worker is offered only a whole bundle (or the job's last chunks): windows
    # refilled as soon as a few of a bundle's results have merged would break bundles back up.
    sizes: dict[str, tuple[int, int]] = {}  # worker -> (chunks per bundle, units per chunk)
    if remaining > 0 and bundles and bundling(settings):
        for wid, worker in snap.workers.items():
            sizing = range_chunk_size(settings, worker_rate=worker.rate(supply.kind), total_rate=total_rate,
                                      remaining=remaining, first=wid in fresh, units_total=supply.units_total)
            k = bundle_size(settings, worker.bundle_max, sizing.seconds)
            if k > 1:
                sizes[wid] = (k, max(sizing.units, 1))
    room = {wid: n + snap.slots.get(wid, 0) * (sizes[wid][0] - 1) if wid in sizes else n
            for wid, n in free.items()} if sizes else free

    def offer(wid: str) -> int:  # a bundled worker's room, if a whole bundle (or the rest of the job) fits
        k, units = sizes[wid]
        return room[wid] if room[wid] >= min(k, -(-remaining // units)) else 0

    offered = {wid: offer(wid) if wid in sizes else n for wid, n in room.items()} if sizes else room
    requests: list[GrantRequest] = []
    while waiting > 0 or remaining > 0:
        worker_id = router.choose(snap, free if waiting > 0 else offered, supply.kind, supply.limit)
        if worker_id is None:
            return JobPlan(tuple(requests), exhausted=False, blocked=supply.limit >= UNBOUNDED)
        worker = snap.workers[worker_id]
        rate = worker.rate(supply.kind)
        k = sizes[worker_id][0] if waiting <= 0 and worker_id in sizes else 1
        extra = snap.slots[worker_id] * (k - 1)
        for _ in range(k):  # one chunk, or a whole bundle for this worker
            if waiting <= 0 and remaining <= 0:
                break
            size = range_chunk_size(settings, worker_rate=rate, total_rate=total_rate, remaining=remaining,
                                    first=worker_id in fresh, units_total=supply.units_total).units \
                if remaining > 0 else 0
            requests.append(GrantRequest(supply.job_id, worker_id, worker.region, snap.slots[worker_id] + extra,
                                         rate, size, heavy_or_light(snap, worker_id, supply.kind), bundle=k,
                                         extra=extra))
            if waiting > 0:
                waiting -= 1
            else:
                remaining = remaining - size if size > 0 else 0  # (a size of 0 would never end)
            fresh.discard(worker_id)
            free[worker_id] -= 1
            if room is not free:
                room[worker_id] -= 1
        if offered is not room:
            offered[worker_id] = offer(worker_id) if worker_id in sizes else room[worker_id]
    return JobPlan(tuple(requests), exhausted=True, blocked=False)


def bundling(settings: Settings) -> bool:
    """Whether new ranges can be short enough to bundle: static sizes, or adaptive ones whose floor
    (``HYDRA_MIN_CHUNK_S``, 0.5 s by default) is below ``HYDRA_BUNDLE_S``."""
    return settings.bundle_s > 0 and settings.bundle_max > 1 and (
        not settings.adaptive or settings.min_chunk_s < settings.bundle_s)


def bundle_size(settings: Settings, worker_max: int, chunk_s: float) -> int:
    """How many chunks of ``chunk_s`` expected seconds each travel together to a worker that takes
    bundles of up to ``worker_max``: as many as add up to about ``HYDRA_BUNDLE_S`` of work, at most
    ``HYDRA_BUNDLE_MAX``; 1 (alone) for a chunk that long or longer. A near-empty chunk costs the
    control plane two Celery messages, a signed envelope and an intake task, about 20 ms of CPU
    (benchmarks/chunk_cpu.py); in a bundle of k those are shared by k chunks."""
    limit = min(settings.bundle_max, worker_max)
    if limit <= 1 or settings.bundle_s <= 0 or not chunk_s < settings.bundle_s:
        return 1
    return max(1, min(limit, int(settings.bundle_s / max(chunk_s, 1e-9))))


def heavy_or_light(snap: ClusterSnapshot, worker_id: str, kind: str) -> str:
    """Heaviest waiting tile for a worker at least as fast as the fleet's median, else the lightest."""
    rates = sorted(w.rate(kind) for w in snap.workers.values())
    median = rates[len(rates) // 2]
    return "max" if snap.workers[worker_id].rate(kind) >= median else "min"


def eligible(settings: Settings, snap: ClusterSnapshot, supply: JobSupply) -> ClusterSnapshot:
    """The workers that may get this job's chunks: all of ``snap`` for an ordinary job; for a
    confidential one, only those whose attestation the control plane verified under
    ``HYDRA_ATTESTATION`` (:func:`hydra_tasks.trust.attestation.eligible`); for a π job, only those
    whose kernels compute its generator (a volunteer on code older than the generator does not)."""
    if not supply.confidential and not supply.generator:
        return snap
    keep = {wid: w for wid, w in snap.workers.items() if w.computes(supply.generator) and (
            not supply.confidential or attestation.eligible(settings.attestation, w.tee, w.attestation))}
    return ClusterSnapshot(taken_at=snap.taken_at, workers=keep, slots={wid: snap.slots[wid] for wid in keep})
