/* httpc.c: the workers' blocking HTTP/1.1 client (see httpc.h). Runs on
 * admission's worker threads and the ACME worker only. Sockets are
 * non-blocking; every wait is a poll() on the socket and the stop
 * descriptor, bounded by the request's deadline, the name lookup included
 * (on a thread of its own: a resolver that does not answer costs the request
 * its deadline, not the worker the resolver's timeouts). The response is
 * parsed by http_parser, the library derpd's server side uses. */
#include "server/httpc/httpc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "derp/client_tls.h"

int64_t httpc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum { W_READY = 1, W_TIMEOUT = 0, W_ERROR = -1, W_STOPPED = -2 };

/* Waits for ev on fd until deadline, or until stop_fd is readable. */
static int wait_fd(int fd, short ev, int64_t deadline, int stop_fd) {
  for (;;) {
    int64_t left = deadline - httpc_now_ms();
    if (left < 0) left = 0;
    struct pollfd pfd[2] = {{.fd = fd, .events = ev}, {.fd = stop_fd, .events = POLLIN}};
    int r = poll(pfd, stop_fd >= 0 ? 2 : 1, left > INT_MAX ? INT_MAX : (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return W_ERROR;
    if (stop_fd >= 0 && (pfd[1].revents & POLLIN)) return W_STOPPED;
    if (r == 0) return W_TIMEOUT;
    return W_READY; /* POLLERR / POLLHUP: the next call reports it */
  }
}

static enum httpc_rc wait_rc(int w) {
  return w == W_TIMEOUT ? HTTPC_TIMEOUT : w == W_STOPPED ? HTTPC_STOPPED : HTTPC_ERROR;
}

void httpc_conn_close(struct httpc_conn *c) {
  if (c->ssl) SSL_free(c->ssl);
  if (c->fd >= 0) close(c->fd);
  c->ssl = NULL;
  c->fd = -1;
  c->used = false;
}

/* ---- connecting ----------------------------------------------------------- */

/* One address, within its share of the time left. */
static enum httpc_rc connect_one(const struct sockaddr *sa, socklen_t salen, int64_t deadline, int stop_fd,
                                 int *out, char *err, size_t errlen) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return HTTPC_ERROR;
  }
  if (connect(fd, sa, salen) < 0) {
    if (errno != EINPROGRESS) { /* a unix socket's full backlog (EAGAIN) fails too */
      snprintf(err, errlen, "connect: %s", strerror(errno));
      close(fd);
      return HTTPC_ERROR;
    }
    int w = wait_fd(fd, POLLOUT, deadline, stop_fd);
    int soerr = 0;
    socklen_t l = sizeof soerr;
    if (w == W_READY && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) == 0 && soerr == 0) {
      /* connected */
    } else {
      if (w == W_READY) snprintf(err, errlen, "connect: %s", strerror(soerr ? soerr : errno));
      else snprintf(err, errlen, "connect: %s", w == W_TIMEOUT ? "timeout" : "stopped");
      close(fd);
      return w == W_READY ? HTTPC_ERROR : wait_rc(w);
    }
  }
  if (sa->sa_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  *out = fd;
  return HTTPC_OK;
}

/* One name lookup on a thread of its own, so that the request's deadline
 * bounds it: the caller waits for `done` until its deadline or stop and may
 * walk away; the thread and the caller each hold a reference, and the last
 * to let go frees it, so an abandoned lookup finishes and is freed on its
 * own. (Not glibc's getaddrinfo_a: its notification threads are invisible
 * to TSan, and derpd's TSan build must stay green.) Each runs within a
 * budget (struct httpc_lookups), abandoned ones included, so a resolver that
 * never answers costs that many threads at most, each until the resolver's
 * own timeout. */
#define LOOKUP_STACK (256 * 1024)

static struct httpc_lookups shared_lookups = {.max = HTTPC_SHARED_LOOKUPS};

struct lookup {
  char host[256], port[8];
  struct addrinfo *res;
  int rc;        /* getaddrinfo's: 0 or an EAI_* code (negative in glibc) */
  int sys_errno; /* with EAI_SYSTEM: the errno it left (0 if none) */
  atomic_bool finished; /* res and rc are set (release) */
  int done;             /* eventfd, written once finished */
  atomic_int refs;
  struct httpc_lookups *budget;
};

