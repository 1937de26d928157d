/* acme_chal.c: the challenge table and its two readers, the TLS
 * select-certificate callback (tls-alpn-01) and the port-80 route (http-01).
 * See acme_chal.h for who calls what from which thread. */
#include "server/acme/acme_chal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/obj.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server/acme/acme_jws.h"
#include "server/log.h"
#include "server/protocol/http.h"

#define ACME_TLS_ALPN "acme-tls/1"
#define ACME_IDENTIFIER_OID "1.3.6.1.5.5.7.1.31" /* id-pe-acmeIdentifier, RFC 8737 */

static struct {
  pthread_mutex_t mu;
  struct { char token[128]; char keyauth[256]; } http[ACME_CHAL_MAX]; /* token "" = free */
  struct { char name[256]; SSL_CTX *ctx; } tls[ACME_CHAL_MAX];        /* ctx NULL = free */
  atomic_bool enabled;
  /* Challenge contexts taken out of the table, freed only by acme_chal_free
   * once the shards are joined (or, past RETIRED_MAX, the oldest): a
   * handshake may still hold one, and BoringSSL's reference count, outside
   * what TSan sees, must not be all that orders the shard's last read before
   * the worker's free. The worker's alone; a handful of KiB per challenge. */
  SSL_CTX *retired[ACME_CHAL_RETIRED_MAX];
  int nretired;
} T = {.mu = PTHREAD_MUTEX_INITIALIZER};

void acme_chal_retire(SSL_CTX *ctx) {
  if (!ctx) return;
  if (T.nretired == ACME_CHAL_RETIRED_MAX) {
    /* Retired 16 contexts ago. A challenge's handshake is long over; a
     * replaced address certificate's connections may still hold theirs,
     * but each SSL took its own reference (SSL_set_SSL_CTX), so this only
     * drops ours and the last SSL to go frees it. */
    SSL_CTX_free(T.retired[0]);
    memmove(T.retired, T.retired + 1, sizeof T.retired - sizeof T.retired[0]);
    T.nretired--;
  }
  T.retired[T.nretired++] = ctx;
}

void acme_chal_enable(void) { atomic_store(&T.enabled, true); }

/* ---- http-01 ----------------------------------------------------------- */

int acme_chal_http_set(const char *token, const char *keyauth) {
  if (!token[0] || strlen(token) >= sizeof T.http[0].token || strlen(keyauth) >= sizeof T.http[0].keyauth)
    return -1;
  int rc = -1;
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX && rc < 0; i++) {
    if (T.http[i].token[0] && strcmp(T.http[i].token, token) != 0) continue;
    strcpy(T.http[i].token, token);
    strcpy(T.http[i].keyauth, keyauth);
    rc = 0;
  }
  pthread_mutex_unlock(&T.mu);
  return rc;
}

void acme_chal_http_clear(const char *token) {
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX; i++)
    if (strcmp(T.http[i].token, token) == 0) T.http[i].token[0] = T.http[i].keyauth[0] = 0;
  pthread_mutex_unlock(&T.mu);
}

bool acme_chal_http_get(const char *token, char *out, size_t cap) {
  bool found = false;
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX && !found; i++) {
    if (!token[0] || strcmp(T.http[i].token, token) != 0) continue;
    snprintf(out, cap, "%s", T.http[i].keyauth);
    found = true;
  }
  pthread_mutex_unlock(&T.mu);
  return found;
}

