/* tls.c: owns the server's SSL_CTX: certificate files (loaded, or generated
 * once for -certmode selfsigned and for manual with an IP -hostname), the
 * DERP meta certificate, derper's TLS policy (TLS 1.2 minimum, ALPN
 * http/1.1, SNI must name -hostname), and the SIGHUP swap (also the ACME
 * worker's, after it wrote new files).
 *
 * Sharing: the current SSL_CTX is read-only once built, and BoringSSL allows
 * SSL_new on one SSL_CTX from many threads. It sits in a struct tls_ref that
 * counts its users: the current pointer (one) and every SSL made on it, until
 * the transport frees that SSL and drops the ref (tls_put). The pointer is
 * guarded by a mutex held only to load it and count one more user: with a
 * bare atomic pointer a shard could load the old one and lose the race
 * against the reload dropping its last user. The lock is uncontended except
 * during a reload and costs a few ns per accept. A reload never touches live
 * connections.
 *   Why a count of our own and not BoringSSL's (SSL_CTX_up_ref, the SSL's own
 * reference): that one is an atomic inside Debian's uninstrumented libcrypto.
 * TSan then sees one shard's SSL_new read the old SSL_CTX and another shard's
 * SSL_free free it with nothing ordering the two, and reports a race
 * (tls_e2e::sighup_reload, once in a few runs). derpd's count is a C11 atomic
 * TSan sees, and the SSL_CTX_free that frees is the one made at zero.
 *
 * derpd does not resume sessions: no tickets (TLS 1.3 NewSessionTicket would
 * otherwise ride on the first write), no session cache.
 *
 * kTLS (tls_set_ktls, before tls_init): every SSL_CTX, reloads included, gets
 * ktls.c's key-log callback (the only way BoringSSL's C API gives out TLS 1.3
 * traffic secrets; derpd sets no other key-log callback, so nothing to
 * chain). With --ktls=require, TLS 1.2 is limited to the AEAD suites the
 * kernel takes, so that no handshake succeeds only to be closed.
 *
 * -acme-ip-certs: a ClientHello without SNI or with an IP address as SNI is
 * handed to acme_ipcert.c in the select-certificate callback, which moves it
 * to the certificate of the address it reached. With an IP -hostname
 * (derper's IP-only server) the base SSL_CTX has no certificate at all. */
#include "derp/hex.h"
#include "derp/key.h"
#include "server/transport/tls.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "derp/frame.h"
#include "server/acme/acme_chal.h"
#include "server/acme/acme_ipcert.h"
#include "server/config.h"
#include "server/server.h"
#include "server/transport/ktls.h"
#include "server/log.h"

#define SELFSIGNED_DAYS 3650 /* pinned by hash, so expiry only forces a new pin */
#define META_DAYS 30         /* as derper: +-30 days around start (or reload) */

struct tls_ref {
  SSL_CTX *ctx;
  atomic_uint users; /* g.cur (until swapped out) + live SSLs made on ctx */
};

