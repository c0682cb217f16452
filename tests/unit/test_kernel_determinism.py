"""The fast Mandelbrot kernel (SIMD blocks, lane refill, cardioid/bulb and periodicity
shortcuts, threads) returns exactly the counts of the plain definition, including deep,
boundary-heavy scenes where a rounding difference or an inexact shortcut would show."""

from __future__ import annotations

import numpy as np
import platform

import pytest

from hydra_tasks import compute
from hydra_tasks.errors import KernelError


def reference_counts(*, xmin: float, ymax: float, dx: float, dy: float, width: int, height: int,
                     max_iter: int, col0: int = 0, row0: int = 0) -> np.ndarray:
    """The scalar definition, evaluated with numpy over the pixels still running (no FMA in numpy)."""
    cols = np.arange(col0, col0 + width, dtype=np.float64)
    rows = np.arange(row0, row0 + height, dtype=np.float64)
    cx = np.broadcast_to(xmin + (cols + 0.5) * dx, (height, width)).ravel().copy()
    cy = np.broadcast_to((ymax - (rows + 0.5) * dy)[:, None], (height, width)).ravel().copy()
    counts = np.zeros(cx.size, dtype=np.uint32)
    idx = np.arange(cx.size)
    zx = np.zeros_like(cx)
    zy = np.zeros_like(cy)
    for n in range(max_iter):
        x2, y2 = zx * zx, zy * zy
        running = ~(x2 + y2 > 4.0)
        idx, zx, zy, x2, y2, cx, cy = (a[running] for a in (idx, zx, zy, x2, y2, cx, cy))
        if idx.size == 0:
            break
        zy = (zx + zx) * zy + cy
        zx = x2 - y2 + cx
        counts[idx] = n + 1
    return counts.reshape(height, width)


def view(cx: float, cy: float, span: float, width: int, height: int) -> dict[str, float]:
    dx = span / width
    return {"xmin": cx - span / 2, "ymax": cy + dx * height / 2, "dx": dx, "dy": dx}


SCENES = {
    "whole set, max_iter 200": (view(-0.75, 0.0, 3.0, 120, 90), 200),
    "cardioid cusp, deep": (view(0.2501, 0.0, 2e-4, 64, 48), 6000),
    "cardioid edge (seahorse valley), deep": (view(-0.7435669, 0.1314023, 0.002, 64, 48), 8000),
    "cardioid-bulb neck, deep": (view(-0.75, 0.02, 0.08, 64, 48), 6000),
    "bulb and its decorations, deep": (view(-1.2, 0.16, 0.2, 80, 60), 5000),
    "main cardioid boundary sweep": (view(0.3, 0.5, 0.1, 80, 60), 5000),
}


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_fast_kernel_matches_the_definition_on_boundary_heavy_scenes(scene: str) -> None:
    geometry, max_iter = SCENES[scene]
    height, width = (48, 64) if "deep" in scene else (90, 120) if "whole" in scene else (60, 80)
    expected = reference_counts(**geometry, width=width, height=height, max_iter=max_iter)
    for shortcuts in (True, False):
        for threads in (1, 3):
            got = compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=width, height=height,
                                            max_iter=max_iter, shortcuts=shortcuts, threads=threads)
            mismatches = int((got != expected).sum())
            assert mismatches == 0, f"{mismatches} pixels differ (shortcuts={shortcuts}, threads={threads})"
    assert len(np.unique(expected)) > 20  # the scene really is boundary-heavy


@pytest.mark.parametrize("max_iter", [1, 2, 7, 8, 9, 63, 64, 65, 71, 72, 73, 129])
def test_counts_are_exact_around_every_internal_batch_boundary(max_iter: int) -> None:
    geometry = view(-0.6, 0.3, 1.4, 70, 33)
    expected = reference_counts(**geometry, width=70, height=33, max_iter=max_iter)
    got = compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=70, height=33, max_iter=max_iter)
    assert (got == expected).all()


def test_random_tiles_of_random_depth_match_the_definition() -> None:
    rng = np.random.default_rng(20261128)
    for _ in range(25):
        span = 10 ** rng.uniform(-6, 0.5)
        cx, cy = rng.uniform(-2.0, 0.5), rng.uniform(-1.2, 1.2)
        width, height = int(rng.integers(1, 50)), int(rng.integers(1, 20))
        max_iter = int(rng.integers(1, 3000))
        geometry = view(cx, cy, span, width, height)
        expected = reference_counts(**geometry, width=width, height=height, max_iter=max_iter)
        got = compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=width, height=height,
                                        max_iter=max_iter)
        assert (got == expected).all(), (cx, cy, span, width, height, max_iter)


def test_a_wide_tile_that_overflows_the_pending_buffer_is_still_exact() -> None:
    geometry = view(-0.75, 0.0, 3.0, 9000, 2)  # every pixel of row 1 is near the real axis
    expected = reference_counts(**geometry, width=9000, height=2, max_iter=300)
    got = compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=9000, height=2, max_iter=300)
    assert (got == expected).all()


def test_smooth_values_follow_the_counts_and_leave_them_unchanged() -> None:
    geometry = view(-0.75, 0.0, 3.0, 60, 40)
    counts = compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=60, height=40, max_iter=300)
    before = counts.copy()
    smooth = compute.mandelbrot_smooth(counts, **geometry, col0=0, row0=0, max_iter=300)
    assert (counts == before).all()
    inside = counts == 300
    assert np.isnan(smooth[inside]).all()
    assert np.isfinite(smooth[~inside]).all()
    assert np.abs(smooth[~inside] - counts[~inside]).max() < 5.0
    assert len(np.unique(smooth[~inside])) > len(np.unique(counts[~inside]))  # continuous, not banded


