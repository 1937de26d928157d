/* acme_https.c: a blocking HTTPS/1.1 client with deadlines and a stop
 * descriptor (acme_https.h). One TCP + TLS connection per request: the ACME
 * exchange is a dozen requests every couple of months, so keep-alive would
 * buy nothing and cost a connection state machine. */
#include "server/acme/acme_https.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#define USER_AGENT "derpd-acme/1"

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int acme_https_init(struct acme_https *h, const char *ca_file, int stop_fd, int timeout_ms, char *err,
                    size_t errlen) {
  memset(h, 0, sizeof *h);
  h->stop_fd = stop_fd;
  h->timeout_ms = timeout_ms;
  h->ctx = SSL_CTX_new(TLS_method());
  if (!h->ctx) {
    snprintf(err, errlen, "SSL_CTX_new failed");
    return -1;
  }
  SSL_CTX_set_min_proto_version(h->ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(h->ctx, SSL_VERIFY_PEER, NULL);
  /* Debian's BoringSSL has no default verify paths; SSL_CERT_FILE replaces
   * the bundle as in Go (and in region/link.c's dialler). */
  const char *env = getenv("SSL_CERT_FILE");
  const char *file = ca_file && ca_file[0] ? ca_file
                     : env && env[0]       ? env
                                           : "/etc/ssl/certs/ca-certificates.crt";
  if (!SSL_CTX_load_verify_locations(h->ctx, file, NULL)) {
    unsigned long e = ERR_get_error();
    char buf[200] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    snprintf(err, errlen, "load CA roots from %s: %s", file, buf[0] ? buf : "failed");
    SSL_CTX_free(h->ctx);
    h->ctx = NULL;
    return -1;
  }
  return 0;
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
    for (size_t i = 0; i < pl; i++)
      if (p[i] < '0' || p[i] > '9') return -1;
    memcpy(port, p, pl);
    port[pl] = 0;
  } else {
    memcpy(port, "443", 4);
  }
  *path = *end == '/' ? end : "/";
  return 0;
}

/* ---- response parsing -------------------------------------------------- */

static void header_copy(char *dst, size_t cap, const char *v, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, v, n);
  dst[n] = 0;
}

/* Decode a chunked body from p[0..n) into out (capacity n suffices). 1 done,
 * 0 incomplete, -1 malformed. */
static int dechunk(const char *p, size_t n, char *out, size_t *out_len) {
  size_t i = 0, o = 0;
  for (;;) {
    const char *nl = memchr(p + i, '\n', n - i);
    if (!nl) return 0;
    char *endp;
    errno = 0;
    unsigned long sz = strtoul(p + i, &endp, 16);
    if (endp == p + i || errno || sz > ACME_HTTPS_MAX) return -1;
    i = (size_t)(nl - p) + 1;
    if (sz == 0) {
      /* Trailers, then an empty line. */
      for (;;) {
        const char *t = memchr(p + i, '\n', n - i);
        if (!t) return 0;
        size_t linelen = (size_t)(t - (p + i));
        i = (size_t)(t - p) + 1;
        if (linelen == 0 || (linelen == 1 && t[-1] == '\r')) {
          *out_len = o;
          return 1;
        }
      }
    }
    if (n - i < sz + 2) return 0;
    memcpy(out + o, p + i, sz);
    o += sz;
    i += sz;
    if (p[i] == '\r') i++;
    if (p[i] != '\n') return -1;
    i++;
  }
}