static struct {
  pthread_mutex_t mu;
  struct tls_ref *cur;      /* guarded by mu */
  /* Read-only after tls_init (callbacks read them from shard threads). */
  const struct config *cfg;
  char key_hex[65];
  char crt_path[1300], key_path[1300];
  bool host_is_ip;          /* -hostname is an IP literal: any SNI (derper) */
  bool allow_no_sni;        /* selfsigned or IP hostname: clients dial by address */
  bool ktls, ktls_require;  /* tls_set_ktls */
  bool acme;                /* -certmode letsencrypt: tls-alpn-01 challenges (acme_chal.c) */
  bool ip_certs;            /* -acme-ip-certs: no SNI or an IP SNI: acme_ipcert.c */
  bool ip_only;             /* ... and -hostname is an address: no hostname certificate */
  _Atomic int64_t not_after; /* the current leaf's, unix seconds; 0 = none (any thread reads) */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void set_err(char *err, size_t errlen, const char *what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", buf);
  ERR_clear_error();
}

void tls_cert_sha256_hex(X509 *cert, char out[65]) {
  uint8_t *der = NULL, md[SHA256_DIGEST_LENGTH];
  int n = i2d_X509(cert, &der);
  out[0] = 0;
  if (n <= 0) return;
  SHA256(der, (size_t)n, md);
  OPENSSL_free(der);
  derp_hex_encode(md, SHA256_DIGEST_LENGTH, out);
}

/* ---- callbacks (shard threads, during handshakes) ---------------------- */

static _Thread_local const char *reject_reason;

const char *tls_take_reject_reason(void) {
  const char *r = reject_reason;
  reject_reason = NULL;
  return r;
}

static int alpn_cb(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
                   unsigned inlen, void *arg) {
  (void)ssl;
  (void)arg;
  for (unsigned i = 0; i < inlen;) {
    unsigned l = in[i];
    if (i + 1 + l > inlen) break;
    if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
      *out = in + i + 1;
      *outlen = 8;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + l;
  }
  return SSL_TLSEXT_ERR_NOACK; /* no ALPN agreed; go on without it */
}

/* derper's manual cert manager: the SNI must be the configured hostname
 * (case-insensitive), unless the hostname is an IP address. With
 * -acme-ip-certs, no SNI and an IP SNI were checked by select_cert. */
static int sni_cb(SSL *ssl, int *alert, void *arg) {
  (void)arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (g.host_is_ip) return SSL_TLSEXT_ERR_OK;
  if (g.ip_certs && (!name || config_ip_literal(name))) return SSL_TLSEXT_ERR_OK;
  if (!name) {
    if (g.allow_no_sni) return SSL_TLSEXT_ERR_OK;
  } else if (strcasecmp(name, g.cfg->hostname) == 0) {
    return SSL_TLSEXT_ERR_OK;
  }
  reject_reason = name ? "SNI is not -hostname" : "no SNI";
  *alert = SSL_AD_UNRECOGNIZED_NAME;
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Before anything else in a handshake (shard): a CA's tls-alpn-01
 * validation (acme_chal.c), else with -acme-ip-certs a ClientHello for an
 * address (acme_ipcert.c); a DNS SNI goes on with -hostname's certificate. */
static enum ssl_select_cert_result_t select_cert(const SSL_CLIENT_HELLO *ch) {
  if (acme_chal_offers_alpn(ch)) return acme_chal_select_cert(ch);
  if (!g.ip_certs) return ssl_select_cert_success;
  const char *name = SSL_get_servername(ch->ssl, TLSEXT_NAMETYPE_host_name);
  if (name && !config_ip_literal(name)) {
    if (!g.ip_only) return ssl_select_cert_success;
    reject_reason = "a DNS name as SNI on an IP-only server (-acme-ip-certs)";
    return ssl_select_cert_error;
  }
  const char *why = NULL;
  enum ssl_select_cert_result_t r = acme_ipcert_select(ch, transport_tls_fd(ch->ssl), &why);
  if (r != ssl_select_cert_success) reject_reason = why;
  return r;
}

/* ---- certificates ------------------------------------------------------- */

static int add_ext(X509 *x, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
  if (!ext) return -1;
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : -1;
}

/* A certificate for pkey, self-signed, CN = cn. serial < 0: 128 random bits. */
static X509 *make_cert(EVP_PKEY *pkey, const char *cn, long serial, int days_before, int days_after,
                       const char *san, const EVP_MD *md) {
  X509 *x = X509_new();
  if (!x) return NULL;
  bool ok = X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER *sn = NULL;
  if (serial >= 0) {
    sn = ASN1_INTEGER_new();
    ok = ok && sn && ASN1_INTEGER_set(sn, serial);
  } else {
    BIGNUM *bn = BN_new();
    ok = ok && bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
    if (ok) sn = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    ok = ok && sn;
  }
  ok = ok && X509_set_serialNumber(x, sn);
  ASN1_INTEGER_free(sn);
  X509_NAME *name = X509_get_subject_name(x);
  /* An explicit string type skips the 64-character CommonName bound, which
   * "derpkey" + 64 hex exceeds (Go does not enforce it either). */
  ok = ok && X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                                        (const uint8_t *)cn, -1, -1, 0);
  ok = ok && X509_set_issuer_name(x, name);
  ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -(long)days_before * 86400);
  ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), (long)days_after * 86400);
  ok = ok && X509_set_pubkey(x, pkey);
  /* macOS wants BasicConstraints when subject == issuer (derper does the same). */
  ok = ok && add_ext(x, NID_basic_constraints, "critical,CA:FALSE") == 0;
  if (san) {
    /* No keyUsage: with one lacking keyCertSign, verifiers refuse the
     * certificate as its own trust anchor (curl --cacert, ca_file). */
    ok = ok && add_ext(x, NID_ext_key_usage, "serverAuth") == 0;
    ok = ok && add_ext(x, NID_subject_alt_name, san) == 0;
  }
  ok = ok && X509_sign(x, pkey, md);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* The DERP meta certificate: ed25519, CN derpkey<hex>, serial = protocol
 * version. Go clients on TLS 1.3 read the server key from it and skip the
 * 101 round trip (fast start). A fresh key per build: it proves nothing. */
