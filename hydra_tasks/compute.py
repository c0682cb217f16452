"""The Python layer over the Cython kernels: validate, allocate, call.

This is the only module that imports the compiled kernels (``hydra_tasks._pi`` and
``hydra_tasks._mandelbrot``, built from ``kernels/*.pyx``).  Each public function
checks its arguments and raises :class:`~hydra_tasks.errors.KernelError` with a
message that says what to fix, then calls a ``def`` wrapper that releases the GIL
around a ``noexcept nogil`` inner loop.

Both kernels are deterministic bit for bit (see "Determinism" in DESIGN.md):

* π: sample ``i`` of job ``seed`` is a pure function of ``(seed, i)`` (SplitMix64
  used as a counter-based hash), so hit counts add up exactly however a range is
  split into chunks.
* Mandelbrot: the count for a global pixel depends only on the image parameters
  and the pixel, never on the tile it was computed in; no FMA, no fast-math.
"""

from __future__ import annotations

import math
import operator
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np

from .errors import KernelError

_pi: ModuleType | None
_mandelbrot: ModuleType | None
_PI_IMPORT_ERROR: ImportError | None = None
_MANDELBROT_IMPORT_ERROR: ImportError | None = None

try:  # the compiled kernels; missing until `pip install -e .` has built them
    from . import _pi
except ImportError as exc:  # pragma: no cover - depends on the build
    _pi, _PI_IMPORT_ERROR = None, exc

try:
    from . import _mandelbrot
except ImportError as exc:  # pragma: no cover - depends on the build
    _mandelbrot, _MANDELBROT_IMPORT_ERROR = None, exc

__all__ = [
    "MAX_ITER_LIMIT",
    "MAX_PIXEL_INDEX",
    "MAX_TILE_PIXELS",
    "PI_INDEX_LIMIT",
    "SEED_LIMIT",
    "build_info",
    "mandelbrot_counts",
    "mandelbrot_iterations",
    "mandelbrot_smooth",
    "pi_hits",
]

#: Seeds are unsigned 64-bit integers: ``0 <= seed < SEED_LIMIT``.
SEED_LIMIT = 2**64
#: Sample indices must stay below this: ``start + count <= PI_INDEX_LIMIT``.
PI_INDEX_LIMIT = 2**62
#: Largest allowed ``max_iter``.
MAX_ITER_LIMIT = 10_000_000
#: Global pixel indices must stay below this: ``col0 + width <= MAX_PIXEL_INDEX``.
MAX_PIXEL_INDEX = 2**31
#: Largest tile (``width * height``) one call may compute: 256 MiB of uint32 counts.
MAX_TILE_PIXELS = 2**26

_BUILD_HINT = "run `pip install -e .` / `make install` to build the Cython kernels"
#: Most threads one kernel call may use (the kernels release the GIL).
MAX_THREADS = 256
# π work below this many samples per thread is not worth a thread hand-off.
_MIN_SAMPLES_PER_THREAD = 1 << 20

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _run_parallel(calls: list[Any], threads: int) -> list[Any]:
    """Run zero-argument callables on ``threads`` threads of a shared pool (the kernels release
    the GIL). More calls than threads balance uneven work: a free thread takes the next call."""
    global _pool, _pool_size
    if threads == 1:
        return [call() for call in calls]
    with _pool_lock:
        if _pool is None or _pool_size != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hydra-kernel")
            _pool_size = threads
        pool = _pool
    return [f.result() for f in [pool.submit(call) for call in calls]]


def _check_threads(threads: int) -> int:
    threads = _as_int("threads", threads)
    if not 1 <= threads <= MAX_THREADS:
        raise KernelError(f"threads must be in [1, {MAX_THREADS}]; got {threads}.")
    return threads


def build_info() -> dict[str, Any]:
    """What the kernels were compiled for: instruction set and Mandelbrot lanes per block."""
    pi_mod = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    mandel = _require(_mandelbrot, _MANDELBROT_IMPORT_ERROR, "hydra_tasks._mandelbrot")
    return {"isa": mandel.ISA, "pi_isa": pi_mod.ISA, "mandelbrot_lanes": mandel.LANES, "cpus": os.cpu_count()}


