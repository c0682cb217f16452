"""Run one chunk on a volunteer: call the kernel, time it, and build the ChunkResult."""

from __future__ import annotations

import time
from typing import Any, Mapping

from nacl.signing import SigningKey

from ..errors import HydraError
from ..jobs import handler
from ..models import ChunkResult, ChunkSpec, payload_digest
from ..grid.accounting import rapl_delta_j, read_rapl_uj
from ..trust import results
from .throttle import Throttle


DECLINED = "declined: "


def decline(chunk_data: Mapping[str, Any], *, attempt: int, worker_id: str, region: str, reason: str,
            key: SigningKey | None = None) -> dict[str, Any]:
    """A result that hands the chunk back uncomputed (the worker is paused); not a failure.
    Signed with ``key`` (the volunteer's) when given."""
    chunk = ChunkSpec.from_json(chunk_data)
    result = ChunkResult(job_id=chunk.job_id, chunk_id=chunk.chunk_id, worker_id=worker_id, region=region,
                         attempt=attempt, elapsed_s=0.0, cpu_s=0.0, payload={},
                         digest=payload_digest(chunk.job_id, chunk.chunk_id, {}), error=DECLINED + reason).to_json()
    return results.sign(result, key) if key is not None else result


def run_chunk(chunk_data: Mapping[str, Any], *, attempt: int, worker_id: str, region: str,
              threads: int = 1, cpu_limit: float = 100.0, key: SigningKey | None = None) -> dict[str, Any]:
    """Compute a chunk and return its ChunkResult as JSON, signed with ``key`` (the volunteer's)
    when given. Kernel errors are reported, not raised, so the control plane can count the failure
    and re-send the chunk elsewhere."""
    chunk = ChunkSpec.from_json(chunk_data)
    wall0, cpu0, rapl0 = time.perf_counter(), time.process_time(), read_rapl_uj()
    payload: dict[str, Any] = {}
    error = None
    try:
        payload = handler(chunk.kind).compute(chunk, threads=threads, throttle=Throttle(cpu_limit))
    except HydraError as exc:
        error = f"{type(exc).__name__}: {exc}"
    elapsed_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    energy_j = rapl_delta_j(rapl0, read_rapl_uj())
    result = ChunkResult(
        job_id=chunk.job_id, chunk_id=chunk.chunk_id, worker_id=worker_id, region=region, attempt=attempt,
        elapsed_s=elapsed_s, cpu_s=cpu_s, payload=payload,
        digest=payload_digest(chunk.job_id, chunk.chunk_id, payload), error=error, energy_j=energy_j,
    ).to_json()
    return results.sign(result, key) if key is not None else result
