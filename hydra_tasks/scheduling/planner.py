"""The planner: pure code that cuts a job into chunks.

Today's policy is static (``HYDRA_PI_CHUNK_SAMPLES`` samples per π chunk, ``HYDRA_TILE_PX``
square Mandelbrot tiles); the job kind modules do the cutting.
"""

from __future__ import annotations

from ..errors import InvalidJobSpec
from ..jobs import handler
from ..models import ChunkSpec, JobSpec
from ..settings import Settings

MAX_CHUNKS = 250_000


def plan(job_id: str, spec: JobSpec, settings: Settings) -> list[ChunkSpec]:
    kind = handler(spec.kind)
    count = kind.chunk_count(spec.params, settings)
    if count > MAX_CHUNKS:
        raise InvalidJobSpec(f"This job would need {count:,} chunks (limit {MAX_CHUNKS:,}); make it smaller "
                             "or raise HYDRA_PI_CHUNK_SAMPLES / HYDRA_TILE_PX.")
    chunks = kind.plan(job_id, spec.params, settings)
    assert len(chunks) == count, "chunk_count() and plan() disagree"
    return chunks
