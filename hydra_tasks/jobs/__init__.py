"""Job kinds. Each kind is one module with the same functions (see :class:`KindHandler`)."""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from ..models import ChunkSpec, Finalized, JobKind
from ..settings import Settings
from ..worker.throttle import Throttle


class KindHandler(Protocol):
    """What every job-kind module provides."""

    def parse_params(self, raw: Mapping[str, Any]) -> dict[str, Any]: ...

    def units_total(self, params: Mapping[str, Any]) -> int: ...

    def chunk_count(self, params: Mapping[str, Any], settings: Settings) -> int: ...

    def range_prefix(self, job_id: str, params: Mapping[str, Any]) -> str | None: ...

    def plan(self, job_id: str, params: Mapping[str, Any], settings: Settings) -> list[ChunkSpec]: ...

    def compute(self, chunk: ChunkSpec, *, threads: int = 1, throttle: Throttle | None = None) -> dict[str, Any]: ...

    def verify(self, chunk: ChunkSpec, payload: Mapping[str, Any]) -> dict[str, int]: ...

    def finalize(self, params: Mapping[str, Any], parts: Mapping[str, str],
                 chunks: Mapping[str, str]) -> Finalized: ...


def handler(kind: JobKind) -> KindHandler:
    from . import mandelbrot, pi

    handlers: dict[JobKind, KindHandler] = {JobKind.PI: pi, JobKind.MANDELBROT: mandelbrot}
    return handlers[kind]
