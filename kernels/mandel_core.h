/* Mandelbrot escape-time kernel: the template compiled once per instruction-set variant.
 *
 * Included by variants.h with HYDRA_FN(name) (the variant's function name) and HYDRA_MANDEL_BLOCK
 * (pixels iterated together) defined. Plain C99 without Python, so the same code builds into
 * hydra_tasks._mandelbrot and into tests/native/kernel_check.c (run under qemu for arm64).
 * Every variant performs the same IEEE operations in the same order as the scalar definition in
 * kernels/mandelbrot.pyx (built with -ffp-contract=off -fno-fast-math), so counts are bit-identical.
 */
#define HYDRA_MB HYDRA_MANDEL_BLOCK

/* Phase 1 for one row: blocks of HYDRA_MB pixels iterate together for at most `cap` iterations (most
 * pixels of a picture escape early). Finished pixels are written; survivors are appended to
 * `pending` with their state. Returns the new pending count. `work` (may be NULL) receives what each
 * finished pixel cost. */
static ptrdiff_t HYDRA_FN(mandel_short)(uint32_t *out, uint32_t *work, ptrdiff_t slot0, ptrdiff_t width,
                                        double cy, double xmin, double dx, int64_t col0, uint64_t max_iter,
                                        uint64_t cap, int shortcuts, hydra_pending *pending, ptrdiff_t npending) {
  double cx[HYDRA_MB], zx[HYDRA_MB], zy[HYDRA_MB];
  uint64_t n[HYDRA_MB], run[HYDRA_MB]; /* run: all ones while the lane's pixel has not escaped */
  uint64_t stop = cap < max_iter ? cap : max_iter;
  for (ptrdiff_t c0 = 0; c0 < width; c0 += HYDRA_MB) {
    uint64_t live = ~(uint64_t)0;
    /* Columns are below 2^31 (compute.py checks), so base + j is exact in doubles and equals
     * (double)(col0 + col); int32 lanes convert with one vector instruction on every variant. */
    double base = (double)(col0 + c0);
    int32_t last = (int32_t)(width - 1 - c0);
    for (int32_t j = 0; j < HYDRA_MB; j++) {
      /* Lanes past the end of the row repeat the last pixel and are not stored. */
      int32_t k = j < last ? j : last;
      cx[j] = xmin + ((base + (double)k) + 0.5) * dx;
      zx[j] = 0.0;
      zy[j] = 0.0;
      n[j] = 0;
      run[j] = ~(uint64_t)0;
    }
    if (shortcuts) {
      live = 0;
      for (int j = 0; j < HYDRA_MB; j++) {
        uint64_t inside = hydra_inside_shortcut(cx[j], cy);
        n[j] = inside ? max_iter : 0; /* settled: run = 0, n stays max_iter */
        run[j] = inside - 1;
        live |= run[j];
      }
    }
    for (uint64_t it = 0; live && it < stop; it++) {
      uint64_t any = 0;
      for (int j = 0; j < HYDRA_MB; j++) {
        double x2 = zx[j] * zx[j], y2 = zy[j] * zy[j];
        /* "!(> 4.0)" is the scalar break test, NaN included. A lane that stopped keeps iterating
         * (branch-free) with run = 0, so its n no longer moves. */
        run[j] &= -(uint64_t)!(x2 + y2 > 4.0);
        zy[j] = (zx[j] + zx[j]) * zy[j] + cy;
        zx[j] = x2 - y2 + cx[j];
        n[j] -= run[j]; /* + 1 while running */
        any |= run[j];
      }
      if (!any) break;
    }
    ptrdiff_t lanes = width - c0 < HYDRA_MB ? width - c0 : HYDRA_MB;
    uint64_t running = 0; /* lanes still running at the cap go to phase 2 */
    if (stop < max_iter)
      for (int j = 0; j < HYDRA_MB; j++) running |= run[j] & -(uint64_t)(n[j] == stop);
    if (!running && !work) {
      for (ptrdiff_t j = 0; j < lanes; j++) out[slot0 + c0 + j] = (uint32_t)n[j];
      continue;
    }
    for (ptrdiff_t j = 0; j < lanes; j++) {
      if (n[j] == stop && stop < max_iter) { /* still running: hand over to phase 2 */
        hydra_pending *p = &pending[npending++];
        p->slot = slot0 + c0 + j;
        p->cx = cx[j];
        p->cy = cy;
        p->zx = zx[j];
        p->zy = zy[j];
        p->n = n[j];
      } else {
        out[slot0 + c0 + j] = (uint32_t)n[j];
        if (work) /* what the pixel cost; the cardioid/bulb test settled some for free */
          work[slot0 + c0 + j] =
              (n[j] == max_iter && shortcuts && hydra_inside_shortcut(cx[j], cy)) ? 0u : (uint32_t)n[j];
      }
    }
  }
  return npending;
}

