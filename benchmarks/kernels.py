"""Hydra's kernels against the usual numpy code and hand-written C references, for every variant, in one run.

    .venv/bin/python benchmarks/kernels.py [--repeats 5] [--quick]

Hydra's modules hold their inner loops once per instruction set (baseline x86-64, AVX2, AVX-512; see
kernels/hydra_kernels.h). For every variant this CPU runs, the script forces it and compiles the C
references here with that variant's flags (baseline: -march=x86-64; avx2: -march=x86-64-v3; avx512:
-march=x86-64-v4 -mprefer-vector-width=512; all -O3 -ffp-contract=off, Hydra's no-FMA rule, so the
Mandelbrot references compute the same counts, which is checked):

* Mandelbrot: a scalar loop and three vectorised ones (branch-free, no shortcuts: blocks of 32 pixels
  counting while n == it, and blocks of 16 and of 32 keeping a running mask); "the best C loop" is
  the fastest of the four at that variant (with SSE2 alone the scalar loop can win);
* π: xoshiro256+ in 8, 16 and 32 independent streams (doubles, x² + y² < 1) and a plain C loop of
  Hydra's own Philox4x32-10 stream; "best C" is the fastest of them at that variant.

Everything runs on one pinned core (except the thread rows), and every figure is the median of
``--repeats`` runs. Targets (issue 16), for every variant: π ≥ 7x numpy and ≥ 1.0x the best C loop;
Mandelbrot ≥ 60x numpy and, like for like (Hydra without its shortcuts), ≥ 0.9x the best C loop;
2 threads ≥ 1.8x for both kernels. Exit status 0 only when every target holds on every variant.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
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
/* Blocks of 32 pixels, branch-free, counting while n == it (the textbook vectorised loop). */
void mandel_vec_count(uint32_t *out, int w, int h, double xmin, double ymax, double dx, double dy,
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
/* Blocks of B pixels with a running mask instead of the n == it test (one compare fewer per step);
   16 pixels keep AVX2's state in its 16 registers, 32 suit AVX-512's 32. */
#define MANDEL_MASK(B) \
void mandel_vec_mask##B(uint32_t *out, int w, int h, double xmin, double ymax, double dx, double dy, \
                        uint32_t max_iter) { \
  for (int r = 0; r < h; r++) { \
    double cy = ymax - (r + 0.5) * dy; \
    for (int c0 = 0; c0 < w; c0 += B) { \
      double cx[B], zx[B], zy[B]; uint64_t n[B], run[B]; \
      for (int j = 0; j < B; j++) { \
        int c = c0 + j < w ? c0 + j : w - 1; \
        cx[j] = xmin + (c + 0.5) * dx; zx[j] = zy[j] = 0; n[j] = 0; run[j] = ~(uint64_t)0; \
      } \
      for (uint64_t it = 0; it < max_iter; it++) { \
        uint64_t any = 0; \
        for (int j = 0; j < B; j++) { \
          double x2 = zx[j] * zx[j], y2 = zy[j] * zy[j]; \
          run[j] &= -(uint64_t)!(x2 + y2 > 4.0); \
          zy[j] = (zx[j] + zx[j]) * zy[j] + cy; zx[j] = x2 - y2 + cx[j]; \
          n[j] -= run[j]; any |= run[j]; \
        } \
        if (!any) break; \
      } \
      for (int j = 0; j < B && c0 + j < w; j++) out[r * w + c0 + j] = (uint32_t)n[j]; \
    } \
  } \
}
MANDEL_MASK(16)
MANDEL_MASK(32)
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
/* xoshiro256+ (Blackman & Vigna) in S independent streams, seeded by SplitMix64; doubles, x² + y² < 1. */
#define XOSHIRO(S) \
int64_t pi_xoshiro##S(uint64_t seed, uint64_t n) { \
  uint64_t s0[S], s1[S], s2[S], s3[S], z = seed; \
  for (int j = 0; j < S; j++) { \
    uint64_t *dst[4] = {&s0[j], &s1[j], &s2[j], &s3[j]}; \
    for (int k = 0; k < 4; k++) { \
      z += 0x9E3779B97F4A7C15ULL; uint64_t t = z; \
      t = (t ^ (t >> 30)) * 0xBF58476D1CE4E5B9ULL; t = (t ^ (t >> 27)) * 0x94D049BB133111EBULL; \
      *dst[k] = t ^ (t >> 31); \
    } \
  } \
  int64_t hits = 0; \
  for (uint64_t b = 0; b < n / S; b++) { \
    uint64_t acc = 0; \
    for (int j = 0; j < S; j++) { \
      uint64_t rx = s0[j] + s3[j], t = s1[j] << 17; \
      s2[j] ^= s0[j]; s3[j] ^= s1[j]; s1[j] ^= s2[j]; s0[j] ^= s3[j]; s2[j] ^= t; s3[j] = rotl(s3[j], 45); \
      uint64_t ry = s0[j] + s3[j]; t = s1[j] << 17; \
      s2[j] ^= s0[j]; s3[j] ^= s1[j]; s1[j] ^= s2[j]; s0[j] ^= s3[j]; s2[j] ^= t; s3[j] = rotl(s3[j], 45); \
      double x = (double)(int64_t)(rx >> 11) * 0x1.0p-53, y = (double)(int64_t)(ry >> 11) * 0x1.0p-53; \
      acc += x * x + y * y < 1.0; \
    } \
    hits += acc; \
  } \
  return hits; \
}
XOSHIRO(8)
XOSHIRO(16)
XOSHIRO(32)
/* Hydra's generator 2 written as plainly as C allows (Salmon et al.'s round), for the compiler to vectorise:
   block b of key seed gives samples 2b, 2b+1; X = word >> 1; a hit iff X² + Y² < 2^62. n even. */
int64_t pi_philox(uint64_t seed, uint64_t n) {
  int64_t hits = 0;
  for (uint64_t blk = 0; blk < n / 2; blk++) {
    uint32_t a = (uint32_t)blk, b = (uint32_t)(blk >> 32), c = 0, d = 0, k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
      uint64_t p0 = (uint64_t)0xD2511F53u * a, p1 = (uint64_t)0xCD9E8D57u * c;
      uint32_t na = (uint32_t)(p1 >> 32) ^ b ^ k0, nc = (uint32_t)(p0 >> 32) ^ d ^ k1;
      b = (uint32_t)p1; d = (uint32_t)p0; a = na; c = nc; k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    uint64_t x = a >> 1, y = b >> 1, u = c >> 1, v = d >> 1;
    hits += (int64_t)(2 - ((x * x + y * y) >> 62) - ((u * u + v * v) >> 62));
  }
  return hits;
}
"""

