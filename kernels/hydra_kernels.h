/* Hydra's compute kernels in plain C99, built once per instruction-set variant into one module.
 *
 * Layers (DESIGN.md's three, with the innermost loops here so they build without Python):
 *   hydra_tasks.compute   validates and allocates;
 *   kernels/NAME.pyx        def wrappers over typed memoryviews, releasing the GIL, then a
 *                         `noexcept nogil` loop over rows that calls the variant chosen here;
 *   this header           the inner loops, instantiated per variant from pi_core.h and mandel_core.h.
 *
 * Variants. x86-64: "baseline" (SSE2, any x86-64 CPU), "avx2" (x86-64-v3) and "avx512" (x86-64-v4),
 * each compiled with `#pragma GCC target` so one wheel holds all three; hydra_best_variant() picks
 * the widest the CPU (and OS) supports at import. Other architectures: "baseline" only (on arm64
 * that is NEON, part of the base instruction set). Every variant computes bit-identical results:
 * the module is built with -ffp-contract=off -fno-fast-math and the loops do the same IEEE
 * operations in the same order as the scalar definitions.
 */
#ifndef HYDRA_KERNELS_H
#define HYDRA_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* --- shared definitions ----------------------------------------------------------------------- */
#define HYDRA_GAMMA 0x9E3779B97F4A7C15ULL
#define HYDRA_TWO_POW_106 0x1p106 /* 2**106, exact */
#define HYDRA_SPLITMIX_BLOCK 8    /* generator 1: samples per branch-free block */
#define HYDRA_PHILOX_M0 0xD2511F53u /* Philox4x32 constants (Salmon et al., SC'11; Random123) */
#define HYDRA_PHILOX_M1 0xCD9E8D57u
#define HYDRA_PHILOX_W0 0x9E3779B9u
#define HYDRA_PHILOX_W1 0xBB67AE85u
#define HYDRA_PHILOX_LANES 16     /* Philox blocks computed together by the portable loop */
#define HYDRA_MANDEL_MAX_BLOCK 32
/* Pixels iterated together per variant: enough independent vectors to hide the multiply latency,
 * few enough that zx, zy, cx, n and the run mask stay in registers (16 for SSE2/AVX2, 32 for AVX-512
 * and NEON). AVX2 at 16 lanes ran 1.1-1.3x faster than at 32 (which spilled to the stack); SSE2 at
 * 8 was no faster than at 4 (benchmarks/README.md). */
#if defined(__aarch64__)
#define HYDRA_MANDEL_LANES_BASELINE 8
#else
#define HYDRA_MANDEL_LANES_BASELINE 4
#endif
#define HYDRA_MANDEL_LANES_AVX2 16
#define HYDRA_MANDEL_LANES_AVX512 32
#define HYDRA_MANDEL_BATCH 8      /* phase-2 iterations between refills and periodicity checks, */
#define HYDRA_MANDEL_BATCH_MAX 256 /* growing to this while no lane finishes */
#define HYDRA_MANDEL_PENDING 8192 /* survivors buffered before phase 2 runs (~400 KiB) */
#define HYDRA_MANDEL_SHORT_CAP 64 /* phase-1 iterations per pixel */
/* Margins keep the cardioid/bulb tests far from their rounding error (~1e-16). */
#define HYDRA_CARDIOID_MARGIN 1e-12
#define HYDRA_BULB_MARGIN 1e-12

static inline uint64_t hydra_splitmix_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Generator 1: 1 if the point drawn at counter ctr (x) / ctr + GAMMA (y) is a hit, else 0. */
static inline uint64_t hydra_splitmix_hit(uint64_t ctr) {
  double x = (double)(int64_t)(hydra_splitmix_mix(ctr) >> 11);
  double y = (double)(int64_t)(hydra_splitmix_mix(ctr + HYDRA_GAMMA) >> 11);
  return x * x + y * y < HYDRA_TWO_POW_106;
}

/* Philox4x32-10 (Random123's philox4x32 with 10 rounds) of counter c[0..3] under key (k0, k1), into r. */
static inline void hydra_philox4x32_10_ctr(const uint32_t c[4], uint32_t k0, uint32_t k1, uint32_t r[4]) {
  uint32_t a = c[0], b = c[1], cc = c[2], d = c[3];
  for (int i = 0; i < 10; i++) {
    uint64_t p0 = (uint64_t)HYDRA_PHILOX_M0 * a, p1 = (uint64_t)HYDRA_PHILOX_M1 * cc;
    uint32_t na = (uint32_t)(p1 >> 32) ^ b ^ k0, nc = (uint32_t)(p0 >> 32) ^ d ^ k1;
    b = (uint32_t)p1;
    d = (uint32_t)p0;
    a = na;
    cc = nc;
    k0 += HYDRA_PHILOX_W0;
    k1 += HYDRA_PHILOX_W1;
  }
  r[0] = a;
  r[1] = b;
  r[2] = cc;
  r[3] = d;
}

