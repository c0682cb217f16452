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
  (``BLOCK`` lanes: 32 with AVX-512/AVX2 builds, 4 on baseline x86-64/arm64);
* **exact shortcuts** that never change a count:
  - main cardioid and period-2 bulb: a point inside them (by a margin far larger than the
    test's rounding error) never escapes, so its count is ``max_iter``;
  - periodicity: if an orbit returns *bit for bit* to an earlier value, the deterministic
    floating-point iteration cycles forever and never escapes, so its count is ``max_iter``.
    The check is exact equality, never a tolerance.

Layers: ``hydra_tasks.compute`` validates and allocates; the ``def`` wrappers take typed
contiguous memoryviews and release the GIL; ``_fill_row`` / ``_smooth_row`` are the
``noexcept nogil`` inner loops.
"""

from libc.math cimport NAN, log2
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define HYDRA_MANDEL_BLOCK 32
    #define HYDRA_ISA "avx512"
    #elif defined(__AVX2__)
    #define HYDRA_MANDEL_BLOCK 32
    #define HYDRA_ISA "avx2"
    #elif defined(__aarch64__)
    #define HYDRA_MANDEL_BLOCK 8
    #define HYDRA_ISA "aarch64"
    #else
    #define HYDRA_MANDEL_BLOCK 4
    #define HYDRA_ISA "baseline"
    #endif
    /* Margins keep the cardioid/bulb tests far from their rounding error (~1e-16). */
    #define HYDRA_CARDIOID_MARGIN 1e-12
    #define HYDRA_BULB_MARGIN 1e-12
    """
    const int BLOCK "HYDRA_MANDEL_BLOCK"
    const char* ISA_NAME "HYDRA_ISA"
    const double CARDIOID_MARGIN "HYDRA_CARDIOID_MARGIN"
    const double BULB_MARGIN "HYDRA_BULB_MARGIN"

cdef enum:
    MAX_BLOCK = 32  # array size for the widest BLOCK
    BATCH = 8       # phase-2 iterations between refills and periodicity checks

#: Instruction set the kernel was compiled for (``avx512``, ``avx2``, ``aarch64`` or ``baseline``).
ISA = ISA_NAME.decode()
#: Pixels iterated together.
LANES = BLOCK


cdef inline bint _inside_shortcut(double x, double y) noexcept nogil:
    """True if c = x + iy is certainly inside the main cardioid or the period-2 bulb."""
    cdef double xq = x - 0.25
    cdef double y2 = y * y
    cdef double q = xq * xq + y2
    if q * (q + xq) < 0.25 * y2 - CARDIOID_MARGIN:
        return True
    return (x + 1.0) * (x + 1.0) + y2 < 0.0625 - BULB_MARGIN


cdef struct Pending:
    Py_ssize_t slot  # index into the tile of the pixel
    double cx, cy, zx, zy
    uint64_t n


cdef struct Lanes:
    double cx[MAX_BLOCK]
    double cy[MAX_BLOCK]
    double zx[MAX_BLOCK]
    double zy[MAX_BLOCK]
    double sx[MAX_BLOCK]        # periodicity checkpoint
    double sy[MAX_BLOCK]
    uint64_t n[MAX_BLOCK]       # iterations done without escaping
    uint64_t base[MAX_BLOCK]    # n at the start of the current batch
    uint64_t check[MAX_BLOCK]   # n at which the checkpoint moves next (Brent)
    uint64_t work[MAX_BLOCK]    # iterations done when periodicity was detected (0: not detected)
    Py_ssize_t slot[MAX_BLOCK]  # pixel in this lane, -1 if the lane is empty


cdef Py_ssize_t _short_orbits(uint32_t* out, uint32_t* work, Py_ssize_t slot0, Py_ssize_t width, double cy, double xmin,
                              double dx, int64_t col0, uint64_t max_iter, uint64_t cap, bint shortcuts,
                              Pending* pending, Py_ssize_t npending) noexcept nogil:
    """Phase 1 for one row: blocks of BLOCK pixels iterate together for at most ``cap``
    iterations (most pixels of a picture escape early). Finished pixels are written; the
    survivors are appended to ``pending`` with their state. Returns the new pending count.
    ``work`` (may be NULL) receives the iterations each finished pixel actually cost."""
    cdef double cx[MAX_BLOCK]
    cdef double zx[MAX_BLOCK]
    cdef double zy[MAX_BLOCK]
    cdef uint64_t n[MAX_BLOCK]
    cdef double x2, y2
    cdef uint64_t it, alive, any_alive, stop = cap if cap < max_iter else max_iter
    cdef Py_ssize_t b, c0, j, col, live
    for b in range((width + BLOCK - 1) // BLOCK):
        c0 = b * BLOCK
        live = 0
        for j in range(BLOCK):
            # Lanes past the end of the row repeat the last pixel and are not stored.
            col = c0 + j if c0 + j < width else width - 1
            cx[j] = xmin + (<double>(col0 + col) + 0.5) * dx
            zx[j] = 0.0
            zy[j] = 0.0
            if shortcuts and _inside_shortcut(cx[j], cy):
                n[j] = max_iter  # n != it from now on: the lane is finished
            else:
                n[j] = 0
                live += 1
        it = 0
        while live and it < stop:
            any_alive = 0
            for j in range(BLOCK):
                x2 = zx[j] * zx[j]
                y2 = zy[j] * zy[j]
                # Alive: not escaped now and never stopped before (n == it). "not (> 4.0)" is
                # the scalar break test, NaN included. Stopped lanes keep iterating
                # (branch-free) but their n never catches up with it again.
                alive = (not (x2 + y2 > 4.0)) & (n[j] == it)
                zy[j] = (zx[j] + zx[j]) * zy[j] + cy
                zx[j] = x2 - y2 + cx[j]
                n[j] += alive
                any_alive |= alive
            if not any_alive:
                break
            it += 1
        for j in range(min(BLOCK, width - c0)):
            if n[j] == stop and stop < max_iter:  # still running: hand over to phase 2
                pending[npending].slot = slot0 + c0 + j
                pending[npending].cx = cx[j]
                pending[npending].cy = cy
                pending[npending].zx = zx[j]
                pending[npending].zy = zy[j]
                pending[npending].n = n[j]
                npending += 1
            else:
                out[slot0 + c0 + j] = <uint32_t>n[j]
        if work != NULL:  # what each finished pixel cost; the cardioid/bulb test settled some for free
            for j in range(min(BLOCK, width - c0)):
                if not (n[j] == stop and stop < max_iter):
                    work[slot0 + c0 + j] = 0 if (n[j] == max_iter and shortcuts and
                                                 _inside_shortcut(cx[j], cy)) else <uint32_t>n[j]
    return npending


cdef void _long_orbits(uint32_t* out, uint32_t* work, Pending* pending, Py_ssize_t npending, uint64_t max_iter,
                       bint periodicity) noexcept nogil:
    """Phase 2: the pending pixels, BLOCK at a time; a lane is refilled as soon as its pixel is
    finished, so one slow pixel never holds a whole block of others back."""
    cdef Lanes L
    cdef Py_ssize_t j, k, busy, nxt = 0
    cdef uint64_t batch, prev = 0, room, esc, alive, per, move
    cdef double x2, y2
    for j in range(BLOCK):
        L.slot[j] = -1
        L.cx[j] = L.cy[j] = L.zx[j] = L.zy[j] = L.sx[j] = L.sy[j] = 0.0
        L.n[j] = L.base[j] = L.check[j] = L.work[j] = 0
    while True:
        busy = 0
        batch = BATCH
        for j in range(BLOCK):
            if L.slot[j] >= 0 and (L.n[j] < L.base[j] + prev or L.n[j] >= max_iter):
                out[L.slot[j]] = <uint32_t>L.n[j]  # escaped during the last batch, or done
                if work != NULL:
                    work[L.slot[j]] = <uint32_t>(L.work[j] if L.work[j] else L.n[j])
                L.slot[j] = -1
            if L.slot[j] < 0 and nxt < npending:
                L.slot[j] = pending[nxt].slot
                L.cx[j] = pending[nxt].cx
                L.cy[j] = pending[nxt].cy
                L.zx[j] = L.sx[j] = pending[nxt].zx
                L.zy[j] = L.sy[j] = pending[nxt].zy
                L.n[j] = pending[nxt].n
                L.check[j] = 2 * L.n[j]
                L.work[j] = 0
                nxt += 1
            if L.slot[j] >= 0:
                busy += 1
                L.base[j] = L.n[j]
                room = max_iter - L.n[j]
                batch = room if room < batch else batch
            else:
                L.base[j] = L.n[j] + BATCH + 1  # an empty lane never counts as alive
        if busy == 0:
            return
        # No lane may pass max_iter, so the batch stops at the nearest cap; lanes that
        # reach it are written out at the next refill.
        for k in range(<Py_ssize_t>batch):
            for j in range(BLOCK):
                x2 = L.zx[j] * L.zx[j]
                y2 = L.zy[j] * L.zy[j]
                esc = x2 + y2 > 4.0
                alive = (esc ^ 1) & (L.n[j] == L.base[j] + <uint64_t>k)
                L.zy[j] = (L.zx[j] + L.zx[j]) * L.zy[j] + L.cy[j]
                L.zx[j] = x2 - y2 + L.cx[j]
                L.n[j] += alive
        prev = batch  # lanes that escaped in this batch are recognised by n < base + prev
        if periodicity:
            # Exact cycle detection: z equal bit for bit to an earlier z of the same orbit
            # means the floating-point iteration repeats forever and never escapes.
            for j in range(BLOCK):
                per = (L.zx[j] == L.sx[j]) & (L.zy[j] == L.sy[j]) & (L.n[j] == L.base[j] + prev)
                L.work[j] = L.n[j] if per else L.work[j]
                L.n[j] = max_iter if per else L.n[j]
                move = L.n[j] >= L.check[j]
                L.sx[j] = L.zx[j] if move else L.sx[j]
                L.sy[j] = L.zy[j] if move else L.sy[j]
                L.check[j] = 2 * L.check[j] if move else L.check[j]


cdef enum:
    PENDING_CAP = 8192  # survivors buffered before phase 2 runs (~400 KiB)
    SHORT_CAP = 64      # phase-1 iterations per pixel


cdef void _fill_rows(uint32_t[:, ::1] out, double xmin, double ymax, double dx, double dy, int64_t col0,
                     int64_t row0, uint64_t max_iter, bint shortcuts, Py_ssize_t first,
                     Py_ssize_t step, Pending* pending, uint32_t* work) noexcept nogil:
    """Counts for rows first, first+step, ... of the tile, in two phases (see above)."""
    cdef Py_ssize_t width = out.shape[1]
    cdef Py_ssize_t r = first, npending = 0, c0
    cdef uint32_t* flat
    cdef double cy
    if width == 0 or out.shape[0] == 0:
        return
    flat = &out[0, 0]
    while r < out.shape[0]:  # (range() with a variable step would need the GIL)
        cy = ymax - (<double>(row0 + r) + 0.5) * dy
        c0 = 0
        while c0 < width:  # in pieces that always fit in the pending buffer
            if npending > PENDING_CAP // 2:
                _long_orbits(flat, work, pending, npending, max_iter, shortcuts)
                npending = 0
            npending = _short_orbits(flat, work, r * width + c0, min(PENDING_CAP // 2, width - c0), cy, xmin, dx,
                                     col0 + c0, max_iter, SHORT_CAP, shortcuts, pending, npending)
            c0 += PENDING_CAP // 2
        r += step
    _long_orbits(flat, work, pending, npending, max_iter, shortcuts)


def fill_counts(uint32_t[:, ::1] out, double xmin, double ymax, double dx, double dy, int64_t col0,
                int64_t row0, uint64_t max_iter, bint shortcuts=True, Py_ssize_t first=0,
                Py_ssize_t step=1, uint32_t[:, ::1] work=None):
    """Write the count of every pixel of the tile into ``out`` (height, width).

    ``out[r, c]`` is global pixel ``(row0 + r, col0 + c)``. Only rows ``first, first+step, ...``
    are computed, so several threads can share one tile. ``shortcuts=False`` runs the plain
    blocked loop (same counts, slower). ``work`` (same shape, optional) receives what each pixel
    cost: iterations done (0 for pixels the cardioid/bulb test settled, the iteration of
    detection for periodic orbits). The GIL is released while iterating.
    """
    if step < 1 or first < 0:
        raise ValueError("first must be >= 0 and step >= 1")
    cdef uint32_t* work_ptr = NULL
    if work is not None:
        if work.shape[0] != out.shape[0] or work.shape[1] != out.shape[1]:
            raise ValueError("work must have the shape of out")
        if work.shape[0] and work.shape[1]:
            work_ptr = &work[0, 0]
    cdef Pending* pending = <Pending*>malloc(PENDING_CAP * sizeof(Pending))
    if pending == NULL:
        raise MemoryError("no memory for the Mandelbrot kernel's work buffer")
    try:
        with nogil:
            _fill_rows(out, xmin, ymax, dx, dy, col0, row0, max_iter, shortcuts, first, step, pending, work_ptr)
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
