/* metrics.c: renders the shards' counters for /debug/varz (expvar.c makes
 * /debug/vars from that page).
 * Reads other shards' counters with relaxed loads only (see metrics.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/operations/metrics.h"

#define NAME_STR(name, str, ...) str,
static const char *const close_names[] = {"none", STATS_CLOSES(NAME_STR)};
static const char *const drop_names[] = {STATS_DROPS(NAME_STR)};
static const char *const kind_names[DROP_NKINDS] = {[DROP_KIND_OTHER] = "other", [DROP_KIND_DISCO] = "disco"};
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
  int64_t v[STAT_NSCALARS], closes[CLOSE_NREASONS];
  int64_t drops[DROP_NREASONS][DROP_NKINDS], drop_bytes[DROP_NREASONS][DROP_NKINDS];
  int64_t by_reason[DROP_NREASONS];
};

static void sum_all(struct sum *s, struct stats *const *all, int n) {
  memset(s, 0, sizeof *s);
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < STAT_NSCALARS; j++)
      s->v[j] += atomic_load_explicit(&all[i]->v[j], memory_order_relaxed);
    for (int j = 0; j < DROP_NREASONS; j++)
      for (int k = 0; k < DROP_NKINDS; k++) {
        s->drops[j][k] += atomic_load_explicit(&all[i]->drops[j][k], memory_order_relaxed);
        s->drop_bytes[j][k] += atomic_load_explicit(&all[i]->drop_bytes[j][k], memory_order_relaxed);
      }
    for (int j = 0; j < CLOSE_NREASONS; j++)
      s->closes[j] += atomic_load_explicit(&all[i]->closes[j], memory_order_relaxed);
  }
  for (int j = 0; j < DROP_NREASONS; j++)
    for (int k = 0; k < DROP_NKINDS; k++) s->by_reason[j] += s->drops[j][k];
}

int64_t metrics_dropped_kind(struct stats *const *all, int n, enum drop_kind k) {
  int64_t sum = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < DROP_NREASONS; j++) sum += atomic_load_explicit(&all[i]->drops[j][k], memory_order_relaxed);
  return sum;
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

/* derp_<what>_dropped{reason,kind}, as derper v1.80+ renders it. */
static void put_drops(struct out *o, const char *what, const int64_t cell[DROP_NREASONS][DROP_NKINDS]) {
  put(o, "# TYPE derp_%s_dropped counter\n# HELP derp_%s_dropped DERP %s dropped by reason and by kind\n",
      what, what, what);
  for (int j = 0; j < DROP_NREASONS; j++)
    for (int k = DROP_NKINDS - 1; k >= 0; k--)
      put(o, "derp_%s_dropped{reason=\"%s\",kind=\"%s\"} %lld\n", what, drop_names[j], kind_names[k],
          (long long)cell[j][k]);
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
  /* derper v1.80+'s families (v1.78's unlabelled total had the same name:
   * sum() of these is that total), then v1.78's by reason. */
  put_drops(&o, "packets", s.drops);
  put_drops(&o, "bytes", s.drop_bytes);
  put(&o, "# TYPE derp_packets_dropped_reason counter\n");
  for (int j = 0; j < DROP_NREASONS; j++)
    put(&o, "derp_packets_dropped_reason{reason=\"%s\"} %lld\n", drop_names[j], (long long)s.by_reason[j]);
  put(&o, "# HELP derpd_conn_closed connections closed, by reason\n# TYPE derpd_conn_closed counter\n");
  for (int j = 1; j < CLOSE_NREASONS; j++)
    put(&o, "derpd_conn_closed{reason=\"%s\"} %lld\n", close_names[j], (long long)s.closes[j]);
  put(&o, "# TYPE derpd_shards gauge\nderpd_shards %d\n", n);
  return o.len;
}
