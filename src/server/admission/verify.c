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
 *
 * Runs on a worker thread: blocking I/O is fine here, and only here. */
#include <stdarg.h>
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

/* -verify-clients. True if the key is in tailscaled's tailnet (v untouched). */
static bool ask_tailscaled(const struct adm_config *cfg, struct adm_worker_io *io, const derp_key *k,
                           const char *key, int stop_fd, struct adm_verdict *v) {
  char req[512], err[256] = "";
  size_t n = adm_format_whois(req, sizeof req, k);
  if (!io->whois_body && !(io->whois_body = malloc(ADM_WHOIS_MAX))) {
    set(v, ADM_R_ERROR, false, "failed to query local tailscaled status for %s: out of memory", key);
    return false;
  }
  struct httpc_resp r = {.body = io->whois_body, .body_cap = ADM_WHOIS_MAX};
  enum httpc_rc rc = httpc_request(&io->local, &cfg->local_ep, req, n, &r, NULL, NULL,
                                   httpc_now_ms() + ADM_TIMEOUT_MS, stop_fd, err, sizeof err);
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

/* -verify-client-url. True if the controller allowed (v untouched). */
static bool ask_controller(const struct adm_config *cfg, struct adm_worker_io *io, const derp_key *k,
                           const char *key, const char *ip, int stop_fd, struct adm_verdict *v) {
  char body[256], req[4096], err[256] = "";
  size_t bl = adm_format_body(body, sizeof body, k, ip);
  size_t n = bl ? adm_format_post(req, sizeof req, &cfg->url, body, bl) : 0;
  if (!n) {
    set(v, ADM_R_ERROR, false, "admission controller: request too large");
    return false;
  }
  uint8_t ans[ADM_ANSWER_MAX];
  struct httpc_resp r = {.body = ans, .body_cap = sizeof ans};
  struct answer_wait w = {&r};
  enum httpc_rc rc = httpc_request(&io->url, &cfg->url_ep, req, n, &r, answer_enough, &w,
                                   httpc_now_ms() + ADM_TIMEOUT_MS, stop_fd, err, sizeof err);
  if (rc != HTTPC_OK) {
    set(v, rc_result(rc), cfg->fail_open, "admission controller unreachable for %s: %s%s", key,
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
                int stop_fd, struct adm_verdict *v) {
  char key[DERP_KEY_STRLEN];
  derp_key_format(k, key);
  if (cfg->use_local && !ask_tailscaled(cfg, io, k, key, stop_fd, v)) return;
  if (cfg->use_url && !ask_controller(cfg, io, k, key, ip, stop_fd, v)) return;
  set(v, ADM_R_ALLOW, false, "%s", "allowed");
}
