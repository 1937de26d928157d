/* tls.h: the process's TLS server configuration (BoringSSL SSL_CTX).
 *
 * One SSL_CTX per process, built on the main thread at start and again on
 * SIGHUP; shard threads only ask for new SSL objects (tls_new_ssl). A reload
 * swaps the current SSL_CTX; connections that started on the old one keep it
 * through the use count they hold (tls_put) until they end. See tls.c. */
#ifndef DERPD_TLS_H
#define DERPD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct config;

/* Main thread, before the shards start: load (or, with -certmode selfsigned,
 * create) <certdir>/<hostname>.crt and .key (with -certmode letsencrypt,
 * missing or broken files leave it without a certificate until ACME), append the DERP meta certificate
 * for server_key_hex (64 hex), log the leaf's sha256. 0, or -1 with err. */
int tls_init(const struct config *cfg, const char *server_key_hex, char *err, size_t errlen);
/* Main thread, before tls_init: every SSL_CTX built from now on records the
 * TLS 1.3 secrets kTLS needs (ktls_ctx_init); with require, TLS 1.2 offers
 * only the AEAD suites kTLS takes. */
void tls_set_ktls(bool on, bool require);
/* Main thread (SIGHUP) or the ACME worker (acme.c): build a new SSL_CTX from
 * the files and make it the one new connections use. On failure the old one
 * stays. 0 or -1 with err. */
int tls_reload(char *err, size_t errlen);
/* The ACME worker (-acme-ip-certs): an SSL_CTX as the server's, with the
 * chain in crt and its key (and the meta certificate). NULL with err. */
SSL_CTX *tls_ctx_from_files(const char *crt, const char *key, char *err, size_t errlen);
/* An ASN.1 time as unix seconds (0 if unreadable). Any thread. */
int64_t tls_asn1_epoch(const ASN1_TIME *t);
/* ctx's leaf certificate's NotAfter, unix seconds; 0 without one. */
int64_t tls_ctx_not_after(SSL_CTX *ctx);
struct tls_ref;
/* Any thread: a new server-side SSL on the current SSL_CTX, NULL on failure.
 * *ref is the SSL_CTX's use count the SSL holds: after SSL_free, tls_put it. */
SSL *tls_new_ssl(struct tls_ref **ref);
/* Any thread: drops one use (NULL: none); the last frees the SSL_CTX. */
void tls_put(struct tls_ref *ref);
/* Why a callback refused the handshake that just failed on this thread
 * (static text, e.g. the SNI check), or NULL; clears it. */
const char *tls_take_reject_reason(void);
/* Main thread, after the shards are joined. */
void tls_shutdown(void);
/* Any thread: the NotAfter of the certificate new connections get, unix
 * seconds; 0 before there is one (letsencrypt waiting for its first). */
int64_t tls_cert_not_after(void);

/* SHA-256 of a DER certificate, as 64 lowercase hex + NUL. */
void tls_cert_sha256_hex(X509 *cert, char out[65]);

#endif
