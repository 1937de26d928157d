/* client_tls.c: TLS for the blocking DERP client (libderp_tls, BoringSSL).
 *
 * Owns the client-side TLS policy: versions, SNI, ALPN http/1.1, chain
 * verification or a SHA-256 pin of the leaf (Tailscale's "sha256-raw:"), and
 * the DERP meta certificate that lets a TLS 1.3 client learn the server key
 * and use fast start, as Go clients do. The socket is non-blocking under the
 * SSL object; reads wait with poll() up to the caller's deadline, writes wait
 * as long as they must (the plain client's writes block too). */
#include "derp/client_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

struct tls_stream {
  SSL_CTX *ctx;
  SSL *ssl;
  int fd;
};

struct wrap_arg {
  const struct derp_client_opts *o;
  const struct derp_tls_opts *t;
  struct derp_tls_info *info;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 = ready, 0 = deadline passed, -1 = error. */
static int wait_fd(int fd, short ev, int64_t deadline) {
  for (;;) {
    int left = -1;
    if (deadline >= 0) {
      int64_t l = deadline - mono_ms();
      left = l < 0 ? 0 : l > INT_MAX ? INT_MAX : (int)l;
    }
    struct pollfd pfd = {.fd = fd, .events = ev};
    int r = poll(&pfd, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    return r > 0 ? 1 : 0;
  }
}

/* After a failed SSL call: wait as told. 1 = retry, 0 = deadline, -1 = error. */
static int ssl_wait(struct tls_stream *s, int r, int64_t deadline) {
  int e = SSL_get_error(s->ssl, r);
  if (e == SSL_ERROR_WANT_READ) return wait_fd(s->fd, POLLIN, deadline);
  if (e == SSL_ERROR_WANT_WRITE) return wait_fd(s->fd, POLLOUT, deadline);
  return -1;
}

static long st_read(void *ctx, void *buf, size_t cap, int64_t deadline) {
  struct tls_stream *s = ctx;
  int n = cap > INT_MAX ? INT_MAX : (int)cap;
  for (;;) {
    errno = 0;
    int r = SSL_read(s->ssl, buf, n);
    if (r > 0) return r;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      int w = ssl_wait(s, r, deadline);
      if (w == 0) return -2;
      if (w < 0) return -1;
      continue;
    }
    int saved = errno;
    ERR_clear_error();
    if (e == SSL_ERROR_SYSCALL && saved == 0) return 0; /* EOF without close_notify */
    errno = e == SSL_ERROR_SYSCALL ? saved : EPROTO;
    return -1;
  }
}

/* The bound a caller set with SO_SNDTIMEO on the socket (derp/client.h: "a
 * caller that needs a bound sets SO_SNDTIMEO"): the socket is non-blocking
 * under TLS, so the kernel never applies it; each wait for room does. -1: none. */
static int64_t sndtimeo_ms(int fd) {
  struct timeval tv = {0};
  socklen_t l = sizeof tv;
  if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &l) < 0 || (tv.tv_sec == 0 && tv.tv_usec == 0)) return -1;
  return (int64_t)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
}

static int st_write(void *ctx, const void *buf, size_t n) {
  struct tls_stream *s = ctx;
  const uint8_t *p = buf;
  int64_t bound = -2; /* read when a write first has to wait: no syscall on the common path */
  while (n > 0) {
    int k = n > INT_MAX ? INT_MAX : (int)n;
    errno = 0;
    int r = SSL_write(s->ssl, p, k);
    if (r > 0) {
      p += r;
      n -= (size_t)r;
      continue;
    }
    int saved = errno;
    if (bound == -2) bound = sndtimeo_ms(s->fd);
    int w = ssl_wait(s, r, bound < 0 ? -1 : mono_ms() + bound);
    if (w > 0) continue;
    ERR_clear_error();
    errno = w == 0 ? EAGAIN : saved ? saved : EPIPE; /* w == 0: as a blocking socket's SO_SNDTIMEO */
    return -1;
  }
  return 0;
}

static void st_close(void *ctx) {
  struct tls_stream *s = ctx;
  if (!s) return;
  SSL_free(s->ssl); /* the socket BIO does not close the fd */
  SSL_CTX_free(s->ctx);
  free(s);
}

