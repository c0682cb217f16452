"""A modified volunteer worker for benchmarks/cheaters.py: the real Celery worker, with its
kernels replaced by a cheat. Run: `python benchmarks/cheater_worker.py KIND <celery worker args>`.

It signs what it sends with its own key like any volunteer (so signatures cannot stop it); the only
defence is the control plane's exact spot checks.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np

from hydra_tasks.worker import compute as worker_compute
from hydra_tasks.jobs import mandelbrot, pi
from hydra_tasks.models import ChunkSpec
from hydra_tasks.worker.compute import run_chunk
from hydra_tasks.worker.throttle import Throttle

honest_pi, honest_mandelbrot = pi.compute, mandelbrot.compute
rng = np.random.default_rng()


def fabricated_pi(chunk: ChunkSpec) -> dict[str, Any]:
    """Binomially plausible counts for every block, without computing anything."""
    bounds = pi.block_bounds(int(chunk.params["count"]))
    blocks = [int(rng.binomial(hi - lo, np.pi / 4)) for lo, hi in zip(bounds, bounds[1:])]
    return {"hits": sum(blocks), "samples": int(chunk.params["count"]), "block_hits": blocks,
            "generator": pi.generator_of(chunk.params)}  # as a current client says


def pi_all(chunk: ChunkSpec, **kw: Any) -> dict[str, Any]:
    return fabricated_pi(chunk)


def pi_colluding(chunk: ChunkSpec, **kw: Any) -> dict[str, Any]:
    """Like pi-all, but the fake counts come from the chunk's own range, so two colluders that get the
    same chunk (a re-sent one, or one auditing the other) report the very same numbers."""
    agreed = np.random.default_rng([int(chunk.params["seed"]) & 0xFFFFFFFF, int(chunk.params["start"])])
    bounds = pi.block_bounds(int(chunk.params["count"]))
    if "audit" in chunk.params:
        blocks = [int(b) for b in chunk.params["audit"]["blocks"]]
        everything = [int(agreed.binomial(hi - lo, np.pi / 4)) for lo, hi in zip(bounds, bounds[1:])]
        return {"audit_hits": [everything[b] for b in blocks], "generator": pi.generator_of(chunk.params)}
    blocks_hits = [int(agreed.binomial(hi - lo, np.pi / 4)) for lo, hi in zip(bounds, bounds[1:])]
    return {"hits": sum(blocks_hits), "samples": int(chunk.params["count"]), "block_hits": blocks_hits,
            "generator": pi.generator_of(chunk.params)}


_tenth = {"n": 0, "phase": -1}


def pi_tenth(chunk: ChunkSpec, **kw: Any) -> dict[str, Any]:
    """Fabricates one chunk in ten (the first at a random place among its first ten), computes the
    others honestly: exactly 10% of its chunks, so every run gives it something to cheat on."""
    if _tenth["phase"] < 0:
        _tenth["phase"] = random.randrange(10)
    _tenth["n"] += 1
    return fabricated_pi(chunk) if _tenth["n"] % 10 == _tenth["phase"] else honest_pi(chunk, **kw)


def pi_one_block(chunk: ChunkSpec, **kw: Any) -> dict[str, Any]:
    """Honest but for one block in 64, off by one (the total moves with it)."""
    out = honest_pi(chunk, **kw)
    b = random.randrange(len(out["block_hits"]))
    size = pi.block_bounds(int(chunk.params["count"]))
    delta = 1 if out["block_hits"][b] < size[b + 1] - size[b] else -1
    out["block_hits"][b] += delta
    out["hits"] += delta
    return out


def _with_counts(chunk: ChunkSpec, out: dict[str, Any], counts: np.ndarray) -> dict[str, Any]:
    """The payload for fake ``counts``, consistent in every other field (so only recomputing tells)."""
    total = int(counts.sum(dtype=np.uint64))
    out = {**out, "counts": mandelbrot.encode_counts(counts), "iterations": total, "work": min(out["work"], total)}
    if chunk.params.get("smooth"):  # smooth values made from the fake counts pass the consistency check
        from hydra_tasks import compute as kernels

        geometry = {k: v for k, v in mandelbrot._geometry(chunk.params).items()}
        out["smooth"] = mandelbrot.encode_array(kernels.mandelbrot_smooth(counts, **geometry), "<f4")
    if "work_map" in out:
        out["work_map"] = mandelbrot.encode_array(np.minimum(mandelbrot.decode_array(
            out["work_map"], *counts.shape), counts))
    return out


def mandel_one_percent(chunk: ChunkSpec, **kw: Any) -> dict[str, Any]:
    """Honest but for 1% of the tile's pixels, each off by one."""
    out = honest_mandelbrot(chunk, **kw)
    h, w = int(chunk.params["height"]), int(chunk.params["width"])
    counts = mandelbrot.decode_counts(out["counts"], h, w).copy()
    flat = counts.reshape(-1)
    for i in rng.choice(flat.size, size=max(1, flat.size // 100), replace=False):
        flat[i] = flat[i] - 1 if flat[i] > 0 else flat[i] + 1
    return _with_counts(chunk, out, counts)


def mandel_upscaled(chunk: ChunkSpec, **kw: Any) -> dict[str, Any]:
    """Computes a quarter of the pixels (every other row and column) and repeats them."""
    out = honest_mandelbrot(chunk, **kw) if chunk.params.get("preview") else None
    p = dict(chunk.params)
    h, w = int(p["height"]), int(p["width"])
    if out is not None:
        return out  # the preview is computed honestly; the tiles are where the work is
    half = ChunkSpec(chunk.job_id, chunk.chunk_id, chunk.kind, {**p, "width": (w + 1) // 2, "height": (h + 1) // 2,
                                                                 "dx": float(p["dx"]) * 2, "dy": float(p["dy"]) * 2,
                                                                 "smooth": False}, units=chunk.units)
    small = honest_mandelbrot(half, throttle=Throttle())
    coarse = mandelbrot.decode_counts(small["counts"], (h + 1) // 2, (w + 1) // 2)
    counts = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, :w].copy()
    return _with_counts(chunk, {"work": int(counts.sum(dtype=np.uint64))}, counts)


def fast_clock(chunk_data: dict[str, Any], *, key: Any = None, **kw: Any) -> dict[str, Any]:
    """Honest values, but a claimed time of 1 ms (to win chunks and pay)."""
    from hydra_tasks.trust import results

    out = {**run_chunk(chunk_data, **kw), "elapsed_s": 0.001, "cpu_s": 0.001}
    return results.sign(out, key) if key is not None else out


CHEATS = {"pi-all": ("pi", pi_all), "pi-colluding": ("pi", pi_colluding), "pi-tenth": ("pi", pi_tenth), "pi-one-block": ("pi", pi_one_block),
          "mandel-1pct": ("mandelbrot", mandel_one_percent), "mandel-upscaled": ("mandelbrot", mandel_upscaled),
          "fast-clock": ("run_chunk", fast_clock)}


def main() -> None:
    kind, celery_args = sys.argv[1], sys.argv[2:]
    target, cheat = CHEATS[kind]
    if target == "pi":
        pi.compute = cheat  # type: ignore[assignment]
    elif target == "mandelbrot":
        mandelbrot.compute = cheat  # type: ignore[assignment]
    else:
        worker_compute.run_chunk = cheat  # type: ignore[assignment]
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "hydra_tasks", "worker", *celery_args]
    celery_main()


if __name__ == "__main__":
    main()
