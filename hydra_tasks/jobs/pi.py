"""Monte-Carlo π: validate, plan, compute, verify and finalize.

Sample *i* is a pure function of (generator, seed, i) (see kernels/pi.pyx), so the total hit
count is bit-identical however the job is chunked and whichever workers ran the chunks. The
generator is part of the job's spec: new jobs get Philox4x32-10; a job stored without one was
submitted before it existed and keeps SplitMix64, so it reproduces bit for bit.
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
from ..errors import InvalidJobSpec, ResultRejected, SpotCheckFailed
from ..keys import is_audit_chunk
from ..models import ChunkSpec, Finalized, JobKind
from ..settings import Settings
from ..worker.throttle import Throttle
from .validate import integer, reject_unknown

CUTS_LAZILY = True  # ranges of samples are cut at dispatch (:func:`cut`)
MAX_SAMPLES = 10**13
Z_95 = 1.959963984540054
BLOCKS = 64          # a result commits to the hits of each of this many blocks of its chunk
_RNG = random.SystemRandom()  # spot checks are picked from the OS's randomness: no worker can predict them


#: The generator of a job whose spec names none: every π job from before generators were named.
LEGACY_GENERATOR = "splitmix64"


def generator_of(params: Mapping[str, Any]) -> str:
    """The π generator of a job's (or chunk's) params."""
    return str(params.get("generator", LEGACY_GENERATOR))


def parse_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    reject_unknown(raw, {"samples", "seed", "generator"}, "π params")
    generator = raw.get("generator", kernels.DEFAULT_GENERATOR)
    if generator not in kernels.GENERATORS:
        raise InvalidJobSpec(f"generator must be one of {', '.join(repr(g) for g in kernels.GENERATORS)}; got "
                              f"{generator!r}. Leave it out for the default, {kernels.DEFAULT_GENERATOR!r}.")
    samples = integer(raw, "samples", 1, MAX_SAMPLES, above=(
        f"a π job holds at most {MAX_SAMPLES:,} samples; split the work into several jobs with different seeds"))
    seed = integer(raw, "seed", 0, 2**64 - 1, default=secrets.randbits(53))  # JSON-number safe
    return {"samples": samples, "seed": seed, "generator": generator}


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
    return ChunkSpec(job_id, chunk_id, JobKind.PI, {"seed": int(params["seed"]), "start": start, "count": count,
                                                    "generator": generator_of(params)}, units=count)


def block_count(count: int) -> int:
    """How many blocks a chunk of ``count`` samples commits to: BLOCKS, fewer for a tiny chunk."""
    return max(1, min(BLOCKS, count))


def block_bounds(count: int) -> list[int]:
    """The offsets splitting a chunk of ``count`` samples into its committed blocks: BLOCKS blocks
    (fewer for a tiny chunk), block ``b`` being ``[bounds[b], bounds[b + 1])``."""
    blocks = block_count(count)
    return [count * b // blocks for b in range(blocks + 1)]


def audit_blocks(chunk: ChunkSpec) -> list[int] | None:
    """The blocks an audit chunk recomputes (trust/audits.py), None for a chunk of the job's work."""
    audit = chunk.params.get("audit")
    return [int(b) for b in audit["blocks"]] if isinstance(audit, Mapping) else None


def compute(chunk: ChunkSpec, *, threads: int = 1, throttle: Throttle | None = None) -> dict[str, Any]:
    """The chunk's hits, and the hits of each of its blocks: the worker commits to every block
    (the result is signed), and the control plane recomputes blocks it picks afterwards. An audit
    chunk: the hits of the blocks it names, in that order."""
    p = chunk.params
    seed, start, count, generator = int(p["seed"]), int(p["start"]), int(p["count"]), generator_of(p)
    bounds = block_bounds(count)
    audited = audit_blocks(chunk)
    if audited is not None:
        return {"audit_hits": [kernels.pi_hits(seed, start + bounds[b], bounds[b + 1] - bounds[b], generator=generator,
                                               threads=threads)
                               for b in audited], "generator": generator}
    block_hits = [0] * (len(bounds) - 1)

    def run(offset: int, n: int) -> None:  # a throttle slice may span several blocks
        b = bisect.bisect_right(bounds, offset) - 1
        while n > 0:
            take = min(n, bounds[b + 1] - offset)
            block_hits[b] += kernels.pi_hits(seed, start + offset, take, generator=generator, threads=threads)
            offset, n, b = offset + take, n - take, b + 1

    (throttle or Throttle()).run_sliced(count, run, first=1 << 20)
    return {"hits": sum(block_hits), "samples": count, "block_hits": block_hits, "generator": generator}