static void lookup_unref(struct lookup *l) {
  if (atomic_fetch_sub(&l->refs, 1) != 1) return;
  if (l->res) freeaddrinfo(l->res);
  close(l->done);
  free(l);
}

static void *lookup_main(void *arg) {
  struct lookup *l = arg;
  pthread_setname_np(pthread_self(), "dns-lookup");
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  int rc = getaddrinfo(l->host, l->port, &hints, &l->res);
  l->rc = rc;
  l->sys_errno = rc == EAI_SYSTEM ? errno : 0; /* errno is this thread's */
  atomic_store_explicit(&l->finished, true, memory_order_release);
  uint64_t one = 1;
  ssize_t w = write(l->done, &one, sizeof one); /* one write to a fresh eventfd: cannot fail */
  (void)w;
  struct httpc_lookups *b = l->budget;
  lookup_unref(l);
  atomic_fetch_sub(&b->running, 1);
  return NULL;
}

/* Starts the lookup; NULL (err set) if it cannot. */
static struct lookup *lookup_start(const struct httpc_endpoint *ep, struct httpc_lookups *b, char *err,
                                   size_t errlen) {
  if (strlen(ep->host) >= sizeof ((struct lookup *)0)->host) {
    snprintf(err, errlen, "lookup %s: name too long", ep->host);
    return NULL;
  }
  if (atomic_fetch_add(&b->running, 1) >= b->max) {
    atomic_fetch_sub(&b->running, 1);
    snprintf(err, errlen, "lookup %s: %d lookup%s already running (the resolver does not answer?)", ep->host,
             b->max, b->max == 1 ? "" : "s");
    return NULL;
  }
  struct lookup *l = calloc(1, sizeof *l);
  if (l) l->done = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!l || l->done < 0) {
    snprintf(err, errlen, "lookup %s: %s", ep->host, l ? strerror(errno) : "out of memory");
    free(l);
    atomic_fetch_sub(&b->running, 1);
    return NULL;
  }
  strcpy(l->host, ep->host);
  snprintf(l->port, sizeof l->port, "%u", ep->port);
  l->budget = b;
  atomic_init(&l->refs, 2);
  pthread_attr_t at;
  pthread_t t;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, LOOKUP_STACK);
  int r = pthread_create(&t, &at, lookup_main, l);
  pthread_attr_destroy(&at);
  if (r != 0) {
    snprintf(err, errlen, "lookup %s: cannot start its thread: %s", ep->host, strerror(r));
    close(l->done);
    free(l);
    atomic_fetch_sub(&b->running, 1);
    return NULL;
  }
  return l;
}

/* Every address of the name in turn, each within an equal share of the time
 * left but at least 2 s (Go's dialer does the same). */
static enum httpc_rc connect_tcp(const struct httpc_endpoint *ep, struct httpc_lookups *b, int64_t deadline,
                                 int stop_fd, int *out, char *err, size_t errlen) {
  struct lookup *l = lookup_start(ep, b, err, errlen);
  if (!l) return HTTPC_ERROR;
  int w = wait_fd(l->done, POLLIN, deadline, stop_fd);
  if (w != W_READY) {
    snprintf(err, errlen, "lookup %s: %s", ep->host,
             w == W_TIMEOUT ? "timeout" : w == W_STOPPED ? "stopped" : "poll failed");
    lookup_unref(l);
    return wait_rc(w);
  }
  bool fin = atomic_load_explicit(&l->finished, memory_order_acquire);
  if (!fin || l->rc != 0) {
    snprintf(err, errlen, "lookup %s: %s", ep->host,
             !fin ? "no result" : l->sys_errno ? strerror(l->sys_errno) : gai_strerror(l->rc));
    lookup_unref(l);
    return HTTPC_ERROR;
  }
  struct addrinfo *res = l->res;
  int n = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) n++;
  enum httpc_rc rc = HTTPC_ERROR;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next, n--) {
    int64_t now = httpc_now_ms(), share = (deadline - now) / n;
    if (share < 2000) share = 2000;
    int64_t d = now + share < deadline ? now + share : deadline;
    rc = connect_one(ai->ai_addr, ai->ai_addrlen, d, stop_fd, out, err, errlen);
    if (rc == HTTPC_OK || rc == HTTPC_STOPPED || httpc_now_ms() >= deadline) break;
  }
  lookup_unref(l);
  if (rc == HTTPC_ERROR && httpc_now_ms() >= deadline) rc = HTTPC_TIMEOUT;
  return rc;
}

