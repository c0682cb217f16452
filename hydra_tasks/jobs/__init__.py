"""Job kinds. Each kind is one module with the same functions (see :class:`KindHandler`)."""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import redis

from ..models import ChunkSpec, Finalized, JobKind
from ..settings import Settings
from ..worker.throttle import Throttle


class KindHandler(Protocol):
    """What every job-kind module provides. The control plane (submit, dispatch, collect,
    finalize) reaches kind-specific behaviour only through these functions."""

    CUTS_LAZILY: bool  # True: chunks are ranges cut at dispatch (:meth:`cut`), sized per worker

    def parse_params(self, raw: Mapping[str, Any]) -> dict[str, Any]: ...

    def units_total(self, params: Mapping[str, Any]) -> int: ...

    def chunk_count(self, params: Mapping[str, Any], settings: Settings) -> int: ...

    def plan(self, job_id: str, params: Mapping[str, Any], settings: Settings) -> list[ChunkSpec]: ...

    def cut(self, job_id: str, params: Mapping[str, Any], chunk_id: str, start: int, count: int) -> ChunkSpec | None:
        """A new chunk of units [start, start + count), for kinds cut lazily at dispatch; None otherwise."""
        ...

    def compute(self, chunk: ChunkSpec, *, threads: int = 1, throttle: Throttle | None = None) -> dict[str, Any]: ...

    def verify(self, chunk: ChunkSpec, payload: Mapping[str, Any]) -> dict[str, int]: ...

    def spot_check(self, chunk: ChunkSpec, payload: Mapping[str, Any], *, picks: int) -> int:
        """Recompute parts of a verified result picked now, compare exactly (SpotCheckFailed if not
        equal); returns the work recomputed."""
        ...

    def work_done(self, chunk: ChunkSpec, payload: Mapping[str, Any]) -> float:
        """The work a verified result represents, in the unit worker speeds are kept in."""
        ...

    def reward_work(self, chunk: ChunkSpec, increments: Mapping[str, int]) -> float:
        """The work a chunk is paid for (ledger/rewards.py's compute unit), from verified counters."""
        ...

    def after_merge(self, client: redis.Redis, settings: Settings, chunk: ChunkSpec) -> None:
        """Anything that follows a newly merged chunk of this kind (e.g. tiles cut from a preview)."""
        ...

    def finalize(self, params: Mapping[str, Any], parts: Mapping[str, str],
                 chunks: Mapping[str, str]) -> Finalized: ...

    def restore_parts(self, params: Mapping[str, Any], chunks: Mapping[str, str],
                      blobs: Mapping[str, str | None]) -> dict[str, str]:
        """The merged parts of ``chunks`` (id -> spec JSON) rebuilt from a finished job's blobs, for a
        kind whose finalize compacted its parts into them ({} for a kind that keeps its parts)."""
        ...

    def restore_kept(self, job_id: str, params: Mapping[str, Any], fields: Mapping[str, str],
                     suspect: Mapping[str, Mapping[str, Any]], blobs: Mapping[str, str | None]) -> dict[str, tuple[str, str]]:
        """For a re-open of a compacted job (no chunk specs or parts left): the work it keeps, as chunk
        id -> (spec JSON, part JSON), from its result (``fields``: the job hash; ``blobs``: its result
        blobs) less its ``suspect`` chunks (id -> flags: units, increments). The suspect chunks are
        recomputed and merged beside it; finalize then gives the same result as a clean run."""
        ...


#: the chunk id of the work a re-opened compacted job keeps (:meth:`KindHandler.restore_kept`)
KEPT = "kept"


def handler(kind: JobKind) -> KindHandler:
    from . import mandelbrot, pi

    handlers: dict[JobKind, KindHandler] = {JobKind.PI: pi, JobKind.MANDELBROT: mandelbrot}
    return handlers[kind]
