"""The Cython kernels agree with plain-Python definitions and keep their promises.

The reference implementations below are written as plainly as possible, straight
from the definitions in kernels/pi.pyx and kernels/mandelbrot.pyx.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from hydra_tasks import compute
from hydra_tasks.compute import MAX_TILE_PIXELS, mandelbrot_counts, mandelbrot_iterations, pi_hits
from hydra_tasks.errors import KernelError

# --- plain references ----------------------------------------------------------------------
MASK64 = 2**64 - 1
GAMMA = 0x9E3779B97F4A7C15


def mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_splitmix_hits(seed: int, start: int, count: int) -> int:
    """Generator 1 ("splitmix64")."""
    key = mix((seed * GAMMA + GAMMA) & MASK64)
    hits = 0
    for i in range(start, start + count):
        x = (mix((key + (2 * i + 1) * GAMMA) & MASK64) >> 11) * 2.0**-53
        y = (mix((key + (2 * i + 2) * GAMMA) & MASK64) >> 11) * 2.0**-53
        if x * x + y * y < 1.0:
            hits += 1
    return hits


M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85


def philox4x32_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]:
    """Philox4x32-10 as Salmon et al. (SC'11) define it."""
    a, b, c, d = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = M0 * a, M1 * c
        a, b, c, d = (p1 >> 32) ^ b ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ d ^ k1, p0 & 0xFFFFFFFF
        k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
    return a, b, c, d


def reference_philox_hits(seed: int, start: int, count: int) -> int:
    """Generator 2 ("philox4x32-10"): sample 2b and 2b+1 are the two halves of block b; X = word >> 1."""
    hits = 0
    for i in range(start, start + count):
        block = i >> 1
        words = philox4x32_10((block & 0xFFFFFFFF, block >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))
        u, v = (words[2], words[3]) if i & 1 else (words[0], words[1])
        hits += (u >> 1) ** 2 + (v >> 1) ** 2 < 2**62
    return hits


def reference_count(cx: float, cy: float, max_iter: int) -> int:
    zx = zy = 0.0
    n = 0
    while n < max_iter:
        x2 = zx * zx
        y2 = zy * zy
        if x2 + y2 > 4.0:
            break
        zy = (zx + zx) * zy + cy
        zx = x2 - y2 + cx
        n += 1
    return n


def reference_tile(*, xmin, ymax, dx, dy, col0, row0, width, height, max_iter) -> np.ndarray:
    out = np.zeros((height, width), dtype=np.uint32)
    for r in range(height):
        for c in range(width):
            cx = xmin + (col0 + c + 0.5) * dx
            cy = ymax - (row0 + r + 0.5) * dy
            out[r, c] = reference_count(cx, cy, max_iter)
    return out


FULL_VIEW = dict(xmin=-2.0, ymax=1.25, dx=2.5 / 40, dy=2.5 / 40)


# --- π -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "start", "count"),
    [
        (0, 0, 1),
        (0, 0, 1000),
        (12345, 17, 999),            # not a multiple of the kernel's block size
        (2**64 - 1, 10**12, 500),    # largest seed, far-away indices
        (7, 2**62 - 300, 300),       # the very end of the index range
        (5, 2**33 - 301, 700),       # Philox blocks cross 2**32: the counter's high word changes mid-group
        (2**64 - 1, 2**45 - 99, 400),  # ... and at 2**44, from an odd start
    ],
)
def test_pi_hits_match_the_plain_python_definition_of_each_generator(seed: int, start: int, count: int) -> None:
    assert pi_hits(seed, start, count, generator="splitmix64") == reference_splitmix_hits(seed, start, count)
    assert pi_hits(seed, start, count, generator="philox4x32-10") == reference_philox_hits(seed, start, count)
    assert pi_hits(seed, start, count) == reference_philox_hits(seed, start, count)  # the default


# Random123's known-answer vectors for philox4x32 with 10 rounds (tests/kat_vectors): counter, key, output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KAT)
def test_philox_gives_random123s_known_answers(counter, key, expected) -> None:
    from hydra_tasks import _pi

    assert _pi.philox4x32_10(counter, key) == expected
    assert philox4x32_10(counter, key) == expected  # and so does this file's reference


def test_jobs_from_before_the_generator_was_named_keep_their_hits() -> None:
    """Hits that the SplitMix64 kernel gave before generators were versioned (recorded on 2026-12-03 from
    the build of commit 6f1c0c3): a job stored then still reproduces bit for bit, on every variant."""
    recorded = [((0, 0, 1000003), 785490), ((12345, 777, 2**20 + 5), 823237), ((2**64 - 1, 2**40, 999), 803),
                ((7, 0, 400_000), 314214)]
    for variant in compute.build_info()["variants_supported"]:
        for (seed, start, count), hits in recorded:
            assert pi_hits(seed, start, count, generator="splitmix64", variant=variant) == hits


