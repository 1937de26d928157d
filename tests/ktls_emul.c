/* ktls_emul.c: see ktls_emul.h. */
#include "ktls_emul.h"

#include <string.h>

static uint64_t be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

int kdir_init(struct kdir *d, const union ktls_info *ki) {
  memset(d, 0, sizeof *d);
  const EVP_AEAD *alg;
  const uint8_t *key;
  size_t klen;
  d->tls13 = ki->info.version == TLS_1_3_VERSION;
  if (!d->tls13 && ki->info.version != TLS_1_2_VERSION) return -1;
  switch (ki->info.cipher_type) {
  case TLS_CIPHER_AES_GCM_128:
    alg = EVP_aead_aes_128_gcm(), key = ki->gcm128.key, klen = 16;
    memcpy(d->iv, ki->gcm128.salt, 4);
    memcpy(d->iv + 4, ki->gcm128.iv, 8);
    d->seq = be64(ki->gcm128.rec_seq);
    d->expl = be64(ki->gcm128.iv);
    break;
  case TLS_CIPHER_AES_GCM_256:
    alg = EVP_aead_aes_256_gcm(), key = ki->gcm256.key, klen = 32;
    memcpy(d->iv, ki->gcm256.salt, 4);
    memcpy(d->iv + 4, ki->gcm256.iv, 8);
    d->seq = be64(ki->gcm256.rec_seq);
    d->expl = be64(ki->gcm256.iv);
    break;
  case TLS_CIPHER_CHACHA20_POLY1305:
    alg = EVP_aead_chacha20_poly1305(), key = ki->chacha.key, klen = 32;
    memcpy(d->iv, ki->chacha.iv, 12);
    d->seq = be64(ki->chacha.rec_seq);
    d->chacha = true;
    break;
  default: return -1;
  }
  return EVP_AEAD_CTX_init(&d->aead, alg, key, klen, EVP_AEAD_DEFAULT_TAG_LENGTH, NULL) ? 0 : -1;
}

void kdir_free(struct kdir *d) { EVP_AEAD_CTX_cleanup(&d->aead); }

/* nonce = static IV XOR sequence number (RFC 8446 §5.3, RFC 7905 §2). */
static void xor_nonce(const struct kdir *d, uint8_t nonce[12]) {
  memcpy(nonce, d->iv, 12);
  uint8_t s[8];
  put64(s, d->seq);
  for (int i = 0; i < 8; i++) nonce[4 + i] ^= s[i];
}

/* TLS 1.2 additional data: seq || type || version || plaintext length. */
static void aad12(uint8_t ad[13], uint64_t seq, uint8_t type, size_t ptlen) {
  put64(ad, seq);
  ad[8] = type, ad[9] = 3, ad[10] = 3;
  ad[11] = (uint8_t)(ptlen >> 8), ad[12] = (uint8_t)ptlen;
}

size_t kseal(struct kdir *d, uint8_t type, const void *pt, size_t n, uint8_t *out) {
  uint8_t nonce[12], ad[13], in[16384 + 1];
  size_t clen = 0, hdr = 5;
  out[0] = d->tls13 ? KTLS_REC_APPDATA : type, out[1] = 3, out[2] = 3;
  if (d->tls13) {
    /* TLSInnerPlaintext = content || type (no padding); AAD = the header. */
    memcpy(in, pt, n);
    in[n] = type;
    size_t len = n + 1 + 16;
    out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
    xor_nonce(d, nonce);
    if (!EVP_AEAD_CTX_seal(&d->aead, out + 5, &clen, n + 1 + 16, nonce, 12, in, n + 1, out, 5))
      return 0;
  } else if (d->chacha) {
    xor_nonce(d, nonce);
    aad12(ad, d->seq, type, n);
    if (!EVP_AEAD_CTX_seal(&d->aead, out + 5, &clen, n + 16, nonce, 12, pt, n, ad, 13)) return 0;
  } else {
    /* RFC 5288: nonce = salt || explicit; the explicit part goes on the wire. */
    memcpy(nonce, d->iv, 4);
    put64(nonce + 4, d->expl++);
    memcpy(out + 5, nonce + 4, 8);
    hdr += 8;
    aad12(ad, d->seq, type, n);
    if (!EVP_AEAD_CTX_seal(&d->aead, out + hdr, &clen, n + 16, nonce, 12, pt, n, ad, 13)) return 0;
  }
  size_t len = hdr - 5 + clen;
  out[3] = (uint8_t)(len >> 8), out[4] = (uint8_t)len;
  d->seq++;
  return 5 + len;
}

long kopen(struct kdir *d, const uint8_t *rec, size_t reclen, uint8_t *type, uint8_t *out) {
  uint8_t nonce[12], ad[13];
  size_t n = 0;
  if (reclen < 5 + 16 || rec[1] != 3 || rec[2] != 3) return -1;
  const uint8_t *body = rec + 5;
  size_t blen = reclen - 5;
  if (d->tls13) {
    if (rec[0] != KTLS_REC_APPDATA) return -1;
    xor_nonce(d, nonce);
    if (!EVP_AEAD_CTX_open(&d->aead, out, &n, blen, nonce, 12, body, blen, rec, 5)) return -1;
    while (n > 0 && out[n - 1] == 0) n--; /* padding */
    if (n == 0) return -1;
    *type = out[--n];
  } else if (d->chacha) {
    xor_nonce(d, nonce);
    aad12(ad, d->seq, rec[0], blen - 16);
    if (!EVP_AEAD_CTX_open(&d->aead, out, &n, blen, nonce, 12, body, blen, ad, 13)) return -1;
    *type = rec[0];
  } else {
    if (blen < 8 + 16) return -1;
    memcpy(nonce, d->iv, 4);
    memcpy(nonce + 4, body, 8);
    aad12(ad, d->seq, rec[0], blen - 8 - 16);
    if (!EVP_AEAD_CTX_open(&d->aead, out, &n, blen, nonce, 12, body + 8, blen - 8, ad, 13))
      return -1;
    *type = rec[0];
  }
  d->seq++;
  return (long)n;
}

size_t rec_len(const uint8_t *buf, size_t n) {
  if (n < 5) return 0;
  size_t l = 5 + ((size_t)buf[3] << 8 | buf[4]);
  return l <= n ? l : 0;
}

