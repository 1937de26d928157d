/* bench_relay_run.c: the relay mode's main thread (bench_relay.h has the
 * design): the clients' and workers' set-up, the phase clock (route sync,
 * warm-up, measurement, drain, stop), --report-every progress, and the
 * totals bench_report.c prints. */
#include "bench_relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

void relay_fail(struct relay *r, const char *fmt, int idx, const char *why) {
  pthread_mutex_lock(&r->err_mu);
  if (!r->error[0]) snprintf(r->error, sizeof r->error, fmt, idx, why);
  pthread_mutex_unlock(&r->err_mu);
  atomic_store(&r->failed, true);
  atomic_store(&r->phase, PH_STOP);
}

static int unsynced(struct relay *r) {
  int n = 0;
  for (int t = 0; t < r->cfg->clients; t++) {
    uint64_t want = r->hubs & ~(1ull << r->server[t]);
    n += (atomic_load_explicit(&r->heard[t], memory_order_relaxed) & want) != want;
  }
  return n;
}

/* ---- set-up of the relay state ---- */

static int dest_of(const struct bench_cfg *cfg, int i) {
  switch (cfg->topo) {
  case TOPO_PAIRS: return (i % 2 == 0 && i + 1 < cfg->clients) ? i + 1 : -2;
  case TOPO_FANIN: return i == 0 ? -2 : 0;
  default: return -1;
  }
}

/* Pairs keep both ends on one thread, so threads are symmetric. */
static int owner_of(const struct bench_cfg *cfg, int i) {
  return cfg->topo == TOPO_PAIRS ? (i / 2) % cfg->threads : i % cfg->threads;
}