def test_pi_threads_split_the_range_without_changing_the_count() -> None:
    single = compute.pi_hits(77, 123, 9_000_001)
    assert compute.pi_hits(77, 123, 9_000_001, threads=2) == single
    assert compute.pi_hits(77, 123, 9_000_001, threads=7) == single


def test_build_info_names_the_variant_in_use_and_the_ones_this_cpu_can_run() -> None:
    info = compute.build_info()
    assert info["isa"] == compute.variant() in info["variants_supported"]
    assert info["variants_compiled"][0] == "baseline" and set(info["variants_supported"]) <= set(
        info["variants_compiled"])
    assert info["isa"] == info["variants_supported"][-1]  # by default the widest this CPU runs
    assert info["mandelbrot_lanes"] == {"baseline": 8 if platform.machine() == "aarch64" else 4, "avx2": 16,
                                        "avx512": 32}[info["isa"]]
    assert info["generators"] == ["splitmix64", "philox4x32-10"]


def test_one_x86_64_build_holds_every_variant() -> None:
    import platform

    if platform.machine() not in {"x86_64", "AMD64"}:
        pytest.skip("the AVX2 and AVX-512 variants exist on x86-64 only")
    assert compute.build_info()["variants_compiled"] == ["baseline", "avx2", "avx512"]


VARIANTS = compute.build_info()["variants_supported"]


@pytest.mark.parametrize("generator", compute.GENERATORS)
def test_every_variant_counts_the_same_hits(generator: str) -> None:
    """Forced one by one, each variant this CPU runs gives the baseline's hits: odd and even starts, ranges
    shorter than one vector group and longer, far indices, blocks whose counter's high word changes, and
    the largest seed."""
    cases = [(0, 0, 1), (1, 1, 1), (3, 5, 2), (7, 12345, 777), (2**64 - 1, 2**40 + 1, 100_003),
             (20261203, 0, 3_000_001), (99, 2**62 - 1_000, 1_000),
             (11, 2**33 - 5_001, 20_000)]  # Philox blocks crossing 2**32
    for seed, start, count in cases:
        expected = compute.pi_hits(seed, start, count, generator=generator, variant="baseline")
        for variant in VARIANTS:
            assert compute.pi_hits(seed, start, count, generator=generator, variant=variant) == expected, (
                variant, seed, start, count)


def test_every_variant_computes_the_same_mandelbrot_counts_and_work() -> None:
    scenes = [(view(-0.75, 0.0, 3.0, 157, 93), 2000), (view(-0.7453, 0.1127, 0.0065, 131, 77), 5000),
              (view(-1.25, 0.0, 0.2, 64, 48), 700)]
    for geometry, max_iter in scenes:
        size = {"width": 97, "height": 61}  # not a multiple of any variant's lanes
        results = {}
        for variant in VARIANTS:
            for shortcuts in (True, False):
                work = np.zeros((size["height"], size["width"]), dtype=np.uint32)
                counts = compute.mandelbrot_counts(**geometry, col0=3, row0=2, **size, max_iter=max_iter,
                                                   shortcuts=shortcuts, work=work, variant=variant)
                results[variant, shortcuts] = (counts, work)
        base = results["baseline", True][0]
        assert (base == reference_counts(**geometry, col0=3, row0=2, **size, max_iter=max_iter)).all()
        for (variant, shortcuts), (counts, work) in results.items():
            assert (counts == base).all(), (variant, shortcuts)
            # The work map is a cost estimate: exact for escaping pixels and the cardioid/bulb test's, but
            # periodicity is checked between batches whose length depends on the lanes sharing a block, so
            # a periodic orbit's detection point may differ between variants (never its count).
            base_work = results["baseline", shortcuts][1]
            exact = (counts < max_iter) | (base_work == 0) if shortcuts else np.ones_like(counts, dtype=bool)
            assert (work[exact] == base_work[exact]).all(), (variant, shortcuts)
            assert (work <= max_iter).all()


def test_a_variant_this_cpu_cannot_run_is_refused_with_what_it_can() -> None:
    with pytest.raises(KernelError, match="cannot run here"):
        compute.pi_hits(1, 0, 10, variant="sse9")
    with pytest.raises(KernelError, match="HYDRA_KERNEL_VARIANT"):
        compute.use_variant("sse9")
    assert compute.use_variant("baseline") == "baseline" == compute.build_info()["isa"]
    try:
        assert compute.pi_hits(5, 0, 10_000) == compute.pi_hits(5, 0, 10_000, variant=VARIANTS[-1])
    finally:
        assert compute.use_variant("auto") == VARIANTS[-1] == compute.variant()


def test_the_work_map_says_what_each_pixel_really_cost() -> None:
    geometry = view(-0.75, 0.0, 3.0, 120, 90)
    work = np.zeros((90, 120), dtype=np.uint32)
    counts = compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=120, height=90, max_iter=2000, work=work)
    assert (counts == compute.mandelbrot_counts(**geometry, col0=0, row0=0, width=120, height=90,
                                                max_iter=2000)).all()
    escaped = counts < 2000
    assert (work[escaped] == counts[escaped]).all()  # an escaping orbit costs its count
    inside = ~escaped
    assert (work[inside] == 0).sum() > 0.5 * inside.sum()  # the cardioid/bulb test settles most for free
    assert (work[inside] < 2000).mean() > 0.9  # most others stop at periodicity detection, before max_iter
