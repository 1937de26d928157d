/* acme_jws.c: base64url, the ES256 account key, JWK, thumbprint and signed
 * requests (acme_jws.h). BoringSSL for the crypto, jansson for the JSON (it
 * escapes the nonce and URLs the server hands us). */
#include "server/acme/acme_jws.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/base64.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "derp/key.h"

#define KEY_FILE_MAX 16384

size_t acme_b64url(const void *in, size_t n, char *out, size_t cap) {
  size_t full = n - n % 3, len = full / 3 * 4, tail = n % 3 ? n % 3 + 1 : 0;
  if (cap == 0) return 0;
  out[0] = 0;
  if (len + tail + 1 > cap) return 0;
  EVP_EncodeBlock((uint8_t *)out, in, full); /* standard base64: full groups */
  if (tail) {
    uint8_t last[5];
    EVP_EncodeBlock(last, (const uint8_t *)in + full, n % 3);
    memcpy(out + len, last, tail); /* without the padding */
    len += tail;
    out[len] = 0;
  }
  for (size_t i = 0; i < len; i++) out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
  return len;
}

char *acme_b64url_dup(const void *in, size_t n) {
  size_t cap = n / 3 * 4 + 4;
  char *s = malloc(cap);
  if (s && acme_b64url(in, n, s, cap) == 0 && n > 0) {
    free(s);
    return NULL;
  }
  return s;
}

EVP_PKEY *acme_key_new(void) {
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  EVP_PKEY *pk = EVP_PKEY_new();
  if (!ec || !pk || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
    EC_KEY_free(ec);
    EVP_PKEY_free(pk);
    return NULL;
  }
  return pk;
}

static const EC_KEY *p256(EVP_PKEY *key) {
  const EC_KEY *ec = key ? EVP_PKEY_get0_EC_KEY(key) : NULL;
  if (!ec || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1) return NULL;
  return ec;
}

int acme_key_pem(EVP_PKEY *key, char **pem, size_t *len) {
  const EC_KEY *ec = p256(key);
  BIO *b = BIO_new(BIO_s_mem());
  const uint8_t *data;
  size_t n = 0;
  int ok = ec && b && PEM_write_bio_ECPrivateKey(b, (EC_KEY *)ec, NULL, NULL, 0, NULL, NULL) &&
           BIO_mem_contents(b, &data, &n);
  *pem = ok ? malloc(n + 1) : NULL;
  if (*pem) {
    memcpy(*pem, data, n);
    (*pem)[n] = 0;
    *len = n;
  }
  BIO_free(b);
  return *pem ? 0 : -1;
}

static int read_small_file(const char *path, char *buf, size_t cap, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t n = 0;
  ssize_t r;
  while (n < cap && (r = read(fd, buf + n, cap - n)) != 0) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int saved = errno;
      close(fd);
      errno = saved;
      return -1;
    }
    n += (size_t)r;
  }
  close(fd);
  *len = n;
  return 0;
}

int acme_key_load_or_create(const char *path, EVP_PKEY **out, bool *created, char *err, size_t errlen) {
  *out = NULL;
  *created = false;
  char *buf = malloc(KEY_FILE_MAX);
  size_t n = 0;
  if (!buf) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (read_small_file(path, buf, KEY_FILE_MAX, &n) == 0) {
    BIO *b = BIO_new_mem_buf(buf, (ssize_t)n);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    OPENSSL_cleanse(buf, KEY_FILE_MAX);
    free(buf);
    ERR_clear_error();
    if (!k || !p256(k)) {
      EVP_PKEY_free(k);
      snprintf(err, errlen, "%s: not a PEM ECDSA P-256 private key", path);
      return -1;
    }
    *out = k;
    return 0;
  }
  free(buf);
  if (errno != ENOENT) {
    snprintf(err, errlen, "read %s: %s", path, strerror(errno));
    return -1;
  }
  EVP_PKEY *k = acme_key_new();
  char *pem = NULL;
  size_t len = 0;
  if (!k || acme_key_pem(k, &pem, &len) != 0) {
    EVP_PKEY_free(k);
    snprintf(err, errlen, "generate an account key: failed");
    return -1;
  }
  int rc = derp_file_write_atomic(path, 0600, pem, len);
  int saved = errno;
  OPENSSL_cleanse(pem, len);
  free(pem);
  if (rc != 0) {
    EVP_PKEY_free(k);
    snprintf(err, errlen, "write %s: %s", path, strerror(saved));
    return -1;
  }
  *out = k;
  *created = true;
  return 0;
}

