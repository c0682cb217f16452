# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Monte-Carlo π with counter-based generators: sample ``i`` of a stream is a pure function of ``(seed, i)``.

Two generators, named in each π job's spec so that a job reproduces bit for bit whatever build or CPU
runs it, and however its range is split:

``"philox4x32-10"`` (generator 2, the default for new jobs)
    Philox4x32 with 10 rounds (Salmon, Moraes, Dror, Shaw, SC'11; the Random123 constants). Block
    ``b`` is Philox4x32-10 of the counter ``(b mod 2**32, b >> 32, 0, 0)`` under the key
    ``(seed mod 2**32, seed >> 32)``, four 32-bit words ``r0..r3``. Sample ``2b`` is the point
    ``(r0 >> 1, r1 >> 1)``, sample ``2b + 1`` the point ``(r2 >> 1, r3 >> 1)``: 31-bit coordinates
    ``X, Y``, a hit iff ``X² + Y² < 2**62``, in exact integer arithmetic. Its only multiply is
    32x32->64, which SSE2, AVX2, AVX-512 and NEON all have as a SIMD instruction. (The lattice of
    2**-31 steps biases π/4 by under 1e-9, far below the statistical error of any allowed job.)

``"splitmix64"`` (generator 1, jobs submitted before generator 2)
    ``key = mix(seed·GAMMA + GAMMA)``, ``x_i = (mix(key + (2i+1)·GAMMA) >> 11)·2**-53``,
    ``y_i = (mix(key + (2i+2)·GAMMA) >> 11)·2**-53``, hit iff ``x_i² + y_i² < 1`` (IEEE double, no FMA),
    where ``mix`` is the SplitMix64 finaliser. Its 64-bit multiplies vectorise only with AVX-512.

Layers: ``hydra_tasks.compute.pi_hits`` validates; ``count_hits`` (``def``) takes C-typed arguments
and releases the GIL around ``_count``, which calls the variant's inner loop in ``hydra_kernels.h``
(C, so that the same loops build for each instruction set and for arm64 test programs).
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef extern from "hydra_kernels.h" nogil:
    uint64_t hydra_splitmix_mix(uint64_t z)
    void hydra_philox4x32_10_ctr(const uint32_t* c, uint32_t k0, uint32_t k1, uint32_t* r)
    int64_t hydra_pi_splitmix(int v, uint64_t key, uint64_t start, uint64_t count)
    int64_t hydra_pi_philox(int v, uint64_t seed, uint64_t start, uint64_t count)
    uint64_t HYDRA_GAMMA

#: The generators, by the name a job spec gives: 1 is the original, 2 the default for new jobs.
GENERATORS = ("splitmix64", "philox4x32-10")

include "variants.pxi"


cdef int64_t _count(int variant, int generator, uint64_t seed, uint64_t start, uint64_t count) noexcept nogil:
    if generator == 1:
        return hydra_pi_philox(variant, seed, start, count)
    return hydra_pi_splitmix(variant, hydra_splitmix_mix(seed * HYDRA_GAMMA + HYDRA_GAMMA), start, count)


def count_hits(uint64_t seed, uint64_t start, uint64_t count, str generator, str variant):
    """Number of samples ``i`` in ``[start, start + count)`` inside the quarter circle, for the stream
    ``seed`` of ``generator``, computed by the instruction-set ``variant``.

    No validation beyond C-type conversion and the names; ``hydra_tasks.compute.pi_hits`` is the
    public entry point. The GIL is released while counting.
    """
    cdef int v = _variant(variant)
    cdef int g
    cdef int64_t hits
    if generator == "philox4x32-10":
        g = 1
    elif generator == "splitmix64":
        g = 0
    else:
        raise ValueError(f"unknown generator {generator!r}")
    with nogil:
        hits = _count(v, g, seed, start, count)
    return hits


def philox4x32_10(counter, key):
    """Philox4x32-10 of ``counter`` (four 32-bit words) under ``key`` (two), as four words: the
    generator's building block, for known-answer tests against Random123's vectors."""
    cdef uint32_t c[4]
    cdef uint32_t r[4]
    c[0], c[1], c[2], c[3] = counter
    k0, k1 = key
    hydra_philox4x32_10_ctr(c, k0, k1, r)
    return (r[0], r[1], r[2], r[3])
