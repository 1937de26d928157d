/* stats_page.c: renders /debug/varz and /debug/vars (see stats_page.h).
 * Types follow derper's rendering (tsweb/varz): expvar ints and "counter_"
 * names are counters, "gauge_" names gauges, its func-valued
 * process_start_unix_time and derp_average_queue_duration_ms untyped (no TYPE
 * line); the process_* set is client_golang's process collector. */
#include "server/operations/stats_page.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

const struct hist_def hist_defs[HIST_N] = {
    [HIST_write_frames] = {"derp_buffered_write_frames", "frames per send batch (one sendmsg)", 16,
                           {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 50, 100}, 1},
    [HIST_queue_wait] = {"derpd_queue_wait_seconds",
                         "a packet's time in derpd: received from its sender to written to its receiver",
                         17, {10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
                              250000, 500000, 1000000, 2500000}, 1e-6},
    [HIST_handshake] = {"derpd_handshake_seconds",
                        "accept to established client: TLS, HTTP, DERP handshake, move to the owner shard",
                        13, {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}, 1e-3},
    /* derper's sendMeshUpdates: changes taken per round, rounds per call;
     * here per (shard, watcher) batch and per end-of-turn flush. */
    [HIST_mesh_batch] = {"derp_mesh_update_batch_size", "PeerPresent/PeerGone frames per batch to a watcher",
                         11, {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}, 1},
    [HIST_mesh_loops] = {"derp_mesh_update_loop_count", "batches per flush of a watcher's changes", 8,
                         {0, 1, 2, 5, 10, 20, 50, 100}, 1},
};

/* The per-shard series, {shard="i"}: what shows one shard busier than the
 * rest. X(name, type, help, scalar) */
#define SHARD_SERIES(X)                                                                           \
  X("derpd_shard_connections", "gauge", "open connections on the shard, any state", open_conns)    \
  X("derpd_shard_clients", "gauge", "clients whose key the shard owns", cur_clients)              \
  X("derpd_shard_accepts", "counter", "connections the shard accepted (SO_REUSEPORT's spread)",   \
    tcp_accepts)                                                                                      \
  X("derpd_shard_handoffs", "counter", "connections moved to the shard, their key's owner",       \
    handoffs)                                                                                     \
  X("derpd_shard_packets_received", "counter", "packets received from clients on the shard",     \
    pkts_recv)                                                                                    \
  X("derpd_shard_packets_sent", "counter", "packets written to clients on the shard", pkts_sent) \
  X("derpd_shard_cross_shard_packets", "counter", "packets the shard passed to other shards",    \
    xshard_pkts)                                                                                  \
  X("derpd_shard_send_calls", "counter", "sendmsg operations the shard completed", sends)

static int64_t load(_Atomic int64_t *x) { return atomic_load_explicit(x, memory_order_relaxed); }

static int64_t sum_v(const struct stats_view *v, enum stat_scalar j) {
  int64_t t = 0;
  for (int i = 0; i < v->n; i++) t += load(&v->all[i]->v[j]);
  return t;
}

static int64_t sum_close(const struct stats_view *v, enum close_reason r) {
  int64_t t = 0;
  for (int i = 0; i < v->n; i++) t += load(&v->all[i]->closes[r]);
  return t;
}

static int64_t shard_drops(struct stats *st) {
  return metrics_dropped_kind(&st, 1, DROP_KIND_DISCO) + metrics_dropped_kind(&st, 1, DROP_KIND_OTHER);
}

/* derper keeps one moving average; derpd one per shard: their mean, over the
 * shards that have written packets. */
