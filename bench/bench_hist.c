/* bench_hist.c: the latency histogram and the clock.
 *
 * Owns the bucket layout declared in bench.h: values below 128 are exact;
 * above, each power of two is split into 64 equal sub-buckets, so a recorded
 * value is off by less than 1/64 of itself. Recording is an index computation
 * and one increment: cheap enough for every packet, and no allocation. */
#include "bench.h"

#include <errno.h>
#include <string.h>
#include <time.h>

int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_ns(int64_t ns) {
  if (ns <= 0) return;
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

void hist_init(struct hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

static unsigned hist_index(uint64_t v) {
  if (v < 2 * HIST_SUB) return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned e = msb - 6; /* v >> e lands in [64, 128) */
  return 2 * HIST_SUB + (e - 1) * HIST_SUB + (unsigned)((v >> e) - HIST_SUB);
}

/* Highest value that maps to bucket i: percentiles err on the high side. */
static uint64_t hist_upper(unsigned i) {
  if (i < 2 * HIST_SUB) return i;
  unsigned e = (i - 2 * HIST_SUB) / HIST_SUB + 1;
  uint64_t m = (i - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
  return ((m + 1) << e) - 1;
}

void hist_add(struct hist *h, uint64_t v) {
  h->n[hist_index(v)]++;
  h->count++;
  h->sum += (double)v;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++) dst->n[i] += src->n[i];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t hist_quantile(const struct hist *h, double q) {
  if (h->count == 0) return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
  if (rank < 1) rank = 1;
  if (rank > h->count) rank = h->count;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->n[i];
    if (seen >= rank) {
      uint64_t u = hist_upper(i);
      return u > h->max ? h->max : u;
    }
  }
  return h->max;
}