static X509 *make_meta_cert(void) {
  uint8_t seed[32];
  RAND_bytes(seed, sizeof seed);
  EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
  OPENSSL_cleanse(seed, sizeof seed);
  if (!pk) return NULL;
  char cn[7 + 64 + 1];
  snprintf(cn, sizeof cn, "derpkey%s", g.key_hex);
  X509 *x = make_cert(pk, cn, DERP_PROTOCOL_VERSION, META_DAYS, META_DAYS, NULL, NULL);
  EVP_PKEY_free(pk);
  return x;
}

/* PEM in memory, then derp_file_write_atomic (libderp's key file writer). */
static int write_pem_file(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert, char *err,
                          size_t errlen) {
  BIO *b = BIO_new(BIO_s_mem());
  const uint8_t *pem = NULL;
  size_t len = 0;
  int ok = b && (key ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
                     : PEM_write_bio_X509(b, cert)) &&
           BIO_mem_contents(b, &pem, &len);
  if (ok && derp_file_write_atomic(path, (unsigned)mode, pem, len) != 0) {
    snprintf(err, errlen, "write %s: %s", path, strerror(errno));
    ok = 0;
  } else if (!ok) {
    snprintf(err, errlen, "write %s: PEM encoding failed", path);
  }
  BIO_free(b);
  return ok ? 0 : -1;
}

/* -certmode selfsigned: an ECDSA P-256 key and a 10-year certificate for
 * -hostname (SAN DNS or IP), written once and reused after. */
static int make_selfsigned_files(char *err, size_t errlen) {
  if (access(g.crt_path, F_OK) == 0 && access(g.key_path, F_OK) == 0) return 0;
  if (derp_mkdir_p(g.cfg->certdir, 0700) != 0) {
    snprintf(err, errlen, "create -certdir %s: %s", g.cfg->certdir, strerror(errno));
    return -1;
  }
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  EVP_PKEY *pk = EVP_PKEY_new();
  if (!ec || !pk || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
    EC_KEY_free(ec);
    EVP_PKEY_free(pk);
    set_err(err, errlen, "generate key");
    return -1;
  }
  char san[300];
  snprintf(san, sizeof san, "%s:%s", g.host_is_ip ? "IP" : "DNS", g.cfg->hostname);
  X509 *x = make_cert(pk, g.cfg->hostname, -1, 1, SELFSIGNED_DAYS, san, EVP_sha256());
  int rc = -1;
  if (!x) set_err(err, errlen, "make self-signed certificate");
  else if (write_pem_file(g.key_path, 0600, pk, NULL, err, errlen) == 0 &&
           write_pem_file(g.crt_path, 0644, NULL, x, err, errlen) == 0)
    rc = 0;
  if (rc == 0) log_info("tls: created self-signed certificate %s", g.crt_path);
  X509_free(x);
  EVP_PKEY_free(pk);
  return rc;
}

/* An SSL_CTX with derper's policy and, when crt is not NULL, the chain in
 * crt, its key and the meta certificate. */
