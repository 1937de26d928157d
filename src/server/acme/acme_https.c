/* acme_https.c: ACME's requests over httpc (server/httpc/httpc.h, the
 * blocking client admission uses too): the URL, the request head, the four
 * headers ACME reads, and a body of at most ACME_HTTPS_MAX bytes. One
 * connection per request ("Connection: close"): the exchange is a dozen
 * requests every couple of months, so keep-alive would buy nothing. */
#include "server/acme/acme_https.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/httpc/httpc.h"

#define USER_AGENT "derpd-acme/1"

int acme_https_init(struct acme_https *h, const char *ca_file, int stop_fd, int timeout_ms, char *err,
                    size_t errlen) {
  memset(h, 0, sizeof *h);
  h->stop_fd = stop_fd;
  h->timeout_ms = timeout_ms;
  /* Debian's BoringSSL has no default verify paths: --acme-ca-file, else
   * SSL_CERT_FILE / SSL_CERT_DIR as in Go, else Debian's bundle. */
  h->ctx = httpc_tls_ctx(ca_file, err, errlen);
  return h->ctx ? 0 : -1;
}

void acme_https_free(struct acme_https *h) {
  SSL_CTX_free(h->ctx);
  h->ctx = NULL;
}

void acme_resp_free(struct acme_resp *r) {
  free(r->body);
  r->body = NULL;
  r->body_len = 0;
}

int acme_url_split(const char *url, char *host, size_t hcap, char *port, size_t pcap, const char **path) {
  if (strncasecmp(url, "https://", 8) != 0) return -1;
  /* URLs come from the CA's JSON, whose escapes allow any byte: a space or
   * a control byte would end or split our request line. */
  for (const char *q = url; *q; q++)
    if ((unsigned char)*q <= 0x20 || *q == 0x7f) return -1;
  const char *h = url + 8, *end = h + strcspn(h, "/?#");
  const char *hend = end, *p = NULL;
  if (*h == '[') {
    const char *rb = memchr(h, ']', (size_t)(end - h));
    if (!rb) return -1;
    hend = rb;
    h++;
    if (rb + 1 < end) {
      if (rb[1] != ':') return -1;
      p = rb + 2;
    }
  } else {
    const char *colon = memchr(h, ':', (size_t)(end - h));
    if (colon) {
      hend = colon;
      p = colon + 1;
    }
  }
  size_t hl = (size_t)(hend - h), pl = p ? (size_t)(end - p) : 3;
  if (hl == 0 || hl >= hcap || pl == 0 || pl >= pcap || pl > 5) return -1;
  memcpy(host, h, hl);
  host[hl] = 0;
  if (p) {
    long v = 0;
    for (size_t i = 0; i < pl; i++) {
      if (p[i] < '0' || p[i] > '9') return -1;
      v = v * 10 + (p[i] - '0');
    }
    if (v == 0 || v > 65535) return -1;
    memcpy(port, p, pl);
    port[pl] = 0;
  } else {
    memcpy(port, "443", 4);
  }
  *path = *end == '/' ? end : "/";
  return 0;
}

long acme_retry_after(const char *v, size_t vl) {
  if (vl == 0 || v[0] < '0' || v[0] > '9') return -1;
  long s = 0;
  for (size_t i = 0; i < vl && v[i] >= '0' && v[i] <= '9'; i++) s = s < 100000000 ? s * 10 + (v[i] - '0') : s;
  return s;
}

static void header_copy(char *dst, size_t cap, const char *v, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, v, n);
  dst[n] = 0;
}