typedef struct {
  double cx[HYDRA_MB], cy[HYDRA_MB], zx[HYDRA_MB], zy[HYDRA_MB];
  double sx[HYDRA_MB], sy[HYDRA_MB];   /* periodicity checkpoint */
  uint64_t n[HYDRA_MB];                /* iterations done without escaping */
  uint64_t base[HYDRA_MB];             /* n at the start of the current batch */
  uint64_t check[HYDRA_MB];            /* n at which the checkpoint moves next (Brent) */
  uint64_t work[HYDRA_MB];             /* iterations done when periodicity was detected (0: not detected) */
  uint64_t run[HYDRA_MB];              /* all ones while the lane's pixel runs in this batch */
  ptrdiff_t slot[HYDRA_MB];            /* pixel in this lane, -1 if the lane is empty */
} HYDRA_FN(lanes);

/* Phase 2: the pending pixels, HYDRA_MB at a time; a lane is refilled as soon as its pixel is
 * finished, so one slow pixel never holds a whole block of others back. */
static void HYDRA_FN(mandel_long)(uint32_t *out, uint32_t *work, const hydra_pending *pending,
                                  ptrdiff_t npending, uint64_t max_iter, int periodicity) {
  HYDRA_FN(lanes) L;
  ptrdiff_t nxt = 0;
  uint64_t prev = 0, want = HYDRA_MANDEL_BATCH;
  for (int j = 0; j < HYDRA_MB; j++) {
    L.slot[j] = -1;
    L.cx[j] = L.cy[j] = L.zx[j] = L.zy[j] = L.sx[j] = L.sy[j] = 0.0;
    L.n[j] = L.base[j] = L.check[j] = L.work[j] = L.run[j] = 0;
  }
  for (;;) {
    ptrdiff_t busy = 0;
    int changed = 0;
    uint64_t batch = UINT64_MAX;
    for (int j = 0; j < HYDRA_MB; j++) {
      if (L.slot[j] >= 0 && (L.n[j] < L.base[j] + prev || L.n[j] >= max_iter)) {
        out[L.slot[j]] = (uint32_t)L.n[j]; /* escaped during the last batch, or done */
        if (work) work[L.slot[j]] = (uint32_t)(L.work[j] ? L.work[j] : L.n[j]);
        L.slot[j] = -1;
        changed = 1;
      }
      if (L.slot[j] < 0 && nxt < npending) {
        changed = 1;
        const hydra_pending *p = &pending[nxt++];
        L.slot[j] = p->slot;
        L.cx[j] = p->cx;
        L.cy[j] = p->cy;
        L.zx[j] = L.sx[j] = p->zx;
        L.zy[j] = L.sy[j] = p->zy;
        L.n[j] = p->n;
        L.check[j] = 2 * p->n;
        L.work[j] = 0;
      }
      L.run[j] = L.slot[j] >= 0 ? ~(uint64_t)0 : 0;
      if (L.slot[j] >= 0) {
        busy++;
        L.base[j] = L.n[j];
        uint64_t room = max_iter - L.n[j];
        batch = room < batch ? room : batch;
      } else {
        L.base[j] = L.n[j] + HYDRA_MANDEL_BATCH + 1; /* an empty lane never counts as alive */
      }
    }
    if (busy == 0) return;
    /* While no lane finishes, batches double (up to HYDRA_MANDEL_BATCH_MAX): pixels inside the set
     * then cost little besides their iterations. A finished lane brings them back to the minimum so
     * its replacement starts soon. */
    want = changed ? HYDRA_MANDEL_BATCH : (2 * want < HYDRA_MANDEL_BATCH_MAX ? 2 * want : HYDRA_MANDEL_BATCH_MAX);
    batch = want < batch ? want : batch;
    /* No lane may pass max_iter, so the batch stops at the nearest cap; lanes that reach it are
     * written out at the next refill. */
    for (uint64_t k = 0; k < batch; k++) {
      for (int j = 0; j < HYDRA_MB; j++) {
        double x2 = L.zx[j] * L.zx[j], y2 = L.zy[j] * L.zy[j];
        L.run[j] &= -(uint64_t)!(x2 + y2 > 4.0);
        L.zy[j] = (L.zx[j] + L.zx[j]) * L.zy[j] + L.cy[j];
        L.zx[j] = x2 - y2 + L.cx[j];
        L.n[j] -= L.run[j];
      }
    }
    prev = batch; /* lanes that escaped in this batch are recognised by n < base + prev */
    if (periodicity) {
      /* Exact cycle detection: z equal bit for bit to an earlier z of the same orbit means the
       * floating-point iteration repeats forever and never escapes. */
      for (int j = 0; j < HYDRA_MB; j++) {
        uint64_t per = (uint64_t)(L.zx[j] == L.sx[j]) & (uint64_t)(L.zy[j] == L.sy[j]) &
                       (uint64_t)(L.n[j] == L.base[j] + prev);
        L.work[j] = per ? L.n[j] : L.work[j];
        L.n[j] = per ? max_iter : L.n[j];
        uint64_t move = L.n[j] >= L.check[j];
        L.sx[j] = move ? L.zx[j] : L.sx[j];
        L.sy[j] = move ? L.zy[j] : L.sy[j];
        L.check[j] = move ? 2 * L.check[j] : L.check[j];
      }
    }
  }
}

