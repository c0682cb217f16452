/* The kernels' inner loops without Python, for checking other builds against this machine's.
 *
 * Reads cases from stdin, one per line, and prints one result line per case and variant this CPU
 * runs (tests/integration/test_arm64_kernels.py cross-compiles it for aarch64 and runs it under
 * qemu-user; it also builds natively):
 *
 *   pi GENERATOR SEED START COUNT        ->  pi VARIANT GENERATOR SEED START COUNT HITS
 *   mandel XMIN YMAX DX DY COL0 ROW0 W H MAX_ITER SHORTCUTS
 *                                        ->  mandel VARIANT FNV1A64 SUM
 *
 * GENERATOR is 0 (splitmix64) or 1 (philox4x32-10); doubles are C99 hex floats (Python's float.hex),
 * so they cross exactly. FNV1A64 hashes the counts row by row as little-endian uint32.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hydra_kernels.h"

static uint64_t fnv1a(const uint32_t *v, size_t n) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (size_t i = 0; i < n; i++)
    for (int b = 0; b < 4; b++) {
      h ^= (v[i] >> (8 * b)) & 0xFF;
      h *= 0x100000001B3ULL;
    }
  return h;
}

int main(void) {
  char line[1024], kind[16];
  hydra_pending *pending = malloc(HYDRA_MANDEL_PENDING * sizeof(hydra_pending));
  if (!pending) return 2;
  while (fgets(line, sizeof line, stdin)) {
    if (sscanf(line, "%15s", kind) != 1) continue;
    for (int v = 0; v < HYDRA_NVARIANTS; v++) {
      if (!hydra_variant_supported(v)) continue;
      if (strcmp(kind, "pi") == 0) {
        int gen;
        uint64_t seed, start, count;
        if (sscanf(line, "pi %d %" SCNu64 " %" SCNu64 " %" SCNu64, &gen, &seed, &start, &count) != 4) return 3;
        int64_t hits = gen == 1 ? hydra_pi_philox(v, seed, start, count)
                                : hydra_pi_splitmix(v, hydra_splitmix_mix(seed * HYDRA_GAMMA + HYDRA_GAMMA), start, count);
        printf("pi %s %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRId64 "\n", hydra_variant_names[v], gen, seed, start,
               count, hits);
      } else if (strcmp(kind, "mandel") == 0) {
        double xmin, ymax, dx, dy;
        long long col0, row0, w, h, max_iter;
        int shortcuts;
        char a[64], b[64], c[64], d[64];
        if (sscanf(line, "mandel %63s %63s %63s %63s %lld %lld %lld %lld %lld %d", a, b, c, d, &col0, &row0, &w, &h,
                   &max_iter, &shortcuts) != 10)
          return 4;
        xmin = strtod(a, NULL);
        ymax = strtod(b, NULL);
        dx = strtod(c, NULL);
        dy = strtod(d, NULL);
        uint32_t *out = malloc((size_t)(w * h) * sizeof(uint32_t));
        if (!out) return 5;
        hydra_mandel_rows(v, out, NULL, h, w, xmin, ymax, dx, dy, col0, row0, (uint64_t)max_iter, shortcuts, 0, 1,
                          pending);
        uint64_t sum = 0;
        for (long long i = 0; i < w * h; i++) sum += out[i];
        printf("mandel %s %016" PRIx64 " %" PRIu64 "\n", hydra_variant_names[v], fnv1a(out, (size_t)(w * h)), sum);
        free(out);
      } else {
        return 6;
      }
    }
  }
  free(pending);
  return 0;
}
