/* acme_jws.h: the ACME account's cryptography (RFC 7515, 7518, 7638, 8555
 * §6.2): base64url, the ES256 account key and its file, the JWK and its
 * thumbprint, and signed requests (flattened JWS). Pure apart from the key
 * file; any thread. */
#ifndef DERPD_ACME_JWS_H
#define DERPD_ACME_JWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* Unpadded base64url of n bytes into out (cap >= ceil(4n/3)+1); its length,
 * or 0 when out is too small (a NUL is always written if cap > 0). */
size_t acme_b64url(const void *in, size_t n, char *out, size_t cap);
/* The same into a new NUL-terminated buffer (free()), or NULL. */
char *acme_b64url_dup(const void *in, size_t n);

/* A new ECDSA P-256 key, or NULL. */
EVP_PKEY *acme_key_new(void);
/* PEM "EC PRIVATE KEY" of a P-256 key (the format of autocert's cache, so a
 * derper account key file works as is) into *pem (free()). 0 or -1. */
int acme_key_pem(EVP_PKEY *key, char **pem, size_t *len);
/* Load the key at path (a P-256 key in PEM), or create one there (mode 0600)
 * when the file does not exist. *created says which. 0, or -1 with err. */
int acme_key_load_or_create(const char *path, EVP_PKEY **out, bool *created, char *err, size_t errlen);

/* The public JWK, members in the order RFC 7638 hashes them:
 * {"crv":"P-256","kty":"EC","x":"...","y":"..."}. Length, or 0. */
size_t acme_jwk(EVP_PKEY *key, char *out, size_t cap);
/* base64url(SHA-256(JWK)), 43 characters + NUL. 0 or -1. */
int acme_thumbprint(EVP_PKEY *key, char out[44]);

/* A flattened JWS (RFC 8555 §6.2), signed ES256, as JSON (free()):
 * protected = {"alg":"ES256", "jwk" (kid == NULL) or "kid", "nonce", "url"},
 * payload = base64url(payload), or "" for POST-as-GET (payload == NULL).
 * NULL on failure. */
char *acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url, const char *payload);

/* The externalAccountBinding of a newAccount request (RFC 8555 §7.3.4): a
 * flattened JWS, as JSON (free()), whose protected header is
 * {"alg":"HS256","kid":eab_kid,"url":url}, whose payload is the account's
 * JWK, signed HMAC-SHA256 with the CA's key. NULL on failure. */
char *acme_eab_jws(EVP_PKEY *account_key, const char *eab_kid, const uint8_t *hmac_key, size_t keylen,
                   const char *url);

#endif