def test_an_unknown_generator_is_refused() -> None:
    with pytest.raises(KernelError, match="generator must be one of"):
        pi_hits(1, 0, 10, generator="mt19937")


def test_pi_hits_are_the_same_however_the_range_is_split() -> None:
    rng = random.Random(2024)
    seed, start, total = 99, 1_000_003, 200_000
    whole = pi_hits(seed, start, total)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, total), rng.randint(1, 40)))
        bounds = [0, *cuts, total]
        parts = [pi_hits(seed, start + a, b - a) for a, b in zip(bounds, bounds[1:])]
        assert sum(parts) == whole


def test_single_sample_calls_add_up_to_the_block_call() -> None:
    singles = [pi_hits(5, i, 1) for i in range(100, 164)]
    assert all(h in (0, 1) for h in singles)
    assert sum(singles) == pi_hits(5, 100, 64)


def test_different_seeds_give_different_streams() -> None:
    per_sample = {seed: [pi_hits(seed, i, 1) for i in range(256)] for seed in (0, 1, 2, 2**63)}
    streams = list(per_sample.values())
    for a in range(len(streams)):
        for b in range(a + 1, len(streams)):
            assert streams[a] != streams[b]
    assert len({pi_hits(seed, 0, 100_000) for seed in range(8)}) > 1


def test_pi_estimate_is_within_five_standard_errors_for_a_million_samples() -> None:
    n = 10**6
    estimate = 4 * pi_hits(20240601, 0, n) / n
    p = math.pi / 4
    standard_error = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(estimate - math.pi) < 5 * standard_error


@pytest.mark.parametrize(
    ("seed", "start", "count"),
    [
        (-1, 0, 10),
        (2**64, 0, 10),
        (0, -1, 10),
        (0, 0, 0),
        (0, 0, -5),
        (0, 2**62 - 5, 6),
        (0.5, 0, 10),
        (0, 1.0, 10),
        (0, 0, True),
        ("1", 0, 10),
    ],
)
def test_pi_hits_rejects_bad_arguments(seed: object, start: object, count: object) -> None:
    with pytest.raises(KernelError):
        pi_hits(seed, start, count)  # type: ignore[arg-type]


def test_pi_hits_accepts_numpy_integers() -> None:
    assert pi_hits(np.uint64(3), np.int64(10), np.int32(100)) == pi_hits(3, 10, 100)


# --- Mandelbrot ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tile",
    [
        dict(FULL_VIEW, col0=0, row0=0, width=40, height=40, max_iter=60),
        dict(FULL_VIEW, col0=3, row0=11, width=13, height=7, max_iter=200),   # odd width
        dict(xmin=-0.7454, ymax=0.1130, dx=1e-5, dy=1.3e-5, col0=50, row0=20,
             width=9, height=5, max_iter=1000),                                # the seahorse valley
        dict(FULL_VIEW, col0=20, row0=20, width=1, height=1, max_iter=1),
    ],
)
def test_mandelbrot_counts_match_the_plain_python_definition(tile: dict) -> None:
    counts = mandelbrot_counts(**tile)
    assert counts.dtype == np.uint32
    assert counts.shape == (tile["height"], tile["width"])
    assert counts.flags.c_contiguous
    np.testing.assert_array_equal(counts, reference_tile(**tile))


def test_a_tile_computed_as_four_sub_tiles_equals_the_whole() -> None:
    params = dict(xmin=-1.9, ymax=1.1, dx=0.0123, dy=0.0117, max_iter=300)
    col0, row0, width, height = 17, 9, 61, 47
    whole = mandelbrot_counts(**params, col0=col0, row0=row0, width=width, height=height)
    w1, h1 = 26, 19
    assembled = np.zeros_like(whole)
    for r, h in ((0, h1), (h1, height - h1)):
        for c, w in ((0, w1), (w1, width - w1)):
            assembled[r:r + h, c:c + w] = mandelbrot_counts(
                **params, col0=col0 + c, row0=row0 + r, width=w, height=h)
    np.testing.assert_array_equal(assembled, whole)


def test_the_origin_never_escapes_and_counts_max_iter() -> None:
    # Pixel (0, 0) of a 1x1-pixel grid centred on 0: cx = -0.5 + 0.5 * 1 = 0, cy = 0.5 - 0.5 = 0.
    counts = mandelbrot_counts(xmin=-0.5, ymax=0.5, dx=1.0, dy=1.0, col0=0, row0=0,
                               width=1, height=1, max_iter=12345)
    assert counts.tolist() == [[12345]]


def test_the_point_two_plus_two_i_escapes_after_one_iteration() -> None:
    # c = 2 + 2i: |0|^2 <= 4 so one step is taken (z = c); then |c|^2 = 8 > 4 stops it.
    counts = mandelbrot_counts(xmin=1.5, ymax=2.5, dx=1.0, dy=1.0, col0=0, row0=0,
                               width=1, height=1, max_iter=100)
    assert counts.tolist() == [[1]]
    assert reference_count(2.0, 2.0, 100) == 1


