"""Hydra's kernels against the usual numpy code and hand-written C references, in one run.

    .venv/bin/python benchmarks/kernels.py [--repeats 5] [--quick]

Everything runs in this process on one pinned core (except the thread-parallel rows), and
every figure is the median of ``--repeats`` runs. The C references are compiled here with
``-O3 -march=native -ffp-contract=off`` (the same no-FMA rule as Hydra, so they compute the
same counts, which is checked): a scalar Mandelbrot loop, a vectorised one (blocks of 32
pixels, branch-free, no shortcuts), and 32 independent xoshiro256+ streams for π.

Targets (issue 3): Mandelbrot max_iter=50 ≥ 60x numpy and ≥ 0.9x vectorised C; deep scene
≥ 5x a vectorised loop without shortcuts; π ≥ 7x numpy default_rng and ≥ 0.8x C xoshiro;
thread-parallel ≥ 1.8x on 2 cores.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hydra_tasks import compute

C_SOURCE = r"""
#include <stdint.h>
void mandel_scalar(uint32_t *out, int w, int h, double xmin, double ymax, double dx, double dy,
                   uint32_t max_iter) {
  for (int r = 0; r < h; r++) {
    double cy = ymax - (r + 0.5) * dy;
    for (int c = 0; c < w; c++) {
      double cx = xmin + (c + 0.5) * dx, zx = 0, zy = 0; uint32_t n = 0;
      while (n < max_iter) {
        double x2 = zx * zx, y2 = zy * zy;
        if (x2 + y2 > 4.0) break;
        zy = (zx + zx) * zy + cy; zx = x2 - y2 + cx; n++;
      }
      out[r * w + c] = n;
    }
  }
}
#define B 32
void mandel_vec(uint32_t *out, int w, int h, double xmin, double ymax, double dx, double dy,
                uint32_t max_iter) {
  for (int r = 0; r < h; r++) {
    double cy = ymax - (r + 0.5) * dy;
    for (int c0 = 0; c0 < w; c0 += B) {
      double cx[B], zx[B], zy[B]; uint64_t n[B];
      for (int j = 0; j < B; j++) {
        int c = c0 + j < w ? c0 + j : w - 1;
        cx[j] = xmin + (c + 0.5) * dx; zx[j] = zy[j] = 0; n[j] = 0;
      }
      for (uint64_t it = 0; it < max_iter; it++) {
        uint64_t any = 0;
        for (int j = 0; j < B; j++) {
          double x2 = zx[j] * zx[j], y2 = zy[j] * zy[j];
          uint64_t alive = (!(x2 + y2 > 4.0)) & (n[j] == it);
          zy[j] = (zx[j] + zx[j]) * zy[j] + cy; zx[j] = x2 - y2 + cx[j];
          n[j] += alive; any |= alive;
        }
        if (!any) break;
      }
      for (int j = 0; j < B && c0 + j < w; j++) out[r * w + c0 + j] = (uint32_t)n[j];
    }
  }
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
#define S 32
int64_t pi_xoshiro(uint64_t seed, uint64_t n) {
  uint64_t s0[S], s1[S], s2[S], s3[S], z = seed;
  for (int j = 0; j < S; j++) {
    uint64_t *dst[4] = {&s0[j], &s1[j], &s2[j], &s3[j]};
    for (int k = 0; k < 4; k++) {  /* seed each stream with SplitMix64 */
      z += 0x9E3779B97F4A7C15ULL; uint64_t t = z;
      t = (t ^ (t >> 30)) * 0xBF58476D1CE4E5B9ULL; t = (t ^ (t >> 27)) * 0x94D049BB133111EBULL;
      *dst[k] = t ^ (t >> 31);
    }
  }
  int64_t hits = 0;
  for (uint64_t b = 0; b < n / S; b++) {
    uint64_t acc = 0;
    for (int j = 0; j < S; j++) {
      uint64_t rx = s0[j] + s3[j], t = s1[j] << 17;
      s2[j] ^= s0[j]; s3[j] ^= s1[j]; s1[j] ^= s2[j]; s0[j] ^= s3[j]; s2[j] ^= t; s3[j] = rotl(s3[j], 45);
      uint64_t ry = s0[j] + s3[j]; t = s1[j] << 17;
      s2[j] ^= s0[j]; s3[j] ^= s1[j]; s1[j] ^= s2[j]; s0[j] ^= s3[j]; s2[j] ^= t; s3[j] = rotl(s3[j], 45);
      double x = (double)(int64_t)(rx >> 11) * 0x1.0p-53, y = (double)(int64_t)(ry >> 11) * 0x1.0p-53;
      acc += x * x + y * y < 1.0;
    }
    hits += acc;
  }
  return hits;
}
"""

MANDEL_ARGS = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double,
               ctypes.c_double, ctypes.c_uint32]


def build_c_reference(tmp: Path) -> ctypes.CDLL:
    src, lib = tmp / "ref.c", tmp / "ref.so"
    src.write_text(C_SOURCE)
    subprocess.run(["cc", "-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC", str(src), "-o",
                    str(lib)], check=True)
    dll = ctypes.CDLL(str(lib))
    for name in ("mandel_scalar", "mandel_vec"):
        getattr(dll, name).argtypes = MANDEL_ARGS
    dll.pi_xoshiro.restype = ctypes.c_int64
    dll.pi_xoshiro.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    return dll


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def numpy_mandelbrot(xmin: float, ymax: float, dx: float, dy: float, w: int, h: int, max_iter: int) -> np.ndarray:
    """The common numpy approach: complex arrays and a mask of points still iterating."""
    c = (xmin + (np.arange(w) + 0.5) * dx)[None, :] + 1j * (ymax - (np.arange(h) + 0.5) * dy)[:, None]
    z = np.zeros_like(c)
    counts = np.zeros(c.shape, dtype=np.uint32)
    mask = np.ones(c.shape, dtype=bool)
    for _ in range(max_iter):
        mask &= np.abs(z) <= 2.0  # |z_n| <= 2: iterate once more
        z[mask] = z[mask] * z[mask] + c[mask]
        counts += mask
    return counts


def numpy_pi(n: int, block: int = 1 << 22) -> int:
    rng, hits, done = np.random.default_rng(1), 0, 0
    while done < n:
        m = min(block, n - done)
        xy = rng.random((2, m))
        hits += int(np.count_nonzero(xy[0] * xy[0] + xy[1] * xy[1] < 1.0))
        done += m
    return hits


def row(name: str, seconds: float, work: float, unit: str, ref: float | None, pixels: int | None = None) -> str:
    rate = work / seconds
    mpix = f"{pixels / seconds / 1e6:9.1f} Mpix/s" if pixels else " " * 16
    ratio = f"{ref / seconds:8.2f}x" if ref else ""
    return f"  {name:<44} {seconds * 1e3:9.1f} ms {rate / 1e9:8.3f} G{unit}/s {mpix} {ratio}"


def mandel_section(title: str, scene: tuple[float, float, float, float, int, int, int], lib: ctypes.CDLL,
                   repeats: int, with_numpy: bool) -> dict[str, float]:
    xmin, xmax, ymin, ymax, w, h, max_iter = scene
    dx, dy = (xmax - xmin) / w, (ymax - ymin) / h
    print(f"\n{title}: [{xmin},{xmax}]x[{ymin},{ymax}] {w}x{h}, max_iter={max_iter}")
    kw = dict(xmin=xmin, ymax=ymax, dx=dx, dy=dy, col0=0, row0=0, width=w, height=h, max_iter=max_iter)
    t_hydra, counts = median_time(lambda: compute.mandelbrot_counts(**kw), repeats)
    t_plain, plain = median_time(lambda: compute.mandelbrot_counts(**kw, shortcuts=False), repeats)
    useful = float(counts.sum(dtype=np.uint64))

    def c_run(name: str) -> np.ndarray:
        out = np.empty((h, w), dtype=np.uint32)
        getattr(lib, name)(out.ctypes.data, w, h, xmin, ymax, dx, dy, max_iter)
        return out

    t_cvec, cvec = median_time(lambda: c_run("mandel_vec"), repeats)
    t_cscalar, cscalar = median_time(lambda: c_run("mandel_scalar"), max(1, repeats // 2))
    for name, other in (("C vectorised", cvec), ("C scalar", cscalar), ("Hydra without shortcuts", plain)):
        assert (other == counts).all(), f"{name} counts differ from Hydra's"
    t_np = None
    if with_numpy:
        t_np, np_counts = median_time(lambda: numpy_mandelbrot(xmin, ymax, dx, dy, w, h, max_iter), 1)
        agree = float((np_counts == counts).mean())
        print(f"  (numpy's counts equal Hydra's on {agree:.3%} of pixels: it tests |z| <= 2 with hypot)")
    ref = t_np or t_cvec
    print(f"  {'':44} {'time':>12} {'useful iters':>15} {'':16} {'vs ' + ('numpy' if t_np else 'C vec'):>9}")
    if t_np:
        print(row("numpy (complex arrays + mask)", t_np, useful, "it", ref, w * h))
    print(row("C scalar -O3 -march=native", t_cscalar, useful, "it", ref, w * h))
    print(row("C vectorised (32-pixel blocks)", t_cvec, useful, "it", ref, w * h))
    print(row("Hydra, no shortcuts", t_plain, useful, "it", ref, w * h))
    print(row("Hydra", t_hydra, useful, "it", ref, w * h))
    return {"hydra": t_hydra, "plain": t_plain, "cvec": t_cvec, "cscalar": t_cscalar, "numpy": t_np or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller scenes (a smoke run)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    info = compute.build_info()
    print(f"Hydra kernels built for {info['isa']} ({info['mandelbrot_lanes']} Mandelbrot lanes); "
          f"one core (cpu {cpus[-1]}), medians of {args.repeats}")
    size = 500 if args.quick else 2000
    deep_size = 300 if args.quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_c_reference(Path(tmp))
        r1 = mandel_section("Mandelbrot, classic scene", (-2.0, 0.5, -1.25, 1.25, size, size, 50), lib, args.repeats,
                            True)
        r2 = mandel_section("Mandelbrot, Benchmarks Game scene", (-1.5, 0.5, -1.0, 1.0, size, size, 50), lib,
                            args.repeats, True)
        r3 = mandel_section("Mandelbrot, deep scene with the main cardioid",
                            (-2.0, 0.5, -1.25, 1.25, deep_size, deep_size, 5000), lib, args.repeats, False)

        n = 50_000_000 if args.quick else 400_000_000
        print(f"\nMonte-Carlo π, {n:,} samples")
        t_np, _ = median_time(lambda: numpy_pi(n // 4), max(1, args.repeats // 2))
        t_np *= 4
        t_x, hx = median_time(lambda: lib.pi_xoshiro(7, n), args.repeats)
        t_h, hh = median_time(lambda: compute.pi_hits(7, 0, n), args.repeats)
        print(f"  {'numpy default_rng().random, 4M blocks':<44} {n / t_np / 1e6:9.0f} M samples/s")
        print(f"  {'C xoshiro256+, 32 streams':<44} {n / t_x / 1e6:9.0f} M samples/s   (π≈{4 * hx / n:.5f})")
        print(f"  {'Hydra (counter-based SplitMix64)':<44} {n / t_h / 1e6:9.0f} M samples/s   (π≈{4 * hh / n:.5f})")

        os.sched_setaffinity(0, set(cpus))
        threads = len(cpus)
        print(f"\nThread-parallel path, {threads} threads vs 1 (all cores)")
        scene = dict(xmin=-2.0, ymax=1.25, dx=2.5 / size, dy=2.5 / size, col0=0, row0=0, width=size, height=size,
                     max_iter=500)
        t1, a = median_time(lambda: compute.mandelbrot_counts(**scene), args.repeats)
        tn, b = median_time(lambda: compute.mandelbrot_counts(**scene, threads=threads), args.repeats)
        assert (a == b).all()
        p1, pa = median_time(lambda: compute.pi_hits(9, 0, n), args.repeats)
        pn, pb = median_time(lambda: compute.pi_hits(9, 0, n, threads=threads), args.repeats)
        assert pa == pb
        print(f"  Mandelbrot max_iter=500: {t1 / tn:.2f}x   π: {p1 / pn:.2f}x")

    print("\nRatios against the targets")
    checks = [
        ("Mandelbrot classic vs numpy (>= 60x)", r1["numpy"] / r1["hydra"], 60),
        ("Mandelbrot classic vs C vectorised (>= 0.9x)", r1["cvec"] / r1["hydra"], 0.9),
        ("Mandelbrot Benchmarks Game vs numpy (>= 60x)", r2["numpy"] / r2["hydra"], 60),
        ("Mandelbrot Benchmarks Game vs C vectorised (>= 0.9x)", r2["cvec"] / r2["hydra"], 0.9),
        ("deep scene vs C vectorised, no shortcuts (>= 5x)", r3["cvec"] / r3["hydra"], 5),
        ("deep scene vs Hydra without shortcuts (>= 5x)", r3["plain"] / r3["hydra"], 5),
        ("π vs numpy default_rng (>= 7x)", t_np / t_h, 7),
        ("π vs C xoshiro256+ (>= 0.8x)", t_x / t_h, 0.8),
        (f"Mandelbrot, {threads} threads (>= 1.8x)", t1 / tn, 1.8),
        (f"π, {threads} threads (>= 1.8x)", p1 / pn, 1.8),
    ]
    for name, ratio, target in checks:
        print(f"  {name:<55} {ratio:8.2f}x  {'ok' if ratio >= target else 'MISSED'}")


if __name__ == "__main__":
    main()
