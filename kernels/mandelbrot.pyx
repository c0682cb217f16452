# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Mandelbrot escape-time iteration counts for one tile of a larger image.

For global pixel ``(row, col)`` the count is exactly what this scalar loop gives::

    cx = xmin + (col + 0.5) * dx
    cy = ymax - (row + 0.5) * dy
    zx = zy = 0.0; n = 0
    while n < max_iter:
        x2 = zx*zx; y2 = zy*zy
        if x2 + y2 > 4.0: break
        zy = (zx + zx) * zy + cy
        zx = x2 - y2 + cx
        n += 1
    count = n                     # == max_iter for points that never escaped

Counts must be bit-identical on every build and CPU, so the module is built with
``-ffp-contract=off -fno-fast-math`` and the blocked loop performs the same IEEE
operations in the same order as the scalar definition. Speed comes from:

* **blocks of pixels** iterated together, branch-free, which the compiler turns into SIMD
  (lanes: 32 in the AVX-512 and AVX2 variants, 4 in x86-64's baseline, 8 on arm64);
* **exact shortcuts** that never change a count:
  - main cardioid and period-2 bulb: a point inside them (by a margin far larger than the
    test's rounding error) never escapes, so its count is ``max_iter``;
  - periodicity: if an orbit returns *bit for bit* to an earlier value, the deterministic
    floating-point iteration cycles forever and never escapes, so its count is ``max_iter``.
    The check is exact equality, never a tolerance.

Layers: ``hydra_tasks.compute`` validates and allocates; the ``def`` wrappers take typed
contiguous memoryviews and release the GIL; ``_fill`` and ``_smooth_row`` are the ``noexcept nogil``
loops. The iteration itself is C (``mandel_core.h`` through ``hydra_kernels.h``), compiled once per
instruction-set variant into this module (baseline, AVX2 and AVX-512 on x86-64), so that one build
runs at full speed on every CPU and the same loops build into the arm64 test program.
"""

from libc.math cimport NAN, log2
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

cdef extern from "hydra_kernels.h" nogil:
    int HYDRA_MANDEL_PENDING
    int hydra_mandel_lanes(int v)
    ctypedef struct hydra_pending:
        pass
    void hydra_mandel_rows(int v, uint32_t* out, uint32_t* work, Py_ssize_t height, Py_ssize_t width, double xmin,
                           double ymax, double dx, double dy, int64_t col0, int64_t row0, uint64_t max_iter,
                           int shortcuts, Py_ssize_t first, Py_ssize_t step, hydra_pending* pending)

include "variants.pxi"


def lanes(str variant):
    """Pixels the variant iterates together."""
    return hydra_mandel_lanes(_variant(variant))


cdef void _fill(int variant, uint32_t[:, ::1] out, uint32_t* work, double xmin, double ymax, double dx, double dy,
                int64_t col0, int64_t row0, uint64_t max_iter, bint shortcuts, Py_ssize_t first, Py_ssize_t step,
                hydra_pending* pending) noexcept nogil:
    """Counts for rows first, first+step, ... of the tile, in two phases (mandel_core.h)."""
    if out.shape[0] == 0 or out.shape[1] == 0:
        return
    hydra_mandel_rows(variant, &out[0, 0], work, out.shape[0], out.shape[1], xmin, ymax, dx, dy, col0, row0,
                      max_iter, shortcuts, first, step, pending)


def fill_counts(uint32_t[:, ::1] out, double xmin, double ymax, double dx, double dy, int64_t col0,
                int64_t row0, uint64_t max_iter, bint shortcuts=True, Py_ssize_t first=0,
                Py_ssize_t step=1, uint32_t[:, ::1] work=None, str variant="baseline"):
    """Write the count of every pixel of the tile into ``out`` (height, width).

    ``out[r, c]`` is global pixel ``(row0 + r, col0 + c)``. Only rows ``first, first+step, ...``
    are computed, so several threads can share one tile. ``shortcuts=False`` runs the plain
    blocked loop (same counts, slower). ``work`` (same shape, optional) receives what each pixel
    cost: iterations done (0 for pixels the cardioid/bulb test settled, the iteration of
    detection for periodic orbits). ``variant`` names the instruction set's loop (same counts).
    The GIL is released while iterating.
    """
    if step < 1 or first < 0:
        raise ValueError("first must be >= 0 and step >= 1")
    cdef int v = _variant(variant)
    cdef uint32_t* work_ptr = NULL
    if work is not None:
        if work.shape[0] != out.shape[0] or work.shape[1] != out.shape[1]:
            raise ValueError("work must have the shape of out")
        if work.shape[0] and work.shape[1]:
            work_ptr = &work[0, 0]
    cdef hydra_pending* pending = <hydra_pending*>malloc(HYDRA_MANDEL_PENDING * sizeof(hydra_pending))
    if pending == NULL:
        raise MemoryError("no memory for the Mandelbrot kernel's work buffer")
    try:
        with nogil:
            _fill(v, out, work_ptr, xmin, ymax, dx, dy, col0, row0, max_iter, shortcuts, first, step, pending)
    finally:
        free(pending)


cdef void _smooth_row(float* out, const uint32_t* counts, Py_ssize_t width, double cy, double xmin, double dx,
                      int64_t col0, uint64_t max_iter) noexcept nogil:
    """Fractional escape value for each escaped pixel of a row (NaN inside the set)."""
    cdef Py_ssize_t c
    cdef uint64_t k, n
    cdef double cx, zx, zy, x2, y2
    for c in range(width):
        n = counts[c]
        if n >= max_iter:
            out[c] = <float>NAN
            continue
        cx = xmin + (<double>(col0 + c) + 0.5) * dx
        zx = 0.0
        zy = 0.0
        # n iterations reach the escaping z_n; 3 more make the estimate smooth.
        for k in range(n + 3):
            x2 = zx * zx
            y2 = zy * zy
            zy = (zx + zx) * zy + cy
            zx = x2 - y2 + cx
        out[c] = <float>(<double>n + 4.0 - log2(0.5 * log2(zx * zx + zy * zy)))


def fill_smooth(float[:, ::1] out, const uint32_t[:, ::1] counts, double xmin, double ymax, double dx,
                double dy, int64_t col0, int64_t row0, uint64_t max_iter):
    """Smooth (fractional) colouring values for a tile whose ``counts`` are known.

    Counts are not changed: this re-iterates each escaped pixel's orbit a few steps past its
    escape. The GIL is released.
    """
    cdef Py_ssize_t r
    with nogil:
        for r in range(counts.shape[0]):
            if counts.shape[1]:
                _smooth_row(&out[r, 0], &counts[r, 0], counts.shape[1], ymax - (<double>(row0 + r) + 0.5) * dy,
                            xmin, dx, col0, max_iter)