enum httpc_rc httpc_connect_tcp(const char *host, uint16_t port, struct httpc_lookups *budget,
                                int64_t deadline_ms, int stop_fd, int *out, char *err, size_t errlen) {
  struct httpc_endpoint ep = {.kind = HTTPC_TCP, .host = host, .port = port};
  return connect_tcp(&ep, budget ? budget : &shared_lookups, deadline_ms, stop_fd, out, err, errlen);
}

static enum httpc_rc connect_unix(const struct httpc_endpoint *ep, int64_t deadline, int stop_fd, int *out,
                                  char *err, size_t errlen) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(ep->host) >= sizeof sa.sun_path) {
    snprintf(err, errlen, "socket path too long");
    return HTTPC_ERROR;
  }
  strcpy(sa.sun_path, ep->host);
  enum httpc_rc rc = connect_one((struct sockaddr *)&sa, sizeof sa, deadline, stop_fd, out, err, errlen);
  if (rc == HTTPC_ERROR) {
    char e[200];
    snprintf(e, sizeof e, "%s", err);
    snprintf(err, errlen, "dial unix %s: %s", ep->host, e);
  }
  return rc;
}

static void ssl_err(char *err, size_t errlen, const char *what, int saved_errno) {
  unsigned long e = ERR_get_error();
  char buf[200] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  else snprintf(buf, sizeof buf, "%s", saved_errno ? strerror(saved_errno) : "connection closed");
  ERR_clear_error();
  snprintf(err, errlen, "tls: %s: %s", what, buf);
}

static bool is_ip(const char *h) {
  uint8_t a[16];
  return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

/* Waits as SSL_get_error says. */
static int ssl_wait(SSL *ssl, int r, int fd, int64_t deadline, int stop_fd) {
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ) return wait_fd(fd, POLLIN, deadline, stop_fd);
  if (e == SSL_ERROR_WANT_WRITE) return wait_fd(fd, POLLOUT, deadline, stop_fd);
  return W_ERROR;
}

static enum httpc_rc tls_start(struct httpc_conn *cn, const struct httpc_endpoint *ep, int64_t deadline,
                               int stop_fd, char *err, size_t errlen) {
  SSL *ssl = SSL_new(ep->tls);
  if (!ssl || !SSL_set_fd(ssl, cn->fd)) {
    SSL_free(ssl);
    ssl_err(err, errlen, "setup", 0);
    return HTTPC_ERROR;
  }
  cn->ssl = ssl;
  SSL_set_connect_state(ssl);
  /* Go: SNI for names only; the certificate must name the host (or, for an
   * IP literal, carry it as an IP SAN). */
  X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
  bool ok = is_ip(ep->host) ? X509_VERIFY_PARAM_set1_ip_asc(vp, ep->host)
                            : SSL_set_tlsext_host_name(ssl, ep->host) &&
                                  X509_VERIFY_PARAM_set1_host(vp, ep->host, strlen(ep->host));
  if (!ok) {
    ssl_err(err, errlen, "setup", 0);
    return HTTPC_ERROR;
  }
  for (;;) {
    errno = 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1) return HTTPC_OK;
    int saved = errno;
    int w = ssl_wait(ssl, r, cn->fd, deadline, stop_fd);
    if (w == W_READY) continue;
    if (w == W_ERROR) {
      long v = SSL_get_verify_result(ssl);
      if (v != X509_V_OK) {
        ERR_clear_error();
        snprintf(err, errlen, "tls: certificate: %s", X509_verify_cert_error_string(v));
      } else {
        ssl_err(err, errlen, "handshake", saved);
      }
      return HTTPC_ERROR;
    }
    snprintf(err, errlen, "tls: handshake: %s", w == W_TIMEOUT ? "timeout" : "stopped");
    return wait_rc(w);
  }
}

static enum httpc_rc dial(struct httpc_conn *cn, const struct httpc_endpoint *ep, int64_t deadline, int stop_fd,
                          char *err, size_t errlen) {
  enum httpc_rc rc = ep->kind == HTTPC_UNIX ? connect_unix(ep, deadline, stop_fd, &cn->fd, err, errlen)
                                            : connect_tcp(ep, &shared_lookups, deadline, stop_fd, &cn->fd, err, errlen);
  if (rc == HTTPC_OK && ep->kind == HTTPC_TLS) rc = tls_start(cn, ep, deadline, stop_fd, err, errlen);
  if (rc != HTTPC_OK) httpc_conn_close(cn);
  cn->used = false;
  return rc;
}