int acme_resp_parse(const char *buf, size_t len, bool eof, bool head, struct acme_resp *r) {
  const char *hend = NULL;
  for (size_t i = 0; i + 3 < len && !hend; i++)
    if (memcmp(buf + i, "\r\n\r\n", 4) == 0) hend = buf + i + 4;
  if (!hend) return eof ? -1 : 0;
  int major, minor, status;
  if (sscanf(buf, "HTTP/%d.%d %3d", &major, &minor, &status) != 3 || status < 100 || status > 999)
    return -1;
  r->status = status;
  r->nonce[0] = r->location[0] = r->content_type[0] = 0;
  r->retry_after = -1;
  long clen = -1;
  bool chunked = false;
  const char *line = memchr(buf, '\n', (size_t)(hend - buf)) + 1;
  while (line < hend - 2) {
    const char *nl = memchr(line, '\n', (size_t)(hend - line));
    const char *colon = memchr(line, ':', (size_t)(nl - line));
    if (colon) {
      size_t nlen = (size_t)(colon - line);
      const char *v = colon + 1, *vend = nl;
      while (v < vend && (*v == ' ' || *v == '\t')) v++;
      while (vend > v && (vend[-1] == '\r' || vend[-1] == ' ' || vend[-1] == '\t')) vend--;
      size_t vl = (size_t)(vend - v);
#define IS(name) (nlen == sizeof name - 1 && strncasecmp(line, name, nlen) == 0)
      if (IS("Replay-Nonce")) header_copy(r->nonce, sizeof r->nonce, v, vl);
      else if (IS("Location")) header_copy(r->location, sizeof r->location, v, vl);
      else if (IS("Content-Type")) header_copy(r->content_type, sizeof r->content_type, v, vl);
      else if (IS("Retry-After") && vl > 0 && v[0] >= '0' && v[0] <= '9') r->retry_after = strtol(v, NULL, 10);
      else if (IS("Content-Length")) clen = strtol(v, NULL, 10);
      else if (IS("Transfer-Encoding")) chunked = vl >= 7 && strncasecmp(vend - 7, "chunked", 7) == 0;
#undef IS
    }
    line = nl + 1;
  }
  size_t blen = len - (size_t)(hend - buf);
  bool no_body = head || status == 204 || status == 304 || status < 200;
  if (no_body) blen = 0;
  else if (chunked) {
    char *out = malloc(blen + 1);
    size_t olen = 0;
    int d = out ? dechunk(hend, blen, out, &olen) : -1;
    if (d <= 0) {
      free(out);
      return d < 0 || eof ? -1 : 0;
    }
    out[olen] = 0;
    r->body = out;
    r->body_len = olen;
    return 1;
  } else if (clen >= 0) {
    if (blen < (size_t)clen) return eof ? -1 : 0;
    blen = (size_t)clen;
  } else if (!eof) {
    return 0; /* the body ends at EOF */
  }
  r->body = malloc(blen + 1);
  if (!r->body) return -1;
  memcpy(r->body, hend, blen);
  r->body[blen] = 0;
  r->body_len = blen;
  return 1;
}

/* ---- the connection ------------------------------------------------------ */

/* 1 = ready, 0 = deadline, -1 = stop or poll error (err says which). */
static int wait_io(const struct acme_https *h, int fd, short ev, int64_t deadline, char *err,
                   size_t errlen) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return 0;
    struct pollfd p[2] = {{.fd = fd, .events = ev}, {.fd = h->stop_fd, .events = POLLIN}};
    int r = poll(p, h->stop_fd >= 0 ? 2 : 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, errlen, "poll: %s", strerror(errno));
      return -1;
    }
    if (h->stop_fd >= 0 && p[1].revents) {
      snprintf(err, errlen, "stopping");
      return -1;
    }
    if (r > 0) return 1;
  }
}

static int dial(const struct acme_https *h, const char *host, const char *port, int64_t deadline,
                char *err, size_t errlen) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int g = getaddrinfo(host, port, &hints, &res); /* blocking: this thread only */
  if (g != 0) {
    snprintf(err, errlen, "resolve %s: %s", host, gai_strerror(g));
    return -1;
  }
  int fd = -1;
  snprintf(err, errlen, "connect %s:%s: no address", host, port);
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen), so = 0;
    if (rc != 0 && errno == EINPROGRESS) {
      int w = wait_io(h, fd, POLLOUT, deadline, err, errlen);
      socklen_t sl = sizeof so;
      if (w == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0) rc = 0;
      else if (w == 1) errno = so;
      else if (w == 0) errno = ETIMEDOUT;
      if (w < 0) {
        close(fd);
        fd = -1;
        break;
      }
    }
    if (rc != 0) {
      snprintf(err, errlen, "connect %s:%s: %s", host, port, strerror(errno));
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  return fd;
}

