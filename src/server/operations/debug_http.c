/* debug_http.c: /debug/ routes and pages (see debug_http.h). A page is
 * rendered into a buffer on the shard that took the request (the counters of
 * every shard are read with relaxed loads, see metrics.h) and queued as
 * control pkts of at most DEBUG_CHUNK bytes each, so a large page (many
 * shards) needs no larger buffer class. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/acme/acme.h"
#include "server/acme/acme_chal.h"
#include "server/log.h"
#include "server/operations/bootstrap_dns.h"
#include "server/operations/debug_http.h"
#include "server/operations/expvar.h"
#include "server/operations/handover.h"
#include "server/operations/stats_page.h"
#include "server/protocol/http.h"
#include "server/region/region.h"
#include "server/server.h"
#include "server/transport/tls.h"

#define DEBUG_CHUNK 65536
/* A page goes out as at most this many control pkts: well under
 * CONN_CTRL_MAX, with room for TLS records queued ahead of it. */
#define DEBUG_CHUNKS_MAX 32
#define DEBUG_PAGE_MAX (DEBUG_CHUNKS_MAX * DEBUG_CHUNK - 512)

int debug_state_init(struct server *s, char *err, size_t errlen) {
  struct debug_state *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (s->cfg.debug_allow[0] && debug_allow_add(&d->access, s->cfg.debug_allow, err, errlen) < 0) {
    free(d);
    return -1;
  }
  char why[256];
  if (debug_access_env(&d->access, getenv("TS_ALLOW_DEBUG_IP"), getenv("TS_DEBUG_KEY_PATH"), why,
                       sizeof why) < 0)
    log_warn("debug: %s", why);
  proc_start_init(&d->start);
  d->start.by_upgrade = handover_active(); /* a restart-loop alert leaves planned upgrades out */
  d->bdns = bootstrap_dns_new(s->cfg.bootstrap_dns, s->cfg.unpublished_dns, NULL);
  if (!d->bdns || bootstrap_dns_start(d->bdns) != 0) {
    snprintf(err, errlen, "bootstrap DNS: %s", d->bdns ? "cannot start its thread" : "out of memory");
    bootstrap_dns_free(d->bdns);
    free(d);
    return -1;
  }
  s->debug = d;
  return 0;
}

void debug_state_free(struct server *s) {
  if (s->debug) bootstrap_dns_free(s->debug->bdns);
  free(s->debug);
  s->debug = NULL;
}

bool debug_http_allowed(const struct conn *c, const struct http_req *req) {
  struct debug_request r = {
      .peer = c->addr.sin6_addr.s6_addr,
      .get = req->method == HTTP_GET,
      .forwarded = req->forwarded,
      .query = req->in_query ? req->query : NULL,
      .query_len = req->query_len,
      .query_cut = req->query_cut,
  };
  return debug_access_allowed(&c->sh->srv->debug->access, &r);
}

void debug_route(struct conn *c, const struct http_req *req, struct http_reply *out) {
  struct server *s = c->sh->srv;
  /* The rules matter for /debug/ and the port-80 helper's "/" (a redirect to
   * /debug/ for those who may see it); elsewhere the key file is not read. */
  bool wants = strncmp(req->path, "/debug", 6) == 0 || (c->port80 && strcmp(req->path, "/") == 0) ||
               (!c->port80 && !c->metrics_only && http_path_is_home(req->path)); /* it links /debug/ */
  bool allowed = wants && debug_http_allowed(c, req);
  if (!c->port80 && !c->metrics_only && strcmp(req->path, "/bootstrap-dns") == 0)
    STAT_INC(&c->sh->stats, bootstrap_dns); /* derper's bootstrap_dns_requests */
  if (c->metrics_only) {
    /* --metrics-listen serves /debug/ and nothing else: no DERP, no probes. */
    static const struct http_site none = {.key_hex = ""};
    if (strncmp(req->path, "/debug/", 7) == 0) http_route(req, &none, allowed, out);
    else http_error_reply(404, out);
  } else if (c->port80 && acme_chal_http_route(req, out)) {
    /* -certmode letsencrypt: an http-01 challenge (acme/acme_chal.c) */
  } else if (c->port80) {
    http_route_port80(req, s->cfg.hostname, s->port, allowed, out);
  } else {
    struct http_site site = {.key_hex = s->pub_hex, .derp_disabled = !s->cfg.derp,
                             .home = (enum http_home)s->cfg.home_mode, .home_url = s->cfg.home};
    http_route(req, &site, allowed, out);
  }
}

