/* derp/client_tls.h: DERP over TLS for the blocking client (libderp_tls).
 *
 * A separate library from libderp because it links BoringSSL, whose symbols
 * clash with OpenSSL's: a process that loads OpenSSL's libcrypto (Criterion
 * does, through libgit2) must not link this one. */
#ifndef DERP_CLIENT_TLS_H
#define DERP_CLIENT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp/client.h"

struct derp_tls_opts {
  const char *sni;              /* server name sent, and the name verification
                                   wants in the certificate; NULL = opts->host.
                                   An IP address is never sent and is verified
                                   as an IP SAN; "" = none sent, opts->host
                                   verified */
  bool sni_ip;                  /* send sni even when it is an IP address (RFC 6066
                                   forbids it; for testing how servers treat it) */
  bool insecure_skip_verify;    /* do not verify the chain (pin_sha256 still applies) */
  const uint8_t *pin_sha256;    /* 32 bytes or NULL: the leaf certificate's SHA-256
                                   must equal it (Tailscale's "sha256-raw:" CertName);
                                   a pin replaces chain verification */
  const char *ca_file;          /* PEM roots for verification; NULL = system paths */
  const char *ca_dirs;          /* NULL, or ':'-separated directories of hashed
                                   roots, loaded beside ca_file or the system
                                   bundle (Go's SSL_CERT_DIR) */
  uint16_t min_version;         /* 0 = TLS 1.2; else 0x0303 (1.2) or 0x0304 (1.3) */
  uint16_t max_version;         /* 0 = TLS 1.3 */
  bool use_meta_cert;           /* TLS 1.3: take the server key from the DERP meta
                                   certificate (CN derpkey<hex>), so that fast start
                                   needs no opts->server_key (as Go clients do) */
};

/* What the TLS handshake showed (filled even when the DERP handshake fails
 * afterwards, as far as it got). */
struct derp_tls_info {
  uint16_t version;             /* 0x0303 = TLS 1.2, 0x0304 = TLS 1.3 */
  uint8_t leaf_sha256[32];
  int chain_len;                /* certificates the server sent */
  bool meta_key_found;          /* a meta certificate with a valid key was in the chain */
  derp_key meta_key;
  uint32_t meta_version;        /* its serial number: the DERP protocol version */
  char alpn[16];                /* negotiated ALPN, "" if none */
};

/* derp_client_connect over TLS. info may be NULL. 0, or -1 with err. */
int derp_client_connect_tls(struct derp_client **out, const struct derp_client_opts *o,
                            const struct derp_tls_opts *t, struct derp_tls_info *info,
                            char *err, size_t errlen);

/* Verification roots for a client SSL_CTX (struct ssl_ctx_st is BoringSSL's
 * SSL_CTX), Go's way: ca_file (NULL: the system bundle,
 * /etc/ssl/certs/ca-certificates.crt), then each directory of hashed roots in
 * ca_dirs (':'-separated; NULL: none). Callers pass $SSL_CERT_FILE and
 * $SSL_CERT_DIR. 1, or 0 with BoringSSL's error queue saying why. */
struct ssl_ctx_st;
int derp_tls_load_roots(struct ssl_ctx_st *ctx, const char *ca_file, const char *ca_dirs);

/* A TLS connection taken over from the client, for callers that drive the
 * socket themselves (derp-bench's epoll loops): the connection's SSL object
 * (struct ssl_st is BoringSSL's SSL) on its non-blocking socket, and the
 * plaintext already read past ServerInfo but not yet parsed. */
struct ssl_st;
struct derp_tls_conn {
  struct ssl_st *ssl;     /* the caller frees it: SSL_free (it holds its own
                             reference to its SSL_CTX) */
  int fd;                 /* non-blocking; the caller closes it after SSL_free */
  uint8_t *buffered;      /* malloc'd (caller frees), NULL when none */
  size_t buffered_len;
};

/* Detach a client made by derp_client_connect_tls: c is freed in any case.
 * 0 on success; -1 with errno (ENOMEM; EINVAL if c was not over TLS, its
 * connection then closed). */
int derp_client_tls_detach(struct derp_client *c, struct derp_tls_conn *out);

#endif
