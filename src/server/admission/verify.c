/* verify.c: the checks a worker runs for one client, as derper v1.78's
 * verifyClient does them (derp/derp_server.go):
 *
 * 1. -verify-clients: LocalClient.WhoIsNodeKey on the local tailscaled:
 *    GET /localapi/v0/whois?addr=nodekey%3A<hex> over its unix socket
 *    (Host local-tailscaled.sock, Tailscale-Cap). 200 with a JSON body: in
 *    the tailnet. 404: not (ErrPeerNotFound). Anything else, or no answer,
 *    is an error, and an error refuses: there is no fail-open here.
 * 2. -verify-client-url: POST {"NodePublic":..., "Source":...} with a 5 s
 *    timeout. No response at all (connect, TLS, write, a malformed or late
 *    head): refused, or admitted under -verify-client-url-fail-open. A
 *    response that is not 200: refused. Then the first JSON value of at most
 *    4 KiB of body (wire.c): Allow true admits; anything else refuses,
 *    whatever fail-open says (derper decodes after the request succeeded).
 *    Redirects are followed as Go's http.Client follows them (wire.h), all
 *    within the 5 s; a Location that does not parse, or an 11th redirect, is
 *    an error of the request, so fail-open applies, as in derper.
 *
 * Runs on a worker thread: blocking I/O is fine here, and only here. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "server/admission/admission_internal.h"

static void set(struct adm_verdict *v, enum adm_result r, bool may_fail_open, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set(struct adm_verdict *v, enum adm_result r, bool may_fail_open, const char *fmt, ...) {
  v->result = (uint8_t)r;
  v->may_fail_open = may_fail_open;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v->detail, sizeof v->detail, fmt, ap);
  va_end(ap);
}

/* The body as one short line for a log: at most 80 bytes, controls as '.'. */
static void snippet(const uint8_t *p, size_t n, char *out, size_t cap) {
  size_t o = 0;
  while (n > 0 && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++, n--;
  for (size_t i = 0; i < n && o + 4 < cap && i < 80; i++) out[o++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '.';
  if (n > 80 && o + 4 < cap) out[o++] = '.', out[o++] = '.', out[o++] = '.';
  out[o] = 0;
}

/* Go's json.Unmarshal into *apitype.WhoIsResponse: the whole body one value;
 * null, or an object whose Node and UserProfile (pointers to structs) are
 * objects or null and whose CapMap (a map of arrays) is an object of arrays
 * or null, field names matched without regard to case. Deeper fields are not
 * type-checked. */
static bool whois_body_ok(const uint8_t *p, size_t n) {
  json_error_t e;
  json_t *j = json_loadb((const char *)p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!j) return false;
  bool ok = json_is_null(j) || json_is_object(j);
  const char *k;
  json_t *val;
  if (json_is_object(j)) {
    json_object_foreach(j, k, val) {
      bool null_or_obj = json_is_null(val) || json_is_object(val);
      if ((strcasecmp(k, "Node") == 0 || strcasecmp(k, "UserProfile") == 0) && !null_or_obj) ok = false;
      if (strcasecmp(k, "CapMap") == 0) {
        if (!null_or_obj) ok = false;
        const char *ck;
        json_t *cv;
        if (json_is_object(val))
          json_object_foreach(val, ck, cv) if (!json_is_null(cv) && !json_is_array(cv)) ok = false;
      }
    }
  }
  json_decref(j);
  return ok;
}

static enum adm_result rc_result(enum httpc_rc rc) { return rc == HTTPC_TIMEOUT ? ADM_R_TIMEOUT : ADM_R_ERROR; }

/* 5 s from now, or just past the client's handshake deadline if that comes
 * first: a worker must not spend its time on an answer nobody waits for
 * (under a backlog every job would otherwise finish after its client left).
 * Just past: the shard closes the client at its deadline (on its 100 ms
 * tick), so a check cut short is never a verdict, never a fail-open. */
#define ADM_PAST_DEADLINE_MS 250
static int64_t request_deadline(int64_t until_ms) {
  int64_t d = httpc_now_ms() + ADM_TIMEOUT_MS;
  return until_ms > 0 && until_ms + ADM_PAST_DEADLINE_MS < d ? until_ms + ADM_PAST_DEADLINE_MS : d;
}

/* -verify-clients. True if the key is in tailscaled's tailnet (v untouched). */
static bool ask_tailscaled(const struct adm_config *cfg, struct adm_worker_io *io, const derp_key *k,
                           const char *key, int stop_fd, int64_t until_ms, struct adm_verdict *v) {
  char req[512], err[256] = "";
  size_t n = adm_format_whois(req, sizeof req, k);
  if (!io->whois_body && !(io->whois_body = malloc(ADM_WHOIS_MAX))) {
    set(v, ADM_R_ERROR, false, "failed to query local tailscaled status for %s: out of memory", key);
    return false;
  }
  struct httpc_resp r = {.body = io->whois_body, .body_cap = ADM_WHOIS_MAX};
  enum httpc_rc rc = httpc_request(&io->local, &cfg->local_ep, req, n, &r, NULL, NULL,
                                   request_deadline(until_ms), stop_fd, err, sizeof err);
  if (rc != HTTPC_OK) {
    set(v, rc_result(rc), false, "failed to query local tailscaled status for %s: %s%s", key,
        rc == HTTPC_TIMEOUT ? "no answer within 5s: " : "", err);
    return false;
  }
  char body[100];
  snippet(r.body, r.body_len, body, sizeof body);
  if (r.status == 404) {
    set(v, ADM_R_DENY, false, "peer %s not authorized (not found in local tailscaled)", key);
    return false;
  }
  if (r.status != 200) {
    if (memmem(r.body, r.body_len, "invalid 'addr' parameter", 24)) /* tailscale issue 12617 */
      set(v, ADM_R_ERROR, false, "tailscaled version is too old (out of sync with derper binary)");
    else
      set(v, ADM_R_ERROR, false, "failed to query local tailscaled status for %s: HTTP %d: %s", key, r.status, body);
    return false;
  }
  if (!r.complete) {
    set(v, ADM_R_ERROR, false, "failed to query local tailscaled status for %s: %s", key,
        r.body_error ? r.body_error : "answer larger than 1 MiB");
    return false;
  }
  if (!whois_body_ok(r.body, r.body_len)) {
    set(v, ADM_R_ERROR, false, "failed to query local tailscaled status for %s: not a WhoIsResponse: %s", key, body);
    return false;
  }
  return true;
}

struct answer_wait {
  const struct httpc_resp *r;
};

/* Stop reading once the status says no, or the JSON value is whole. */
static bool answer_enough(const uint8_t *body, size_t len, void *arg) {
  const struct answer_wait *w = arg;
  return w->r->status != 200 || adm_answer_read(body, len, false, NULL) != ADM_ANSWER_MORE;
}

struct location {
  char v[2048];
  size_t len;
  bool too_long; /* over httpc's 1 KiB: refused, never followed cut */
};

static void on_location(const char *name, size_t nlen, const char *value, size_t vlen, bool cut, void *arg) {
  struct location *l = arg;
  if (nlen != 8 || strncasecmp(name, "Location", 8) != 0) return;
  if (cut || vlen >= sizeof l->v) {
    l->too_long = true;
    return;
  }
  memcpy(l->v, value, vlen);
  l->v[vlen] = 0;
  l->len = vlen;
}

/* The request to u (POST with body, or the GET a redirect made of it), on
 * io's kept-alive conn when u is the configured URL, else on *tmp. */
static enum httpc_rc request(const struct adm_config *cfg, struct adm_worker_io *io, const struct adm_url *u,
                             bool get, const char *body, size_t bl, struct httpc_conn *tmp, struct httpc_resp *r,
                             struct answer_wait *w, int64_t deadline, int stop_fd, char *err, size_t errlen) {
  char req[4096];
  size_t n = get ? adm_format_get(req, sizeof req, u) : adm_format_post(req, sizeof req, u, body, bl);
  if (!n) {
    snprintf(err, errlen, "request too large");
    return HTTPC_ERROR;
  }
  if (u == &cfg->url) return httpc_request(&io->url, &cfg->url_ep, req, n, r, answer_enough, w, deadline, stop_fd, err, errlen);
  struct httpc_endpoint ep = {.kind = u->tls ? HTTPC_TLS : HTTPC_TCP, .host = u->host, .port = u->port,
                              .tls = cfg->url_ep.tls};
  if (u->tls && !ep.tls) { /* an http controller sent us to https */
    if (!io->redirect_tls && !(io->redirect_tls = httpc_tls_ctx(NULL, err, errlen))) return HTTPC_ERROR;
    ep.tls = io->redirect_tls;
  }
  httpc_conn_close(tmp); /* a redirect's conn serves one request */
  return httpc_request(tmp, &ep, req, n, r, answer_enough, w, deadline, stop_fd, err, errlen);
}

/* -verify-client-url. True if the controller allowed (v untouched). */
static bool ask_controller(const struct adm_config *cfg, struct adm_worker_io *io, const derp_key *k,
                           const char *key, const char *ip, int stop_fd, int64_t until_ms, struct adm_verdict *v) {
  char body[256], err[256] = "";
  size_t bl = adm_format_body(body, sizeof body, k, ip);
  if (!bl) {
    set(v, ADM_R_ERROR, false, "admission controller: request too large");
    return false;
  }
  uint8_t ans[ADM_ANSWER_MAX];
  struct location loc;
  struct httpc_resp r;
  struct answer_wait w = {&r};
  struct httpc_conn tmp = HTTPC_CONN_INIT;
  struct adm_url hop[2];          /* where a redirect took us: two, as the next resolves against the last */
  const struct adm_url *u = &cfg->url;
  bool get = false;
  int64_t deadline = request_deadline(until_ms);
  enum httpc_rc rc;
  for (int redirects = 0;; redirects++) {
    loc.len = 0;
    loc.too_long = false;
    r = (struct httpc_resp){.on_header = on_location, .header_arg = &loc, .body = ans, .body_cap = sizeof ans};
    rc = request(cfg, io, u, get, body, bl, &tmp, &r, &w, deadline, stop_fd, err, sizeof err);
    enum adm_redirect kind = adm_redirect_kind(r.status);
    if (rc == HTTPC_OK && kind != ADM_REDIRECT_NONE && loc.too_long) {
      snprintf(err, sizeof err, "redirect with a Location over 1 KiB: not followed");
      rc = HTTPC_ERROR;
      break;
    }
    if (rc != HTTPC_OK || kind == ADM_REDIRECT_NONE || loc.len == 0) break;
    /* Go's CheckRedirect: the 10th redirect is refused (10 requests made). */
    if (redirects + 1 == ADM_REDIRECTS_MAX) {
      snprintf(err, sizeof err, "stopped after %d redirects", ADM_REDIRECTS_MAX);
      rc = HTTPC_ERROR;
      break;
    }
    struct adm_url *next = &hop[redirects % 2];
    char why[96];
    if (adm_url_resolve(u, loc.v, loc.len, next, why, sizeof why) != 0) {
      snprintf(err, sizeof err, "failed to follow redirect to \"%.80s\": %s", loc.v, why);
      rc = HTTPC_ERROR;
      break;
    }
    if (kind == ADM_REDIRECT_GET) get = true;
    u = next;
  }
  httpc_conn_close(&tmp);
  if (rc != HTTPC_OK) {
    /* Stopped by shutdown (or a handover) is not an unreachable controller:
     * no fail-open for it. */
    set(v, rc_result(rc), cfg->fail_open && rc != HTTPC_STOPPED, "admission controller unreachable for %s: %s%s", key,
        rc == HTTPC_TIMEOUT ? "no response within 5s: " : "", err);
    return false;
  }
  if (r.status != 200) {
    set(v, ADM_R_DENY, false, "admission controller: HTTP %d for %s", r.status, key);
    return false;
  }
  /* Whatever ended the read (the value, the body, 4 KiB, an error), nothing
   * more comes: Go's Decode has what it will ever have. */
  const char *why = NULL;
  enum adm_answer a = adm_answer_read(r.body, r.body_len, true, &why);
  if (a == ADM_ANSWER_ALLOW) return true;
  char s[100];
  snippet(r.body, r.body_len, s, sizeof s);
  if (a == ADM_ANSWER_DENY)
    set(v, ADM_R_DENY, false, "admission controller: %s/%s not allowed (%s)", key, ip, why);
  else
    set(v, ADM_R_ERROR, false, "admission controller: bad answer for %s: %s%s%s: %s", key, why,
        r.body_error || r.body_len == r.body_cap ? ", " : "",
        r.body_error ? r.body_error : r.body_len == r.body_cap ? "read no further than 4 KiB" : "", s);
  return false;
}

void verify_run(const struct adm_config *cfg, struct adm_worker_io *io, const derp_key *k, const char *ip,
                int stop_fd, int64_t until_ms, const _Atomic bool *abandoned, struct adm_verdict *v) {
  char key[DERP_KEY_STRLEN];
  derp_key_format(k, key);
  if (cfg->use_local && !ask_tailscaled(cfg, io, k, key, stop_fd, until_ms, v)) return;
  if (cfg->use_local && cfg->use_url && atomic_load_explicit(abandoned, memory_order_relaxed)) {
    set(v, ADM_R_ERROR, false, "the client left before the controller was asked");
    return;
  }
  if (cfg->use_url && !ask_controller(cfg, io, k, key, ip, stop_fd, until_ms, v)) return;
  set(v, ADM_R_ALLOW, false, "%s", "allowed");
}
