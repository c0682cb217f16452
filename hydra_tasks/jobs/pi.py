"""Monte-Carlo π: validate, plan, compute, verify and finalize.

Sample *i* is a pure function of (seed, i) (see kernels/pi.pyx), so the total hit count
is bit-identical however the job is chunked and whichever workers ran the chunks.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any, Mapping

import redis

from .. import compute as kernels
from ..errors import ResultRejected
from ..models import ChunkSpec, Finalized, JobKind
from ..settings import Settings
from ..worker.throttle import Throttle
from .validate import integer, reject_unknown

CUTS_LAZILY = True  # ranges of samples are cut at dispatch (:func:`cut`)
MAX_SAMPLES = 10**13
Z_95 = 1.959963984540054


def parse_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    reject_unknown(raw, {"samples", "seed"}, "π params")
    samples = integer(raw, "samples", 1, MAX_SAMPLES, above=(
        f"a π job holds at most {MAX_SAMPLES:,} samples; split the work into several jobs with different seeds"))
    seed = integer(raw, "seed", 0, 2**64 - 1, default=secrets.randbits(53))  # JSON-number safe
    return {"samples": samples, "seed": seed}


def units_total(params: Mapping[str, Any]) -> int:
    return int(params["samples"])


def chunk_count(params: Mapping[str, Any], settings: Settings) -> int:
    return 0  # cut lazily


def plan(job_id: str, params: Mapping[str, Any], settings: Settings) -> list[ChunkSpec]:
    """Nothing up front: ranges of samples are cut at dispatch (:func:`cut`), each sized for the
    worker that gets it."""
    return []


def cut(job_id: str, params: Mapping[str, Any], chunk_id: str, start: int, count: int) -> ChunkSpec:
    """Samples [start, start + count) of the job."""
    return ChunkSpec(job_id, chunk_id, JobKind.PI, {"seed": int(params["seed"]), "start": start, "count": count},
                     units=count)


def compute(chunk: ChunkSpec, *, threads: int = 1, throttle: Throttle | None = None) -> dict[str, Any]:
    p = chunk.params
    seed, start, count = int(p["seed"]), int(p["start"]), int(p["count"])
    hits: list[int] = []
    (throttle or Throttle()).run_sliced(
        count, lambda offset, n: hits.append(kernels.pi_hits(seed, start + offset, n, threads=threads)),
        first=1 << 20)
    return {"hits": sum(hits), "samples": count}


def verify(chunk: ChunkSpec, payload: Mapping[str, Any]) -> dict[str, int]:
    """Check the result's shape; return the increments for the job's live counters."""
    hits, samples, count = payload.get("hits"), payload.get("samples"), int(chunk.params["count"])
    if type(hits) is not int or type(samples) is not int or samples != count:
        raise ResultRejected(f"π chunk {chunk.chunk_id}: expected integer hits for {count} samples.")
    if not 0 <= hits <= count:
        raise ResultRejected(f"π chunk {chunk.chunk_id}: hits={hits} is outside [0, {count}].")
    return {"units_done": count, "hits": hits}


def work_done(chunk: ChunkSpec, payload: Mapping[str, Any]) -> float:
    return float(chunk.units)  # samples


def reward_work(chunk: ChunkSpec, increments: Mapping[str, int]) -> float:
    return float(chunk.units)


def after_merge(client: redis.Redis, settings: Settings, chunk: ChunkSpec) -> None:
    return None


def estimate(hits: int, samples: int) -> dict[str, Any]:
    """π ≈ 4·hits/samples with its binomial standard error and a 95% confidence interval."""
    p = hits / samples
    value = 4.0 * p
    std_error = 4.0 * math.sqrt(p * (1.0 - p) / samples)
    return {
        "samples": samples, "hits": hits, "estimate": value, "std_error": std_error,
        "ci95": [value - Z_95 * std_error, value + Z_95 * std_error], "abs_error": abs(value - math.pi),
    }


def finalize(params: Mapping[str, Any], parts: Mapping[str, str], chunks: Mapping[str, str]) -> Finalized:
    hits = sum(int(json.loads(part)["hits"]) for part in parts.values())
    samples = sum(int(json.loads(part)["samples"]) for part in parts.values())
    if samples != int(params["samples"]):
        raise ResultRejected(f"π job merged {samples} samples but asked for {params['samples']}; refusing to finalize.")
    return Finalized({**estimate(hits, samples), "seed": int(params["seed"])})
