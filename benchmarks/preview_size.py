"""How well a Mandelbrot job's preview measures the job's size (the work time shifting plans with).

    .venv/bin/python benchmarks/preview_size.py [--views 60] [--seed 1] [--width 1920 --height 1080]

An adaptive Mandelbrot job starts with its preview (jobs/tiling.preview_chunk: one sample per
stride x stride pixels, at most 256 x 192 samples); the dispatcher defers the job on the iterations
per pixel the preview measured (``iters_per_px``, jobs/preview.py) and, until it is in, runs the
preview at once (dispatcher.carbon_thresholds). This renders random views with the real kernels,
preview and full image, and prints the error of the preview's estimate of the mean work per pixel
(iterations actually done, with the kernels' shortcuts), as a natural log of estimate / truth, and
the error of the guess used without a preview (half of max_iter per pixel). Views: a centre drawn
near the set's boundary (escape count 30-999 at 1000 iterations), a width from 1e-6 to 3, max_iter
500, 2000 or 10000. benchmarks/carbon.py's ``--size-error`` models this error.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from hydra_tasks import compute
from hydra_tasks.jobs import tiling


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def work(xmin: float, ymax: float, dx: float, width: int, height: int, max_iter: int) -> float:
    """Mean iterations done per pixel, plus one (as jobs/preview.py counts it)."""
    done = np.zeros((height, width), dtype=np.uint32)
    compute.mandelbrot_counts(xmin=xmin, ymax=ymax, dx=dx, dy=dx, col0=0, row0=0, width=width, height=height,
                              max_iter=max_iter, work=done, threads=2)
    return float(done.mean()) + 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    args = parser.parse_args()
    if args.views < 2 or args.width < 16 or args.height < 16:
        parser.error("need --views >= 2 and an image of at least 16 x 16")
    rng = np.random.default_rng(args.seed)
    preview, guess = [], []
    t0 = time.perf_counter()
    stride = 0
    while len(preview) < args.views:
        cx, cy = rng.uniform(-2.0, 0.6), rng.uniform(-1.2, 1.2)
        escape = compute.mandelbrot_counts(xmin=cx, ymax=cy, dx=1e-9, dy=1e-9, col0=0, row0=0, width=1, height=1,
                                           max_iter=1000)
        if not 30 <= int(escape[0, 0]) < 1000:
            continue
        span = 10 ** rng.uniform(-6, 0.5)
        max_iter = int(rng.choice([500, 2000, 10000]))
        dx = span / args.width
        params = {"width": args.width, "height": args.height, "dx": dx, "dy": dx, "xmin": cx - span / 2,
                  "ymax": cy + dx * args.height / 2, "max_iter": max_iter}
        p = tiling.preview_chunk("bench", params).params
        stride = int(p["stride"])
        truth = work(params["xmin"], params["ymax"], dx, args.width, args.height, max_iter)
        preview.append(math.log(work(p["xmin"], p["ymax"], p["dx"], p["width"], p["height"], max_iter) / truth))
        guess.append(math.log(0.5 * max_iter / truth))
    e, g = np.array(preview), np.array(guess)
    print(f"{args.views} views of {args.width} x {args.height} (preview stride {stride}), {cpu_name()}, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"preview's estimate of the work per pixel: ln(estimate / truth) sd {e.std():.3f}, mean {e.mean():+.3f}; "
          f"|error| median {np.median(np.abs(e)):.3f}, p95 {np.percentile(np.abs(e), 95):.3f}, max {np.abs(e).max():.3f}")
    print(f"without a preview (max_iter / 2 per pixel): sd {g.std():.2f}, mean {g.mean():+.2f}; "
          f"|error| p95 {np.percentile(np.abs(g), 95):.2f} (a factor of {math.exp(np.percentile(np.abs(g), 95)):.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
