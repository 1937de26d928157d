/* acme_client.c: the RFC 8555 exchange (acme_client.h), as autocert runs it:
 * one order per attempt; each pending authorization answered with the
 * preferred challenge type not yet failed; a failed challenge ends the order
 * and the next attempt uses the next type. Every request is a signed POST
 * (POST-as-GET for reads) with the last Replay-Nonce; a badNonce answer is
 * retried with the fresh nonce it carries. */
#include "server/acme/acme_client.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server/acme/acme_chal.h"
#include "server/acme/acme_jws.h"
#include "server/config.h"
#include "server/log.h"

#define REQUEST_TIMEOUT_MS 30000
#define POLL_LIMIT_MS 120000      /* a challenge or order still pending after this fails */
#define POLL_MAX_DELAY_MS 5000
#define RETRY_AFTER_MAX_S 10
#define BAD_NONCE_RETRIES 3

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int acme_sleep_ms(int stop_fd, long ms) {
  int64_t end = mono_ms() + ms;
  for (;;) {
    int64_t left = end - mono_ms();
    if (left <= 0) return 0;
    struct pollfd p = {.fd = stop_fd, .events = POLLIN};
    int r = poll(&p, stop_fd >= 0 ? 1 : 0, left > 3600000 ? 3600000 : (int)left);
    if (r > 0) return -1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

static const char *jstr(const json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

static void copy(char *dst, size_t cap, const char *s) { snprintf(dst, cap, "%s", s); }

/* "<status> <type>: <detail>" of an RFC 7807 problem document, else the body's start. */
static void problem(const struct acme_resp *r, char *out, size_t cap) {
  json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
  const char *type = jstr(j, "type"), *detail = jstr(j, "detail");
  if (j && (type[0] || detail[0]))
    snprintf(out, cap, "HTTP %d %s: %s", r->status, type, detail);
  else
    snprintf(out, cap, "HTTP %d: %.200s", r->status, r->body ? r->body : "");
  json_decref(j);
}

static bool is_bad_nonce(const struct acme_resp *r) {
  if (r->status != 400 || !r->body) return false;
  json_t *j = json_loads(r->body, 0, NULL);
  bool bad = strcmp(jstr(j, "type"), "urn:ietf:params:acme:error:badNonce") == 0;
  json_decref(j);
  return bad;
}

static int fresh_nonce(struct acme_client *c, char *err, size_t errlen) {
  struct acme_resp r;
  if (acme_https_do(&c->https, "HEAD", c->new_nonce, NULL, NULL, &r, err, errlen) != 0) return -1;
  acme_resp_free(&r);
  if (!r.nonce[0]) return errf(err, errlen, "newNonce %s: HTTP %d without Replay-Nonce", c->new_nonce, r.status);
  copy(c->nonce, sizeof c->nonce, r.nonce);
  return 0;
}

/* A signed POST (payload NULL: POST-as-GET). 0 with *r (2xx/3xx) and, if
 * json != NULL, its parsed body; -1 with err (the problem document for 4xx/5xx). */
static int post(struct acme_client *c, const char *url, const char *payload, struct acme_resp *r, json_t **json,
                char *err, size_t errlen) {
  if (json) *json = NULL;
  for (int attempt = 0;; attempt++) {
    if (!c->nonce[0] && fresh_nonce(c, err, errlen) != 0) return -1;
    char *jws = acme_jws(c->key, c->kid[0] ? c->kid : NULL, c->nonce, url, payload);
    c->nonce[0] = 0; /* a nonce is good for one request */
    if (!jws) return errf(err, errlen, "sign a request for %s: failed", url);
    int rc = acme_https_do(&c->https, "POST", url, "application/jose+json", jws, r, err, errlen);
    free(jws);
    if (rc != 0) return -1;
    if (r->nonce[0]) copy(c->nonce, sizeof c->nonce, r->nonce);
    log_debug("acme: POST %s: HTTP %d", url, r->status);
    if (is_bad_nonce(r) && attempt < BAD_NONCE_RETRIES) {
      acme_resp_free(r);
      continue;
    }
    break;
  }
  if (r->status >= 400) {
    char p[400];
    problem(r, p, sizeof p);
    acme_resp_free(r);
    return errf(err, errlen, "POST %s: %s", url, p);
  }
  if (json) {
    *json = r->body ? json_loads(r->body, 0, NULL) : NULL;
    if (!json_is_object(*json)) {
      json_decref(*json);
      *json = NULL;
      acme_resp_free(r);
      return errf(err, errlen, "POST %s: HTTP %d: the body is not a JSON object", url, r->status);
    }
  }
  return 0;
}

static int load_directory(struct acme_client *c, char *err, size_t errlen) {
  struct acme_resp r;
  if (acme_https_do(&c->https, "GET", c->directory, NULL, NULL, &r, err, errlen) != 0) return -1;
  json_t *j = r.status == 200 && r.body ? json_loads(r.body, 0, NULL) : NULL;
  acme_resp_free(&r);
  copy(c->new_nonce, sizeof c->new_nonce, jstr(j, "newNonce"));
  copy(c->new_account, sizeof c->new_account, jstr(j, "newAccount"));
  copy(c->new_order, sizeof c->new_order, jstr(j, "newOrder"));
  char tos[512];
  copy(tos, sizeof tos, jstr(json_object_get(j, "meta"), "termsOfService"));
  /* Let's Encrypt issues IP certificates only under its short-lived profile
   * (draft-aaron-acme-profiles); a CA without profiles (pebble 2.4) takes
   * orders without one. */
  c->shortlived = json_object_get(json_object_get(json_object_get(j, "meta"), "profiles"), "shortlived") != NULL;
  json_decref(j);
  if (!c->new_nonce[0] || !c->new_account[0] || !c->new_order[0])
    return errf(err, errlen, "directory %s: HTTP %d, not an ACME directory", c->directory, r.status);
  if (tos[0]) log_info("acme: agreeing to the CA's terms of service: %s", tos);
  return 0;
}

/* newAccount's payload: the terms agreed, the contact, the EAB (bound to
 * this newAccount URL). NULL on failure. */
static char *account_payload(struct acme_client *c) {
  json_t *j = json_pack("{s:b}", "termsOfServiceAgreed", 1);
  if (j && c->email[0]) {
    char mailto[sizeof c->email + 8];
    snprintf(mailto, sizeof mailto, "mailto:%s", c->email);
    json_object_set_new(j, "contact", json_pack("[s]", mailto));
  }
  if (j && c->eab_kid[0]) {
    char *eab = acme_eab_jws(c->key, c->eab_kid, c->eab_key, c->eab_keylen, c->new_account);
    json_t *e = eab ? json_loads(eab, 0, NULL) : NULL;
    free(eab);
    if (!e) {
      json_decref(j);
      return NULL;
    }
    json_object_set_new(j, "externalAccountBinding", e);
  }
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  return s;
}

static int register_account(struct acme_client *c, char *err, size_t errlen) {
  struct acme_resp r;
  char *payload = account_payload(c);
  if (!payload) return errf(err, errlen, "newAccount: could not build the request");
  int rc = post(c, c->new_account, payload, &r, NULL, err, errlen);
  free(payload);
  if (rc != 0) return -1;
  /* The account object, for the log only: a body that is not one is no error. */
  json_t *acct = r.body ? json_loads(r.body, 0, NULL) : NULL;
  acme_resp_free(&r);
  if (!r.location[0]) {
    json_decref(acct);
    return errf(err, errlen, "newAccount: HTTP %d without the account URL", r.status);
  }
  copy(c->kid, sizeof c->kid, r.location);
  /* The contact as the CA keeps it (an existing account keeps its own). */
  const char *contact = json_string_value(json_array_get(json_object_get(acct, "contact"), 0));
  log_info("acme: account %s (%s%s; contact %s)", c->kid, r.status == 201 ? "new" : "existing",
           c->eab_kid[0] ? ", external account binding" : "", contact ? contact : "none");
  json_decref(acct);
  return 0;
}

/* POST-as-GET url until its "status" is neither pending nor processing, or
 * POLL_LIMIT_MS passes. The object, or NULL with err. */
static json_t *poll_object(struct acme_client *c, const char *url, char *err, size_t errlen) {
  int64_t end = mono_ms() + POLL_LIMIT_MS;
  long delay = 250;
  for (;;) {
    struct acme_resp r;
    json_t *j;
    if (post(c, url, NULL, &r, &j, err, errlen) != 0) return NULL;
    long retry = r.retry_after;
    acme_resp_free(&r);
    const char *st = jstr(j, "status");
    if (strcmp(st, "pending") != 0 && strcmp(st, "processing") != 0) return j;
    json_decref(j);
    if (mono_ms() > end) {
      errf(err, errlen, "%s still %s after %d s", url, st, POLL_LIMIT_MS / 1000);
      return NULL;
    }
    long ms = retry >= 0 ? (retry > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : retry) * 1000 : delay;
    if (ms < 100) ms = 100;
    if (acme_sleep_ms(c->https.stop_fd, ms) != 0) {
      errf(err, errlen, "stopping");
      return NULL;
    }
    delay = delay * 2 > POLL_MAX_DELAY_MS ? POLL_MAX_DELAY_MS : delay * 2;
  }
}

/* The challenge's error, if the authorization says why it failed. */
static void challenge_error(const json_t *authz, const char *type, char *out, size_t cap) {
  snprintf(out, cap, "no reason given");
  size_t i;
  json_t *ch;
  json_array_foreach(json_object_get(authz, "challenges"), i, ch) {
    json_t *e = json_object_get(ch, "error");
    if (strcmp(jstr(ch, "type"), type) == 0 && e)
      snprintf(out, cap, "%s: %s", jstr(e, "type"), jstr(e, "detail"));
  }
}

enum { OK = 0, FAIL = -1, NEXT_TYPE = -2 };

/* Satisfy one authorization. OK, FAIL, or NEXT_TYPE (the challenge failed:
 * a new order with the next type may do). */
static int authorize(struct acme_client *c, const char *host, const char *url, char *err, size_t errlen) {
  struct acme_resp r;
  json_t *z;
  if (post(c, url, NULL, &r, &z, err, errlen) != 0) return FAIL;
  acme_resp_free(&r);
  const char *st = jstr(z, "status");
  if (strcmp(st, "valid") == 0) {
    log_info("acme: %s: already authorized", host);
    json_decref(z);
    return OK;
  }
  if (strcmp(st, "pending") != 0) {
    /* invalid, deactivated, expired, revoked: nothing here was tried, but
     * the next order must not ask with the same type again, or this would
     * place orders as fast as the CA answers (and spend its rate limit). */
    errf(err, errlen, "authorization %s is %s", url, st);
    json_decref(z);
    c->next_type++;
    return NEXT_TYPE;
  }
  const json_t *pick = NULL;
  int t = c->next_type;
  for (; t < c->ntypes && !pick; t++) {
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(z, "challenges"), i, ch) if (!pick && strcmp(jstr(ch, "type"), c->types[t]) == 0) pick = ch;
  }
  if (!pick) {
    json_decref(z);
    errf(err, errlen, "authorization %s offers none of the challenge types left to try", url);
    return FAIL;
  }
  const char *type = c->types[t - 1];
  char keyauth[256], token[128], curl[1024];
  copy(token, sizeof token, jstr(pick, "token"));
  copy(curl, sizeof curl, jstr(pick, "url"));
  json_decref(z);
  snprintf(keyauth, sizeof keyauth, "%s.%s", token, c->thumbprint);
  bool http = strcmp(type, ACME_CHAL_HTTP) == 0;
  if (!token[0] || !curl[0] || (http ? acme_chal_http_set(token, keyauth) : acme_chal_tls_set(host, keyauth)) != 0) {
    errf(err, errlen, "%s: cannot prepare the challenge response", type);
    return FAIL;
  }
  log_info("acme: %s: answering the %s challenge", host, type);
  int rc = FAIL;
  json_t *done = NULL;
  if (post(c, curl, "{}", &r, NULL, err, errlen) == 0) {
    acme_resp_free(&r);
    done = poll_object(c, url, err, errlen);
  }
  if (http) acme_chal_http_clear(token);
  else acme_chal_tls_clear(host);
  st = jstr(done, "status");
  if (strcmp(st, "valid") == 0) {
    log_info("acme: %s: %s challenge passed", host, type);
    rc = OK;
  } else if (done) {
    char why[400];
    challenge_error(done, type, why, sizeof why);
    errf(err, errlen, "%s challenge failed (authorization %s): %s", type, st, why);
    c->next_type = t;
    rc = NEXT_TYPE;
  }
  json_decref(done);
  return rc;
}

/* A CSR for host (CN and the one DNS SAN; an IP address: the one IP SAN,
 * no CN, as CAs want for IP certificates), DER, base64url. NULL on failure. */
static char *make_csr(EVP_PKEY *key, const char *host) {
  X509_REQ *req = X509_REQ_new();
  STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
  X509_EXTENSION *san = NULL;
  bool ip = config_ip_literal(host);
  char sanv[300];
  snprintf(sanv, sizeof sanv, "%s:%s", ip ? "IP" : "DNS", host);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, NULL, NULL, req, NULL, 0);
  uint8_t *der = NULL;
  int n = -1;
  if (req && exts && X509_REQ_set_version(req, X509_REQ_VERSION_1) &&
      (ip || X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(req), NID_commonName, MBSTRING_UTF8,
                                        (const uint8_t *)host, -1, -1, 0)) &&
      X509_REQ_set_pubkey(req, key) && (san = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_alt_name, sanv)) &&
      sk_X509_EXTENSION_push(exts, san)) {
    san = NULL; /* the stack owns it */
    if (X509_REQ_add_extensions(req, exts) && X509_REQ_sign(req, key, EVP_sha256())) n = i2d_X509_REQ(req, &der);
  }
  X509_EXTENSION_free(san);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  X509_REQ_free(req);
  char *out = n > 0 ? acme_b64url_dup(der, (size_t)n) : NULL;
  OPENSSL_free(der);
  ERR_clear_error();
  return out;
}

