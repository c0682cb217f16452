"""The Python layer over the Cython kernels: validate, allocate, call.

This is the only module that imports the compiled kernels (``hydra_tasks._pi`` and
``hydra_tasks._mandelbrot``, built from ``kernels/*.pyx``).  Each public function
checks its arguments and raises :class:`~hydra_tasks.errors.KernelError` with a
message that says what to fix, then calls a ``def`` wrapper that releases the GIL
around a ``noexcept nogil`` inner loop.

Both kernels are deterministic bit for bit (see "Determinism" in DESIGN.md):

* π: sample ``i`` of job ``seed`` is a pure function of ``(seed, i)`` and the job's
  generator (Philox4x32-10 for new jobs, SplitMix64 for jobs from before it; see
  ``kernels/pi.pyx``), so hit counts add up exactly however a range is split into chunks.
* Mandelbrot: the count for a global pixel depends only on the image parameters
  and the pixel, never on the tile it was computed in; no FMA, no fast-math.

Variants: each module holds its inner loops compiled for several instruction sets
(``baseline``, and on x86-64 ``avx2`` and ``avx512``). The widest one the CPU supports is
used unless :func:`use_variant` picks another; every variant gives the same bits.
"""

from __future__ import annotations

import math
import operator
import os
import platform
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
    "DEFAULT_GENERATOR",
    "GENERATORS",
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
    "use_variant",
    "variant",
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

#: π generators by the name a job spec gives (kernels/pi.pyx): the original, and the default since.
GENERATORS = ("splitmix64", "philox4x32-10")
DEFAULT_GENERATOR = "philox4x32-10"

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


_variant: str | None = None  # chosen by use_variant(); None: the widest the CPU supports


def use_variant(name: str) -> str:
    """Make every later kernel call in this process use instruction-set variant ``name``
    (``"auto"``: the widest this CPU supports). Returns the variant now in use.

    Raises:
        KernelError: if the variant is unknown, not compiled in, or this CPU cannot run it.
    """
    global _variant
    pi_mod = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    if name == "auto":
        _variant = None
        return str(pi_mod.BEST)
    if name not in pi_mod.SUPPORTED:
        raise KernelError(f"kernel variant {name!r} cannot run here: this build and CPU support "
                          f"{', '.join(pi_mod.SUPPORTED)} (set HYDRA_KERNEL_VARIANT to one of them, or to auto).")
    _variant = name
    return name


def variant() -> str:
    """The instruction-set variant kernel calls use now."""
    pi_mod = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    return _variant or str(pi_mod.BEST)


def _pick(name: str | None) -> str:
    if name is None:
        return variant()
    pi_mod = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    if name not in pi_mod.SUPPORTED:
        raise KernelError(f"kernel variant {name!r} cannot run here; this build and CPU support "
                          f"{', '.join(pi_mod.SUPPORTED)}.")
    return name


def build_info() -> dict[str, Any]:
    """What the kernels can run here: the variant in use (``isa``), the variants compiled in and
    those this CPU supports, the Mandelbrot lanes of the variant in use, and the π generators."""
    pi_mod = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    mandel = _require(_mandelbrot, _MANDELBROT_IMPORT_ERROR, "hydra_tasks._mandelbrot")
    isa = variant()
    return {"isa": isa, "machine": platform.machine(), "variants_compiled": list(pi_mod.VARIANTS),
            "variants_supported": list(pi_mod.SUPPORTED), "mandelbrot_lanes": mandel.lanes(isa),
            "generators": list(GENERATORS), "cpus": os.cpu_count()}


# --- π -------------------------------------------------------------------------------------
def pi_hits(seed: int, start: int, count: int, *, generator: str = DEFAULT_GENERATOR, threads: int = 1,
            variant: str | None = None) -> int:
    """Count the samples ``i`` in ``[start, start + count)`` that land in the quarter circle.

    Sample ``i`` of the stream for ``seed`` is the point ``(x_i, y_i)`` in ``[0, 1)²``
    defined in ``kernels/pi.pyx`` for ``generator``; it is a hit when ``x_i² + y_i² < 1``.
    The result depends only on ``(generator, seed, start, count)``: the sum over any split of
    a range into sub-ranges equals the count over the whole range.

    Args:
        seed: the job's stream, ``0 <= seed < 2**64``.
        start: first sample index, ``>= 0``.
        count: number of samples, ``>= 1``; ``start + count <= 2**62``.
        generator: one of :data:`GENERATORS` (the job spec's).
        threads: split the range over this many threads (same result).
        variant: the instruction-set variant to run (same result); default: :func:`variant`.

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
    if generator not in GENERATORS:
        raise KernelError(f"generator must be one of {', '.join(GENERATORS)}; got {generator!r}.")
    threads = min(_check_threads(threads), max(1, count // _MIN_SAMPLES_PER_THREAD))
    module = _require(_pi, _PI_IMPORT_ERROR, "hydra_tasks._pi")
    isa = _pick(variant)
    bounds = [start + count * k // threads for k in range(threads + 1)]
    calls = [lambda a=a, b=b: module.count_hits(seed, a, b - a, generator, isa) for a, b in zip(bounds, bounds[1:])]
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
    variant: str | None = None,
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
        variant: the instruction-set variant to run (same counts); default: :func:`variant`.

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
    isa = _pick(variant)
    out = np.empty((height, width), dtype=np.uint32)
    if work is not None and (work.shape != out.shape or work.dtype != np.uint32 or not work.flags.c_contiguous):
        raise KernelError(f"work must be a C-contiguous uint32 array of shape {out.shape}.")
    flag = bool(shortcuts)
    # Interleaved row sets, a few per thread, so that expensive rows spread over all threads.
    parts = threads if threads == 1 else min(height, 4 * threads)
    _run_parallel([lambda k=k: module.fill_counts(out, xmin, ymax, dx, dy, col0, row0, max_iter, flag, k, parts,
                                                  work, isa)
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
