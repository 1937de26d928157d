/* ktls_test.h: what the two files of the test_ktls binary share (the
 * runner's verdicts and CHECK, the ciphers, a BoringSSL context with the test
 * certificate): test_ktls.c (the runner, the in-memory pair, the kernel) and
 * test_ktls_openssl.c (openssl s_client as the peer). */
#ifndef DERPD_KTLS_TEST_H
#define DERPD_KTLS_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

enum { PASS = 0, FAIL = 1, SKIP = 2 };

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "    %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      ERR_print_errors_fp(stderr);                                             \
      return FAIL;                                                             \
    }                                                                          \
  } while (0)

/* SKIP with a reason the runner prints. */
int skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct cipher {
  const char *name;     /* for test names */
  const char *tls12;    /* BoringSSL / OpenSSL TLS 1.2 cipher name */
  const char *tls13;    /* OpenSSL TLS 1.3 ciphersuite name */
  int nid;
  uint16_t ktype;
};
extern const struct cipher ciphers[3]; /* AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 */

/* One version, one cipher; a server gets the test certificate, kTLS set up
 * (ktls_ctx_init) and, unless tickets, no session tickets. */
SSL_CTX *make_ctx(bool server, int version, const struct cipher *ci, bool tickets);

/* test_ktls_openssl.c: the same checks against openssl s_client. */
int o12_aes128(void);
int o12_aes256(void);
int o12_chacha(void);
int o13_aes128(void);
int o13_aes256(void);
int o13_chacha(void);

#endif