static void ssl_err(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_get_error();
  char buf[200] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  snprintf(err, errlen, "%s: %s", what, buf[0] ? buf : "connection closed");
}

/* Drive one SSL call to completion. 1 done (r > 0 from fn), 0 clean EOF (read),
 * -1 error. */
static int ssl_step(const struct acme_https *h, SSL *ssl, int fd, int r, int64_t deadline,
                    const char *what, char *err, size_t errlen) {
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    int w = wait_io(h, fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, err, errlen);
    if (w == 0) snprintf(err, errlen, "%s: timeout", what);
    return w == 1 ? 1 : -1;
  }
  if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
    return 0;
  ssl_err(err, errlen, what);
  return -1;
}

int acme_https_do(struct acme_https *h, const char *method, const char *url, const char *ctype,
                  const char *body, struct acme_resp *r, char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  char host[256], port[8];
  const char *path;
  if (acme_url_split(url, host, sizeof host, port, sizeof port, &path) != 0) {
    snprintf(err, errlen, "not an https URL: %.200s", url);
    return -1;
  }
  int64_t deadline = now_ms() + h->timeout_ms;
  int fd = dial(h, host, port, deadline, err, errlen);
  if (fd < 0) return -1;
  size_t blen = body ? strlen(body) : 0;
  size_t qcap = strlen(url) + blen + 512;
  char *req = malloc(qcap), *buf = NULL;
  SSL *ssl = SSL_new(h->ctx);
  int rc = -1;
  if (!req || !ssl || !SSL_set_fd(ssl, fd)) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  uint8_t ip[16];
  bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  if (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(vp, host)
            : !SSL_set_tlsext_host_name(ssl, host) || !X509_VERIFY_PARAM_set1_host(vp, host, strlen(host))) {
    ssl_err(err, errlen, "TLS setup");
    goto out;
  }
  SSL_set_connect_state(ssl);
  int s;
  while ((s = SSL_do_handshake(ssl)) != 1) {
    char what[300];
    snprintf(what, sizeof what, "TLS handshake with %s:%s", host, port);
    if (ssl_step(h, ssl, fd, s, deadline, what, err, errlen) != 1) {
      if (strstr(err, "CERTIFICATE_VERIFY_FAILED")) {
        long v = SSL_get_verify_result(ssl);
        size_t l = strlen(err);
        snprintf(err + l, errlen - l, " (%s; roots: --acme-ca-file)", X509_verify_cert_error_string(v));
      }
      goto out;
    }
  }
  bool head = strcmp(method, "HEAD") == 0;
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
  for (int off = 0; off < qn;) {
    int w = SSL_write(ssl, req + off, qn - off);
    if (w > 0) {
      off += w;
      continue;
    }
    if (ssl_step(h, ssl, fd, w, deadline, "write request", err, errlen) != 1) {
      if (!err[0]) snprintf(err, errlen, "write request: connection closed");
      goto out;
    }
  }
  size_t cap = 16384, len = 0;
  for (;;) {
    if (len == cap || !buf) {
      char *nb = len < ACME_HTTPS_MAX ? realloc(buf, buf ? cap * 2 : cap) : NULL;
      if (!nb) {
        if (len < ACME_HTTPS_MAX) snprintf(err, errlen, "out of memory");
        else snprintf(err, errlen, "response from %s larger than %d bytes", host, ACME_HTTPS_MAX);
        goto out;
      }
      if (buf) cap *= 2;
      buf = nb;
    }
    errno = 0;
    int n = SSL_read(ssl, buf + len, (int)(cap - len));
    bool eof = false;
    if (n > 0) {
      len += (size_t)n;
    } else {
      int st = ssl_step(h, ssl, fd, n, deadline, "read response", err, errlen);
      if (st < 0) goto out;
      eof = st == 0;
    }
    if (n > 0 || eof) {
      int p = acme_resp_parse(buf, len, eof, head, r);
      if (p == 1) break;
      if (p < 0) {
        snprintf(err, errlen, "malformed HTTP response from %s (%zu bytes)", host, len);
        goto out;
      }
    }
  }
  rc = 0;
out:
  SSL_free(ssl);
  close(fd);
  free(req);
  free(buf);
  return rc;
}