bool acme_chal_http_route(const struct http_req *req, struct http_reply *out) {
  static const size_t plen = sizeof ACME_HTTP01_PREFIX - 1;
  if (!atomic_load_explicit(&T.enabled, memory_order_relaxed) ||
      strncmp(req->path, ACME_HTTP01_PREFIX, plen) != 0)
    return false;
  char keyauth[sizeof T.http[0].keyauth];
  const char *token = req->path + plen;
  bool head = req->method == HTTP_HEAD;
  bool found = (req->method == HTTP_GET || head) && acme_chal_http_get(token, keyauth, sizeof keyauth);
  const char *body = found ? keyauth : "not found\n";
  size_t blen = strlen(body);
  memset(out, 0, offsetof(struct http_reply, buf));
  out->action = HTTP_ACT_CLOSE;
  out->status = found ? 200 : 404;
  out->len = http_reply_head(out->buf, sizeof out->buf, out->status, "text/plain", blen);
  if (!head && out->len + blen <= sizeof out->buf) {
    memcpy(out->buf + out->len, body, blen);
    out->len += blen;
  }
  if (found) log_info("acme: http-01: answered the challenge for token %.64s", token);
  return true;
}

/* ---- tls-alpn-01 ----------------------------------------------------------- */

static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in, unsigned inlen,
                       void *arg) {
  (void)ssl, (void)arg;
  for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
    if (i + 1u + in[i] > inlen) break;
    if (in[i] == sizeof ACME_TLS_ALPN - 1 && memcmp(in + i + 1, ACME_TLS_ALPN, in[i]) == 0) {
      *out = in + i + 1;
      *outlen = in[i];
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 8737 §4: acme-tls/1 or nothing */
}

/* The ClientHello's ALPN extension lists "acme-tls/1". */
bool acme_chal_offers_alpn(const SSL_CLIENT_HELLO *ch) {
  const uint8_t *d;
  size_t n;
  if (!SSL_early_callback_ctx_extension_get(ch, TLSEXT_TYPE_application_layer_protocol_negotiation, &d, &n) ||
      n < 2)
    return false;
  size_t list = (size_t)d[0] << 8 | d[1];
  if (list + 2 > n) return false;
  for (size_t i = 2; i < 2 + list; i += 1u + d[i]) {
    if (i + 1 + d[i] > 2 + list) break;
    if (d[i] == sizeof ACME_TLS_ALPN - 1 && memcmp(d + i + 1, ACME_TLS_ALPN, d[i]) == 0) return true;
  }
  return false;
}

enum ssl_select_cert_result_t acme_chal_select_cert(const SSL_CLIENT_HELLO *ch) {
  if (!acme_chal_offers_alpn(ch)) return ssl_select_cert_success; /* the common case: no lock */
  const char *name = SSL_get_servername(ch->ssl, TLSEXT_NAMETYPE_host_name);
  SSL_CTX *ctx = NULL;
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX && name && !ctx; i++)
    if (T.tls[i].ctx && strcasecmp(T.tls[i].name, name) == 0) {
      ctx = T.tls[i].ctx;
      SSL_CTX_up_ref(ctx);
    }
  pthread_mutex_unlock(&T.mu);
  if (!ctx) {
    log_debug("acme: tls-alpn-01: a ClientHello for %.64s offers acme-tls/1, no challenge pending: refused",
              name ? name : "(no SNI)");
    return ssl_select_cert_error;
  }
  SSL_CTX *set = SSL_set_SSL_CTX(ch->ssl, ctx); /* takes its own reference */
  SSL_CTX_free(ctx);
  if (!set) return ssl_select_cert_error;
  log_info("acme: tls-alpn-01: serving the challenge certificate for %s", name);
  return ssl_select_cert_success;
}

