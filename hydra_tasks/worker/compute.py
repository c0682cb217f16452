"""Run one chunk on a volunteer: open it if sealed, call the kernel, time it, and build the
(signed, and sealed if the chunk was) ChunkResult."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from nacl.public import Box
from nacl.signing import SigningKey

from ..errors import HydraError, ResultRejected, SealError
from ..jobs import handler
from ..models import ChunkResult, ChunkSpec, payload_digest
from ..grid.accounting import rapl_delta_j, read_rapl_uj
from .. import compute as kernels
from ..settings import Settings
from ..trust import results, sealing
from .registry import MAX_BUNDLE
from .throttle import Throttle, on_battery

log = logging.getLogger(__name__)

DECLINED = "declined: "


def process(message: Mapping[str, Any], *, attempt: int, worker_id: str, region: str, settings: Settings,
            key: SigningKey) -> dict[str, Any]:
    """What a volunteer sends back for one ``hydra.compute_chunk`` message: the signed result of the
    chunk (a decline while paused on battery), sealed to the control plane if the chunk came sealed.

    A sealed chunk that cannot be opened (no control-plane key pinned, tampered, sealed to another
    key), or a plaintext chunk while this worker's ``HYDRA_ENCRYPTION`` is on, is not computed: the
    result is a failure saying why, with an empty payload (so nothing is disclosed), and the
    control plane sends the chunk elsewhere."""
    box: Box | None = None
    chunk_data: Mapping[str, Any] = message
    try:
        if sealing.is_sealed(message):
            box = sealing.worker_box(key, sealing.pinned_control_key(settings))
            chunk_data = sealing.open_chunk(box, message, attempt)
        elif settings.encryption:
            raise SealError("a plaintext chunk arrived but HYDRA_ENCRYPTION is on for this worker, which takes "
                            "sealed chunks only (is the control plane running with HYDRA_ENCRYPTION=true?)")
    except SealError as exc:
        log.error("refused chunk %s of job %s: %s", str(message.get("chunk_id"))[:80], str(message.get("job_id"))[:80],
                  exc)
        return refusal(message, attempt=attempt, worker_id=worker_id, region=region, reason=str(exc), key=key)
    if settings.pause_on_battery and on_battery():
        result = decline(chunk_data, attempt=attempt, worker_id=worker_id, region=region, reason="on battery",
                         key=key)
    else:
        if settings.kernel_variant != kernels.variant() and settings.kernel_variant != "auto":
            kernels.use_variant(settings.kernel_variant)  # this pool process's first chunk (checked at start)
        result = run_chunk(chunk_data, attempt=attempt, worker_id=worker_id, region=region,
                           threads=settings.kernel_threads, cpu_limit=settings.cpu_limit, key=key)
    return sealing.seal_result(box, result) if box is not None else result


def process_bundle(chunks: Any, *, worker_id: str, region: str, settings: Settings,
                   key: SigningKey) -> list[dict[str, Any]]:
    """What a volunteer sends back for one ``hydra.compute_bundle`` message: :func:`process` of each
    ``[chunk, attempt]`` pair in turn. A bundle that is not such a list is refused whole (the control
    plane sends its chunks elsewhere once their leases expire)."""
    if not isinstance(chunks, list) or not 0 < len(chunks) <= MAX_BUNDLE or not all(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], Mapping)
            and isinstance(item[1], int) and not isinstance(item[1], bool) for item in chunks):
        raise ResultRejected(f"a bundle must be a list of 1 to {MAX_BUNDLE} [chunk, attempt] pairs")
    return [process(chunk, attempt=attempt, worker_id=worker_id, region=region, settings=settings, key=key)
            for chunk, attempt in chunks]


def refusal(message: Mapping[str, Any], *, attempt: int, worker_id: str, region: str, reason: str,
            key: SigningKey) -> dict[str, Any]:
    """A signed failure for a chunk this worker could not or would not open; it names only the ids."""
    job_id, chunk_id = message.get("job_id"), message.get("chunk_id")
    if not isinstance(job_id, str) or not isinstance(chunk_id, str):
        raise ResultRejected("a chunk message without job_id and chunk_id")
    result = ChunkResult(job_id=job_id, chunk_id=chunk_id, worker_id=worker_id, region=region, attempt=attempt,
                         elapsed_s=0.0, cpu_s=0.0, payload={}, digest=payload_digest(job_id, chunk_id, {}),
                         error=f"SealError: {reason}").to_json()
    return results.sign(result, key)


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