static int init_client(struct relay *r, int i) {
  const struct bench_cfg *cfg = r->cfg;
  struct client *c = &r->clients[i];
  struct worker *w = &r->w[owner_of(cfg, i)];
  c->fd = r->peers[i].fd;
  c->ssl = r->peers[i].ssl;
  if (c->ssl) SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  c->idx = i;
  c->w = w;
  derp_frame_reader_init(&c->rd, DERP_FROM_SERVER);
  c->ws = cfg->websocket;
  if (c->ws) ws_decoder_init(&c->wsd, false);
  int d = dest_of(cfg, i);
  c->sender = d != -2;
  c->dst = d;
  w->cl[w->ncl++] = c;
  if (c->sender) w->senders[w->nsenders++] = c;
  if (c->sender && cfg->pps <= 0) {
    c->slots = calloc(cfg->window, sizeof *c->slots);
    c->free_slots = malloc(cfg->window * sizeof *c->free_slots);
    if (!c->slots || !c->free_slots) return -1;
    for (uint32_t s = 0; s < cfg->window; s++)
      c->free_slots[c->nfree++] = (uint16_t)(cfg->window - 1 - s);
    relay_mark_ready(c);
  }
  /* Frames that came with ServerInfo (TLS detach hands them over). */
  /* Over WebSocket these bytes are DERP already (the client unwrapped them),
   * and the server's message that carried ServerInfo ended with it. */
  if (r->peers[i].npending)
    relay_parse_derp(c, r->peers[i].pending, r->peers[i].npending, bench_now_ns());
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  return epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Who is on which server, and each server's hub (route sync). */
static int init_servers(struct relay *r) {
  const struct bench_cfg *cfg = r->cfg;
  r->server = calloc((size_t)cfg->clients, sizeof *r->server);
  r->heard = calloc((size_t)cfg->clients, sizeof *r->heard);
  if (!r->server || !r->heard) return -1;
  for (int s = 0; s < BENCH_MAX_SERVERS; s++) r->hub[s] = -1;
  for (int i = 0; i < cfg->clients; i++) {
    int s = r->server[i] = bench_server_of(cfg, i);
    if (r->hub[s] < 0) r->hub[s] = i;
    r->hubs |= 1ull << s;
  }
  return 0;
}

static int init_workers(struct relay *r) {
  const struct bench_cfg *cfg = r->cfg;
  int n = cfg->clients;
  if (init_servers(r) < 0) return -1;
  for (int t = 0; t < r->nw; t++) {
    struct worker *w = &r->w[t];
    w->id = t;
    w->r = r;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->cl = calloc((size_t)n, sizeof *w->cl);
    w->senders = calloc((size_t)n, sizeof *w->senders);
    w->dirty = calloc((size_t)n, sizeof *w->dirty);
    w->ready = calloc((size_t)n, sizeof *w->ready);
    w->rbuf = malloc(RBUF_CAP);
    w->rng = cfg->seed * 0x9E3779B97F4A7C15ull + (uint64_t)t + 1;
    hist_init(&w->lat);
    hist_init(&w->ilat);
    hist_init(&w->isnap);
    if (w->ep < 0 || !w->cl || !w->senders || !w->dirty || !w->ready || !w->rbuf) return -1;
  }
  for (int i = 0; i < n; i++)
    if (init_client(r, i) < 0) return -1;
  int total_senders = 0;
  for (int t = 0; t < r->nw; t++) total_senders += r->w[t].nsenders;
  for (int t = 0; t < r->nw; t++)
    r->w[t].rate = total_senders ? cfg->pps * r->w[t].nsenders / total_senders : 0;
  return 0;
}

static void free_relay(struct relay *r) {
  for (int i = 0; r->clients && i < r->cfg->clients; i++) {
    derp_frame_reader_reset(&r->clients[i].rd);
    free(r->clients[i].out);
    free(r->clients[i].slots);
    free(r->clients[i].free_slots);
  }
  for (int t = 0; r->w && t < r->nw; t++) {
    struct worker *w = &r->w[t];
    if (w->ep > 0) close(w->ep);
    free(w->cl);
    free(w->senders);
    free(w->dirty);
    free(w->ready);
    free(w->rbuf);
  }
  free(r->w);
  free(r->clients);
  free(r->server);
  free(r->heard);
}

/* ---- the main thread: phases, progress, totals ---- */

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

#define SUM(r, field) sum_ctr(r, offsetof(struct worker, field))
static uint64_t sum_ctr(struct relay *r, size_t off) {
  uint64_t s = 0;
  for (int t = 0; t < r->nw; t++)
    s += atomic_load_explicit((_Atomic uint64_t *)((char *)&r->w[t] + off), memory_order_relaxed);
  return s;
}

static bool all_inflight_drained(struct relay *r) {
  for (int t = 0; t < r->nw; t++)
    if (!atomic_load(&r->w[t].drained_inflight)) return false;
  return true;
}

/* --report-every: when the next interval report is due, and what the last one saw. */
struct interval_clock {
  int64_t start, last, next;
  uint64_t last_rx;
  struct hist lat;
};

/* One interval report: a new epoch, then each worker's snapshot once it has
 * taken it (workers look at least every IDLE_WAIT_NS; a worker that does not
 * answer within 1 s is left out of this interval's histogram). */
static void report_interval(struct relay *r, struct interval_clock *ic, const char *phase) {
  uint64_t e = atomic_fetch_add(&r->epoch, 1) + 1;
  hist_init(&ic->lat);
  int64_t give_up = bench_now_ns() + 1000000000, stall = 0;
  for (int t = 0; t < r->nw; t++) {
    while (atomic_load_explicit(&r->w[t].snap_epoch, memory_order_acquire) != e &&
           bench_now_ns() < give_up && !atomic_load(&r->failed))
      bench_sleep_ns(1000000);
    if (atomic_load_explicit(&r->w[t].snap_epoch, memory_order_acquire) == e) {
      hist_merge(&ic->lat, &r->w[t].isnap);
      if (r->w[t].isnap_stall > stall) stall = r->w[t].isnap_stall;
    } else {
      stall = bench_now_ns() - ic->last; /* it did not answer at all */
    }
  }
  int64_t now = bench_now_ns();
  uint64_t rx = SUM(r, rx_all);
  struct relay_interval iv = {.phase = phase, .t_s = (double)(now - ic->start) / 1e9,
                              .interval_s = (double)(now - ic->last) / 1e9,
                              .rx = rx - ic->last_rx, .sent = SUM(r, sent),
                              .delivered = SUM(r, delivered), .skipped = SUM(r, skipped),
                              .timeouts = SUM(r, timeouts), .bad = SUM(r, bad),
                              .peer_gone = SUM(r, peer_gone), .lat = &ic->lat,
                              .stall_s = (double)stall / 1e9};
  relay_interval_report(r->cfg, &iv);
  ic->last = now;
  ic->last_rx = rx;
}

/* Sleep until `until`, printing a progress line each second (and an interval
 * report when one is due). false = stop early. */
static bool run_phase(struct relay *r, const char *name, int64_t start, int64_t until,
                      int64_t *next_print, uint64_t *last_rx, uint64_t *last_bytes,
                      struct interval_clock *ic) {
  while (bench_now_ns() < until) {
    if (atomic_load(&r->failed) || atomic_load(&bench_interrupted)) return false;
    bench_sleep_ns(until - bench_now_ns() < 20000000 ? until - bench_now_ns() : 20000000);
    int64_t now = bench_now_ns();
    if (r->cfg->report_every_ns && now >= ic->next) {
      report_interval(r, ic, name);
      ic->next += r->cfg->report_every_ns;
    }
    if (now < *next_print) continue;
    *next_print += 1000000000;
    uint64_t rx = SUM(r, rx_all), bytes = SUM(r, rx_bytes_all);
    uint64_t sent = SUM(r, sent), got = SUM(r, delivered);
    if (!r->cfg->quiet)
      relay_progress(r->cfg, name, (double)(now - start) / 1e9, rx - *last_rx, bytes - *last_bytes,
                     sent > got ? sent - got : 0, SUM(r, timeouts));
    *last_rx = rx;
    *last_bytes = bytes;
  }
  return true;
}

/* Drain: no new packets; wait until every measured packet is in (and, closed
 * loop, every window is empty) or the drain time is up. */
static void drain(struct relay *r) {
  int64_t end = bench_now_ns() + r->cfg->drain_ns;
  while (bench_now_ns() < end && !atomic_load(&r->failed) && !atomic_load(&bench_interrupted)) {
    bool all_in = SUM(r, delivered) >= SUM(r, sent);
    if (all_in && (r->cfg->pps > 0 || all_inflight_drained(r))) break;
    bench_sleep_ns(10000000);
  }
}

/* Route sync: until every client has heard from every other server with
 * clients; then warm-up. false = failed (timed out) or interrupted. */
static bool sync_routes(struct relay *r, struct relay_totals *t) {
  int64_t t0 = bench_now_ns(), next_print = t0 + 1000000000;
  t->sync_s = -1; /* not synced */
  for (int left; (left = unsynced(r)) > 0;) {
    if (atomic_load(&r->failed) || atomic_load(&bench_interrupted)) return false;
    int64_t now = bench_now_ns();
    if (now - t0 >= SYNC_TIMEOUT_NS) {
      relay_fail(r, "route sync: %d clients %s", left,
           "still not reached from every other server after 10 s (are the servers meshed?)");
      return false;
    }
    if (now >= next_print) {
      next_print += 1000000000;
      if (!r->cfg->quiet)
        fprintf(stderr, "route sync: %d of %d clients reached from every other server\n",
                r->cfg->clients - left, r->cfg->clients);
    }
    bench_sleep_ns(2000000);
  }
  t->sync_s = (double)(bench_now_ns() - t0) / 1e9;
  atomic_store_explicit(&r->phase, PH_WARMUP, memory_order_release);
  return true;
}

static void clock_phases(struct relay *r, struct relay_totals *t) {
  const struct bench_cfg *cfg = r->cfg;
  if (atomic_load(&r->phase) == PH_SYNC && !sync_routes(r, t)) return;
  int64_t start = bench_now_ns(), next_print = start + 1000000000;
  uint64_t last_rx = 0, last_bytes = 0;
  /* Static: the histogram is 30 KiB, and there is one main thread. */
  static struct interval_clock ic;
  ic = (struct interval_clock){.start = start, .last = start, .next = start + cfg->report_every_ns};
  if (!run_phase(r, "warmup", start, start + cfg->warmup_ns, &next_print, &last_rx, &last_bytes,
                 &ic))
    return;
  servers_sample(cfg, &t->s0);
  double cpu0 = self_cpu_s();
  int64_t m0 = bench_now_ns();
  atomic_store_explicit(&r->phase, PH_MEASURE, memory_order_release);
  bool ok = run_phase(r, "measure", start, m0 + cfg->duration_ns, &next_print, &last_rx,
                      &last_bytes, &ic);
  /* The last partial interval of the measured window, so that a report
   * covers every second of it. */
  if (ok && cfg->report_every_ns && bench_now_ns() > ic.last + cfg->report_every_ns / 10)
    report_interval(r, &ic, "measure");
  int64_t m1 = bench_now_ns();
  servers_sample(cfg, &t->s1);
  t->bench_cpu_s = self_cpu_s() - cpu0;
  t->measure_s = (double)(m1 - m0) / 1e9;
  if (!ok) return;
  /* Only after the end sample: drain traffic is not the server's cost of the window. */
  atomic_store_explicit(&r->phase, PH_DRAIN, memory_order_release);
  drain(r);
}

static void collect(struct relay *r, struct relay_totals *t) {
  t->sent = SUM(r, sent);
  t->delivered = SUM(r, delivered);
  t->delivered_bytes = SUM(r, delivered_bytes);
  t->acks = SUM(r, acks);
  t->timeouts = SUM(r, timeouts);
  t->late_acks = SUM(r, late_acks);
  t->skipped = SUM(r, skipped);
  t->bad = SUM(r, bad);
  t->peer_gone = SUM(r, peer_gone);
  hist_init(&t->lat);
  for (int i = 0; i < r->nw; i++) hist_merge(&t->lat, &r->w[i].lat);
  if (r->error[0]) snprintf(t->error, sizeof t->error, "%s", r->error);
  else if (atomic_load(&bench_interrupted)) snprintf(t->error, sizeof t->error, "interrupted");
  /* Nothing delivered: no latency, no per-packet cost (they would read 0). */
  else if (t->delivered == 0)
    snprintf(t->error, sizeof t->error, "no packet sent in the measured window was delivered "
             "(%llu sent)", (unsigned long long)t->sent);
}

static int run_workers(struct relay *r, struct relay_totals *t) {
  int started = 0;
  for (; started < r->nw; started++)
    if (pthread_create(&r->w[started].th, NULL, relay_worker_main, &r->w[started]) != 0) break;
  if (started < r->nw) relay_fail(r, "worker %d: %s", started, "cannot start thread");
  else clock_phases(r, t);
  atomic_store(&r->phase, PH_STOP);
  for (int i = 0; i < started; i++) pthread_join(r->w[i].th, NULL);
  collect(r, t);
  return t->error[0] ? 1 : 0;
}

int bench_run_relay(const struct bench_cfg *cfg) {
  struct relay r = {.cfg = cfg, .nw = cfg->threads,
                    .phase = cfg->nservers > 1 ? PH_SYNC : PH_WARMUP};
  pthread_mutex_init(&r.err_mu, NULL);
  r.peers = calloc((size_t)cfg->clients, sizeof *r.peers);
  if (!r.peers || bench_connect_all(cfg, r.peers, cfg->clients) < 0) {
    free(r.peers);
    return 1;
  }
  struct relay_totals *t = calloc(1, sizeof *t);
  r.clients = calloc((size_t)cfg->clients, sizeof *r.clients);
  r.w = calloc((size_t)r.nw, sizeof *r.w);
  int rc = 2;
  if (!t || !r.clients || !r.w || init_workers(&r) < 0) {
    fprintf(stderr, "derp-bench: out of memory or epoll failure at set-up\n");
  } else {
    rc = run_workers(&r, t);
    relay_report(cfg, t);
    if (t->error[0]) fprintf(stderr, "derp-bench: error: %s\n", t->error);
  }
  free_relay(&r);
  bench_close_all(r.peers, cfg->clients);
  free(r.peers);
  free(t);
  pthread_mutex_destroy(&r.err_mu);
  return rc;
}
