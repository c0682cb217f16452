# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Monte-Carlo pi with a counter-based generator (SplitMix64 used as a hash).

Sample ``i`` of the stream for ``seed`` is a pure function of ``(seed, i)``::

    GAMMA = 0x9E3779B97F4A7C15
    key   = mix(seed * GAMMA + GAMMA)
    x_i   = (mix(key + (2*i + 1) * GAMMA) >> 11) * 2**-53
    y_i   = (mix(key + (2*i + 2) * GAMMA) >> 11) * 2**-53
    hit_i = x_i*x_i + y_i*y_i < 1.0          (IEEE double, no FMA)

so the number of hits over a range is the same bit for bit however the range is
split into chunks, and any sub-range can be recomputed to check a volunteer.

Layers: ``hydra_tasks.compute.pi_hits`` validates; ``count_hits`` (``def``) takes
C-typed arguments and releases the GIL; ``_count_hits`` is the ``noexcept nogil``
inner loop.  Built with ``-ffp-contract=off -fno-fast-math`` (see pyproject.toml).
"""

from libc.stdint cimport int64_t, uint64_t

cdef extern from *:
    """
    #define HYDRA_GAMMA 0x9E3779B97F4A7C15ULL
    #define HYDRA_TWO_POW_106 0x1p106  /* 2**106, exact */
    #if defined(__AVX512F__)
    #define HYDRA_ISA "avx512"
    #elif defined(__AVX2__)
    #define HYDRA_ISA "avx2"
    #elif defined(__aarch64__)
    #define HYDRA_ISA "aarch64"
    #else
    #define HYDRA_ISA "baseline"
    #endif
    """
    # Compile-time C constants (a module-level cdef variable would be a mutable
    # global that the C compiler cannot fold into the vectorised loop).
    const uint64_t GAMMA "HYDRA_GAMMA"
    const double TWO_POW_106 "HYDRA_TWO_POW_106"
    const char* ISA_NAME "HYDRA_ISA"

#: Instruction set the kernel was compiled for (``avx512``, ``avx2``, ``aarch64`` or ``baseline``).
ISA = ISA_NAME.decode()

cdef enum:
    BLOCK = 8  # samples per branch-free block: one AVX-512 register of uint64 (fastest measured)


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """SplitMix64 finaliser."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _unit_hit(uint64_t ctr) noexcept nogil:
    """1 if the point drawn at counter ``ctr`` (x) / ``ctr + GAMMA`` (y) is a hit, else 0."""
    # X, Y < 2**53 convert to double exactly. x = X·2**-53, and scaling by a power of two
    # commutes with IEEE rounding here (no overflow, no subnormals), so the test
    # X² + Y² < 2**106 decides exactly as x² + y² < 1 does, with two multiplies fewer.
    cdef double x = <double><int64_t>(_mix(ctr) >> 11)
    cdef double y = <double><int64_t>(_mix(ctr + GAMMA) >> 11)
    return x * x + y * y < TWO_POW_106


cdef int64_t _count_hits(uint64_t key, uint64_t start, uint64_t count) noexcept nogil:
    """Hits among samples ``start .. start+count-1`` of the stream with ``key``."""
    cdef uint64_t ctr = key + (2 * start + 1) * GAMMA   # counter of x_start (mod 2**64)
    cdef uint64_t step = 2 * GAMMA
    cdef uint64_t nblocks = count // BLOCK
    cdef uint64_t b, j, acc
    cdef int64_t hits = 0
    for b in range(nblocks):
        # Fixed-size, branch-free block. With -march=native (AVX-512) GCC vectorises it;
        # on baseline x86-64 (SSE2 has no 64-bit vector multiply) it runs as scalar code.
        acc = 0
        for j in range(BLOCK):
            acc += _unit_hit(ctr + j * step)
        hits += <int64_t>acc
        ctr += BLOCK * step
    for j in range(count - nblocks * BLOCK):
        hits += <int64_t>_unit_hit(ctr)
        ctr += step
    return hits


def count_hits(uint64_t seed, uint64_t start, uint64_t count):
    """Number of samples ``i`` in ``[start, start + count)`` inside the quarter circle.

    No validation here beyond C-type conversion; ``hydra_tasks.compute.pi_hits`` is
    the public entry point.  The GIL is released while counting.
    """
    cdef uint64_t key = _mix(seed * GAMMA + GAMMA)
    cdef int64_t hits
    with nogil:
        hits = _count_hits(key, start, count)
    return hits
