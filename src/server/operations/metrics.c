/* metrics.c: renders the shards' counters for /debug/varz and /debug/vars.
 * Reads other shards' counters with relaxed loads only (see metrics.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/operations/metrics.h"

#define NAME_STR(name, str, ...) str,
static const char *const close_names[] = {"none", STATS_CLOSES(NAME_STR)};
static const char *const drop_names[] = {STATS_DROPS(NAME_STR)};
#define SCALAR_NAME(name, prom, ...) prom,
static const char *const scalar_names[] = {STATS_SCALARS(SCALAR_NAME)};
#define SCALAR_TYPE(name, prom, type, ...) type,
static const char *const scalar_types[] = {STATS_SCALARS(SCALAR_TYPE)};
#define SCALAR_HELP(name, prom, type, help) help,
static const char *const scalar_help[] = {STATS_SCALARS(SCALAR_HELP)};

const char *close_reason_name(enum close_reason r) {
  return (unsigned)r < CLOSE_NREASONS ? close_names[r] : "?";
}

struct sum {
  int64_t v[STAT_NSCALARS], drops[DROP_NREASONS], closes[CLOSE_NREASONS], dropped;
};

static void sum_all(struct sum *s, struct stats *const *all, int n) {
  memset(s, 0, sizeof *s);
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < STAT_NSCALARS; j++)
      s->v[j] += atomic_load_explicit(&all[i]->v[j], memory_order_relaxed);
    for (int j = 0; j < DROP_NREASONS; j++)
      s->drops[j] += atomic_load_explicit(&all[i]->drops[j], memory_order_relaxed);
    for (int j = 0; j < CLOSE_NREASONS; j++)
      s->closes[j] += atomic_load_explicit(&all[i]->closes[j], memory_order_relaxed);
  }
  for (int j = 0; j < DROP_NREASONS; j++) s->dropped += s->drops[j];
}

void put(struct out *o, const char *fmt, ...) {
  if (o->len >= o->cap) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
  va_end(ap);
  if (n > 0) o->len = o->len + (size_t)n < o->cap ? o->len + (size_t)n : o->cap;
}

/* "name{label}" -> base "name" for the TYPE line; labelled kinds share one. */
static void base_name(const char *full, char *out, size_t cap) {
  size_t i = 0;
  while (full[i] && full[i] != '{' && i + 1 < cap) { out[i] = full[i]; i++; }
  out[i] = 0;
}

size_t metrics_render_varz(char *buf, size_t cap, struct stats *const *all, int n) {
  struct sum s;
  sum_all(&s, all, n);
  struct out o = {buf, cap, 0};
  char prev[96] = "";
  for (int j = 0; j < STAT_NSCALARS; j++) {
    char base[96];
    if (!scalar_names[j][0]) continue; /* internal */
    base_name(scalar_names[j], base, sizeof base);
    if (strcmp(base, prev) != 0) {
      if (scalar_help[j][0]) put(&o, "# HELP %s %s\n", base, scalar_help[j]);
      put(&o, "# TYPE %s %s\n", base, scalar_types[j]);
      memcpy(prev, base, sizeof prev);
    }
    put(&o, "%s %lld\n", scalar_names[j], (long long)s.v[j]);
  }
  put(&o, "# TYPE derp_packets_dropped counter\nderp_packets_dropped %lld\n", (long long)s.dropped);
  put(&o, "# TYPE derp_packets_dropped_reason counter\n");
  for (int j = 0; j < DROP_NREASONS; j++)
    put(&o, "derp_packets_dropped_reason{reason=\"%s\"} %lld\n", drop_names[j], (long long)s.drops[j]);
  put(&o, "# HELP derpd_conn_closed connections closed, by reason\n# TYPE derpd_conn_closed counter\n");
  for (int j = 1; j < CLOSE_NREASONS; j++)
    put(&o, "derpd_conn_closed{reason=\"%s\"} %lld\n", close_names[j], (long long)s.closes[j]);
  put(&o, "# TYPE derpd_shards gauge\nderpd_shards %d\n", n);
  return o.len;
}

size_t metrics_render_vars(char *buf, size_t cap, struct stats *const *all, int n) {
  struct sum s;
  sum_all(&s, all, n);
  struct out o = {buf, cap, 0};
  put(&o, "{\n");
  for (int j = 0; j < STAT_NSCALARS; j++) {
    char base[96];
    if (!scalar_names[j][0]) continue; /* internal */
    base_name(scalar_names[j], base, sizeof base);
    if (strchr(scalar_names[j], '{')) { /* derp_packets_received_kind{kind="x"} */
      const char *k = strchr(scalar_names[j], '"') + 1;
      put(&o, "  \"%s_%.*s\": %lld,\n", base, (int)(strchr(k, '"') - k), k, (long long)s.v[j]);
    } else {
      put(&o, "  \"%s\": %lld,\n", base, (long long)s.v[j]);
    }
  }
  put(&o, "  \"derp_packets_dropped\": %lld,\n  \"derp_packets_dropped_reason\": {", (long long)s.dropped);
  for (int j = 0; j < DROP_NREASONS; j++)
    put(&o, "%s\"%s\": %lld", j ? ", " : "", drop_names[j], (long long)s.drops[j]);
  put(&o, "},\n  \"derpd_conn_closed\": {");
  for (int j = 1; j < CLOSE_NREASONS; j++)
    put(&o, "%s\"%s\": %lld", j > 1 ? ", " : "", close_names[j], (long long)s.closes[j]);
  put(&o, "},\n  \"derpd_shards\": %d\n}\n", n);
  return o.len;
}