static SSL_CTX *build_ctx_files(const char *crt, const char *keyf, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (!ctx) {
    set_err(err, errlen, "SSL_CTX_new");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
  SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
  if (g.ktls) ktls_ctx_init(ctx);
  /* TLS 1.2 suites the kernel takes (TLS 1.3 has only those three). */
  if (g.ktls_require &&
      !SSL_CTX_set_strict_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:AESGCM")) {
    set_err(err, errlen, "cipher list for --ktls=require");
    goto fail;
  }
  if (g.acme) SSL_CTX_set_select_certificate_cb(ctx, select_cert);
  if (!crt) return ctx;
  if (!SSL_CTX_use_certificate_chain_file(ctx, crt)) {
    char what[1400];
    snprintf(what, sizeof what, "load certificate %s", crt);
    set_err(err, errlen, what);
    goto fail;
  }
  if (!SSL_CTX_use_PrivateKey_file(ctx, keyf, SSL_FILETYPE_PEM)) {
    char what[1400];
    snprintf(what, sizeof what, "load key %s", keyf);
    bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
    set_err(err, errlen, what);
    if (mismatch) { /* the key is fine; the chain's first certificate is not its */
      size_t n = strlen(err);
      snprintf(err + n, errlen - n, " (not the key of the first certificate in %s: the leaf must come first)", crt);
    }
    goto fail;
  }
  if (!SSL_CTX_check_private_key(ctx)) {
    set_err(err, errlen, "certificate and key do not match");
    goto fail;
  }
  X509 *meta = make_meta_cert();
  if (!meta || !SSL_CTX_add1_chain_cert(ctx, meta)) {
    X509_free(meta);
    set_err(err, errlen, "meta certificate");
    goto fail;
  }
  X509_free(meta);
  char hex[65];
  tls_cert_sha256_hex(SSL_CTX_get0_certificate(ctx), hex);
  log_info("tls: certificate %s, sha256 %s (pin: CertName \"sha256-raw:%s\")", crt, hex, hex);
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* The leaf must name -hostname, as derper's manual mode checks
 * (VerifyHostname): a certificate for another name, served, fails every
 * client's verification with nothing said here. An expired one is said. */
static int check_leaf(SSL_CTX *ctx, char *err, size_t errlen) {
  X509 *leaf = SSL_CTX_get0_certificate(ctx);
  const char *h = g.cfg->hostname;
  bool ok = leaf && (g.host_is_ip ? X509_check_ip_asc(leaf, h, 0) == 1 : X509_check_host(leaf, h, strlen(h), 0, NULL) == 1);
  if (!ok) {
    snprintf(err, errlen, "certificate %s is not valid for -hostname %s (derper: cert invalid for hostname)",
             g.crt_path, h);
    return -1;
  }
  int64_t na = tls_ctx_not_after(ctx);
  if (na && na < (int64_t)time(NULL))
    log_warn("tls: certificate %s expired %lld days ago: clients will refuse it", g.crt_path,
             (long long)((time(NULL) - na) / 86400));
  return 0;
}

/* The server's SSL_CTX: -hostname's files (cert), or none (letsencrypt
 * before ACME has one, when only validation handshakes can succeed; or an
 * IP-only server, whose certificates are per address). manual with an IP
 * -hostname and no files makes a self-signed certificate, as derper v1.82+
 * does (createSelfSignedIPCert). */
static SSL_CTX *build_ctx(bool cert, char *err, size_t errlen) {
  bool manual_ip = strcmp(g.cfg->certmode, "manual") == 0 && g.host_is_ip;
  if ((strcmp(g.cfg->certmode, "selfsigned") == 0 || manual_ip) && make_selfsigned_files(err, errlen) != 0)
    return NULL; /* it makes the files only where they are missing */
  bool with = cert && !g.ip_only;
  SSL_CTX *ctx = build_ctx_files(with ? g.crt_path : NULL, g.key_path, err, errlen);
  if (ctx && with && check_leaf(ctx, err, errlen) != 0) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

SSL_CTX *tls_ctx_from_files(const char *crt, const char *key, char *err, size_t errlen) {
  return build_ctx_files(crt, key, err, errlen);
}

int64_t tls_asn1_epoch(const ASN1_TIME *t) {
  /* From the epoch itself, not from now: two readings of one certificate
   * agree even across a second boundary (acme.c compares them). */
  ASN1_TIME *zero = ASN1_TIME_set(NULL, 0);
  int days = 0, secs = 0;
  bool ok = zero && t && ASN1_TIME_diff(&days, &secs, zero, t);
  ASN1_TIME_free(zero);
  return ok ? (int64_t)days * 86400 + secs : 0;
}

int64_t tls_ctx_not_after(SSL_CTX *ctx) {
  X509 *leaf = SSL_CTX_get0_certificate(ctx);
  return leaf ? tls_asn1_epoch(X509_get0_notAfter(leaf)) : 0;
}

void tls_set_ktls(bool on, bool require) {
  g.ktls = on;
  g.ktls_require = on && require;
}

/* Makes ctx (taken) the one new connections use; the old one lives on while
 * SSLs made on it do. */
static int publish(SSL_CTX *ctx, char *err, size_t errlen) {
  struct tls_ref *r = malloc(sizeof *r);
  if (!r) {
    SSL_CTX_free(ctx);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  r->ctx = ctx;
  atomic_init(&r->users, 1);
  atomic_store_explicit(&g.not_after, tls_ctx_not_after(ctx), memory_order_relaxed);
  pthread_mutex_lock(&g.mu);
  struct tls_ref *old = g.cur;
  g.cur = r;
  pthread_mutex_unlock(&g.mu);
  tls_put(old);
  return 0;
}

int tls_init(const struct config *cfg, const char *server_key_hex, char *err, size_t errlen) {
  g.cfg = cfg;
  snprintf(g.key_hex, sizeof g.key_hex, "%s", server_key_hex);
  if (strchr(cfg->hostname, '/') || !cfg->hostname[0] || cfg->hostname[0] == '.') {
    snprintf(err, errlen, "-hostname \"%s\" cannot name certificate files", cfg->hostname);
    return -1;
  }
  /* manual: derper's file names, the hostname less any character outside
   * [A-Za-z0-9.-] (an IPv6 address loses its colons); the other modes keep
   * the names they have always written. */
  char base[256];
  size_t bn = 0;
  bool manual = strcmp(cfg->certmode, "manual") == 0;
  for (const char *p = cfg->hostname; *p && bn < sizeof base - 1; p++)
    if (!manual || isalnum((unsigned char)*p) || *p == '.' || *p == '-')
      base[bn++] = *p;
  base[bn] = 0;
  snprintf(g.crt_path, sizeof g.crt_path, "%s/%s.crt", cfg->certdir, base);
  snprintf(g.key_path, sizeof g.key_path, "%s/%s.key", cfg->certdir, base);
  g.host_is_ip = config_ip_literal(cfg->hostname);
  g.allow_no_sni = g.host_is_ip || strcmp(cfg->certmode, "selfsigned") == 0;
  g.acme = config_acme(cfg);
  g.ip_certs = g.acme && cfg->acme_ip_certs;
  g.ip_only = g.ip_certs && g.host_is_ip;
  if (g.ip_only)
    log_info("tls: IP-only server (-acme-ip-certs, -hostname %s): a certificate for each address clients "
             "dial, from the CA at the first such handshake", cfg->hostname);
  SSL_CTX *ctx = build_ctx(true, err, errlen);
  if (!ctx && g.acme) {
    log_warn("tls: %s; serving without a certificate until ACME gets one", err);
    ctx = build_ctx(false, err, errlen);
  }
  if (!ctx) return -1;
  return publish(ctx, err, errlen);
}

int tls_reload(char *err, size_t errlen) {
  /* SIGHUP (main thread) and the ACME worker may reload at once: one at a
   * time, so that a context built from older files never lands last. */
  static pthread_mutex_t reload_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&reload_mu);
  SSL_CTX *ctx = build_ctx(true, err, errlen);
  int rc = ctx ? publish(ctx, err, errlen) : -1;
  pthread_mutex_unlock(&reload_mu);
  return rc;
}

SSL *tls_new_ssl(struct tls_ref **ref) {
  pthread_mutex_lock(&g.mu);
  struct tls_ref *r = g.cur;
  if (r) atomic_fetch_add_explicit(&r->users, 1, memory_order_relaxed);
  pthread_mutex_unlock(&g.mu);
  *ref = r;
  if (!r) return NULL;
  SSL *ssl = SSL_new(r->ctx);
  if (!ssl) {
    tls_put(r);
    *ref = NULL;
  }
  return ssl;
}

int64_t tls_cert_not_after(void) {
  if (g.ip_only) return acme_ipcert_not_after(); /* no -hostname certificate: the addresses' */
  return atomic_load_explicit(&g.not_after, memory_order_relaxed);
}

void tls_put(struct tls_ref *r) {
  if (!r || atomic_fetch_sub_explicit(&r->users, 1, memory_order_acq_rel) != 1) return;
  SSL_CTX_free(r->ctx); /* the last reference: every SSL on it is freed */
  free(r);
}

void tls_shutdown(void) {
  pthread_mutex_lock(&g.mu);
  struct tls_ref *old = g.cur;
  g.cur = NULL;
  pthread_mutex_unlock(&g.mu);
  tls_put(old);
}
