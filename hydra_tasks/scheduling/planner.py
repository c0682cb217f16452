"""The planner: pure code that cuts a job into chunks.

Today's policy is static (``HYDRA_PI_CHUNK_SAMPLES`` samples per π chunk, ``HYDRA_TILE_PX``
square Mandelbrot tiles); the job kind modules do the cutting.
"""

from __future__ import annotations

from ..jobs import handler
from ..models import ChunkSpec, JobSpec
from ..settings import Settings

MAX_CHUNKS = 1_000_000


def plan(job_id: str, spec: JobSpec, settings: Settings) -> list[ChunkSpec]:
    chunks = handler(spec.kind).plan(job_id, spec.params, settings)
    if len(chunks) > MAX_CHUNKS:
        from ..errors import InvalidJobSpec

        raise InvalidJobSpec(f"This job would need {len(chunks)} chunks (limit {MAX_CHUNKS}); make it smaller "
                             "or raise HYDRA_PI_CHUNK_SAMPLES / HYDRA_TILE_PX.")
    return chunks