/* ---- bytes ------------------------------------------------------------------ */

/* One read or write on cn (plain or TLS): > 0 bytes moved, 0 EOF (reads),
 * IO_WAIT with *ev the poll event to wait for, or HTTPC_ERROR (err filled). */
#define IO_WAIT (-100)
static long io_once(struct httpc_conn *cn, bool wr, void *buf, size_t n, short *ev, char *err, size_t errlen) {
  const char *what = wr ? "write" : "read";
  if (cn->ssl) {
    int k = n > INT_MAX ? INT_MAX : (int)n;
    errno = 0;
    int r = wr ? SSL_write(cn->ssl, buf, k) : SSL_read(cn->ssl, buf, k);
    if (r > 0) return r;
    int e = SSL_get_error(cn->ssl, r), saved = errno;
    if (!wr && (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && saved == 0 && !ERR_peek_error()))) {
      ERR_clear_error();
      return 0; /* close_notify, or EOF without one */
    }
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      *ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
      return IO_WAIT;
    }
    ssl_err(err, errlen, what, saved);
    return HTTPC_ERROR;
  }
  ssize_t r = wr ? send(cn->fd, buf, n, MSG_NOSIGNAL) : recv(cn->fd, buf, n, 0);
  if (r > 0 || (r == 0 && !wr)) return r;
  if (r < 0 && errno != EAGAIN && errno != EINTR) {
    snprintf(err, errlen, "%s: %s", what, strerror(errno));
    return HTTPC_ERROR;
  }
  *ev = r < 0 && errno == EINTR ? 0 : wr ? POLLOUT : POLLIN;
  return IO_WAIT;
}

/* Waits for ev (0: no wait, retry at once). HTTPC_OK, or the failure. */
static enum httpc_rc io_wait(struct httpc_conn *cn, bool wr, short ev, int64_t deadline, int stop_fd, char *err,
                             size_t errlen) {
  if (!ev) return HTTPC_OK;
  int w = wait_fd(cn->fd, ev, deadline, stop_fd);
  if (w == W_READY) return HTTPC_OK;
  snprintf(err, errlen, "%s: %s", wr ? "write" : "read",
           w == W_TIMEOUT ? "timeout" : w == W_STOPPED ? "stopped" : "poll failed");
  return wait_rc(w);
}

/* >0 bytes, 0 EOF, or an enum httpc_rc (< 0) on failure, err filled. */
static long conn_read(struct httpc_conn *cn, void *buf, size_t cap, int64_t deadline, int stop_fd, char *err,
                      size_t errlen) {
  for (;;) {
    short ev = 0;
    long r = io_once(cn, false, buf, cap, &ev, err, errlen);
    if (r != IO_WAIT) return r;
    enum httpc_rc rc = io_wait(cn, false, ev, deadline, stop_fd, err, errlen);
    if (rc != HTTPC_OK) return rc;
  }
}

static enum httpc_rc conn_write(struct httpc_conn *cn, const uint8_t *p, size_t n, int64_t deadline, int stop_fd,
                                char *err, size_t errlen) {
  while (n > 0) {
    short ev = 0;
    long r = io_once(cn, true, (void *)p, n, &ev, err, errlen);
    if (r > 0) {
      p += r;
      n -= (size_t)r;
      continue;
    }
    if (r != IO_WAIT) return HTTPC_ERROR;
    enum httpc_rc rc = io_wait(cn, true, ev, deadline, stop_fd, err, errlen);
    if (rc != HTTPC_OK) return rc;
  }
  return HTTPC_OK;
}

/* ---- the response ----------------------------------------------------------- */

#define HDR_MAX 1024

struct parse {
  struct httpc_resp *r;
  bool head, done, informational;
  bool in_value;               /* the last piece was of a value */
  bool value_cut;              /* the value being assembled outgrew HDR_MAX */
  size_t nlen, vlen;           /* the header being assembled (pieces may span reads) */
  char name[HDR_MAX], value[HDR_MAX];
  /* Content-Length as Go takes it (net/http's fixLength): repeated lines
   * with one value are that value, different values an error. http_parser
   * refuses any repeat, so its flag is cleared at each repeat and the values
   * are compared here. */
  char cl[24];
  size_t cllen;                /* 0: none seen yet */
  bool cl_differs;
};