def verify(chunk: ChunkSpec, payload: Mapping[str, Any]) -> dict[str, int]:
    """Check the result's shape and its block commitments; return the increments for the job's
    live counters. An audit chunk's result settles one audit and is no chunk of the job's work."""
    if payload.get("generator", LEGACY_GENERATOR) != generator_of(chunk.params):
        # Not a proof of cheating: a volunteer running code from before generators were named computes
        # SplitMix64 whatever the chunk says, and says nothing. Refuse the result; the chunk goes elsewhere.
        raise ResultRejected(f"π chunk {chunk.chunk_id}: computed with generator "
                             f"{payload.get('generator', LEGACY_GENERATOR)!r}, but the job uses "
                             f"{generator_of(chunk.params)!r} (a worker from before issue 16: restart it with "
                             "current code).")
    audited = audit_blocks(chunk)
    if audited is not None:
        bounds, got = block_bounds(int(chunk.params["count"])), payload.get("audit_hits")
        if not isinstance(got, list) or len(got) != len(audited) or not all(type(h) is int for h in got):
            raise ResultRejected(f"π audit {chunk.chunk_id}: 'audit_hits' must hold {len(audited)} integer hit "
                                 "counts.")
        if not all(0 <= h <= bounds[b + 1] - bounds[b] for b, h in zip(audited, got)):
            raise SpotCheckFailed(f"π audit {chunk.chunk_id}: a hit count is outside its block.")
        return {"audits_pending": -1, "audits_done": 1, "chunks_done": -1}  # MERGE counts every chunk: undo it
    hits, samples, count = payload.get("hits"), payload.get("samples"), int(chunk.params["count"])
    if type(hits) is not int or type(samples) is not int or samples != count:
        raise ResultRejected(f"π chunk {chunk.chunk_id}: expected integer hits for {count} samples.")
    bounds, blocks = block_bounds(count), payload.get("block_hits")
    if not isinstance(blocks, list) or len(blocks) != len(bounds) - 1 or not all(type(h) is int for h in blocks):
        raise ResultRejected(f"π chunk {chunk.chunk_id}: 'block_hits' must hold {len(bounds) - 1} integer hit "
                             "counts (a worker running code from before issue 12 sends none: restart it).")
    # From here on the result has the right shape, and values no honest kernel gives prove it wrong.
    if not 0 <= hits <= count:
        raise SpotCheckFailed(f"π chunk {chunk.chunk_id}: hits={hits} is outside [0, {count}].")
    if not all(0 <= h <= bounds[b + 1] - bounds[b] for b, h in enumerate(blocks)):
        raise SpotCheckFailed(f"π chunk {chunk.chunk_id}: a block's hit count is outside the block.")
    if sum(blocks) != hits:
        raise SpotCheckFailed(f"π chunk {chunk.chunk_id}: the blocks' hits do not add up to hits={hits}.")
    return {"units_done": count, "hits": hits}


def pick_blocks(chunk: ChunkSpec, picks: int, rng: random.Random = _RNG) -> list[int]:
    """``picks`` distinct blocks of the chunk, chosen now from the OS's randomness (unpredictable for
    the worker)."""
    blocks = block_count(int(chunk.params["count"]))
    return rng.sample(range(blocks), min(picks, blocks))