static void ssl_errf(char *err, size_t errlen, const char *what) {
  char buf[256] = "";
  unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, errlen, "tls: %s%s%s", what, e ? ": " : "", buf);
  ERR_clear_error();
}

static bool is_ip(const char *h) {
  uint8_t a[16];
  return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

/* The meta certificate (CN derpkey<64 hex>, small serial = protocol version). */
static void find_meta(SSL *ssl, struct derp_tls_info *info) {
  const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(ssl);
  size_t n = chain ? sk_CRYPTO_BUFFER_num(chain) : 0;
  info->chain_len = (int)n;
  for (size_t i = 0; i < n; i++) {
    const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(chain, i);
    const uint8_t *der = CRYPTO_BUFFER_data(b);
    if (i == 0) SHA256(der, CRYPTO_BUFFER_len(b), info->leaf_sha256);
    X509 *x = d2i_X509(NULL, &der, (long)CRYPTO_BUFFER_len(b));
    if (!x) {
      ERR_clear_error();
      continue;
    }
    char cn[128] = "";
    int l = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    long serial = ASN1_INTEGER_get(X509_get_serialNumber(x));
    X509_free(x);
    if (l == 7 + 64 && strncmp(cn, "derpkey", 7) == 0 && serial > 0 && serial <= 255 &&
        !info->meta_key_found && derp_key_parse(cn + 7, &info->meta_key) == 0) {
      info->meta_key_found = true;
      info->meta_version = (uint32_t)serial;
    }
  }
  ERR_clear_error();
}

int derp_tls_load_roots(SSL_CTX *ctx, const char *ca_file, const char *ca_dirs) {
  /* As Go (crypto/x509, root_unix.go): an empty SSL_CERT_FILE is unset, and
   * a file that does not exist, named or the default bundle, is no error
   * (SSL_CERT_DIR may hold the roots; a host without any then fails at
   * verification, saying so); a file that exists but cannot be read or
   * parsed is. Debian's BoringSSL has no default verify paths: Debian's
   * bundle is the default. */
  if (ca_file && !*ca_file) ca_file = NULL;
  const char *file = ca_file ? ca_file : "/etc/ssl/certs/ca-certificates.crt";
  struct stat st;
  if (stat(file, &st) == 0 && !SSL_CTX_load_verify_locations(ctx, file, NULL)) {
    if (ca_file) return 0;
    ERR_clear_error(); /* the default bundle, unreadable: as Go, the dirs may do */
  }
  for (const char *d = ca_dirs; d && *d;) {
    const char *colon = strchr(d, ':');
    size_t n = colon ? (size_t)(colon - d) : strlen(d);
    char dir[4096];
    if (n > 0 && n < sizeof dir) {
      memcpy(dir, d, n);
      dir[n] = 0;
      if (!SSL_CTX_load_verify_locations(ctx, NULL, dir)) return 0;
    }
    d = colon ? colon + 1 : NULL;
  }
  return 1;
}

static int tls_wrap_stream(void *argp, int fd, int64_t deadline, struct derp_client_stream *out,
                           derp_key *learned, bool *have_learned, char *err, size_t errlen) {
  struct wrap_arg *a = argp;
  const struct derp_tls_opts *t = a->t;
  if (a->info) memset(a->info, 0, sizeof *a->info);
  struct tls_stream *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "tls: out of memory");
    return -1;
  }
  s->fd = fd;
  s->ctx = SSL_CTX_new(TLS_method());
  if (!s->ctx) goto ssl_fail;
  SSL_CTX_set_min_proto_version(s->ctx, t->min_version ? t->min_version : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(s->ctx, t->max_version ? t->max_version : TLS1_3_VERSION);
  static const uint8_t alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(s->ctx, alpn, sizeof alpn - 1);
  bool verify = !t->insecure_skip_verify && !t->pin_sha256;
  SSL_CTX_set_verify(s->ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  if (verify && !derp_tls_load_roots(s->ctx, t->ca_file, t->ca_dirs)) goto ssl_fail;
  s->ssl = SSL_new(s->ctx);
  if (!s->ssl || !SSL_set_fd(s->ssl, fd)) goto ssl_fail;
  SSL_set_connect_state(s->ssl);
  /* The certificate must name the server: the SNI name given, else the
   * host dialled. An IP address is checked as an IP SAN (as -certmode
   * selfsigned makes) and never sent as SNI (RFC 6066), as Go does for an
   * IP ServerName; sni "" sends none, and the host dialled is checked. */
  const char *name = t->sni && *t->sni ? t->sni : a->o->host;
  bool ip = is_ip(name);
  if ((!ip || (t->sni_ip && t->sni)) && !(t->sni && !*t->sni) && !SSL_set_tlsext_host_name(s->ssl, name))
    goto ssl_fail;
  X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
  if (verify && (ip ? !X509_VERIFY_PARAM_set1_ip_asc(vp, name) : !X509_VERIFY_PARAM_set1_host(vp, name, strlen(name))))
    goto ssl_fail;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    snprintf(err, errlen, "tls: fcntl: %s", strerror(errno));
    goto fail;
  }
  for (;;) {
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) break;
    int w = ssl_wait(s, r, deadline);
    if (w > 0) continue;
    if (w == 0) {
      snprintf(err, errlen, "tls: handshake: timeout");
      goto fail;
    }
    int saved = errno;
    long vr = verify ? SSL_get_verify_result(s->ssl) : X509_V_OK;
    if (vr != X509_V_OK) { /* say why, as Go's x509 errors do: the library's code alone does not */
      ERR_clear_error();
      snprintf(err, errlen, "tls: handshake: CERTIFICATE_VERIFY_FAILED: %s (checked for %s)",
               X509_verify_cert_error_string(vr), name);
    } else if (ERR_peek_error()) {
      ssl_errf(err, errlen, "handshake");
    } else {
      snprintf(err, errlen, "tls: handshake: %s", saved ? strerror(saved) : "connection closed");
    }
    goto fail;
  }
  struct derp_tls_info local = {0}, *info = a->info ? a->info : &local;
  info->version = (uint16_t)SSL_version(s->ssl);
  const uint8_t *proto;
  unsigned plen;
  SSL_get0_alpn_selected(s->ssl, &proto, &plen);
  if (proto != NULL && plen < sizeof info->alpn) memcpy(info->alpn, proto, plen); /* none chosen: NULL, 0 */
  find_meta(s->ssl, info);
  if (t->pin_sha256 && memcmp(info->leaf_sha256, t->pin_sha256, 32) != 0) {
    snprintf(err, errlen, "tls: server certificate does not match the pinned sha256");
    goto fail;
  }
  /* As Go clients: the meta certificate counts only under TLS 1.3, where the
   * certificates are encrypted (no middlebox rewrote them in the clear). */
  if (t->use_meta_cert && info->version >= TLS1_3_VERSION && info->meta_key_found) {
    *learned = info->meta_key;
    *have_learned = true;
  }
  out->ctx = s;
  out->read = st_read;
  out->write = st_write;
  out->close = st_close;
  return 0;
