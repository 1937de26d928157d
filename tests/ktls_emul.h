/* ktls_emul.h: the kernel's side of a kTLS socket, played in userspace for
 * tests on kernels without kTLS: one direction's record sealing and opening,
 * built from nothing but the crypto info derpd would hand to setsockopt
 * (net/tls: salt || explicit nonce for TLS 1.2 GCM, IV XOR sequence number
 * for TLS 1.3 and ChaCha20). Used by test_ktls (the infos are right) and
 * test_tls_e2e (a client that sends records derpd's own SSL never would). */
#ifndef DERP_TEST_KTLS_EMUL_H
#define DERP_TEST_KTLS_EMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/aead.h>

#include "server/transport/ktls.h"

/* One direction of a kTLS socket, built from nothing but the crypto info:
 * what net/tls keeps per direction. */
struct kdir {
  EVP_AEAD_CTX aead;
  bool tls13, chacha;
  uint8_t iv[12];   /* static IV: salt||iv (1.3 GCM), iv (ChaCha); 1.2 GCM: salt */
  uint64_t seq;     /* rec_seq */
  uint64_t expl;    /* TLS 1.2 GCM TX: next explicit nonce (starts at iv, +1/record) */
};

/* 0, or -1 for a version or cipher the kernel would refuse. */
int kdir_init(struct kdir *d, const union ktls_info *ki);
void kdir_free(struct kdir *d);
/* Seal one record of `type` (what write() or sendmsg(TLS_SET_RECORD_TYPE)
 * would make the kernel send) into out (n + 5 + 8 + 16 + 1 bytes at most).
 * Returns the wire length, 0 on failure. */
size_t kseal(struct kdir *d, uint8_t type, const void *pt, size_t n, uint8_t *out);
/* Open the record at rec[0..reclen) (reclen = 5 + header length). Returns
 * plaintext length, or -1 if it does not authenticate. */
long kopen(struct kdir *d, const uint8_t *rec, size_t reclen, uint8_t *type, uint8_t *out);
/* Length of the whole record at the start of buf, or 0 if incomplete. */
size_t rec_len(const uint8_t *buf, size_t n);

#endif