static void on_header(const char *name, size_t nlen, const char *v, size_t vl, bool cut, void *arg) {
  struct acme_resp *r = arg;
#define IS(s) (nlen == sizeof s - 1 && strncasecmp(name, s, nlen) == 0)
  /* A cut nonce or URL would be used as something it is not (a wrong kid,
   * a request to a truncated URL): the response is refused instead. */
  char *dst = NULL;
  size_t cap = 0;
  if (IS("Replay-Nonce")) dst = r->nonce, cap = sizeof r->nonce;
  else if (IS("Location")) dst = r->location, cap = sizeof r->location;
  if (dst && (cut || vl >= cap)) r->too_long = dst == r->nonce ? "Replay-Nonce" : "Location";
  else if (dst) header_copy(dst, cap, v, vl);
  else if (IS("Content-Type")) header_copy(r->content_type, sizeof r->content_type, v, vl);
  else if (IS("Retry-After")) {
    long s = acme_retry_after(v, vl);
    if (s >= 0) r->retry_after = s;
  }
#undef IS
}

int acme_https_do(struct acme_https *h, const char *method, const char *url, const char *ctype,
                  const char *body, struct acme_resp *r, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  r->retry_after = -1;
  char host[256], port[8];
  const char *path;
  if (acme_url_split(url, host, sizeof host, port, sizeof port, &path) != 0) {
    snprintf(err, errlen, "not an https URL: %.200s", url);
    return -1;
  }
  size_t blen = body ? strlen(body) : 0;
  size_t qcap = strlen(url) + blen + 512;
  char *req = malloc(qcap);
  uint8_t *buf = malloc(ACME_HTTPS_MAX + 1); /* one more: a body that fills it is too large */
  int rc = -1;
  if (!req || !buf) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  bool v6 = strchr(host, ':') != NULL, dflt = strcmp(port, "443") == 0;
  int qn = snprintf(req, qcap,
                    "%s %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\nUser-Agent: " USER_AGENT "\r\n"
                    "Accept: */*\r\nConnection: close\r\n",
                    method, path, v6 ? "[" : "", host, v6 ? "]" : "", dflt ? "" : ":", dflt ? "" : port);
  if (body)
    qn += snprintf(req + qn, qcap - (size_t)qn, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                   ctype ? ctype : "application/octet-stream", blen);
  qn += snprintf(req + qn, qcap - (size_t)qn, "\r\n");
  if (body) {
    memcpy(req + qn, body, blen);
    qn += (int)blen;
  }
  struct httpc_endpoint ep = {.kind = HTTPC_TLS, .host = host, .port = (uint16_t)atoi(port), .tls = h->ctx};
  struct httpc_conn cn = HTTPC_CONN_INIT;
  struct httpc_resp hr = {.head = strcmp(method, "HEAD") == 0, .on_header = on_header, .header_arg = r,
                          .body = buf, .body_cap = ACME_HTTPS_MAX + 1};
  enum httpc_rc hrc = httpc_request(&cn, &ep, req, (size_t)qn, &hr, NULL, NULL, httpc_now_ms() + h->timeout_ms,
                                    h->stop_fd, err, errlen);
  httpc_conn_close(&cn);
  if (hrc == HTTPC_STOPPED) {
    snprintf(err, errlen, "stopping");
    goto out;
  }
  if (hrc != HTTPC_OK) {
    if (strstr(err, "certificate")) {
      size_t l = strlen(err);
      snprintf(err + l, errlen - l, " (roots: --acme-ca-file)");
    }
    goto out;
  }
  if (r->too_long) {
    snprintf(err, errlen, "response from %s: its %s header is longer than derpd takes", host, r->too_long);
    goto out;
  }
  if (!hr.complete) {
    if (hr.body_len > ACME_HTTPS_MAX) snprintf(err, errlen, "response from %s larger than %d bytes", host, ACME_HTTPS_MAX);
    else snprintf(err, errlen, "response from %s: %s", host, hr.body_error ? hr.body_error : "incomplete");
    goto out;
  }
  r->status = hr.status;
  r->body = (char *)buf;
  r->body[hr.body_len] = 0;
  r->body_len = hr.body_len;
  buf = NULL; /* now r's */
  rc = 0;
out:
  free(req);
  free(buf);
  return rc;
}
