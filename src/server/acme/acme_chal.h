/* acme_chal.h: the challenge responses the shards serve while the ACME
 * worker proves control of -hostname (RFC 8555 §8.3 http-01, RFC 8737
 * tls-alpn-01).
 *
 * The worker (one thread) sets and clears entries; shard threads look them
 * up: a small fixed table under a mutex held only to copy a string or take a
 * reference. A shard touches it only for a ClientHello that offers ALPN
 * "acme-tls/1" or a port-80 request under /.well-known/acme-challenge/, so
 * ordinary handshakes and requests never take the lock. */
#ifndef DERPD_ACME_CHAL_H
#define DERPD_ACME_CHAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define ACME_CHAL_MAX 4                /* pending challenges of each kind */
#define ACME_HTTP01_PREFIX "/.well-known/acme-challenge/"
#define ACME_CHAL_RETIRED_MAX 16       /* used SSL_CTXs kept until shutdown (acme_chal_retire) */

struct http_req;
struct http_reply;

/* Main thread, before the shards start: serve challenges from now on (the
 * port-80 route answers under ACME_HTTP01_PREFIX only when enabled). */
void acme_chal_enable(void);

/* http-01: answer GET ACME_HTTP01_PREFIX<token> with keyauth. 0, or -1 when
 * the table is full or the strings too long. */
int acme_chal_http_set(const char *token, const char *keyauth);
void acme_chal_http_clear(const char *token);
/* Copy the key authorization for token into out; false if none. */
bool acme_chal_http_get(const char *token, char *out, size_t cap);

/* tls-alpn-01: from now on a handshake for name that offers "acme-tls/1"
 * gets a self-signed certificate for name with the critical acmeIdentifier
 * extension holding SHA-256(keyauth), and ALPN "acme-tls/1". 0, or -1. */
int acme_chal_tls_set(const char *name, const char *keyauth);
/* Take name's entry out (its context is retired: see acme_chal_free). */
void acme_chal_tls_clear(const char *name);
/* The challenge certificate (tests): a new self-signed X509 for name with the
 * acmeIdentifier extension over digest, signed by key; NULL on failure. */
X509 *acme_chal_tls_cert(EVP_PKEY *key, const char *name, const uint8_t digest[32]);

/* BoringSSL select-certificate callback for the server's SSL_CTX (tls.c sets
 * it with -certmode letsencrypt; shard threads). A ClientHello offering
 * "acme-tls/1" for a name with a pending challenge moves to that
 * challenge's SSL_CTX; one without a pending challenge is refused; any
 * other goes on unchanged. */
enum ssl_select_cert_result_t acme_chal_select_cert(const SSL_CLIENT_HELLO *ch);
/* The ClientHello offers ALPN "acme-tls/1": a CA's validation handshake. */
bool acme_chal_offers_alpn(const SSL_CLIENT_HELLO *ch);

/* The port-80 helper (shard threads): a request under ACME_HTTP01_PREFIX,
 * when enabled, gets the key authorization (200) or 404; true if out was
 * filled. */
bool acme_chal_http_route(const struct http_req *req, struct http_reply *out);

/* Worker thread: keep ctx (NULL: nothing) until acme_chal_free, because a
 * handshake may still use it: challenge contexts taken out of the table and
 * acme_ipcert's replaced address certificates. Past ACME_CHAL_RETIRED_MAX
 * the oldest is freed. */
void acme_chal_retire(SSL_CTX *ctx);

/* Worker thread, when it ends: drop every entry (nothing is served). */
void acme_chal_clear_all(void);
/* Main thread, once the shards are joined (and the worker): free every
 * challenge context, retired ones included. */
void acme_chal_free(void);

#endif
