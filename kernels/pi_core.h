/* Monte-Carlo π kernels: the template compiled once per instruction-set variant.
 *
 * Included by hydra_kernels.h with HYDRA_FN(name) defined. Plain C99 without Python (see
 * mandel_core.h). Both generators are counter-based: sample i is a pure function of (seed, i), so
 * the hits over a range are the same whatever split, thread count or variant computes them.
 */

/* --- generator 1, "splitmix64" (jobs submitted before generator 2; kept bit for bit) ---------- */
/* Sample i: x_i = (mix(key + (2i+1)·GAMMA) >> 11)·2^-53, y_i = (mix(key + (2i+2)·GAMMA) >> 11)·2^-53,
 * hit iff x_i² + y_i² < 1 (IEEE double, no FMA), key = mix(seed·GAMMA + GAMMA). X, Y < 2^53 convert
 * to double exactly and scaling by 2^-53 commutes with rounding here, so the test is done as
 * X² + Y² < 2^106, which decides exactly as x² + y² < 1 does. */
static int64_t HYDRA_FN(pi_splitmix)(uint64_t key, uint64_t start, uint64_t count) {
  uint64_t ctr = key + (2 * start + 1) * HYDRA_GAMMA, step = 2 * HYDRA_GAMMA;
  uint64_t nblocks = count / HYDRA_SPLITMIX_BLOCK;
  int64_t hits = 0;
  for (uint64_t b = 0; b < nblocks; b++) {
    uint64_t acc = 0;
    for (int j = 0; j < HYDRA_SPLITMIX_BLOCK; j++) acc += hydra_splitmix_hit(ctr + (uint64_t)j * step);
    hits += (int64_t)acc;
    ctr += HYDRA_SPLITMIX_BLOCK * step;
  }
  for (uint64_t j = 0; j < count - nblocks * HYDRA_SPLITMIX_BLOCK; j++) {
    hits += (int64_t)hydra_splitmix_hit(ctr);
    ctr += step;
  }
  return hits;
}

/* --- generator 2, "philox4x32-10" -------------------------------------------------------------- */
/* Misses (points outside the quarter circle) among the 2·nblocks samples of Philox blocks
 * b0 .. b0+nblocks-1.
 *
 * x86 variants use the SIMD multiply 32x32->64 that every x86-64 level has (pmuludq: SSE2, AVX2,
 * AVX-512): each 64-bit lane holds one block's 32-bit word in its low half, and pmuludq reads only
 * low halves, so the high halves may hold anything until the final test masks them off. HV_* are
 * the variant's vector operations (hydra_kernels.h); HV_VECS independent vectors are in
 * flight to hide the multiply's latency. Elsewhere (arm64: NEON umull) the compiler vectorises the
 * plain loop over HYDRA_PHILOX_LANES blocks. */