/* The chain's leaf is for key and host. 0, or -1 with err. */
static int check_chain(const char *pem, EVP_PKEY *key, const char *host, char *err, size_t errlen) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  BIO_free(b);
  int rc = 0;
  if (!leaf) rc = errf(err, errlen, "the certificate the CA sent is not PEM");
  else if (!X509_check_private_key(leaf, key)) rc = errf(err, errlen, "the CA's certificate is not for our key");
  else if ((config_ip_literal(host) ? X509_check_ip_asc(leaf, host, 0) : X509_check_host(leaf, host, strlen(host), 0, NULL)) != 1)
    rc = errf(err, errlen, "the CA's certificate does not name %s", host);
  X509_free(leaf);
  ERR_clear_error();
  return rc;
}

/* Finalize a ready order and download its chain. */
static int finalize(struct acme_client *c, const char *host, const char *order_url, const char *fin_url,
                    EVP_PKEY **key_out, char **chain_out, char *err, size_t errlen) {
  EVP_PKEY *key = acme_key_new();
  char *csr = key ? make_csr(key, host) : NULL;
  char *payload = NULL;
  json_t *o = NULL;
  struct acme_resp r;
  int rc = -1;
  if (!csr) {
    errf(err, errlen, "make a key and CSR: failed");
    goto out;
  }
  json_t *pj = json_pack("{s:s}", "csr", csr);
  payload = pj ? json_dumps(pj, JSON_COMPACT) : NULL;
  json_decref(pj);
  if (!payload || post(c, fin_url, payload, &r, NULL, err, errlen) != 0) goto out;
  acme_resp_free(&r);
  if (!(o = poll_object(c, order_url, err, errlen))) goto out;
  const char *cert_url = jstr(o, "certificate");
  if (strcmp(jstr(o, "status"), "valid") != 0 || !cert_url[0]) {
    errf(err, errlen, "order %s is %s after finalize", order_url, jstr(o, "status"));
    goto out;
  }
  if (post(c, cert_url, NULL, &r, NULL, err, errlen) != 0) goto out;
  if (!r.body || check_chain(r.body, key, host, err, errlen) != 0) {
    if (!r.body) errf(err, errlen, "certificate %s: empty", cert_url);
    acme_resp_free(&r);
    goto out;
  }
  *chain_out = r.body;
  r.body = NULL;
  *key_out = key;
  key = NULL;
  rc = 0;
out:
  json_decref(o);
  free(payload);
  free(csr);
  EVP_PKEY_free(key);
  return rc;
}

