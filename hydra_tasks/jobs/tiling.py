"""Adaptive tiling for Mandelbrot jobs: balance tiles by estimated cost, not by area.

1. The job's first chunk is a **preview**: the image at 1/s resolution (at most
   ``PREVIEW_SAMPLES`` points), computed by a volunteer like any tile. It returns counts (shown
   at once as a preview image) and the kernel's *work map*: the iterations each sample point
   really cost (0 where the cardioid/bulb test settled it, the detection point for periodic
   orbits).
2. From that map the control plane cuts the image by recursive bisection, always along the
   longer side and at the cost median, until every tile's estimated cost is at most the target
   (``HYDRA_TARGET_CHUNK_S`` x the fleet's mean speed, with at least 3 tiles per worker slot).
3. About SMALL_SHARE of the cost is cut again into quarter-size tiles. Tiles wait in a sorted
   set by estimated cost: a worker at least as fast as the fleet's median takes the heaviest tile
   left, a slower one the lightest (see ``lua/grant.lua``), so slow workers and the end of the job
   get small tiles.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..models import ChunkSpec, JobKind

PREVIEW_SAMPLES = 256 * 192
#: Iterations-equivalent of the fixed cost of one pixel (set-up, stores), added to its work.
PIXEL_OVERHEAD = 4.0
MIN_SIDE = 16
MAX_TILES = 4096


def preview_stride(width: int, height: int) -> int:
    """The smallest stride whose sample grid has at most PREVIEW_SAMPLES points."""
    s = max(1, math.ceil(math.sqrt(width * height / PREVIEW_SAMPLES)))
    while math.ceil(width / s) * math.ceil(height / s) > PREVIEW_SAMPLES:
        s += 1
    return s


def preview_chunk(job_id: str, params: Mapping[str, Any]) -> ChunkSpec:
    """The first chunk of an adaptive Mandelbrot job: sample point (r, c) is the centre of pixel
    (r·s + s//2, c·s + s//2), so the preview is a true low-resolution image of the same view."""
    s = preview_stride(int(params["width"]), int(params["height"]))
    half = s // 2
    dx, dy = float(params["dx"]), float(params["dy"])
    return ChunkSpec(job_id, "preview", JobKind.MANDELBROT, {
        "preview": True, "stride": s, "row0": 0, "col0": 0,
        "width": math.ceil(int(params["width"]) / s), "height": math.ceil(int(params["height"]) / s),
        "xmin": float(params["xmin"]) + (half + 0.5) * dx - 0.5 * s * dx, "dx": s * dx,
        "ymax": float(params["ymax"]) - (half + 0.5) * dy + 0.5 * s * dy, "dy": s * dy,
        "max_iter": int(params["max_iter"]), "smooth": False,
    }, units=0)


class CostMap:
    """Estimated cost of any pixel rectangle, from the preview's work map (2-D prefix sums)."""

    def __init__(self, work: np.ndarray, stride: int, width: int, height: int) -> None:
        self.stride, self.width, self.height = stride, width, height
        per_sample = (work.astype(np.float64) + PIXEL_OVERHEAD) * stride * stride
        self.prefix = np.zeros((per_sample.shape[0] + 1, per_sample.shape[1] + 1))
        self.prefix[1:, 1:] = per_sample.cumsum(0).cumsum(1)

    def cost(self, r0: int, r1: int, c0: int, c1: int) -> float:
        """Estimated iterations for pixels [r0, r1) x [c0, c1) (sample granularity)."""
        s = self.stride
        a, b = r0 // s, max(r0 // s + 1, -(-r1 // s))
        c, d = c0 // s, max(c0 // s + 1, -(-c1 // s))
        p = self.prefix
        sampled = p[b, d] - p[a, d] - p[b, c] + p[a, c]
        covered = (b - a) * s * (d - c) * s
        return float(sampled) * (r1 - r0) * (c1 - c0) / covered  # scale to the exact pixel area

    @property
    def total(self) -> float:
        return self.cost(0, self.height, 0, self.width)


Rect = tuple[int, int, int, int, float]  # r0, r1, c0, c1, estimated cost

#: Share of the estimated cost cut into small tiles (a quarter of the target) for the slower
#: workers and the end of the job: job-size matching, as in weighted factoring.
SMALL_SHARE = 0.3


def cut(cost: CostMap, target: float, *, min_side: int = MIN_SIDE,
        within: tuple[int, int, int, int] | None = None) -> list[Rect]:
    """Rectangles (r0, r1, c0, c1, estimated cost) covering the image (or ``within``) exactly once,
    each at most ``target`` unless it is already too small to split."""
    out: list[Rect] = []
    stack = [within or (0, cost.height, 0, cost.width)]
    while stack:
        r0, r1, c0, c1 = stack.pop()
        here = cost.cost(r0, r1, c0, c1)
        tall = (r1 - r0) >= (c1 - c0)
        lo, hi = (r0, r1) if tall else (c0, c1)
        if here <= target or hi - lo < 2 * min_side:
            out.append((r0, r1, c0, c1, here))
            continue
        # The split point where the cost on each side is closest to half, on the sample grid so
        # that the estimates of the two halves add up to the estimate of the whole.
        step = max(1, cost.stride)
        first = -(-(lo + min_side) // step) * step
        candidates = list(range(first, hi - min_side + 1, step)) or [(lo + hi) // 2]
        left = [cost.cost(r0, m, c0, c1) if tall else cost.cost(r0, r1, c0, m) for m in candidates]
        m = candidates[int(np.argmin([abs(x - here / 2) for x in left]))]
        stack += [(r0, m, c0, c1), (m, r1, c0, c1)] if tall else [(r0, r1, c0, m), (r0, r1, m, c1)]
    return out


def plan_tiles(job_id: str, params: Mapping[str, Any], work: np.ndarray, stride: int, *, fleet_rate: float,
               slots: int, target_s: float) -> list[ChunkSpec]:
    """Cost-balanced tiles for the whole image, each tagged with its estimated cost."""
    width, height = int(params["width"]), int(params["height"])
    costs = CostMap(work, stride, width, height)
    wanted = max(3 * max(slots, 1), math.ceil(costs.total / max(fleet_rate * target_s, 1.0)))
    target = costs.total / min(wanted, MAX_TILES)
    common = {k: params[k] for k in ("xmin", "ymax", "dx", "dy", "max_iter")}
    common["smooth"] = params.get("colouring", "smooth") == "smooth"
    big = sorted(cut(costs, target), key=lambda t: (t[0], t[2]))
    # Re-cut every other big tile, until SMALL_SHARE of the cost, into quarter-size tiles.
    tiles, small_cost = [], 0.0
    for n, tile in enumerate(big):
        if n % 2 and small_cost < SMALL_SHARE * costs.total:
            small_cost += tile[4]
            tiles += cut(costs, target / 4, within=tile[:4])
        else:
            tiles.append(tile)
    tiles.sort(key=lambda t: (t[0], t[2]))
    return [ChunkSpec(job_id, f"t{n:06d}", JobKind.MANDELBROT,
                      {**common, "row0": r0, "col0": c0, "width": c1 - c0, "height": r1 - r0, "est_cost": est},
                      units=(r1 - r0) * (c1 - c0))
            for n, (r0, r1, c0, c1, est) in enumerate(tiles)]
