"""The planner: pure code that decides how work is cut.

* Mandelbrot tiles are planned up front (``HYDRA_TILE_PX`` squares, for now).
* π ranges are cut lazily at dispatch, one chunk at a time, sized for the worker that will
  run it (:func:`range_chunk_size`): weighted factoring, measured online per worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidJobSpec
from ..jobs import handler
from ..models import ChunkSpec, JobSpec
from ..settings import Settings

MAX_CHUNKS = 250_000


def plan(job_id: str, spec: JobSpec, settings: Settings) -> list[ChunkSpec]:
    """The chunks a job starts with (none for kinds cut lazily).

    No job is cut into more than ``MAX_CHUNKS`` chunks, whatever its kind and mode: tiles are counted
    here; range chunks are counted here in static mode, and :func:`range_chunk_size` never cuts one
    smaller than :func:`min_range_chunk` (adaptive mode, or settings that differ at dispatch)."""
    kind = handler(spec.kind)
    count = kind.chunk_count(spec.params, settings)
    if count > MAX_CHUNKS:
        raise InvalidJobSpec(f"This job would need {count:,} chunks (limit {MAX_CHUNKS:,}); make it smaller "
                             "or raise HYDRA_TILE_PX.")
    if kind.CUTS_LAZILY and not settings.adaptive:
        units, size = kind.units_total(spec.params), settings.pi_chunk_samples
        if -(-units // size) > MAX_CHUNKS:
            raise InvalidJobSpec(
                f"This {spec.kind.value} job of {units:,} samples would need {-(-units // size):,} chunks of "
                f"HYDRA_PI_CHUNK_SAMPLES={size:,} (limit {MAX_CHUNKS:,} chunks, so at most {MAX_CHUNKS * size:,} "
                "samples); split it into smaller jobs or raise HYDRA_PI_CHUNK_SAMPLES.")
    chunks = kind.plan(job_id, spec.params, settings)
    assert len(chunks) == count, "chunk_count() and plan() disagree"
    return chunks


@dataclass(frozen=True)
class RangeSizing:
    """Why a range chunk got its size (kept for metrics and tests)."""

    units: int
    seconds: float      # expected duration on the worker it was cut for
    rule: str           # "static", "first", "target", "tail", "floor" or "max_chunks"


def min_range_chunk(units_total: int) -> int:
    """The fewest units in a range chunk of a job (but its last), so that no job has more than MAX_CHUNKS."""
    return max(1, -(-units_total // MAX_CHUNKS))


def range_chunk_size(settings: Settings, *, worker_rate: float, total_rate: float, remaining: int,
                     first: bool, units_total: int = 0) -> RangeSizing:
    """Units for the next range chunk of a job, for a worker doing ``worker_rate`` units/s.

    * static mode (``HYDRA_ADAPTIVE=false``): ``HYDRA_PI_CHUNK_SAMPLES``, whoever runs it;
    * a worker's first chunk of a job is short (a quarter of the target), for fast first progress
      and a quick first measurement;
    * otherwise it should take ``HYDRA_TARGET_CHUNK_S`` on that worker;
    * near the end (factoring), no more than half of this worker's proportional share of what
      is left, so that all workers finish together;
    * never shorter than ``HYDRA_MIN_CHUNK_S``, which keeps per-chunk overhead under ~2%;
    * in either mode, never fewer units than :func:`min_range_chunk` of the job's ``units_total``
      (however slow the worker says it is), so that a job has at most MAX_CHUNKS chunks.
    """
    if remaining <= 0:
        return RangeSizing(0, 0.0, "none")
    least = min_range_chunk(units_total)
    if not settings.adaptive:
        units = min(max(settings.pi_chunk_samples, least), remaining)
        return RangeSizing(units, units / max(worker_rate, 1.0), "static")
    rate = max(worker_rate, 1.0)
    target = settings.target_chunk_s / 4 if first else settings.target_chunk_s
    tail = remaining / max(total_rate, rate) / 2  # seconds: half of everyone's remaining time
    seconds, rule = (target, "first" if first else "target") if target <= tail else (tail, "tail")
    if seconds < settings.min_chunk_s:
        seconds, rule = settings.min_chunk_s, "floor"
    units = max(1, math.ceil(seconds * rate))
    if units < least:
        units, rule = least, "max_chunks"
    units = min(remaining, units)
    return RangeSizing(units, units / rate, rule)
