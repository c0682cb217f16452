"""Monte-Carlo π: validate, plan, compute, verify and finalize.

Sample *i* is a pure function of (seed, i) (see kernels/pi.pyx), so the total hit count
is bit-identical however the job is chunked and whichever workers ran the chunks.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import secrets
from typing import Any, Mapping

import redis

from .. import compute as kernels
from ..errors import ResultRejected, SpotCheckFailed
from ..models import ChunkSpec, Finalized, JobKind
from ..settings import Settings
from ..worker.throttle import Throttle
from .validate import integer, reject_unknown

CUTS_LAZILY = True  # ranges of samples are cut at dispatch (:func:`cut`)
MAX_SAMPLES = 10**13
Z_95 = 1.959963984540054
BLOCKS = 64          # a result commits to the hits of each of this many blocks of its chunk
_RNG = random.SystemRandom()  # spot checks are picked from the OS's randomness: no worker can predict them


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


def block_bounds(count: int) -> list[int]:
    """The offsets splitting a chunk of ``count`` samples into its committed blocks: BLOCKS blocks
    (fewer for a tiny chunk), block ``b`` being ``[bounds[b], bounds[b + 1])``."""
    blocks = max(1, min(BLOCKS, count))
    return [count * b // blocks for b in range(blocks + 1)]


def compute(chunk: ChunkSpec, *, threads: int = 1, throttle: Throttle | None = None) -> dict[str, Any]:
    """The chunk's hits, and the hits of each of its blocks: the worker commits to every block
    (the result is signed), and the control plane recomputes blocks it picks afterwards."""
    p = chunk.params
    seed, start, count = int(p["seed"]), int(p["start"]), int(p["count"])
    bounds = block_bounds(count)
    block_hits = [0] * (len(bounds) - 1)

    def run(offset: int, n: int) -> None:  # a throttle slice may span several blocks
        b = bisect.bisect_right(bounds, offset) - 1
        while n > 0:
            take = min(n, bounds[b + 1] - offset)
            block_hits[b] += kernels.pi_hits(seed, start + offset, take, threads=threads)
            offset, n, b = offset + take, n - take, b + 1

    (throttle or Throttle()).run_sliced(count, run, first=1 << 20)
    return {"hits": sum(block_hits), "samples": count, "block_hits": block_hits}


def verify(chunk: ChunkSpec, payload: Mapping[str, Any]) -> dict[str, int]:
    """Check the result's shape and its block commitments; return the increments for the job's
    live counters."""
    hits, samples, count = payload.get("hits"), payload.get("samples"), int(chunk.params["count"])
    if type(hits) is not int or type(samples) is not int or samples != count:
        raise ResultRejected(f"π chunk {chunk.chunk_id}: expected integer hits for {count} samples.")
    if not 0 <= hits <= count:
        raise ResultRejected(f"π chunk {chunk.chunk_id}: hits={hits} is outside [0, {count}].")
    bounds, blocks = block_bounds(count), payload.get("block_hits")
    if not isinstance(blocks, list) or len(blocks) != len(bounds) - 1 \
            or not all(type(h) is int and 0 <= h <= bounds[b + 1] - bounds[b] for b, h in enumerate(blocks)):
        raise ResultRejected(f"π chunk {chunk.chunk_id}: 'block_hits' must hold {len(bounds) - 1} integer hit "
                             "counts, each within its block.")
    if sum(blocks) != hits:
        raise ResultRejected(f"π chunk {chunk.chunk_id}: the blocks' hits do not add up to hits={hits}.")
    return {"units_done": count, "hits": hits}


def spot_check(chunk: ChunkSpec, payload: Mapping[str, Any], *, picks: int,
               rng: random.SystemRandom = _RNG) -> int:
    """Recompute ``picks`` blocks chosen now, unpredictably for the worker, and compare them exactly
    with what it committed to (``verify`` ran first); ResultRejected on a mismatch. Returns the samples
    recomputed (the audit's cost)."""
    p = chunk.params
    seed, start = int(p["seed"]), int(p["start"])
    bounds, blocks = block_bounds(int(p["count"])), payload["block_hits"]
    cost = 0
    for b in rng.sample(range(len(blocks)), min(picks, len(blocks))):
        lo, hi = bounds[b], bounds[b + 1]
        if kernels.pi_hits(seed, start + lo, hi - lo) != blocks[b]:
            raise SpotCheckFailed(f"π chunk {chunk.chunk_id}: block {b} (samples {start + lo}..{start + hi - 1}) "
                                  f"has {blocks[b]} hits in the result but the kernel gives another count.")
        cost += hi - lo
    return cost


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


def restore_parts(params: Mapping[str, Any], chunks: Mapping[str, str],
                  blobs: Mapping[str, str | None]) -> dict[str, str]:
    return {}  # a finished π job keeps its parts