size_t acme_jwk(EVP_PKEY *key, char *out, size_t cap) {
  const EC_KEY *ec = p256(key);
  uint8_t pt[65];
  if (!ec || EC_POINT_point2oct(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec),
                                POINT_CONVERSION_UNCOMPRESSED, pt, sizeof pt, NULL) != sizeof pt)
    return 0;
  char x[44], y[44];
  acme_b64url(pt + 1, 32, x, sizeof x);
  acme_b64url(pt + 33, 32, y, sizeof y);
  int n = snprintf(out, cap, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int acme_thumbprint(EVP_PKEY *key, char out[44]) {
  char jwk[160];
  size_t n = acme_jwk(key, jwk, sizeof jwk);
  if (!n) return -1;
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)jwk, n, md);
  return acme_b64url(md, sizeof md, out, 44) ? 0 : -1;
}

/* ES256: the raw r || s, 32 bytes each (RFC 7518 §3.4), not DER. */
static int es256(EVP_PKEY *key, const char *msg, size_t n, uint8_t sig[64]) {
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)msg, n, md);
  ECDSA_SIG *s = ECDSA_do_sign(md, sizeof md, p256(key));
  if (!s) return -1;
  const BIGNUM *r, *sv;
  ECDSA_SIG_get0(s, &r, &sv);
  int ok = BN_bn2bin_padded(sig, 32, r) && BN_bn2bin_padded(sig + 32, 32, sv);
  ECDSA_SIG_free(s);
  return ok ? 0 : -1;
}

/* How a JWS is signed: ES256 with the account key, or HS256 with an EAB key. */
struct signer {
  EVP_PKEY *key;                /* ES256 when set */
  const uint8_t *hmac_key;      /* else HS256 */
  size_t hmac_len;
};

/* Sign base64url(prot) "." base64url(payload) and pack the flattened JWS
 * (free()); takes prot (json_decref). NULL on failure. */
static char *flattened(json_t *prot, const char *payload, size_t plen, const struct signer *sg) {
  char *ph = prot ? json_dumps(prot, JSON_COMPACT) : NULL;
  json_decref(prot);
  char *p64 = ph ? acme_b64url_dup(ph, strlen(ph)) : NULL;
  char *b64 = payload ? acme_b64url_dup(payload, plen) : strdup("");
  free(ph);
  char *out = NULL, *signing = NULL;
  uint8_t sig[EVP_MAX_MD_SIZE > 64 ? EVP_MAX_MD_SIZE : 64];
  unsigned siglen = 0;
  char s64[90];
  if (p64 && b64 && (signing = malloc(strlen(p64) + strlen(b64) + 2))) {
    sprintf(signing, "%s.%s", p64, b64);
    size_t n = strlen(signing);
    bool ok;
    if (sg->key) {
      ok = es256(sg->key, signing, n, sig) == 0;
      siglen = 64;
    } else {
      ok = HMAC(EVP_sha256(), sg->hmac_key, sg->hmac_len, (const uint8_t *)signing, n, sig, &siglen) &&
           siglen == SHA256_DIGEST_LENGTH;
    }
    if (ok && acme_b64url(sig, siglen, s64, sizeof s64)) {
      json_t *j = json_pack("{s:s, s:s, s:s}", "protected", p64, "payload", b64, "signature", s64);
      out = j ? json_dumps(j, JSON_COMPACT) : NULL;
      json_decref(j);
    }
  }
  free(signing);
  free(p64);
  free(b64);
  return out;
}

char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url, const char *payload) {
  if (!p256(key)) return NULL;
  json_t *prot = json_object();
  json_object_set_new(prot, "alg", json_string("ES256"));
  if (kid) {
    json_object_set_new(prot, "kid", json_string(kid));
  } else {
    char jwk[160];
    json_t *j = acme_jwk(key, jwk, sizeof jwk) ? json_loads(jwk, 0, NULL) : NULL;
    if (!j) {
      json_decref(prot);
      return NULL;
    }
    json_object_set_new(prot, "jwk", j);
  }
  json_object_set_new(prot, "nonce", json_string(nonce));
  json_object_set_new(prot, "url", json_string(url));
  struct signer sg = {.key = key};
  return flattened(prot, payload, payload ? strlen(payload) : 0, &sg);
}

char *acme_eab_jws(EVP_PKEY *account_key, const char *eab_kid, const uint8_t *hmac_key, size_t keylen,
                   const char *url) {
  char jwk[160];
  size_t jn = acme_jwk(account_key, jwk, sizeof jwk);
  if (!jn || !keylen) return NULL;
  struct signer sg = {.hmac_key = hmac_key, .hmac_len = keylen};
  return flattened(json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", eab_kid, "url", url), jwk, jn, &sg);
}