ssl_fail:
  ssl_errf(err, errlen, "setup");
fail:
  st_close(s);
  return -1;
}

int derp_client_tls_detach(struct derp_client *c, struct derp_tls_conn *out) {
  memset(out, 0, sizeof *out);
  out->fd = -1;
  struct derp_client_stream st;
  bool has_stream;
  int fd;
  if (derp_client_detach(c, &fd, &st, &has_stream, &out->buffered, &out->buffered_len) < 0) {
    derp_client_close(c);
    return -1;
  }
  if (!has_stream || st.close != st_close) {
    if (has_stream && st.close) st.close(st.ctx);
    if (fd >= 0) close(fd);
    free(out->buffered);
    out->buffered = NULL;
    out->buffered_len = 0;
    errno = EINVAL;
    return -1;
  }
  struct tls_stream *s = st.ctx;
  out->ssl = s->ssl;
  out->fd = fd;
  SSL_CTX_free(s->ctx); /* the SSL keeps its own reference */
  free(s);
  return 0;
}

int derp_client_connect_tls(struct derp_client **out, const struct derp_client_opts *o,
                            const struct derp_tls_opts *t, struct derp_tls_info *info,
                            char *err, size_t errlen) {
  static const struct derp_tls_opts defaults;
  struct wrap_arg a = {.o = o, .t = t ? t : &defaults, .info = info};
  struct derp_client_opts o2 = *o;
  o2.wrap_stream = tls_wrap_stream;
  o2.wrap_arg = &a;
  return derp_client_connect(out, &o2, err, errlen);
}