def block_samples(chunk: ChunkSpec, blocks: list[int]) -> int:
    """The samples in the given blocks (their sizes by :func:`block_bounds`' rule)."""
    count = int(chunk.params["count"])
    n = block_count(count)
    return sum(count * (b + 1) // n - count * b // n for b in blocks)


def recompute_blocks(chunk: ChunkSpec, blocks: list[int]) -> list[int]:
    """The true hits of the chunk's given blocks (the kernel, on the control plane)."""
    p = chunk.params
    seed, start, bounds = int(p["seed"]), int(p["start"]), block_bounds(int(p["count"]))
    generator = generator_of(p)
    return [kernels.pi_hits(seed, start + bounds[b], bounds[b + 1] - bounds[b], generator=generator) for b in blocks]


def check_blocks(chunk: ChunkSpec, payload: Mapping[str, Any], blocks: list[int]) -> int:
    """Recompute the given blocks and compare them exactly with what the result committed to
    (``verify`` ran first); SpotCheckFailed on a mismatch. Returns the samples recomputed."""
    committed, bounds, start = payload["block_hits"], block_bounds(int(chunk.params["count"])), int(chunk.params["start"])
    for b, truth in zip(blocks, recompute_blocks(chunk, blocks)):
        if truth != committed[b]:
            raise SpotCheckFailed(f"π chunk {chunk.chunk_id}: block {b} (samples {start + bounds[b]}.."
                                  f"{start + bounds[b + 1] - 1}) has {committed[b]} hits in the result but the "
                                  "kernel gives another count.")
    return block_samples(chunk, blocks)


def spot_check(chunk: ChunkSpec, payload: Mapping[str, Any], *, picks: int,
               rng: random.Random = _RNG) -> int:
    """Recompute ``picks`` blocks chosen now, unpredictably for the worker, and compare them exactly
    with what it committed to (``verify`` ran first); SpotCheckFailed on a mismatch. Returns the samples
    recomputed (the audit's cost)."""
    return check_blocks(chunk, payload, pick_blocks(chunk, picks, rng))


def work_done(chunk: ChunkSpec, payload: Mapping[str, Any]) -> float:
    audited = audit_blocks(chunk)
    return float(chunk.units if audited is None else block_samples(chunk, audited))  # samples


def reward_work(chunk: ChunkSpec, increments: Mapping[str, int]) -> float:
    audited = audit_blocks(chunk)  # an auditor is paid for the samples it recomputed
    return float(chunk.units if audited is None else block_samples(chunk, audited))


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
    work = [json.loads(part) for chunk_id, part in parts.items() if not is_audit_chunk(chunk_id)]
    hits = sum(int(part["hits"]) for part in work)
    samples = sum(int(part["samples"]) for part in work)
    if samples != int(params["samples"]):
        raise ResultRejected(f"π job merged {samples} samples but asked for {params['samples']}; refusing to finalize.")
    return Finalized({**estimate(hits, samples), "seed": int(params["seed"]), "generator": generator_of(params)})


def restore_parts(params: Mapping[str, Any], chunks: Mapping[str, str],
                  blobs: Mapping[str, str | None]) -> dict[str, str]:
    return {}  # a π job's parts are kept until FINISH compacts them (then restore_kept rebuilds the sum)


def restore_kept(job_id: str, params: Mapping[str, Any], fields: Mapping[str, str],
                 suspect: Mapping[str, Mapping[str, Any]], blobs: Mapping[str, str | None]) -> dict[str, tuple[str, str]]:
    """A π result is a sum: the kept work is the job's hits and samples less the suspect chunks'."""
    from . import KEPT

    hits = int(fields.get("hits") or 0) - sum(int(f["increments"].get("hits", 0)) for f in suspect.values())
    samples = int(fields.get("units_done") or 0) - sum(int(f["units"]) for f in suspect.values())
    if samples <= 0:
        return {}
    spec = ChunkSpec(job_id, KEPT, JobKind.PI, {"seed": int(params["seed"]), "generator": generator_of(params),
                                                "kept": True}, units=samples)
    return {KEPT: (json.dumps(spec.to_json()), json.dumps({"hits": hits, "samples": samples, "restored": True}))}