static int one_order(struct acme_client *c, const char *host, EVP_PKEY **key_out, char **chain_out, char *err,
                     size_t errlen) {
  bool ip = config_ip_literal(host);
  json_t *ids = json_pack("{s:[{s:s, s:s}]}", "identifiers", "type", ip ? "ip" : "dns", "value", host);
  if (ids && ip && c->shortlived) json_object_set_new(ids, "profile", json_string("shortlived"));
  char *payload = ids ? json_dumps(ids, JSON_COMPACT) : NULL;
  json_decref(ids);
  struct acme_resp r;
  json_t *o = NULL;
  int rc = payload ? post(c, c->new_order, payload, &r, &o, err, errlen) : errf(err, errlen, "out of memory");
  free(payload);
  if (rc != 0) return FAIL;
  char order_url[1024], fin_url[1024];
  copy(order_url, sizeof order_url, r.location);
  copy(fin_url, sizeof fin_url, jstr(o, "finalize"));
  acme_resp_free(&r);
  if (!order_url[0] || !fin_url[0]) {
    json_decref(o);
    return errf(err, errlen, "newOrder: no order URL or finalize URL");
  }
  log_info("acme: %s: order %s (%s)", host, order_url, jstr(o, "status"));
  size_t i;
  json_t *az;
  json_array_foreach(json_object_get(o, "authorizations"), i, az) {
    rc = authorize(c, host, json_string_value(az) ? json_string_value(az) : "", err, errlen);
    if (rc != OK) break;
  }
  json_decref(o);
  if (rc != OK) return rc;
  if (!(o = poll_object(c, order_url, err, errlen))) return FAIL;
  const char *st = jstr(o, "status");
  if (strcmp(st, "ready") != 0) {
    errf(err, errlen, "order %s is %s, not ready, after its authorizations", order_url, st);
    json_decref(o);
    return FAIL;
  }
  json_decref(o);
  return finalize(c, host, order_url, fin_url, key_out, chain_out, err, errlen) == 0 ? OK : FAIL;
}

