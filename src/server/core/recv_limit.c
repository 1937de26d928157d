/* recv_limit.c: -rate-config's setting, file and bucket (recv_limit.h). */
#include "server/core/recv_limit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#define RATE_FILE_MAX 65536 /* the file holds two numbers; more is a mistake */
#define NS_MAX 100000000000000000LL /* 10^17 ns, about 3 years: no overflow below */

struct rate_cfg rate_cfg_applied(struct rate_cfg c) {
  if (c.bps == 0) return (struct rate_cfg){0, 0};
  if (c.burst < RECV_LIMIT_MIN_BURST) c.burst = RECV_LIMIT_MIN_BURST;
  return c;
}

/* encoding/json into a uint64: an integer literal in range, or null (left
 * as it was). */
static int take_u64(json_t *v, const char *name, uint64_t *out, char *err, size_t errcap) {
  if (json_is_null(v)) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < 0) {
    snprintf(err, errcap, "error parsing rate config: %s: want an unsigned integer", name);
    return -1;
  }
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

int rate_cfg_load(const char *path, struct rate_cfg *out, char *err, size_t errcap) {
  static char buf[RATE_FILE_MAX + 1]; /* the main thread only (start, SIGHUP) */
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errcap, "error reading rate config: %s: %s", path, strerror(errno));
    return -1;
  }
  size_t n = fread(buf, 1, sizeof buf, f);
  bool bad = ferror(f);
  fclose(f);
  if (bad || n > RATE_FILE_MAX) {
    snprintf(err, errcap, "error reading rate config: %s: %s", path,
             bad ? "read failed" : "larger than 64 KiB");
    return -1;
  }
  json_error_t je;
  json_t *root = json_loadb(buf, n, JSON_DECODE_ANY, &je);
  if (!root) {
    snprintf(err, errcap, "error parsing rate config: %s (line %d, column %d)", je.text, je.line,
             je.column);
    return -1;
  }
  struct rate_cfg c = {0, 0};
  int rc = 0;
  if (json_is_object(root)) {
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
      if (strcasecmp(k, "PerClientRateLimitBytesPerSec") == 0)
        rc |= take_u64(v, "PerClientRateLimitBytesPerSec", &c.bps, err, errcap);
      else if (strcasecmp(k, "PerClientRateBurstBytes") == 0)
        rc |= take_u64(v, "PerClientRateBurstBytes", &c.burst, err, errcap);
      if (rc) break;
    }
  } else if (!json_is_null(root)) { /* null decodes to the zero config, as in Go */
    snprintf(err, errcap, "error parsing rate config: want a JSON object");
    rc = -1;
  }
  json_decref(root);
  if (rc) return -1;
  *out = c;
  return 0;
}

void recv_limit_publish(struct recv_limit_shared *g, struct rate_cfg c) {
  uint32_t s = atomic_load_explicit(&g->seq, memory_order_relaxed);
  atomic_store_explicit(&g->seq, s + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&g->bps, c.bps, memory_order_relaxed);
  atomic_store_explicit(&g->burst, c.burst, memory_order_relaxed);
  atomic_store_explicit(&g->seq, s + 2, memory_order_release);
}

bool recv_limit_read(struct recv_limit_shared *g, struct rate_cfg *c, uint32_t *gen) {
  uint32_t s1 = atomic_load_explicit(&g->seq, memory_order_acquire);
  if (s1 & 1) return false;
  struct rate_cfg r = {atomic_load_explicit(&g->bps, memory_order_relaxed),
                       atomic_load_explicit(&g->burst, memory_order_relaxed)};
  atomic_thread_fence(memory_order_acquire);
  if (atomic_load_explicit(&g->seq, memory_order_relaxed) != s1) return false;
  *c = r;
  *gen = s1;
  return true;
}

static int64_t worth_ns(uint64_t bytes, uint64_t bps) {
  double ns = (double)bytes * 1e9 / (double)bps;
  return ns > (double)NS_MAX ? NS_MAX : (int64_t)ns;
}

int64_t recv_bucket_take(struct recv_bucket *b, struct rate_cfg c, int64_t now_ns, uint64_t n) {
  if (n > RECV_LIMIT_MIN_BURST) n = RECV_LIMIT_MIN_BURST; /* derper clamps so, too */
  int64_t full = now_ns - worth_ns(c.burst, c.bps);
  if (b->tat_ns < full) b->tat_ns = full;
  b->tat_ns += worth_ns(n, c.bps);
  return b->tat_ns > now_ns ? b->tat_ns - now_ns : 0;
}