/* Generator 2's block: Philox4x32-10 of counter (block mod 2^32, block >> 32, 0, 0). */
static inline void hydra_philox4x32_10(uint64_t block, uint32_t k0, uint32_t k1, uint32_t r[4]) {
  const uint32_t c[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
  hydra_philox4x32_10_ctr(c, k0, k1, r);
}

/* Generator 2's test for the point of words (u, v): X = u >> 1, Y = v >> 1 (31 bits each), a miss
 * iff X² + Y² >= 2^62. The sum is below 2^63, so bit 62 alone says it: exact integer arithmetic. */
static inline uint64_t hydra_philox_miss(uint32_t u, uint32_t v) {
  uint64_t x = u >> 1, y = v >> 1;
  return (x * x + y * y) >> 62;
}

/* True if c = x + iy is certainly inside the main cardioid or the period-2 bulb. */
static inline int hydra_inside_shortcut(double x, double y) {
  double xq = x - 0.25, y2 = y * y, q = xq * xq + y2;
  if (q * (q + xq) < 0.25 * y2 - HYDRA_CARDIOID_MARGIN) return 1;
  return (x + 1.0) * (x + 1.0) + y2 < 0.0625 - HYDRA_BULB_MARGIN;
}

typedef struct {
  ptrdiff_t slot; /* index into the tile of the pixel */
  double cx, cy, zx, zy;
  uint64_t n;
} hydra_pending;

/* --- the variants ----------------------------------------------------------------------------- */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && \
    !defined(HYDRA_ONLY_BASELINE)
#define HYDRA_X86_VARIANTS 1
#endif

#if defined(__x86_64__) /* SSE2: every x86-64 CPU */
#define HV_T __m128i
#define HV_LANES 2
#define HV_VECS 6 /* independent vectors in flight, every x86 variant: 6 beat 4 by 3-14% on AMD Zen 4 (2026-12-04, benchmarks/README.md) */
#define HV_SET1(x) _mm_set1_epi64x((long long)(x))
#define HV_LOAD(p) _mm_loadu_si128((const __m128i *)(p))
#define HV_STORE(p, v) _mm_storeu_si128((__m128i *)(p), (v))
#define HV_ADD _mm_add_epi64
#define HV_XOR _mm_xor_si128
#define HV_SRLI _mm_srli_epi64
#define HV_SRLI32 _mm_srli_epi32
#define HV_MUL _mm_mul_epu32
#define HV_HI(x) _mm_shuffle_epi32((x), 0xF5)
#define HV_XOR3(a, b, c) _mm_xor_si128(_mm_xor_si128((a), (b)), (c))
#endif
#define HYDRA_FN(name) hydra_##name##_baseline
#define HYDRA_MANDEL_BLOCK HYDRA_MANDEL_LANES_BASELINE
#include "pi_core.h"
#include "mandel_core.h"
#undef HYDRA_FN
#undef HYDRA_MANDEL_BLOCK
#include "hv_undef.h"

#ifdef HYDRA_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define HV_T __m256i
#define HV_LANES 4
#define HV_VECS 6
#define HV_SET1(x) _mm256_set1_epi64x((long long)(x))
#define HV_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define HV_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define HV_ADD _mm256_add_epi64
#define HV_XOR _mm256_xor_si256
#define HV_SRLI _mm256_srli_epi64
#define HV_SRLI32 _mm256_srli_epi32
#define HV_MUL _mm256_mul_epu32
#define HV_HI(x) _mm256_shuffle_epi32((x), 0xF5)
#define HV_XOR3(a, b, c) _mm256_xor_si256(_mm256_xor_si256((a), (b)), (c))
#define HYDRA_FN(name) hydra_##name##_avx2
#define HYDRA_MANDEL_BLOCK HYDRA_MANDEL_LANES_AVX2
#include "pi_core.h"
#include "mandel_core.h"
#undef HYDRA_FN
#undef HYDRA_MANDEL_BLOCK
#include "hv_undef.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4,prefer-vector-width=512")
#define HV_T __m512i
#define HV_LANES 8
#define HV_VECS 6
#define HV_SET1(x) _mm512_set1_epi64((long long)(x))
#define HV_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define HV_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#define HV_ADD _mm512_add_epi64
#define HV_XOR _mm512_xor_si512
#define HV_SRLI _mm512_srli_epi64
#define HV_SRLI32 _mm512_srli_epi32
#define HV_MUL _mm512_mul_epu32
#define HV_HI(x) _mm512_shuffle_epi32((x), (_MM_PERM_ENUM)0xF5)
#define HV_XOR3(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0x96)
#define HYDRA_FN(name) hydra_##name##_avx512
#define HYDRA_MANDEL_BLOCK HYDRA_MANDEL_LANES_AVX512
#include "pi_core.h"
#include "mandel_core.h"
#undef HYDRA_FN
#undef HYDRA_MANDEL_BLOCK
#include "hv_undef.h"
#pragma GCC pop_options
#endif

/* --- dispatch --------------------------------------------------------------------------------- */
enum { HYDRA_BASELINE = 0, HYDRA_AVX2 = 1, HYDRA_AVX512 = 2, HYDRA_NVARIANTS = 3 };

static const char *const hydra_variant_names[HYDRA_NVARIANTS] = {"baseline", "avx2", "avx512"};

/* 1 if variant v is compiled into this build. */
static inline int hydra_variant_compiled(int v) {
#ifdef HYDRA_X86_VARIANTS
  return v >= 0 && v < HYDRA_NVARIANTS;
#else
  return v == HYDRA_BASELINE;
#endif
}

/* 1 if this CPU and OS can run variant v (compiled in, and the CPU has its instructions). */
static inline int hydra_variant_supported(int v) {
  if (!hydra_variant_compiled(v)) return 0;
#ifdef HYDRA_X86_VARIANTS
  __builtin_cpu_init();
  if (v == HYDRA_AVX2) return __builtin_cpu_supports("x86-64-v3");
  if (v == HYDRA_AVX512) return __builtin_cpu_supports("x86-64-v4");
#endif
  return 1;
}

static inline int hydra_best_variant(void) {
  for (int v = HYDRA_NVARIANTS - 1; v > 0; v--)
    if (hydra_variant_supported(v)) return v;
  return HYDRA_BASELINE;
}

static inline int hydra_mandel_lanes(int v) {
  if (v == HYDRA_AVX512) return HYDRA_MANDEL_LANES_AVX512;
  if (v == HYDRA_AVX2) return HYDRA_MANDEL_LANES_AVX2;
  return HYDRA_MANDEL_LANES_BASELINE;
}

/* The callers check the variant with hydra_variant_supported() first. */
static inline int64_t hydra_pi_splitmix(int v, uint64_t key, uint64_t start, uint64_t count) {
#ifdef HYDRA_X86_VARIANTS
  if (v == HYDRA_AVX512) return hydra_pi_splitmix_avx512(key, start, count);
  if (v == HYDRA_AVX2) return hydra_pi_splitmix_avx2(key, start, count);
#endif
  (void)v;
  return hydra_pi_splitmix_baseline(key, start, count);
}

static inline int64_t hydra_pi_philox(int v, uint64_t seed, uint64_t start, uint64_t count) {
#ifdef HYDRA_X86_VARIANTS
  if (v == HYDRA_AVX512) return hydra_pi_philox_avx512(seed, start, count);
  if (v == HYDRA_AVX2) return hydra_pi_philox_avx2(seed, start, count);
#endif
  (void)v;
  return hydra_pi_philox_baseline(seed, start, count);
}

static inline void hydra_mandel_rows(int v, uint32_t *out, uint32_t *work, ptrdiff_t height, ptrdiff_t width,
                                     double xmin, double ymax, double dx, double dy, int64_t col0, int64_t row0,
                                     uint64_t max_iter, int shortcuts, ptrdiff_t first, ptrdiff_t step,
                                     hydra_pending *pending) {
#ifdef HYDRA_X86_VARIANTS
  if (v == HYDRA_AVX512) {
    hydra_mandel_rows_avx512(out, work, height, width, xmin, ymax, dx, dy, col0, row0, max_iter, shortcuts, first,
                             step, pending);
    return;
  }
  if (v == HYDRA_AVX2) {
    hydra_mandel_rows_avx2(out, work, height, width, xmin, ymax, dx, dy, col0, row0, max_iter, shortcuts, first, step,
                           pending);
    return;
  }
#endif
  (void)v;
  hydra_mandel_rows_baseline(out, work, height, width, xmin, ymax, dx, dy, col0, row0, max_iter, shortcuts, first,
                             step, pending);
}

#endif /* HYDRA_KERNELS_H */