/* An IP address: http-01 only, as derper (tls-alpn-01 would want the
 * reverse-DNS name in the SNI, RFC 8738 §6). */
static void skip_types(struct acme_client *c, const char *host) {
  while (config_ip_literal(host) && c->next_type < c->ntypes && strcmp(c->types[c->next_type], ACME_CHAL_HTTP) != 0)
    c->next_type++;
}

int acme_client_obtain(struct acme_client *c, const char *host, EVP_PKEY **key_out, char **chain_out,
                       char *err, size_t errlen) {
  *key_out = NULL;
  *chain_out = NULL;
  if (!c->new_order[0] && load_directory(c, err, errlen) != 0) return -1;
  if (!c->kid[0] && register_account(c, err, errlen) != 0) return -1;
  c->next_type = 0; /* every renewal starts with the preferred type again */
  skip_types(c, host);
  if (c->next_type >= c->ntypes) return errf(err, errlen, "%s: an IP address needs http-01 (-http-port)", host);
  /* NEXT_TYPE always moves next_type on, so there are at most ntypes orders. */
  for (int orders = 0; orders < c->ntypes; orders++) {
    int rc = one_order(c, host, key_out, chain_out, err, errlen);
    if (rc == OK) return 0;
    if (rc != NEXT_TYPE) return -1;
    skip_types(c, host);
    if (c->next_type >= c->ntypes) return -1;
    log_warn("acme: %s: %s; trying %s with a new order", host, err, c->types[c->next_type]);
  }
  return -1;
}

