/* acme_https.h: the ACME worker's HTTPS requests to its CA, over httpc
 * (server/httpc/httpc.h; one connection per request, "Connection: close").
 *
 * Bounded: every request has a deadline (connect, handshake, write, read),
 * a response is at most ACME_HTTPS_MAX bytes, and any wait also watches a
 * stop descriptor, so derpd's shutdown never waits for a slow CA. The
 * server's certificate is verified against --acme-ca-file or the system
 * bundle, and must name the URL's host. Only the ACME worker thread uses it. */
#ifndef DERPD_ACME_HTTPS_H
#define DERPD_ACME_HTTPS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#define ACME_HTTPS_MAX (1 << 20)

struct acme_https {
  SSL_CTX *ctx;      /* verifying client context */
  int stop_fd;       /* readable = give up now (-1: none) */
  int timeout_ms;    /* per request */
};

struct acme_resp {
  int status;
  char nonce[256];         /* Replay-Nonce */
  char location[1024];     /* Location */
  char content_type[128];
  long retry_after;        /* Retry-After in seconds (delta form), -1 if absent */
  const char *too_long;    /* a header we use whose value did not fit: the response is refused */
  char *body;              /* NUL-terminated (free with acme_resp_free) */
  size_t body_len;
};

/* ca_file: PEM roots, or NULL/"" for $SSL_CERT_FILE, else Debian's bundle.
 * 0, or -1 with err. */
int acme_https_init(struct acme_https *h, const char *ca_file, int stop_fd, int timeout_ms, char *err,
                    size_t errlen);
void acme_https_free(struct acme_https *h);
/* One request (method GET, HEAD or POST; body with content type ctype, may be
 * NULL). 0 with *r filled for any HTTP status; -1 with err for a transport
 * failure, a timeout or a stop. */
int acme_https_do(struct acme_https *h, const char *method, const char *url, const char *ctype,
                  const char *body, struct acme_resp *r, char *err, size_t errlen);
void acme_resp_free(struct acme_resp *r);

/* Pure, for tests. "https://host[:port]/path": host (IPv6 without its
 * brackets), port ("443" if absent), path ("/" if absent). 0 or -1. */
int acme_url_split(const char *url, char *host, size_t hcap, char *port, size_t pcap, const char **path);

/* A Retry-After value's seconds, from its vl bytes only (v need not be
 * NUL-terminated), saturating at 10^9; -1 unless it starts with a digit
 * (an HTTP date is not used: the caller then waits its own backoff). */
long acme_retry_after(const char *v, size_t vl);

#endif