def test_mandelbrot_iterations_is_the_sum_of_counts_as_a_python_int() -> None:
    counts = mandelbrot_counts(**FULL_VIEW, col0=0, row0=0, width=40, height=40, max_iter=100)
    total = mandelbrot_iterations(counts)
    assert type(total) is int
    assert total == sum(int(v) for v in counts.ravel())
    big = np.full((3, 3), 2**32 - 1, dtype=np.uint32)
    assert mandelbrot_iterations(big) == 9 * (2**32 - 1)


def test_mandelbrot_iterations_rejects_non_integer_counts() -> None:
    with pytest.raises(KernelError):
        mandelbrot_iterations(np.zeros((2, 2), dtype=np.float64))


GOOD_TILE = dict(FULL_VIEW, col0=0, row0=0, width=4, height=4, max_iter=10)


@pytest.mark.parametrize(
    "override",
    [
        dict(width=0),
        dict(height=0),
        dict(width=-3),
        dict(col0=-1),
        dict(row0=-1),
        dict(max_iter=0),
        dict(max_iter=10_000_001),
        dict(dx=0.0),
        dict(dy=-0.1),
        dict(xmin=math.nan),
        dict(ymax=math.inf),
        dict(dx=math.inf),
        dict(xmin="-2"),
        dict(width=4.0),
        dict(max_iter=True),
        dict(width=2**14, height=2**13),        # too many pixels for one tile
        dict(col0=2**31 - 2),                   # runs past global pixel 2**31
        dict(dx=1e308, col0=10**6),             # pixel centres overflow to infinity
    ],
)
def test_mandelbrot_counts_rejects_bad_arguments(override: dict) -> None:
    with pytest.raises(KernelError):
        mandelbrot_counts(**{**GOOD_TILE, **override})


def test_a_missing_build_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute, "_pi", None)
    monkeypatch.setattr(compute, "_mandelbrot", None)
    with pytest.raises(KernelError, match="pip install -e"):
        pi_hits(1, 0, 10)
    with pytest.raises(KernelError, match="make install"):
        mandelbrot_counts(**GOOD_TILE)


# --- the GIL is released -------------------------------------------------------------------
def _long_pi_call() -> Callable[[], object]:
    return _scaled(lambda n: (lambda: pi_hits(1, 0, n)), start=1 << 20)


def _long_mandelbrot_call() -> Callable[[], object]:
    # A row of points on the real axis in [-0.05, 0.05], inside the set: every pixel costs
    # exactly max_iter iterations.
    def make(width: int) -> Callable[[], object]:
        return lambda: mandelbrot_counts(xmin=-0.05, ymax=0.01, dx=0.1 / width, dy=0.02,
                                         col0=0, row0=0, width=width, height=1, max_iter=100_000)
    # (at most the largest tile the kernel accepts: extrapolating from a short first call on a loaded
    # machine once asked for 82,948,384 pixels, and the call refused it)
    return _scaled(make, start=4, limit=MAX_TILE_PIXELS)


def _scaled(make: Callable[[int], Callable[[], object]], *, start: int,
            limit: int = 1 << 40, target_s: float = 0.4) -> Callable[[], object]:
    """Grow the problem size until one call takes about ``target_s`` seconds."""
    n = start
    while True:
        call = make(n)
        t0 = time.perf_counter()
        call()
        elapsed = time.perf_counter() - t0
        if elapsed >= target_s / 4 or n >= limit:
            return make(min(limit, int(n * target_s / max(elapsed, 1e-6))))
        n *= 4


@pytest.mark.parametrize("make_call", [_long_pi_call, _long_mandelbrot_call], ids=["pi", "mandelbrot"])
def test_each_kernel_lets_python_code_run_in_another_thread_while_it_computes(
    make_call: Callable[[], Callable[[], object]],
) -> None:
    call = make_call()
    window: dict[str, float] = {}

    def worker() -> None:
        window["start"] = time.perf_counter()
        call()
        window["end"] = time.perf_counter()

    ticks: list[float] = []
    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        ticks.append(time.perf_counter())   # Python bytecode: needs the GIL to run
        time.sleep(0.0005)
    thread.join()

    # If the kernel held the GIL, this thread could only tick in the moments before the
    # kernel starts (at most one switch interval, 5 ms); never in the middle of the call.
    start, end = window["start"], window["end"]
    assert end - start > 0.05, "the kernel call was too short to tell"
    middle = (start + 0.25 * (end - start), start + 0.75 * (end - start))
    ticks_in_middle = sum(middle[0] < t < middle[1] for t in ticks)
    assert ticks_in_middle >= 5, f"only {ticks_in_middle} ticks in {end - start:.3f} s"