static size_t render_index(char *body, size_t cap, const struct server *s) {
  int n = snprintf(body, cap,
                   "<html><body><h1>derpd debug</h1><p>server key nodekey:%s, %d shards</p>"
                   "<ul><li><a href=\"/debug/varz\">/debug/varz</a> (Prometheus)</li>"
                   "<li><a href=\"/debug/vars\">/debug/vars</a> (JSON)</li></ul></body></html>\n",
                   s->pub_hex, s->nshards);
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* /debug/varz: the counters, then the mesh links. */
static size_t render_varz(char *body, size_t cap, const struct stats_view *v, struct server *s) {
  size_t n = stats_page_varz(body, cap, v);
  if (n < cap) n += region_render_varz(body + n, cap - n, s);
  /* Full (never at these sizes): whole lines only, so a scraper reads
   * what there is rather than rejecting a cut line and its NUL. */
  if (n >= cap) {
    while (n > 0 && body[n - 1] != '\n') n--;
    log_warn("debug: /debug/varz larger than its %zu-byte buffer: cut at a line", cap);
  }
  return n;
}

/* The page's head and body as control pkts; false if out of memory. */
static bool queue_page(struct conn *c, const char *head, size_t hl, const char *body, size_t n) {
  if (!conn_queue_copy(c, head, hl, false)) return false;
  for (size_t off = 0; off < n; off += DEBUG_CHUNK) {
    size_t k = n - off < DEBUG_CHUNK ? n - off : DEBUG_CHUNK;
    if (!conn_queue_copy(c, body + off, k, false)) return false;
  }
  return true;
}

void debug_reply(struct conn *c, const struct http_req *req, const struct http_reply *r) {
  struct server *s = c->sh->srv;
  size_t cap = stats_page_cap(s->nshards) + region_varz_cap(s);
  if (cap > DEBUG_PAGE_MAX) cap = DEBUG_PAGE_MAX;
  char *body = malloc(cap);
  if (!body) {
    conn_close(c, CLOSE_nomem, "debug page");
    return;
  }
  struct stats *all[s->nshards];
  for (int i = 0; i < s->nshards; i++) all[i] = &s->shards[i].stats;
  struct proc_facts pf;
  if (r->debug_page != HTTP_DEBUG_INDEX)
    proc_facts_read(&pf, atomic_load_explicit(&s->open_conns, memory_order_relaxed) +
                             atomic_load_explicit(&s->metrics_conns, memory_order_relaxed));
  struct stats_view v = {.all = all, .n = s->nshards, .start = &s->debug->start, .proc = &pf,
                        .now_mono_ms = now_ms(), .bdns_queried = bootstrap_dns_queried(s->debug->bdns)};
  v.tls = s->tls;
  if (v.tls) v.cert_not_after = tls_cert_not_after();
  v.acme = v.tls && config_acme(&s->cfg);
  if (v.acme) acme_counts(&v.acme_issued, &v.acme_failed);
  v.rate_config = s->cfg.rate_config[0] != 0;
  if (v.rate_config) {
    struct rate_cfg rc;
    uint32_t gen;
    while (!recv_limit_read(&s->recv_lim, &rc, &gen)) {} /* a SIGHUP's write: a few stores */
    v.rate_bps = rc.bps;
    v.rate_burst = rc.burst;
  }
  size_t n;
  /* derper's varz type: Prometheus text format 0.0.4. */
  const char *ctype = "text/plain; version=0.0.4; charset=utf-8";
  if (r->debug_page == HTTP_DEBUG_VARZ) {
    n = render_varz(body, cap, &v, s);
  } else if (r->debug_page == HTTP_DEBUG_VARS) { /* derper's tree, read off the varz page */
    char *varz = malloc(cap);
    n = varz ? expvar_render(body, cap, varz, render_varz(varz, cap, &v, s)) : 0;
    free(varz);
    if (n == 0 || n >= cap) {
      free(body);
      conn_close(c, CLOSE_nomem, n ? "debug page: /debug/vars larger than its buffer" : "debug page");
      return;
    }
    ctype = "application/json";
  } else {
    n = render_index(body, cap, s);
    ctype = "text/html; charset=utf-8";
  }
  char head[256];
  size_t hl = http_reply_head(head, sizeof head, 200, ctype, n);
  bool ok = queue_page(c, head, hl, body, req->method == HTTP_HEAD ? 0 : n);
  free(body);
  if (!ok) {
    conn_close(c, CLOSE_nomem, "debug page");
    return;
  }
  c->close_after_send = 1;
}

void bootstrap_dns_reply(struct conn *c, const struct http_req *req) {
  size_t n;
  char *body = bootstrap_dns_answer(c->sh->srv->debug->bdns, &c->sh->stats, c->addr.sin6_addr.s6_addr,
                                    req->in_query ? req->query : NULL, req->query_len, req->query_cut, &n);
  char head[1024];
  size_t hl = n == SIZE_MAX ? 0
                            : http_reply_head_extra(head, sizeof head, 200, "application/json", n,
                                                    http_browser_headers);
  bool ok = hl && queue_page(c, head, hl, body, req->method == HTTP_HEAD ? 0 : n);
  free(body);
  if (!ok) {
    conn_close(c, CLOSE_nomem, "bootstrap DNS");
    return;
  }
  c->close_after_send = 1;
}