#ifdef HV_T
static uint64_t HYDRA_FN(philox_misses)(uint32_t k0, uint32_t k1, uint64_t b0, uint64_t nblocks) {
  enum { V = HV_VECS, PER = HV_VECS * HV_LANES };
  HV_T key0[10], key1[10], m0 = HV_SET1(HYDRA_PHILOX_M0), m1 = HV_SET1(HYDRA_PHILOX_M1);
  HV_T acc = HV_SET1(0), step = HV_SET1(HV_LANES), ctr[V];
  uint32_t kk0 = k0, kk1 = k1;
  uint64_t misses = 0, full = nblocks / PER, lane[HV_LANES];
  for (int r = 0; r < 10; r++, kk0 += HYDRA_PHILOX_W0, kk1 += HYDRA_PHILOX_W1) {
    key0[r] = HV_SET1(kk0);
    key1[r] = HV_SET1(kk1);
  }
  for (int j = 0; j < HV_LANES; j++) lane[j] = b0 + (uint64_t)j;
  ctr[0] = HV_LOAD(lane);
  for (int v = 1; v < V; v++) ctr[v] = HV_ADD(ctr[v - 1], step);
  for (uint64_t g = 0; g < full; g++) {
    HV_T a[V], b[V], c[V], d[V];
    uint64_t first = b0 + g * PER, hi = first >> 32;
    if (hi == (first + PER - 1) >> 32) {
      /* Every block here has the same high counter word, so round 0's a = hi ^ k0 and round 1's
       * multiply of it are the same in every lane: computed once, scalar. */
      uint32_t a0 = (uint32_t)hi ^ k0;
      uint64_t q = (uint64_t)HYDRA_PHILOX_M0 * a0;
      HV_T lo_q = HV_SET1((uint32_t)q), hi_q = HV_SET1((uint32_t)(q >> 32) ^ (k1 + HYDRA_PHILOX_W1));
      for (int v = 0; v < V; v++) {
        /* round 0 on (lo, hi, 0, 0): a = hi ^ k0 (above), b = 0, c = hi(M0·lo) ^ k1, d = lo(M0·lo) */
        HV_T p0 = HV_MUL(ctr[v], m0);
        HV_T c0 = HV_XOR(HV_HI(p0), key1[0]);
        /* round 1: M0·a is q (above); M1·c0 */
        HV_T p1 = HV_MUL(c0, m1);
        a[v] = HV_XOR(HV_HI(p1), key0[1]); /* b was 0 */
        b[v] = p1;
        c[v] = HV_XOR(p0, hi_q);           /* hi(q) ^ d ^ k1[1], d = lo(M0·lo) = p0's low half */
        d[v] = lo_q;
      }
    } else {
      for (int v = 0; v < V; v++) {
        /* Round 0 on the counter (low word, high word, 0, 0): M1·0 = 0 spares one multiply. */
        HV_T p0 = HV_MUL(ctr[v], m0);
        HV_T a0 = HV_XOR(HV_HI(ctr[v]), key0[0]);
        HV_T c0 = HV_XOR(HV_HI(p0), key1[0]);
        HV_T q0 = HV_MUL(a0, m0), p1 = HV_MUL(c0, m1);
        a[v] = HV_XOR(HV_HI(p1), key0[1]);
        b[v] = p1;
        c[v] = HV_XOR3(HV_HI(q0), p0, key1[1]);
        d[v] = q0;
      }
    }
    for (int r = 2; r < 10; r++) {
      for (int v = 0; v < V; v++) {
        HV_T p0 = HV_MUL(a[v], m0), p1 = HV_MUL(c[v], m1);
        a[v] = HV_XOR3(HV_HI(p1), b[v], key0[r]);
        c[v] = HV_XOR3(HV_HI(p0), d[v], key1[r]);
        b[v] = p1; /* low half: lo(p1) */
        d[v] = p0;
      }
    }
    for (int v = 0; v < V; v++) {
      /* X = word >> 1 (31 bits), a miss iff X² + Y² >= 2^62 (hydra_philox_miss). A 32-bit lane shift
       * puts X in the low half (the high half's garbage, shifted, stays where pmuludq ignores it). */
      HV_T x = HV_SRLI32(a[v], 1), y = HV_SRLI32(b[v], 1), u = HV_SRLI32(c[v], 1), w = HV_SRLI32(d[v], 1);
      acc = HV_ADD(acc, HV_SRLI(HV_ADD(HV_MUL(x, x), HV_MUL(y, y)), 62));
      acc = HV_ADD(acc, HV_SRLI(HV_ADD(HV_MUL(u, u), HV_MUL(w, w)), 62));
      ctr[v] = HV_ADD(ctr[v], HV_SET1(PER));
    }
  }
  HV_STORE(lane, acc);
  for (int j = 0; j < HV_LANES; j++) misses += lane[j];
#else
static uint64_t HYDRA_FN(philox_misses)(uint32_t k0, uint32_t k1, uint64_t b0, uint64_t nblocks) {
  enum { PER = HYDRA_PHILOX_LANES };
  uint64_t misses = 0, full = nblocks / PER;
  for (uint64_t g = 0; g < full; g++) {
    uint32_t a[PER], b[PER], c[PER], d[PER];
    uint64_t first = b0 + g * PER;
    for (int j = 0; j < PER; j++) {
      uint64_t ctr = first + (uint64_t)j;
      a[j] = (uint32_t)ctr;
      b[j] = (uint32_t)(ctr >> 32);
      c[j] = 0;
      d[j] = 0;
    }
    uint32_t key0 = k0, key1 = k1;
    for (int r = 0; r < 10; r++) {
      for (int j = 0; j < PER; j++) {
        uint64_t p0 = (uint64_t)HYDRA_PHILOX_M0 * a[j], p1 = (uint64_t)HYDRA_PHILOX_M1 * c[j];
        uint32_t na = (uint32_t)(p1 >> 32) ^ b[j] ^ key0, nc = (uint32_t)(p0 >> 32) ^ d[j] ^ key1;
        b[j] = (uint32_t)p1;
        d[j] = (uint32_t)p0;
        a[j] = na;
        c[j] = nc;
      }
      key0 += HYDRA_PHILOX_W0;
      key1 += HYDRA_PHILOX_W1;
    }
    uint64_t acc = 0;
    for (int j = 0; j < PER; j++) acc += hydra_philox_miss(a[j], b[j]) + hydra_philox_miss(c[j], d[j]);
    misses += acc;
  }
#endif
  for (uint64_t blk = b0 + full * PER; blk < b0 + nblocks; blk++) {
    uint32_t r[4];
    hydra_philox4x32_10(blk, k0, k1, r);
    misses += hydra_philox_miss(r[0], r[1]) + hydra_philox_miss(r[2], r[3]);
  }
  return misses;
}

static int64_t HYDRA_FN(pi_philox)(uint64_t seed, uint64_t start, uint64_t count) {
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32), r[4];
  uint64_t misses = 0, end = start + count;
  if (start & 1) { /* the range starts with the second sample of a block */
    hydra_philox4x32_10(start >> 1, k0, k1, r);
    misses += hydra_philox_miss(r[2], r[3]);
    start++;
  }
  if (start < end) misses += HYDRA_FN(philox_misses)(k0, k1, start >> 1, (end - start) >> 1);
  if ((end - start) & 1) { /* and ends with the first sample of one */
    hydra_philox4x32_10(end >> 1, k0, k1, r);
    misses += hydra_philox_miss(r[0], r[1]);
  }
  return (int64_t)(count - misses);
}