/* false if not all of it fit */
static bool append(char *dst, size_t *len, const char *at, size_t n) {
  size_t take = n < HDR_MAX - *len ? n : HDR_MAX - *len;
  memcpy(dst + *len, at, take);
  *len += take;
  return take == n;
}

static bool is_content_length(const struct parse *ps) {
  return ps->nlen == 14 && strncasecmp(ps->name, "content-length", 14) == 0;
}

/* The header assembled so far goes to the caller (final responses only). */
static void header_done(struct parse *ps, http_parser *p) {
  const char *v = ps->value, *e = ps->value + ps->vlen;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
  size_t vl = (size_t)(e - v);
  if (ps->nlen && is_content_length(ps)) {
    if (ps->cllen == 0 && vl > 0 && vl < sizeof ps->cl) memcpy(ps->cl, v, ps->cllen = vl);
    else if (vl != ps->cllen || memcmp(ps->cl, v, vl) != 0) ps->cl_differs = true;
  }
  if (ps->nlen && ps->r->on_header && !(p->status_code / 100 == 1 && p->status_code != 101))
    ps->r->on_header(ps->name, ps->nlen, v, vl, ps->value_cut, ps->r->header_arg);
  ps->nlen = ps->vlen = 0;
  ps->in_value = false;
  ps->value_cut = false;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  struct parse *ps = p->data;
  if (ps->in_value) header_done(ps, p);
  if (ps->cl_differs) return -1;
  append(ps->name, &ps->nlen, at, len);
  if (is_content_length(ps)) p->flags &= (uint8_t)~F_CONTENTLENGTH; /* a repeat: compared in header_done */
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  struct parse *ps = p->data;
  ps->in_value = true;
  if (!append(ps->value, &ps->vlen, at, len)) ps->value_cut = true;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  struct parse *ps = p->data;
  /* http_parser takes a status of fewer than three digits; Go's client
   * refuses it ("malformed HTTP status code"): an error of the request, not
   * an answer. */
  if (p->status_code < 100) return -1;
  header_done(ps, p);
  if (ps->cl_differs) return -1;
  /* 1xx (but 101) is informational: the real response follows (Go skips
   * them). It has no body whatever Content-Length says, as 204 and 304 have
   * none (RFC 9112 §6.3); http_parser would read one unless told (1). */
  if (p->status_code / 100 == 1 && p->status_code != 101) {
    ps->informational = true;
    ps->cllen = 0; /* the final response's own */
    return 1;
  }
  ps->r->status = p->status_code;
  ps->head = true;
  if (p->status_code == 101) {
    ps->done = true; /* nothing we can read follows */
    http_parser_pause(p, 1);
  }
  bool no_body = ps->r->head || p->status_code == 204 || p->status_code == 304;
  return no_body ? 1 : 0; /* 1: no body, whatever Content-Length says */
}

static int on_body(http_parser *p, const char *at, size_t len) {
  struct parse *ps = p->data;
  struct httpc_resp *r = ps->r;
  if (!ps->head) return 0; /* never an informational response's */
  size_t room = r->body_cap - r->body_len, take = len < room ? len : room;
  memcpy(r->body + r->body_len, at, take);
  r->body_len += take;
  if (r->body_len == r->body_cap) http_parser_pause(p, 1); /* the cap: stop here */
  return 0;
}