X509 *acme_chal_tls_cert(EVP_PKEY *key, const char *name, const uint8_t digest[32]) {
  X509 *x = X509_new();
  BIGNUM *bn = BN_new();
  ASN1_INTEGER *sn = NULL;
  ASN1_OBJECT *oid = OBJ_txt2obj(ACME_IDENTIFIER_OID, 1);
  ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
  X509_EXTENSION *ext = NULL, *san = NULL;
  /* extnValue holds the DER of the acmeIdentifier: OCTET STRING (32 bytes). */
  uint8_t der[34] = {0x04, 0x20};
  memcpy(der + 2, digest, 32);
  char sanv[300];
  snprintf(sanv, sizeof sanv, "DNS:%s", name);
  X509V3_CTX v3;
  bool ok = x && bn && oid && val && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
            (sn = BN_to_ASN1_INTEGER(bn, NULL)) && X509_set_version(x, X509_VERSION_3) &&
            X509_set_serialNumber(x, sn) &&
            X509_NAME_add_entry_by_NID(X509_get_subject_name(x), NID_commonName, MBSTRING_UTF8,
                                       (const uint8_t *)name, -1, -1, 0) &&
            X509_set_issuer_name(x, X509_get_subject_name(x)) &&
            X509_gmtime_adj(X509_getm_notBefore(x), -86400) &&
            X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400) && X509_set_pubkey(x, key) &&
            ASN1_OCTET_STRING_set(val, der, sizeof der) &&
            (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, val)) && X509_add_ext(x, ext, -1);
  if (ok) {
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    ok = (san = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_alt_name, sanv)) && X509_add_ext(x, san, -1) &&
         X509_sign(x, key, EVP_sha256());
  }
  X509_EXTENSION_free(ext);
  X509_EXTENSION_free(san);
  ASN1_OCTET_STRING_free(val);
  ASN1_OBJECT_free(oid);
  ASN1_INTEGER_free(sn);
  BN_free(bn);
  if (!ok) {
    X509_free(x);
    ERR_clear_error();
    return NULL;
  }
  return x;
}

static SSL_CTX *challenge_ctx(const char *name, const char *keyauth) {
  uint8_t md[SHA256_DIGEST_LENGTH];
  SHA256((const uint8_t *)keyauth, strlen(keyauth), md);
  EVP_PKEY *key = acme_key_new();
  X509 *x = key ? acme_chal_tls_cert(key, name, md) : NULL;
  SSL_CTX *ctx = x ? SSL_CTX_new(TLS_method()) : NULL;
  bool ok = ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) && SSL_CTX_use_certificate(ctx, x) &&
            SSL_CTX_use_PrivateKey(ctx, key);
  if (ok) SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  else SSL_CTX_free(ctx);
  X509_free(x);
  EVP_PKEY_free(key);
  ERR_clear_error();
  return ok ? ctx : NULL;
}

int acme_chal_tls_set(const char *name, const char *keyauth) {
  if (strlen(name) >= sizeof T.tls[0].name) return -1;
  SSL_CTX *ctx = challenge_ctx(name, keyauth), *old = NULL;
  if (!ctx) return -1;
  int rc = -1;
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX && rc < 0; i++) {
    if (T.tls[i].ctx && strcasecmp(T.tls[i].name, name) != 0) continue;
    old = T.tls[i].ctx;
    strcpy(T.tls[i].name, name);
    T.tls[i].ctx = ctx;
    rc = 0;
  }
  pthread_mutex_unlock(&T.mu);
  if (rc == 0) acme_chal_retire(old);
  else SSL_CTX_free(ctx); /* never published */
  return rc;
}

/* Drop the tls-alpn-01 entries for name (NULL: all), and with all the
 * http-01 ones too. */
static void drop(const char *name) {
  SSL_CTX *old[ACME_CHAL_MAX] = {0};
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX; i++) {
    if (!name) T.http[i].token[0] = T.http[i].keyauth[0] = 0;
    if (!T.tls[i].ctx || (name && strcasecmp(T.tls[i].name, name) != 0)) continue;
    old[i] = T.tls[i].ctx;
    T.tls[i].ctx = NULL;
    T.tls[i].name[0] = 0;
  }
  pthread_mutex_unlock(&T.mu);
  for (int i = 0; i < ACME_CHAL_MAX; i++) acme_chal_retire(old[i]);
}

void acme_chal_tls_clear(const char *name) { drop(name); }

void acme_chal_clear_all(void) { drop(NULL); }

void acme_chal_free(void) {
  drop(NULL);
  for (int i = 0; i < T.nretired; i++) SSL_CTX_free(T.retired[i]);
  T.nretired = 0;
}
