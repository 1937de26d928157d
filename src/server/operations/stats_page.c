/* stats_page.c: renders /debug/varz and /debug/vars (see stats_page.h).
 * Types follow derper's rendering (tsweb/varz): expvar ints and "counter_"
 * names are counters, "gauge_" names gauges, its func-valued
 * process_start_unix_time and derp_average_queue_duration_ms untyped (no TYPE
 * line); the process_* set is client_golang's process collector. */
#include "server/operations/stats_page.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int64_t sum_v(const struct stats_view *v, enum stat_scalar j) {
  int64_t t = 0;
  for (int i = 0; i < v->n; i++) t += atomic_load_explicit(&v->all[i]->v[j], memory_order_relaxed);
  return t;
}

static int64_t sum_close(const struct stats_view *v, enum close_reason r) {
  int64_t t = 0;
  for (int i = 0; i < v->n; i++) t += atomic_load_explicit(&v->all[i]->closes[r], memory_order_relaxed);
  return t;
}

static int64_t sum_drops(const struct stats_view *v) {
  int64_t t = 0;
  for (int i = 0; i < v->n; i++)
    for (int j = 0; j < DROP_NREASONS; j++)
      t += atomic_load_explicit(&v->all[i]->drops[j], memory_order_relaxed);
  return t;
}

/* Values derived from the counters and the process facts, shared by both
 * pages (one name list, two renderings). */
enum { D_INT, D_FLOAT };
struct derived {
  const char *name, *type, *help; /* type "" = untyped (no TYPE line) */
  int kind;
  int64_t i;
  double f;
};

#define DERIVED_MAX 32

static int derive(const struct stats_view *v, struct derived *d) {
  const struct proc_facts *p = v->proc;
  int64_t dropped = sum_drops(v), disco = sum_v(v, STAT_drops_disco);
  int64_t up_ms = v->now_mono_ms - v->start->start_mono_ms;
  int n = 0;
#define I(nm, ty, hp, val) d[n++] = (struct derived){nm, ty, hp, D_INT, (val), 0}
#define F(nm, ty, hp, val) d[n++] = (struct derived){nm, ty, hp, D_FLOAT, 0, (val)}
  /* derper's own, beside what metrics.c renders. */
  I("derp_packets_dropped_type{type=\"disco\"}", "counter", "packets dropped, by payload type", disco);
  I("derp_packets_dropped_type{type=\"other\"}", "counter", "", dropped - disco);
  I("derp_sclient_write_timeouts", "counter", "clients cut for not reading (write_timeout)",
    sum_close(v, CLOSE_write_timeout));
  I("derp_unknown_frames", "counter", "unknown frame types skipped", sum_v(v, STAT_unknown_frames));
  I("derp_websocket_accepts", "counter", "WebSocket upgrades accepted", sum_v(v, STAT_ws_upgrades));
  I("derp_current_file_descriptors", "gauge", "open file descriptors", p->open_fds);
  I("derp_memstats_sys0", "gauge", "resident bytes at start (derper: Go runtime Sys at start)",
    v->start->rss0);
  /* derper's bootstrap DNS: derpd resolves no names, so only requests move. */
  I("bootstrap_dns_published_hits", "counter", "", 0);
  I("bootstrap_dns_published_misses", "counter", "", 0);
  I("bootstrap_dns_unpublished_hits", "counter", "", 0);
  I("bootstrap_dns_unpublished_misses", "counter", "", 0);
  I("bootstrap_dns_unpublished_percent_misses", "counter", "", 0);
  I("bootstrap_dns_queried_domains", "counter", "", 0);
  I("uptime_sec", "counter", "seconds since start", (up_ms + 500) / 1000);
  I("process_start_unix_time", "", "", (int64_t)v->start->start_time);
  /* A Prometheus client library's process collector. */
  F("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
    p->cpu_seconds);
  I("process_max_fds", "gauge", "Maximum number of open file descriptors.", p->max_fds);
  I("process_open_fds", "gauge", "Number of open file descriptors.", p->open_fds);
  I("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p->rss);
  F("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
    v->start->start_time);
  I("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p->vsize);
  F("process_virtual_memory_max_bytes", "gauge", "Maximum amount of virtual memory available in bytes.",
    p->vsize_max);
#undef I
#undef F
  return n;
}

/* "name{label}" -> length of "name". */
static size_t base_len(const char *s) {
  const char *b = strchr(s, '{');
  return b ? (size_t)(b - s) : strlen(s);
}

static void put_value(struct out *o, const struct derived *d) {
  if (d->kind == D_INT) put(o, "%lld", (long long)d->i);
  else if (d->f >= 1e15) put(o, "%.17g", d->f); /* RLIMIT_AS unlimited: 2^64 - 1 */
  else put(o, "%.6f", d->f);
}

size_t stats_page_cap(int nshards) {
  return 96 * 1024 + (size_t)(nshards > 0 ? nshards : 1) * 1024;
}

size_t stats_page_varz(char *buf, size_t cap, const struct stats_view *v) {
  struct out o = {buf, cap, metrics_render_varz(buf, cap, v->all, v->n)};
  struct derived d[DERIVED_MAX];
  int nd = derive(v, d);
  for (int k = 0; k < nd; k++) {
    size_t bl = base_len(d[k].name);
    bool first = k == 0 || base_len(d[k - 1].name) != bl || strncmp(d[k - 1].name, d[k].name, bl) != 0;
    if (first && d[k].help[0]) put(&o, "# HELP %.*s %s\n", (int)bl, d[k].name, d[k].help);
    if (first && d[k].type[0]) put(&o, "# TYPE %.*s %s\n", (int)bl, d[k].name, d[k].type);
    put(&o, "%s ", d[k].name);
    put_value(&o, &d[k]);
    put(&o, "\n");
  }
  return o.len;
}

size_t stats_page_vars(char *buf, size_t cap, const struct stats_view *v) {
  size_t n = metrics_render_vars(buf, cap, v->all, v->n);
  /* metrics.c closes its object with "\n}\n": open it again for ours. */
  if (n < 3 || memcmp(buf + n - 3, "\n}\n", 3) != 0) return n;
  struct out o = {buf, cap, n - 3};
  struct derived d[DERIVED_MAX];
  int nd = derive(v, d);
  for (int k = 0; k < nd; k++) {
    const char *lb = strchr(d[k].name, '"'); /* a label value joins the name: _disco */
    if (lb) put(&o, ",\n  \"%.*s_%.*s\": ", (int)base_len(d[k].name), d[k].name,
                (int)(strchr(lb + 1, '"') - lb - 1), lb + 1);
    else put(&o, ",\n  \"%s\": ", d[k].name);
    put_value(&o, &d[k]);
  }
  put(&o, "\n}\n");
  return o.len;
}
