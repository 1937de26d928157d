/* httpc.h: the small blocking HTTP/1.1 client of derpd's worker threads
 * (never a shard): admission's checks and the ACME worker's CA requests.
 * Plain TCP, TLS (BoringSSL) or a unix socket; one request at a time on a
 * kept-alive connection; every wait bounded by a deadline and cut short by a
 * stop descriptor. Responses are read with http_parser (Content-Length,
 * chunked, or to EOF); only a bounded prefix of the body is kept, and the
 * headers a caller asks for are handed to it. */
#ifndef DERPD_HTTPC_H
#define DERPD_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

struct ssl_ctx_st;

enum httpc_kind { HTTPC_TCP, HTTPC_TLS, HTTPC_UNIX };

struct httpc_endpoint {
  enum httpc_kind kind;
  const char *host;            /* TCP, TLS: a name or an IP literal; UNIX: the socket path */
  uint16_t port;
  struct ssl_ctx_st *tls;      /* TLS: the verifying SSL_CTX (httpc_tls_ctx) */
};

/* A connection kept between requests; fd < 0 when there is none. */
struct httpc_conn {
  int fd;
  struct ssl_st *ssl;
  bool used;                   /* it carried a response already: the server may
                                  have closed it while idle (one retry) */
};
#define HTTPC_CONN_INIT {.fd = -1}
void httpc_conn_close(struct httpc_conn *c);

/* A header of the final response, name and value each cut to 1 KiB (cut:
 * the value was longer), value without surrounding blanks. A caller that
 * acts on a value (a Location) must refuse a cut one, not use a prefix. */
typedef void httpc_header_fn(const char *name, size_t nlen, const char *value, size_t vlen, bool cut, void *arg);

struct httpc_resp {
  /* Set by the caller. */
  bool head;                   /* the request was HEAD: no body follows */
  httpc_header_fn *on_header;  /* may be NULL */
  void *header_arg;
  /* Filled. */
  int status;                  /* of the final response (1xx skipped) */
  uint8_t *body;               /* the caller's buffer: the first body_cap bytes */
  size_t body_cap, body_len;
  bool complete;               /* the whole response was read */
  const char *body_error;      /* static: why the body stopped before it was
                                  complete, enough() and the cap aside */
};

enum httpc_rc {
  HTTPC_OK = 0,                /* a response head arrived (the body may still have failed) */
  HTTPC_ERROR = -1,            /* no response: connect, TLS, write or read failed, or the head was malformed */
  HTTPC_TIMEOUT = -2,          /* the deadline passed before a response head */
  HTTPC_STOPPED = -3,          /* the stop descriptor became readable */
};

/* Send req[0..len) (head and body) on cn, connecting it first if needed, and
 * read the response head, then body bytes into resp->body until the body
 * ends, body_cap is reached, or enough(body, len, arg) says so (may be NULL).
 * deadline_ms: CLOCK_MONOTONIC ms for everything, the name lookup included.
 * stop_fd: readable = give up now (-1: none). A kept-alive connection that
 * fails before any response byte is replaced once by a fresh one. On error,
 * err says what failed. cn stays open only when the response was read
 * whole and the server keeps the connection alive. */
enum httpc_rc httpc_request(struct httpc_conn *cn, const struct httpc_endpoint *ep, const void *req,
                            size_t len, struct httpc_resp *resp,
                            bool (*enough)(const uint8_t *body, size_t len, void *arg), void *arg,
                            int64_t deadline_ms, int stop_fd, char *err, size_t errlen);

/* Name lookups that may run at once, abandoned ones included (each lives
 * until the resolver's own timeout). Static storage: a lookup may outlive
 * its caller. httpc_request's lookups share one budget of 64; a caller that
 * dials in a loop (a mesh link) brings its own, so that a silent resolver
 * cannot make its retries use up everyone else's. */
struct httpc_lookups {
  atomic_int running;
  int max;
};
#define HTTPC_SHARED_LOOKUPS 64

/* A TCP connection to host:port, every address of the name in turn, by
 * deadline_ms (the lookup included: it runs on a thread of its own, counted
 * in budget) unless stop_fd becomes readable first. *out: non-blocking,
 * TCP_NODELAY. */
enum httpc_rc httpc_connect_tcp(const char *host, uint16_t port, struct httpc_lookups *budget,
                                int64_t deadline_ms, int stop_fd, int *out, char *err, size_t errlen);

/* The client SSL_CTX for HTTPS: TLS 1.2+, peer verified against ca_file's
 * roots if not NULL or "", else the system roots with Go's rules
 * (SSL_CERT_FILE replaces the bundle, SSL_CERT_DIR adds directories). NULL
 * with err on failure. */
struct ssl_ctx_st *httpc_tls_ctx(const char *ca_file, char *err, size_t errlen);

int64_t httpc_now_ms(void);

#endif