static double queue_ema_ms(const struct stats_view *v) {
  double t = 0;
  int k = 0;
  for (int i = 0; i < v->n; i++) {
    const struct stats_ops *o = &v->all[i]->ops;
    if (!atomic_load_explicit(&o->queue_ema_n, memory_order_relaxed)) continue;
    union { uint64_t u; double d; } e = {atomic_load_explicit(&o->queue_ms_ema, memory_order_relaxed)};
    t += e.d;
    k++;
  }
  return k ? t / k : 0;
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

#define DERIVED_MAX 40 /* derive() makes at most 31 */

static int derive(const struct stats_view *v, struct derived *d) {
  const struct proc_facts *p = v->proc;
  int64_t disco = metrics_dropped_kind(v->all, v->n, DROP_KIND_DISCO);
  int64_t other = metrics_dropped_kind(v->all, v->n, DROP_KIND_OTHER);
  int64_t up_ms = v->now_mono_ms - v->start->start_mono_ms;
  int n = 0;
#define I(nm, ty, hp, val) (assert(n < DERIVED_MAX), d[n++] = (struct derived){nm, ty, hp, D_INT, (val), 0})
#define F(nm, ty, hp, val) (assert(n < DERIVED_MAX), d[n++] = (struct derived){nm, ty, hp, D_FLOAT, 0, (val)})
  /* derper's own, beside what metrics.c renders. */
  I("derp_packets_dropped_type{type=\"disco\"}", "counter", "packets dropped, by payload type", disco);
  I("derp_packets_dropped_type{type=\"other\"}", "counter", "", other);
  I("derp_sclient_write_timeouts", "counter", "clients cut for not reading (write_timeout)",
    sum_close(v, CLOSE_write_timeout));
  I("derp_unknown_frames", "counter", "unknown frame types skipped", sum_v(v, STAT_unknown_frames));
  I("derp_websocket_accepts", "counter", "WebSocket upgrades accepted", sum_v(v, STAT_ws_upgrades));
  I("derp_current_file_descriptors", "gauge", "open file descriptors", p->open_fds);
  I("derp_memstats_sys0", "gauge", "resident bytes at start (derper: Go runtime Sys at start)",
    v->start->rss0);
  F("derp_average_queue_duration_ms", "", "", queue_ema_ms(v));
  /* derper's bootstrap DNS beside metrics.c's counters: a published name
   * always has addresses, so its misses stay 0 (as in derper). */
  I("bootstrap_dns_published_misses", "counter", "", 0);
  I("bootstrap_dns_queried_domains", "counter", "names asked for at /bootstrap-dns (forgotten past 500)",
    v->bdns_queried);
  /* derpd's: what an operator alerts on before a certificate runs out. */
  if (v->tls) {
    I("derpd_tls_cert_not_after", "gauge",
      "NotAfter of the certificate new connections get, unix seconds (0: none yet)", v->cert_not_after);
    /* derper's, by the TLS version of the request's conn: each request
     * (untyped), and those being served (a DERP conn's whole life); a
     * version is listed once it was seen, as in derper's label maps. */
    int64_t r12 = sum_v(v, STAT_tls_req12), r13 = sum_v(v, STAT_tls_req13);
    const char *rt = "";
    if (r12) I("derper_tls_request_version{version=\"1.2\"}", rt, "", r12);
    if (r13) I("derper_tls_request_version{version=\"1.3\"}", rt, "", r13);
    const char *help = "requests on the TLS port being served, by TLS version";
    if (r12) I("derper_tls_active_version{version=\"1.2\"}", "gauge", help, sum_v(v, STAT_tls_active12));
    if (r13) I("derper_tls_active_version{version=\"1.3\"}", "gauge", r12 ? "" : help, sum_v(v, STAT_tls_active13));
  }
  if (v->acme) {
    I("derpd_acme_certificates{result=\"issued\"}", "counter",
      "-certmode letsencrypt: certificates obtained and installed, and attempts that failed (each retry)",
      v->acme_issued);
    I("derpd_acme_certificates{result=\"failed\"}", "counter", "", v->acme_failed);
  }
  /* derper publishes these only with -rate-config (v1.98+), untyped but
   * for the counter; then derpd's own: what waits now, and how often. */
  if (v->rate_config) {
    I("derp_rate_limit_per_client_bytes_per_second", "", "", (int64_t)v->rate_bps);
    I("derp_rate_limit_per_client_burst_bytes", "", "", (int64_t)v->rate_burst);
    I("derp_rate_limit_per_client_waited", "counter",
      "client frames that found their -rate-config bucket short", sum_v(v, STAT_rl_waited));
    I("derpd_rate_limit_paused_connections", "gauge",
      "clients not read from now: over their -rate-config rate", sum_v(v, STAT_rl_paused));
    I("derpd_rate_limit_pauses", "counter", "times a client's reads stopped for -rate-config",
      sum_v(v, STAT_rl_pauses));
  }
  I("uptime_sec", "counter", "seconds since start", (up_ms + 500) / 1000);
  I("version{version=\"" DERPD_VERSION "\"}", "", "", 1); /* derper's (tsweb), untyped */
  /* derper v1.102+ (tsweb), named as Prometheus' node exporter names it. */
  if (v->start->boot_time) I("node_boot_time_seconds", "", "", v->start->boot_time);
  I("process_start_unix_time", "", "", (int64_t)v->start->start_time);
  I("derpd_started_by_upgrade", "gauge", "1: this process was started by a live upgrade (SIGUSR2) of the one before",
    v->start->by_upgrade ? 1 : 0);
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

/* Prometheus' histogram: cumulative buckets, le in base units, _sum, _count. */
static void put_hist(struct out *o, const struct stats_view *v, enum hist_id id) {
  const struct hist_def *d = &hist_defs[id];
  int64_t b[HIST_BOUNDS_MAX + 1] = {0}, sum = 0, cum = 0;
  for (int i = 0; i < v->n; i++) {
    struct hist *h = &v->all[i]->ops.hist[id];
    for (int k = 0; k <= d->n; k++) b[k] += load(&h->bucket[k]);
    sum += load(&h->sum);
  }
  put(o, "# HELP %s %s\n# TYPE %s histogram\n", d->name, d->help, d->name);
  for (int k = 0; k < d->n; k++) {
    cum += b[k];
    put(o, "%s_bucket{le=\"%g\"} %lld\n", d->name, (double)d->bound[k] * d->scale, (long long)cum);
  }
  cum += b[d->n];
  put(o, "%s_bucket{le=\"+Inf\"} %lld\n", d->name, (long long)cum);
  if (d->scale == 1) put(o, "%s_sum %lld\n", d->name, (long long)sum);
  else put(o, "%s_sum %.9g\n", d->name, (double)sum * d->scale);
  put(o, "%s_count %lld\n", d->name, (long long)cum);
}

static void put_shard_series(struct out *o, const struct stats_view *v) {
#define SERIES(name, type, help, scalar)                                             \
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);                   \
  for (int i = 0; i < v->n; i++)                                                     \
    put(o, "%s{shard=\"%d\"} %lld\n", name, i, (long long)load(&v->all[i]->v[STAT_##scalar]));
  SHARD_SERIES(SERIES)
#undef SERIES
  put(o, "# HELP derpd_shard_packets_dropped packets dropped on the shard, any reason\n"
         "# TYPE derpd_shard_packets_dropped counter\n");
  for (int i = 0; i < v->n; i++)
    put(o, "derpd_shard_packets_dropped{shard=\"%d\"} %lld\n", i, (long long)shard_drops(v->all[i]));
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
  for (int h = 0; h < HIST_N; h++) put_hist(&o, v, (enum hist_id)h);
  put_shard_series(&o, v);
  return o.len;
}