int acme_client_init(struct acme_client *c, EVP_PKEY *account_key, const char *directory,
                     const char *ca_file, const char *const *types, int ntypes, int stop_fd,
                     char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->key = account_key;
  copy(c->directory, sizeof c->directory, directory);
  c->ntypes = ntypes > 2 ? 2 : ntypes;
  for (int i = 0; i < c->ntypes; i++) c->types[i] = types[i];
  if (acme_thumbprint(account_key, c->thumbprint) != 0) return errf(err, errlen, "account key: no thumbprint");
  return acme_https_init(&c->https, ca_file, stop_fd, REQUEST_TIMEOUT_MS, err, errlen);
}

int acme_client_account(struct acme_client *c, const char *email, const char *eab_kid, const char *eab_key) {
  copy(c->email, sizeof c->email, email);
  copy(c->eab_kid, sizeof c->eab_kid, eab_kid);
  c->eab_keylen = eab_kid[0] ? acme_eab_key_decode(eab_key, c->eab_key, sizeof c->eab_key) : 0;
  return eab_kid[0] && !c->eab_keylen ? -1 : 0;
}

void acme_client_free(struct acme_client *c) {
  OPENSSL_cleanse(c->eab_key, sizeof c->eab_key);
  acme_https_free(&c->https);
}