/* Counts for rows first, first+step, ... of a (height, width) tile stored row-major in `out`, in two
 * phases. `pending` must hold HYDRA_MANDEL_PENDING entries. */
static void HYDRA_FN(mandel_rows)(uint32_t *out, uint32_t *work, ptrdiff_t height, ptrdiff_t width, double xmin,
                                  double ymax, double dx, double dy, int64_t col0, int64_t row0, uint64_t max_iter,
                                  int shortcuts, ptrdiff_t first, ptrdiff_t step, hydra_pending *pending) {
  ptrdiff_t npending = 0, half = HYDRA_MANDEL_PENDING / 2;
  if (width == 0 || height == 0) return;
  for (ptrdiff_t r = first; r < height; r += step) {
    double cy = ymax - ((double)(row0 + r) + 0.5) * dy;
    for (ptrdiff_t c0 = 0; c0 < width; c0 += half) { /* in pieces that always fit in the buffer */
      if (npending > half) {
        HYDRA_FN(mandel_long)(out, work, pending, npending, max_iter, shortcuts);
        npending = 0;
      }
      npending = HYDRA_FN(mandel_short)(out, work, r * width + c0, width - c0 < half ? width - c0 : half, cy, xmin,
                                        dx, col0 + c0, max_iter, HYDRA_MANDEL_SHORT_CAP, shortcuts, pending,
                                        npending);
    }
  }
  HYDRA_FN(mandel_long)(out, work, pending, npending, max_iter, shortcuts);
}

#undef HYDRA_MB