MANDEL_ARGS = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double,
               ctypes.c_double, ctypes.c_uint32]


C_VECTORISED = ("mandel_vec_count", "mandel_vec_mask16", "mandel_vec_mask32")
C_VECTORISED_NAMES = {"mandel_vec_count": "C vectorised, 32-pixel blocks, n == it",
                      "mandel_vec_mask16": "C vectorised, 16-pixel blocks, run mask",
                      "mandel_vec_mask32": "C vectorised, 32-pixel blocks, run mask"}
VARIANT_FLAGS = {"baseline": ["-march=x86-64"], "avx2": ["-march=x86-64-v3"],
                 "avx512": ["-march=x86-64-v4", "-mprefer-vector-width=512"]}
XOSHIRO_LANES = (8, 16, 32)


def build_c_reference(tmp: Path, variant: str) -> ctypes.CDLL:
    """The C references compiled with ``variant``'s flags (none on other architectures)."""
    src, lib = tmp / "ref.c", tmp / f"ref_{variant}.so"
    src.write_text(C_SOURCE)
    flags = VARIANT_FLAGS[variant] if platform.machine() == "x86_64" else []
    subprocess.run(["cc", "-O3", *flags, "-ffp-contract=off", "-shared", "-fPIC", str(src), "-o", str(lib)],
                   check=True)
    dll = ctypes.CDLL(str(lib))
    for name in ("mandel_scalar",) + C_VECTORISED:
        getattr(dll, name).argtypes = MANDEL_ARGS
    for name in [f"pi_xoshiro{n}" for n in XOSHIRO_LANES] + ["pi_philox"]:
        getattr(dll, name).restype = ctypes.c_int64
        getattr(dll, name).argtypes = [ctypes.c_uint64, ctypes.c_uint64]
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
                   variant: str, repeats: int, t_np: float | None) -> dict[str, float]:
    xmin, xmax, ymin, ymax, w, h, max_iter = scene
    dx, dy = (xmax - xmin) / w, (ymax - ymin) / h
    print(f"\n  {title}: [{xmin},{xmax}]x[{ymin},{ymax}] {w}x{h}, max_iter={max_iter}")
    kw = dict(xmin=xmin, ymax=ymax, dx=dx, dy=dy, col0=0, row0=0, width=w, height=h, max_iter=max_iter,
              variant=variant)
    t_hydra, counts = median_time(lambda: compute.mandelbrot_counts(**kw), repeats)
    t_plain, plain = median_time(lambda: compute.mandelbrot_counts(**kw, shortcuts=False), repeats)
    useful = float(counts.sum(dtype=np.uint64))

    def c_run(name: str) -> np.ndarray:
        out = np.empty((h, w), dtype=np.uint32)
        getattr(lib, name)(out.ctypes.data, w, h, xmin, ymax, dx, dy, max_iter)
        return out

    vec = {name: median_time(lambda name=name: c_run(name), repeats) for name in C_VECTORISED}
    t_cscalar, cscalar = median_time(lambda: c_run("mandel_scalar"), max(1, repeats // 2))
    # the best C loop: with SSE2 alone GCC's vectorised blocks can lose to the scalar loop
    t_cvec = min([t for t, _ in vec.values()] + [t_cscalar])
    for name, other in [(C_VECTORISED_NAMES[k], c) for k, (_, c) in vec.items()] + [
            ("C scalar", cscalar), ("Hydra without shortcuts", plain)]:
        assert (other == counts).all(), f"{name} counts differ from Hydra's"
    ref = t_np or t_cvec
    print(f"  {'':44} {'time':>12} {'useful iters':>15} {'':16} {'vs ' + ('numpy' if t_np else 'best C'):>9}")
    if t_np:
        print(row("numpy (complex arrays + mask)", t_np, useful, "it", ref, w * h))
    print(row(f"C scalar ({variant} flags)", t_cscalar, useful, "it", ref, w * h)
          + ("   <- best C" if t_cscalar == t_cvec else ""))
    for name, (t, _) in vec.items():
        print(row(C_VECTORISED_NAMES[name], t, useful, "it", ref, w * h) + ("   <- best C" if t == t_cvec else ""))
    print(row("Hydra, no shortcuts", t_plain, useful, "it", ref, w * h))
    print(row("Hydra", t_hydra, useful, "it", ref, w * h))
    return {"hydra": t_hydra, "plain": t_plain, "cvec": t_cvec, "cscalar": t_cscalar, "numpy": t_np or 0.0}


def numpy_mandel_time(scene: tuple[float, float, float, float, int, int, int], reference: np.ndarray) -> float:
    xmin, xmax, ymin, ymax, w, h, max_iter = scene
    t, counts = median_time(lambda: numpy_mandelbrot(xmin, ymax, (xmax - xmin) / w, (ymax - ymin) / h, w, h, max_iter),
                            1)
    assert (counts == reference).mean() > 0.99, "numpy's counts are far from Hydra's"  # it tests |z| <= 2 (hypot)
    return t


def variant_section(variant: str, tmp: Path, args: argparse.Namespace, scenes: dict[str, tuple],
                    references: dict[str, np.ndarray], n: int, cpus: list[int]) -> list[tuple[str, float, float]]:
    lib = build_c_reference(tmp, variant)
    print(f"\n=== variant {variant} (C references: -O3 {' '.join(VARIANT_FLAGS.get(variant, []))} "
          f"-ffp-contract=off)")
    os.sched_setaffinity(0, {cpus[-1]})
    # numpy again, beside this variant's figures: the VM's speed drifts over a run of several minutes
    numpy_t = {key: numpy_mandel_time(scenes[key], references[key]) for key in ("classic", "game")}
    t_np_pi, _ = median_time(lambda: numpy_pi(n // 4), max(1, args.repeats // 2))
    t_np_pi *= 4
    r1 = mandel_section("Mandelbrot, classic scene", scenes["classic"], lib, variant, args.repeats, numpy_t["classic"])
    r2 = mandel_section("Mandelbrot, Benchmarks Game scene", scenes["game"], lib, variant, args.repeats,
                        numpy_t["game"])
    r3 = mandel_section("Mandelbrot, deep scene with the main cardioid", scenes["deep"], lib, variant, args.repeats,
                        None)
    print(f"\n  Monte-Carlo π, {n:,} samples")
    c_rates: dict[str, float] = {}
    for lanes_ in XOSHIRO_LANES:
        t, h = median_time(lambda: getattr(lib, f"pi_xoshiro{lanes_}")(7, n), args.repeats)
        c_rates[f"C xoshiro256+, {lanes_} streams"] = n / t
    t, h_c = median_time(lambda: lib.pi_philox(11, n), args.repeats)
    c_rates["C Philox4x32-10 (plain loop)"] = n / t
    t_h, h_h = median_time(lambda: compute.pi_hits(11, 0, n, variant=variant), args.repeats)
    assert h_h == h_c, "the C Philox loop and Hydra disagree"
    t_s, _ = median_time(lambda: compute.pi_hits(11, 0, n, generator="splitmix64", variant=variant),
                         max(1, args.repeats // 2))
    best_name = max(c_rates, key=c_rates.__getitem__)
    print(f"  {'numpy default_rng().random, 4M blocks':<44} {n / t_np_pi / 1e6:9.0f} M samples/s")
    for name, rate in c_rates.items():
        print(f"  {name:<44} {rate / 1e6:9.0f} M samples/s{'   <- best C' if name == best_name else ''}")
    print(f"  {'Hydra, generator 1 (SplitMix64, old jobs)':<44} {n / t_s / 1e6:9.0f} M samples/s")
    print(f"  {'Hydra, generator 2 (Philox4x32-10)':<44} {n / t_h / 1e6:9.0f} M samples/s   (π≈{4 * h_h / n:.5f})")

    os.sched_setaffinity(0, set(cpus))
    threads = len(cpus)
    size = scenes["deep"][4] * 2
    scene = dict(xmin=-2.0, ymax=1.25, dx=2.5 / size, dy=2.5 / size, col0=0, row0=0, width=size, height=size,
                 max_iter=5000, variant=variant)
    # 1 and N threads alternate, so a drift in the VM's speed hits both alike; single pairs swing
    # 1.1-2.4x on the shared VM, hence more pairs than the other rows
    t1s, tns, p1s, pns = [], [], [], []
    for _ in range(2 * args.repeats + 1):
        t1s.append(median_time(lambda: compute.mandelbrot_counts(**scene), 1)[0])
        tns.append(median_time(lambda: compute.mandelbrot_counts(**scene, threads=threads), 1)[0])
        p1s.append(median_time(lambda: compute.pi_hits(9, 0, n, variant=variant), 1)[0])
        pns.append(median_time(lambda: compute.pi_hits(9, 0, n, threads=threads, variant=variant), 1)[0])
    assert (compute.mandelbrot_counts(**scene) == compute.mandelbrot_counts(**scene, threads=threads)).all()
    assert compute.pi_hits(9, 0, n, variant=variant) == compute.pi_hits(9, 0, n, threads=threads, variant=variant)
    t1, tn, p1, pn = (statistics.median(x) for x in (t1s, tns, p1s, pns))
    print(f"\n  Thread-parallel path, {threads} threads vs 1 (alternating): Mandelbrot {size}x{size} max_iter=5000 "
          f"({t1 * 1e3:.0f} ms on one) {t1 / tn:.2f}x, π ({p1 * 1e3:.0f} ms on one) {p1 / pn:.2f}x")
    return [
        (f"{variant}: Mandelbrot classic vs numpy", r1["numpy"] / r1["hydra"], 60),
        (f"{variant}: Mandelbrot classic vs the best C loop, both without shortcuts", r1["cvec"] / r1["plain"], 0.9),
        (f"{variant}: Mandelbrot Benchmarks Game vs numpy", r2["numpy"] / r2["hydra"], 60),
        (f"{variant}: Mandelbrot Benchmarks Game vs the best C loop, both without shortcuts",
         r2["cvec"] / r2["plain"], 0.9),
        (f"{variant}: deep scene vs the best C loop, both without shortcuts", r3["cvec"] / r3["plain"], 0.9),
        (f"{variant}: deep scene, Hydra (shortcuts) vs the best C loop", r3["cvec"] / r3["hydra"], 5),
        (f"{variant}: π vs numpy default_rng", t_np_pi / t_h, 7),
        (f"{variant}: π vs the best C loop ({best_name})", (n / t_h) / c_rates[best_name], 1.0),
        (f"{variant}: π vs C Philox4x32-10, same stream", (n / t_h) / c_rates["C Philox4x32-10 (plain loop)"], 1.0),
        (f"{variant}: Mandelbrot, {threads} threads", t1 / tn, 1.8),
        (f"{variant}: π, {threads} threads", p1 / pn, 1.8),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller scenes (a smoke run)")
    parser.add_argument("--variants", default="", help="comma-separated variants (default: every one this CPU runs)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    info = compute.build_info()
    variants = [v for v in args.variants.split(",") if v] or info["variants_supported"]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    print(f"{cpu}; variants compiled {', '.join(info['variants_compiled'])}; this CPU runs "
          f"{', '.join(info['variants_supported'])}; one core (cpu {cpus[-1]}), medians of {args.repeats}")
    size = 500 if args.quick else 2000
    deep_size = 300 if args.quick else 1000
    scenes = {"classic": (-2.0, 0.5, -1.25, 1.25, size, size, 50), "game": (-1.5, 0.5, -1.0, 1.0, size, size, 50),
              "deep": (-2.0, 0.5, -1.25, 1.25, deep_size, deep_size, 5000)}
    n = 50_000_000 if args.quick else 400_000_000
    references = {}
    for key in ("classic", "game"):
        xmin, xmax, ymin, ymax, w, h, max_iter = scenes[key]
        references[key] = compute.mandelbrot_counts(xmin=xmin, ymax=ymax, dx=(xmax - xmin) / w, dy=(ymax - ymin) / h,
                                                    col0=0, row0=0, width=w, height=h, max_iter=max_iter)
    checks: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            checks += variant_section(variant, Path(tmp), args, scenes, references, n, cpus)
    print("\nRatios against the targets")
    for name, ratio, target in checks:
        print(f"  {name:<72} {ratio:8.2f}x  (>= {target:g}x) {'ok' if ratio >= target else 'MISSED'}")
    return 0 if all(ratio >= target for _, ratio, target in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