static int on_message_complete(http_parser *p) {
  struct parse *ps = p->data;
  if (ps->informational) {
    ps->informational = false;
    return 0;
  }
  ps->done = true;
  ps->r->complete = true;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* One attempt on a connected cn. *fresh_fail: it failed before any response
 * byte (the request may be sent again on a new connection). */
static enum httpc_rc attempt(struct httpc_conn *cn, const void *req, size_t len, struct httpc_resp *resp,
                             bool (*enough)(const uint8_t *, size_t, void *), void *arg, int64_t deadline,
                             int stop_fd, bool *keep, bool *fresh_fail, char *err, size_t errlen) {
  *keep = false;
  *fresh_fail = false;
  enum httpc_rc rc = conn_write(cn, req, len, deadline, stop_fd, err, errlen);
  if (rc != HTTPC_OK) {
    *fresh_fail = rc == HTTPC_ERROR;
    return rc;
  }
  http_parser p;
  http_parser_init(&p, HTTP_RESPONSE);
  p.allow_chunked_length = 1; /* chunked wins over a Content-Length beside it, as in Go */
  struct parse ps = {.r = resp};
  p.data = &ps;
  uint8_t buf[4096];
  size_t total = 0;
  for (;;) {
    long n = conn_read(cn, buf, sizeof buf, deadline, stop_fd, err, errlen);
    if (n < 0) {
      if (!ps.head) {
        *fresh_fail = total == 0 && n == HTTPC_ERROR;
        return (enum httpc_rc)n;
      }
      resp->body_error = n == HTTPC_TIMEOUT ? "timeout reading the body" : "error reading the body";
      return HTTPC_OK;
    }
    total += (size_t)n;
    /* n == 0: EOF, which ends a body that runs to the end of the stream. */
    size_t used = http_parser_execute(&p, &settings, (const char *)buf, (size_t)n);
    enum http_errno he = HTTP_PARSER_ERRNO(&p);
    if (he != HPE_OK && he != HPE_PAUSED) {
      if (!ps.head) {
        snprintf(err, errlen, "malformed HTTP response: %s", http_errno_description(he));
        return HTTPC_ERROR;
      }
      resp->body_error = "malformed body";
      return HTTPC_OK;
    }
    if (ps.done) {
      /* Kept only when nothing at all is left over or unread. */
      *keep = resp->complete && used == (size_t)n && n > 0 && http_should_keep_alive(&p);
      return HTTPC_OK;
    }
    if (ps.head && (resp->body_len == resp->body_cap || (enough && enough(resp->body, resp->body_len, arg))))
      return HTTPC_OK;
    if (n == 0) {
      if (!ps.head) {
        *fresh_fail = total == 0;
        snprintf(err, errlen, "%s", total ? "connection closed in the response head" : "connection closed without a response");
        return HTTPC_ERROR;
      }
      resp->body_error = "connection closed in the body";
      return HTTPC_OK;
    }
  }
}

/* An idle kept-alive connection has nothing to say: anything readable (a
 * 408 sent on an idle timeout, stray bytes after a short Content-Length,
 * the server's close) means it must not carry the next request, whose
 * answer would be read from those bytes. Go's transport drops it too. */
static bool idle_and_quiet(const struct httpc_conn *cn) {
  if (cn->ssl && SSL_pending(cn->ssl) > 0) return false;
  struct pollfd p = {.fd = cn->fd, .events = POLLIN};
  return poll(&p, 1, 0) == 0;
}

enum httpc_rc httpc_request(struct httpc_conn *cn, const struct httpc_endpoint *ep, const void *req, size_t len,
                            struct httpc_resp *resp, bool (*enough)(const uint8_t *, size_t, void *), void *arg,
                            int64_t deadline_ms, int stop_fd, char *err, size_t errlen) {
  for (int tries = 0;; tries++) {
    resp->status = 0;
    resp->body_len = 0;
    resp->complete = false;
    resp->body_error = NULL;
    if (cn->fd >= 0 && !idle_and_quiet(cn)) httpc_conn_close(cn);
    bool reused = cn->fd >= 0;
    if (!reused) {
      enum httpc_rc rc = dial(cn, ep, deadline_ms, stop_fd, err, errlen);
      if (rc != HTTPC_OK) return rc;
    }
    bool keep, fresh_fail;
    enum httpc_rc rc = attempt(cn, req, len, resp, enough, arg, deadline_ms, stop_fd, &keep, &fresh_fail, err,
                               errlen);
    if (keep) {
      cn->used = true;
    } else {
      httpc_conn_close(cn);
    }
    /* The server closed a kept-alive connection while it was idle: once more
     * on a new one (Go retries such a request too). */
    if (rc == HTTPC_ERROR && reused && fresh_fail && tries == 0) continue;
    return rc;
  }
}

struct ssl_ctx_st *httpc_tls_ctx(const char *ca_file, char *err, size_t errlen) {
  bool own = ca_file && ca_file[0];
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (!ctx) goto fail;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  static const uint8_t alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  if (own ? !SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
          : !derp_tls_load_roots(ctx, getenv("SSL_CERT_FILE"), getenv("SSL_CERT_DIR")))
    goto fail;
  return ctx;
fail:;
  unsigned long e = ERR_get_error();
  char buf[200] = "out of memory";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  if (own) snprintf(err, errlen, "TLS roots from %s: %s", ca_file, buf);
  else snprintf(err, errlen, "TLS roots (SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt): %s", buf);
  SSL_CTX_free(ctx);
  return NULL;
}
