"""The simulator's state: jobs, chunks and leases (what Redis holds in Hydra), and the run's counters."""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from ..models import ChunkSpec, JobKind


class Chunk:
    """A range of π samples or a Mandelbrot tile (or the preview). ``work`` is what computing it
    really costs (samples, work iterations); ``work_est`` what the control plane expects it to
    cost (the tile's est_cost; the range's samples); ``iterations`` what its reward counts."""

    __slots__ = ("job", "cid", "units", "work", "work_est", "iterations", "preview", "leases", "done", "queued",
                 "backed_up")

    def __init__(self, job: "Job", cid: str, units: int, work: float, work_est: float, *, iterations: float = 0.0,
                 preview: bool = False) -> None:
        self.job, self.cid, self.units = job, cid, units
        self.work, self.work_est, self.iterations, self.preview = work, work_est, iterations, preview
        self.leases: list[Lease] = []   # the holder's first, then its backup
        self.done = self.queued = self.backed_up = False


class Lease:
    __slots__ = ("chunk", "host", "at", "backup", "released", "compute_s", "deadline", "finish", "finish_key")

    def __init__(self, chunk: Chunk, host: int, at: float, backup: bool) -> None:
        self.chunk, self.host, self.at, self.backup = chunk, host, at, backup
        self.released = False
        self.compute_s = 0.0
        self.deadline = at
        self.finish = 0.0      # the holder's expected finish (stragglers.expected_finish), as of ...
        self.finish_key = -1   # ... this version of the holder's record (Fleet.record_version)


@dataclass(eq=False)
class Job:
    job_id: str
    kind: JobKind
    units_total: int
    arrival: float
    deadline: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    preview_work: np.ndarray | None = None   # Mandelbrot: the preview's work map
    preview_stride: int = 1
    preview_cost: float = 0.0                # work iterations the preview itself costs
    tile_truth: Callable[[ChunkSpec], float] | None = None  # a tile's true work from its spec
    cursor: int = 0
    units_done: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    suspect: int = 0
    backup_pass: float = -1e18
    seen: set[int] = field(default_factory=set)
    out: dict[str, Chunk] = field(default_factory=dict)  # leased to a holder, not merged
    _todo: deque[Chunk] = field(default_factory=deque)   # re-queued chunks, first out first
    _tiles: list[tuple[float, int, Chunk]] = field(default_factory=list)  # by estimated cost
    _n: int = 0

    def __post_init__(self) -> None:
        if self.kind is JobKind.MANDELBROT:  # an adaptive job starts with its preview
            self._todo.append(Chunk(self, "preview", 0, self.preview_cost, 0.0, iterations=0.0, preview=True))

    @property
    def remaining(self) -> int:
        return self.units_total - self.cursor if self.kind is JobKind.PI else 0

    @property
    def inflight(self) -> int:
        return len(self.out)

    @property
    def waiting(self) -> int:
        return len(self._todo) + len(self._tiles)

    def has_supply(self) -> bool:
        return bool(self._todo or self._tiles) or self.remaining > 0

    def cut(self, units: int) -> Chunk:
        self._n += 1
        chunk = Chunk(self, f"c{self._n}", units, float(units), float(units), iterations=float(units))
        self.cursor += units
        return chunk

    def take_waiting(self, order: str) -> Chunk:
        """GRANT's order: a re-queued chunk first, else the heaviest tile ('max') or the lightest."""
        chunk = self._todo.popleft() if self._todo else self._tiles.pop(-1 if order == "max" else 0)[2]
        chunk.queued = False
        return chunk

    def requeue(self, chunk: Chunk) -> None:
        self._todo.appendleft(chunk)

    def drop_queued(self, chunk: Chunk) -> None:
        self._todo.remove(chunk)
        chunk.queued = False

    def add_tiles(self, tiles: Iterable[ChunkSpec], truth: Callable[[ChunkSpec], float]) -> None:
        for n, spec in enumerate(tiles):
            est = float(spec.params["est_cost"])
            work = truth(spec)
            bisect.insort(self._tiles, (est, n, Chunk(self, spec.chunk_id, spec.units, work, est, iterations=work)))

    def inflight_chunks(self) -> list[Chunk]:
        return [c for c in self.out.values() if not c.done and c.leases]


@dataclass
class Stats:
    events: int = 0
    wall_s: float = 0.0
    sim_end: float = 0.0
    dispatches: int = 0
    backups: int = 0
    merges: int = 0
    accepted: int = 0
    duplicates: int = 0
    requeues: int = 0
    expiries: int = 0
    replans: int = 0
    jobs_done: int = 0
    minted_micro: int = 0
    reversed_micro: int = 0
    capped: int = 0
    rewards: list[int] = field(default_factory=list)
    carbon_g: float = 0.0
    counterfactual_g: float = 0.0
    energy_j: float = 0.0
    useful_work: float = 0.0
    busy_s: float = 0.0
    busy_work: float = 0.0
    audit_units: float = 0.0
    caught: dict[int, float] = field(default_factory=dict)
    cheater_results_accepted: int = 0
    cheater_minted: int = 0
    cheater_minted_before_catch: int = 0
    queued_now: int = 0
    peak_queued: int = 0
    dispatch_bins: Counter[int] = field(default_factory=Counter)
    merge_bins: Counter[int] = field(default_factory=Counter)

    def note_dispatch(self, t: float) -> None:
        self.dispatch_bins[int(t)] += 1

    def note_merge(self, t: float) -> None:
        self.merge_bins[int(t)] += 1