# --- π -------------------------------------------------------------------------------------
def pi_hits(seed: int, start: int, count: int, *, threads: int = 1) -> int:
    """Count the samples ``i`` in ``[start, start + count)`` that land in the quarter circle.

    Sample ``i`` of the stream for ``seed`` is the point ``(x_i, y_i)`` in ``[0, 1)²``
    defined in ``kernels/pi.pyx``; it is a hit when ``x_i² + y_i² < 1``.  The result
    depends only on ``(seed, start, count)``: the sum over any split of a range into
    sub-ranges equals the count over the whole range.

    Args:
        seed: the job's stream, ``0 <= seed < 2**64``.
        start: first sample index, ``>= 0``.
        count: number of samples, ``>= 1``; ``start + count <= 2**62``.
        threads: split the range over this many threads (same result).

    Returns:
        The number of hits, ``0 <= hits <= count``.

    Raises:
        KernelError: on a bad argument, or if the kernel is not built.
    """
    seed = _as_int("seed", seed)
    start = _as_int("start", start)
    count = _as_int("count", count)
    if not 0 <= seed < SEED_LIMIT:
        raise KernelError(f"seed must be in [0, 2**64); got {seed}. Pick a non-negative 64-bit seed.")
    if start < 0:
        raise KernelError(f"start must be >= 0; got {start}.")
    if count < 1:
        raise KernelError(f"count must be >= 1; got {count}. Ask for at least one sample.")
    if start + count > PI_INDEX_LIMIT:
        raise KernelError(
            f"start + count must be <= 2**62; got {start} + {count} = {start + count}. "
            "Use fewer samples or start lower."
        )
    threads = min(_check_threads(threads), max(1, count // _MIN_SAMPLES_PER_THREAD))
    module = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    bounds = [start + count * k // threads for k in range(threads + 1)]
    calls = [lambda a=a, b=b: module.count_hits(seed, a, b - a) for a, b in zip(bounds, bounds[1:])]
    return int(sum(_run_parallel(calls, threads)))


# --- Mandelbrot ----------------------------------------------------------------------------
def mandelbrot_counts(
    *,
    xmin: float,
    ymax: float,
    dx: float,
    dy: float,
    col0: int,
    row0: int,
    width: int,
    height: int,
    max_iter: int,
    threads: int = 1,
    shortcuts: bool = True,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """Escape-time iteration counts for one tile of a Mandelbrot image.

    Global pixel ``(row, col)`` has centre ``c = (xmin + (col + 0.5) * dx) +
    (ymax - (row + 0.5) * dy) i``; its count is the number of iterations of
    ``z <- z² + c`` (from ``z = 0``) done before ``|z|² > 4``, capped at ``max_iter``
    (exact loop in ``kernels/mandelbrot.pyx``).  Counts are bit-identical on every
    build and CPU and do not depend on how the image is cut into tiles.

    Args:
        xmin: real part of the image's left edge.
        ymax: imaginary part of the image's top edge.
        dx: pixel width in the complex plane, ``> 0``.
        dy: pixel height in the complex plane, ``> 0``.
        col0: global column of the tile's left pixel, ``>= 0``.
        row0: global row of the tile's top pixel, ``>= 0``.
        width: tile width in pixels, ``>= 1``.
        height: tile height in pixels, ``>= 1``.
        max_iter: iteration cap, ``1 <= max_iter <= 10_000_000``.
        threads: compute interleaved rows on this many threads (same counts).
        shortcuts: use the exact cardioid/bulb and periodicity shortcuts (same counts,
            usually much faster; ``False`` is for benchmarks and checks).
        work: optional uint32 array of the tile's shape that receives what each pixel cost in
            iterations (0 for pixels settled by the cardioid/bulb test).

    Returns:
        A C-contiguous ``uint32`` array of shape ``(height, width)``; element
        ``[r, c]`` is the count of global pixel ``(row0 + r, col0 + c)``.

    Raises:
        KernelError: on a bad argument, or if the kernel is not built.
    """
    xmin = _as_finite_float("xmin", xmin)
    ymax = _as_finite_float("ymax", ymax)
    dx = _as_finite_float("dx", dx)
    dy = _as_finite_float("dy", dy)
    col0, row0 = _as_int("col0", col0), _as_int("row0", row0)
    width, height = _as_int("width", width), _as_int("height", height)
    max_iter = _as_int("max_iter", max_iter)
    _check_tile(xmin=xmin, ymax=ymax, dx=dx, dy=dy, col0=col0, row0=row0, width=width, height=height)
    if not 1 <= max_iter <= MAX_ITER_LIMIT:
        raise KernelError(f"max_iter must be in [1, {MAX_ITER_LIMIT:_}]; got {max_iter}.")
    threads = min(_check_threads(threads), height)
    module = _require(_mandelbrot, _MANDELBROT_IMPORT_ERROR, "hydra_tasks._mandelbrot")
    out = np.empty((height, width), dtype=np.uint32)
    if work is not None and (work.shape != out.shape or work.dtype != np.uint32 or not work.flags.c_contiguous):
        raise KernelError(f"work must be a C-contiguous uint32 array of shape {out.shape}.")
    flag = bool(shortcuts)
    # Interleaved row sets, a few per thread, so that expensive rows spread over all threads.
    parts = threads if threads == 1 else min(height, 4 * threads)
    _run_parallel([lambda k=k: module.fill_counts(out, xmin, ymax, dx, dy, col0, row0, max_iter, flag, k, parts,
                                                  work)
                   for k in range(parts)], threads)
    return out


def mandelbrot_smooth(counts: np.ndarray, *, xmin: float, ymax: float, dx: float, dy: float, col0: int,
                      row0: int, max_iter: int) -> np.ndarray:
    """Smooth colouring values (float32, NaN inside the set) for a tile whose counts are known.

    ``counts`` must be what :func:`mandelbrot_counts` returned for the same tile; they are not
    changed. The value of an escaped pixel lies near its count, with a continuous fraction."""
    counts = np.ascontiguousarray(counts, dtype=np.uint32)
    if counts.ndim != 2:
        raise KernelError(f"counts must be a 2-D array; got shape {counts.shape}.")
    height, width = counts.shape
    xmin, ymax = _as_finite_float("xmin", xmin), _as_finite_float("ymax", ymax)
    dx, dy = _as_finite_float("dx", dx), _as_finite_float("dy", dy)
    col0, row0, max_iter = _as_int("col0", col0), _as_int("row0", row0), _as_int("max_iter", max_iter)
    _check_tile(xmin=xmin, ymax=ymax, dx=dx, dy=dy, col0=col0, row0=row0, width=width, height=height)
    if counts.size and int(counts.max()) > max_iter:
        raise KernelError("counts exceed max_iter; pass the max_iter the counts were computed with.")
    module = _require(_mandelbrot, _MANDELBROT_IMPORT_ERROR, "hydra_tasks._mandelbrot")
    out = np.empty((height, width), dtype=np.float32)
    module.fill_smooth(out, counts, xmin, ymax, dx, dy, col0, row0, max_iter)
    return out


def mandelbrot_iterations(counts: np.ndarray) -> int:
    """Total iterations performed for a tile of counts: their sum, as a Python int.

    This is the "work done" measure used for speeds and rewards.

    Raises:
        KernelError: if ``counts`` is not an array of non-negative integers.
    """
    arr = np.asarray(counts)
    if arr.dtype.kind not in "ui":
        raise KernelError(f"counts must be an integer array (uint32); got dtype {arr.dtype}.")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise KernelError("counts must be non-negative; got a negative iteration count.")
    return int(arr.sum(dtype=np.uint64))


# --- helpers -------------------------------------------------------------------------------
def _check_tile(
    *, xmin: float, ymax: float, dx: float, dy: float, col0: int, row0: int, width: int, height: int
) -> None:
    if dx <= 0 or dy <= 0:
        raise KernelError(f"dx and dy must be > 0; got dx={dx!r}, dy={dy!r}.")
    if width < 1 or height < 1:
        raise KernelError(f"width and height must be >= 1; got width={width}, height={height}.")
    if col0 < 0 or row0 < 0:
        raise KernelError(f"col0 and row0 must be >= 0; got col0={col0}, row0={row0}.")
    if col0 + width > MAX_PIXEL_INDEX or row0 + height > MAX_PIXEL_INDEX:
        raise KernelError(
            f"the tile must end before global pixel 2**31; got columns up to {col0 + width}, "
            f"rows up to {row0 + height}."
        )
    if width * height > MAX_TILE_PIXELS:
        raise KernelError(
            f"a tile may have at most {MAX_TILE_PIXELS:_} pixels; got {width} x {height} = "
            f"{width * height:_}. Cut the image into smaller tiles."
        )
    far_x = xmin + (col0 + width - 0.5) * dx
    far_y = ymax - (row0 + height - 0.5) * dy
    if not (math.isfinite(far_x) and math.isfinite(far_y)):
        raise KernelError("the tile's pixel centres overflow to infinity; use a smaller dx/dy or origin.")


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise KernelError(f"{name} must be an integer; got a bool ({value!r}).")
    try:
        return operator.index(value)
    except TypeError:
        raise KernelError(f"{name} must be an integer; got {type(value).__name__} {value!r}.") from None


def _as_finite_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise KernelError(f"{name} must be a real number; got {type(value).__name__} {value!r}.")
    try:
        result = float(value)
    except OverflowError:
        raise KernelError(f"{name} is too large for a double; got {value!r}.") from None
    if not math.isfinite(result):
        raise KernelError(f"{name} must be finite; got {result!r}.")
    return result


def _require(module: ModuleType | None, error: ImportError | None, name: str) -> ModuleType:
    if module is None:
        raise KernelError(f"the compiled kernel {name} is not available ({error}); {_BUILD_HINT}.")
    return module
