/* test_acme.c: the ACME pieces that need no CA: base64url, the account key
 * file, the JWK and its thumbprint, signed requests (verified here with the
 * public key), the External Account Binding (its HMAC recomputed), URLs, the https client's bounds
 * (stop descriptor, deadline), and both challenge paths as the shards serve
 * them: the tls-alpn-01 certificate through a real in-memory handshake on an
 * SSL_CTX set up as tls.c's, and the http-01 route; and the client against a
 * CA that refuses (tests/acme_fake_ca.py), which pebble cannot be made to
 * do. The CA end to end is test_acme_e2e.c (pebble).
 *
 * Not Criterion (it links BoringSSL; Criterion brings OpenSSL's libcrypto).
 * Usage: test_acme [substring of test names]. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/base64.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "server/acme/acme_chal.h"
#include "server/acme/acme_client.h"
#include "server/acme/acme_https.h"
#include "server/acme/acme_ipcert.h"
#include "server/acme/acme_jws.h"
#include "server/protocol/http.h"

/* ---- helpers ------------------------------------------------------------- */

/* base64url (unpadded) to bytes; length or -1. */
static long b64url_decode(const char *s, uint8_t *out, size_t cap) {
  size_t n = strlen(s);
  char *t = malloc(n + 4);
  memcpy(t, s, n);
  for (size_t i = 0; i < n; i++) t[i] = t[i] == '-' ? '+' : t[i] == '_' ? '/' : t[i];
  while (n % 4) t[n++] = '=';
  size_t len = 0;
  int ok = EVP_DecodeBase64(out, &len, cap, (const uint8_t *)t, n);
  free(t);
  return ok ? (long)len : -1;
}

static char tmpdir[64];
static pid_t fake_ca; /* tests/acme_fake_ca.py while it runs */

static void make_tmpdir(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/derpd-acme-test-XXXXXX");
  cr_assert(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
}

static int teardown(void) {
  if (fake_ca > 0) {
    kill(fake_ca, SIGKILL);
    waitpid(fake_ca, NULL, 0);
    fake_ca = 0;
  }
  if (tmpdir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", tmpdir);
    tmpdir[0] = 0;
  }
  acme_chal_clear_all();
  acme_chal_free();
  ERR_clear_error();
  return 0;
}

/* ---- base64url, key file, JWK, JWS ------------------------------------------ */

static void b64url_vectors(void) {
  static const struct { const char *in, *out; } v[] = {
      {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"},
      {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}, {"\xff\xfe\xfd", "__79"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char out[32];
    size_t n = acme_b64url(v[i].in, strlen(v[i].in), out, sizeof out);
    cr_assert(strcmp(out, v[i].out) == 0 && n == strlen(v[i].out), "%s: got %s", v[i].out, out);
    char *d = acme_b64url_dup(v[i].in, strlen(v[i].in));
    cr_assert(d && strcmp(d, v[i].out) == 0);
    free(d);
  }
  char small[4];
  cr_assert_eq(acme_b64url("foob", 4, small, sizeof small), 0, "too small a buffer must fail");
  cr_assert_eq(small[0], 0);
}

static void account_key_file(void) {
  make_tmpdir();
  char path[128], jwk1[160], jwk2[160];
  snprintf(path, sizeof path, "%s/acme_account+key", tmpdir);
  EVP_PKEY *k1 = NULL, *k2 = NULL;
  bool created = false;
  char err[256];
  cr_assert_eq(acme_key_load_or_create(path, &k1, &created, err, sizeof err), 0, "%s", err);
  cr_assert(created);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
  FILE *f = fopen(path, "r");
  char head[64] = "";
  cr_assert(f && fgets(head, sizeof head, f));
  fclose(f);
  cr_assert(strstr(head, "BEGIN EC PRIVATE KEY"), "autocert's format: %s", head);
  cr_assert_eq(acme_key_load_or_create(path, &k2, &created, err, sizeof err), 0, "%s", err);
  cr_assert(!created);
  cr_assert(acme_jwk(k1, jwk1, sizeof jwk1) > 0 && acme_jwk(k2, jwk2, sizeof jwk2) > 0);
  cr_assert(strcmp(jwk1, jwk2) == 0, "reloaded key differs");
  EVP_PKEY_free(k1);
  EVP_PKEY_free(k2);
  f = fopen(path, "w");
  fputs("not a key\n", f);
  fclose(f);
  cr_assert_eq(acme_key_load_or_create(path, &k1, &created, err, sizeof err), -1);
  cr_assert(strstr(err, "not a PEM ECDSA P-256 private key"), "%s", err);
  snprintf(path, sizeof path, "%s/no/such/dir/key", tmpdir);
  cr_assert_eq(acme_key_load_or_create(path, &k1, &created, err, sizeof err), -1);
}

/* RFC 7517 A.1's P-256 key: the JWK has RFC 7638's member order and the
 * thumbprint hashes exactly that text. */
static void jwk_and_thumbprint(void) {
  static const char x64[] = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
  static const char y64[] = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
  uint8_t x[48], y[48]; /* EVP_DecodeBase64 wants room for the padded length */
  cr_assert_eq(b64url_decode(x64, x, sizeof x), 32);
  cr_assert_eq(b64url_decode(y64, y, sizeof y), 32);
  EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  BIGNUM *bx = BN_bin2bn(x, 32, NULL), *by = BN_bin2bn(y, 32, NULL);
  cr_assert(EC_KEY_set_public_key_affine_coordinates(ec, bx, by));
  BN_free(bx);
  BN_free(by);
  EVP_PKEY *pk = EVP_PKEY_new();
  EVP_PKEY_assign_EC_KEY(pk, ec);
  char jwk[160], want[200], tp[44], tp_want[44];
  snprintf(want, sizeof want, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x64, y64);
  size_t jl = acme_jwk(pk, jwk, sizeof jwk);
  cr_assert(jl == strlen(want), "%zu: %s vs %s", jl, jwk, want);
  cr_assert(strcmp(jwk, want) == 0, "%s", jwk);
  uint8_t md[32];
  SHA256((const uint8_t *)want, strlen(want), md);
  acme_b64url(md, 32, tp_want, sizeof tp_want);
  cr_assert_eq(acme_thumbprint(pk, tp), 0);
  cr_assert(strcmp(tp, tp_want) == 0 && strlen(tp) == 43, "%s", tp);
  EVP_PKEY_free(pk);
}

/* A flattened JWS's three members (*p64, *b64, *s64, owned by the object
 * returned: json_decref) and its protected header, decoded (*h). */
static json_t *jws_parts(const char *jws, const char **p64, const char **b64, const char **s64, json_t **h) {
  json_t *j = json_loads(jws, 0, NULL);
  cr_assert_not_null(j, "not JSON: %s", jws);
  *p64 = json_string_value(json_object_get(j, "protected"));
  *b64 = json_string_value(json_object_get(j, "payload"));
  *s64 = json_string_value(json_object_get(j, "signature"));
  cr_assert(*p64 && *b64 && *s64);
  uint8_t buf[2048];
  long n = b64url_decode(*p64, buf, sizeof buf - 1);
  cr_assert(n > 0);
  buf[n] = 0;
  *h = json_loads((char *)buf, 0, NULL);
  cr_assert_not_null(*h, "protected header: %s", buf);
  return j;
}

/* Decode a JWS, check its header and verify its ES256 signature. */
static void check_jws(const char *jws, EVP_PKEY *key, const char *kid, const char *payload) {
  const char *p64, *b64, *s64;
  json_t *h, *j = jws_parts(jws, &p64, &b64, &s64, &h);
  uint8_t buf[2048], sig[80];
  long n;
  cr_assert(strcmp(json_string_value(json_object_get(h, "alg")), "ES256") == 0);
  cr_assert(strcmp(json_string_value(json_object_get(h, "nonce")), "n\"once") == 0, "escaped nonce");
  cr_assert(strcmp(json_string_value(json_object_get(h, "url")), "https://ca.example/acme/x") == 0);
  if (kid) {
    cr_assert(strcmp(json_string_value(json_object_get(h, "kid")), kid) == 0);
    cr_assert(!json_object_get(h, "jwk"), "kid and jwk are exclusive");
  } else {
    char jwk[160];
    acme_jwk(key, jwk, sizeof jwk);
    char *got = json_dumps(json_object_get(h, "jwk"), JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert(got && strcmp(got, jwk) == 0, "jwk %s", got);
    free(got);
    cr_assert(!json_object_get(h, "kid"));
  }
  json_decref(h);
  n = b64url_decode(b64, buf, sizeof buf - 1);
  cr_assert(n >= 0);
  buf[n] = 0;
  cr_assert(strcmp((char *)buf, payload ? payload : "") == 0, "payload %s", buf);
  cr_assert(!payload == !b64[0], "POST-as-GET has an empty payload");
  cr_assert_eq(b64url_decode(s64, sig, sizeof sig), 64, "ES256 signatures are r||s, 64 bytes");
  char signing[4096];
  snprintf(signing, sizeof signing, "%s.%s", p64, b64);
  uint8_t md[32];
  SHA256((const uint8_t *)signing, strlen(signing), md);
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
  cr_assert(ECDSA_SIG_set0(es, r, s));
  cr_assert_eq(ECDSA_do_verify(md, 32, es, EVP_PKEY_get0_EC_KEY(key)), 1, "signature does not verify");
  ECDSA_SIG_free(es);
  json_decref(j);
}

static void jws_signed_requests(void) {
  EVP_PKEY *k = acme_key_new();
  cr_assert_not_null(k);
  for (int i = 0; i < 20; i++) { /* r or s with leading zero bytes must keep 32 bytes */
    char *a = acme_jws(k, NULL, "n\"once", "https://ca.example/acme/x", "{\"termsOfServiceAgreed\":true}");
    cr_assert_not_null(a);
    check_jws(a, k, NULL, "{\"termsOfServiceAgreed\":true}");
    free(a);
  }
  char *b = acme_jws(k, "https://ca.example/acct/1", "n\"once", "https://ca.example/acme/x", NULL);
  check_jws(b, k, "https://ca.example/acct/1", NULL);
  free(b);
  EVP_PKEY_free(k);
}

/* External Account Binding (RFC 8555 §7.3.4): HS256 over the account's JWK,
 * bound to the newAccount URL, with no nonce; checked by recomputing the
 * HMAC, as the CA does. */
static void eab_binding(void) {
  EVP_PKEY *k = acme_key_new();
  cr_assert_not_null(k);
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)(0xe0 + i);
  char *e = acme_eab_jws(k, "kid-\"1", key, sizeof key, "https://ca.example/acme/new-acct");
  cr_assert_not_null(e);
  const char *p64, *b64, *s64;
  json_t *h, *j = jws_parts(e, &p64, &b64, &s64, &h);
  uint8_t buf[1024];
  long n;
  cr_assert(strcmp(json_string_value(json_object_get(h, "alg")), "HS256") == 0);
  cr_assert(strcmp(json_string_value(json_object_get(h, "kid")), "kid-\"1") == 0);
  cr_assert(strcmp(json_string_value(json_object_get(h, "url")), "https://ca.example/acme/new-acct") == 0);
  cr_assert(!json_object_get(h, "nonce") && !json_object_get(h, "jwk"), "RFC 8555: no nonce, no jwk");
  json_decref(h);
  char jwk[160];
  cr_assert(acme_jwk(k, jwk, sizeof jwk) > 0);
  n = b64url_decode(b64, buf, sizeof buf - 1);
  cr_assert(n > 0);
  buf[n] = 0;
  cr_assert(strcmp((char *)buf, jwk) == 0, "the payload is the account's JWK");
  char signing[1024];
  snprintf(signing, sizeof signing, "%s.%s", p64, b64);
  uint8_t want[32], got[64], other[32];
  unsigned wl = 0;
  cr_assert(HMAC(EVP_sha256(), key, sizeof key, (const uint8_t *)signing, strlen(signing), want, &wl) && wl == 32);
  cr_assert_eq(b64url_decode(s64, got, sizeof got), 32, "HS256: 32 bytes");
  cr_assert(memcmp(got, want, 32) == 0, "the HMAC does not verify");
  key[0] ^= 1;
  cr_assert(HMAC(EVP_sha256(), key, sizeof key, (const uint8_t *)signing, strlen(signing), other, &wl));
  cr_assert(memcmp(got, other, 32) != 0, "another key must not verify");
  json_decref(j);
  free(e);
  cr_assert(!acme_eab_jws(k, "kid", key, 0, "https://ca.example/x"), "an empty key is refused");
  EVP_PKEY_free(k);
}

/* -acme-ip-certs' table: addresses kept in canonical form, each once, at
 * most ACME_IPCERT_MAX; files named as derper names them. (The handshake
 * side is test_acme_e2e's.) */
static void ipcert_table(void) {
  char a[ACME_IPCERT_TEXT], p[256];
  cr_assert(acme_ipcert_add("::ffff:45.76.1.1"));
  cr_assert(acme_ipcert_add("45.76.1.1"));
  cr_assert(acme_ipcert_add("2A01:4F8:0::1"));
  cr_assert(!acme_ipcert_add("derp.example.net"), "not an address: ignored");
  /* Addresses no CA certifies take no slot. */
  static const char *const private[] = {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                                        "100.64.0.1", "100.127.0.1", "169.254.1.1", "0.0.0.0", "224.0.0.1",
                                        "255.255.255.255", "192.0.2.1", "198.51.100.7", "203.0.113.9",
                                        "198.18.0.1", "::1", "::", "fe80::1", "fd00::1", "fc00::1", "ff02::1",
                                        "2001:db8::1", "::ffff:10.0.0.1"};
  for (size_t i = 0; i < sizeof private / sizeof private[0]; i++) {
    cr_assert(!acme_ipcert_public(private[i]), "%s counted as public", private[i]);
    cr_assert(!acme_ipcert_add(private[i]), "%s took a slot", private[i]);
  }
  static const char *const public[] = {"1.1.1.1", "172.15.255.255", "172.32.0.1", "100.63.255.255",
                                       "100.128.0.1", "11.0.0.1", "2606:4700::1111", "::ffff:8.8.8.8"};
  for (size_t i = 0; i < sizeof public / sizeof public[0]; i++)
    cr_assert(acme_ipcert_public(public[i]), "%s counted as not public", public[i]);
  cr_assert(acme_ipcert_addr(0, a, sizeof a) && strcmp(a, "45.76.1.1") == 0, "%s", a);
  cr_assert(acme_ipcert_addr(1, a, sizeof a) && strcmp(a, "2a01:4f8::1") == 0, "%s", a);
  cr_assert(!acme_ipcert_addr(2, a, sizeof a), "a v4-mapped twin, a name or a private address made an entry");
  for (int i = 0; i < 2 * ACME_IPCERT_MAX; i++) {
    snprintf(p, sizeof p, "45.76.2.%d", i + 1);
    acme_ipcert_add(p);
  }
  cr_assert(acme_ipcert_addr(ACME_IPCERT_MAX - 1, a, sizeof a), "the table fills to its bound");
  cr_assert(!acme_ipcert_addr(ACME_IPCERT_MAX, a, sizeof a), "and no further");
  acme_ipcert_free();
  cr_assert(!acme_ipcert_addr(0, a, sizeof a), "freed");
  acme_ipcert_path("/c", "2001:db8::1", ".crt", p, sizeof p);
  cr_assert(strcmp(p, "/c/2001.db8..1.crt") == 0, "%s", p);
  acme_ipcert_path("/c", "192.0.2.1", ".key", p, sizeof p);
  cr_assert(strcmp(p, "/c/192.0.2.1.key") == 0, "%s", p);
}

/* ---- HTTP ------------------------------------------------------------------- */

static void url_split(void) {
  char h[64], p[8];
  const char *path;
  cr_assert_eq(acme_url_split("https://acme-v02.api.letsencrypt.org/directory", h, sizeof h, p, sizeof p, &path), 0);
  cr_assert(!strcmp(h, "acme-v02.api.letsencrypt.org") && !strcmp(p, "443") && !strcmp(path, "/directory"));
  cr_assert_eq(acme_url_split("https://127.0.0.1:14000/dir?x=1", h, sizeof h, p, sizeof p, &path), 0);
  cr_assert(!strcmp(h, "127.0.0.1") && !strcmp(p, "14000") && !strcmp(path, "/dir?x=1"));
  cr_assert_eq(acme_url_split("HTTPS://[::1]:8443", h, sizeof h, p, sizeof p, &path), 0);
  cr_assert(!strcmp(h, "::1") && !strcmp(p, "8443") && !strcmp(path, "/"));
  cr_assert_eq(acme_url_split("http://ca.example/dir", h, sizeof h, p, sizeof p, &path), -1);
  cr_assert_eq(acme_url_split("https://:443/", h, sizeof h, p, sizeof p, &path), -1);
  /* From a CA's JSON: a port past 65535, a space or CR LF in the URL. */
  cr_assert_eq(acme_url_split("https://ca.example:99999/x", h, sizeof h, p, sizeof p, &path), -1);
  cr_assert_eq(acme_url_split("https://ca.example/a b", h, sizeof h, p, sizeof p, &path), -1);
  cr_assert_eq(acme_url_split("https://ca.example/a\r\nHost: evil", h, sizeof h, p, sizeof p, &path), -1);
  cr_assert_eq(acme_url_split("https://ca:44x3/", h, sizeof h, p, sizeof p, &path), -1);
  /* Retry-After from its own bytes: a value in a reused buffer is followed
   * by an older, longer one's digits ("1" then "9999" of "19999"). */
  cr_assert_eq(acme_retry_after("19999", 1), 1);
  cr_assert_eq(acme_retry_after("120 ", 4), 120);
  cr_assert_eq(acme_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", 29), -1);
  cr_assert_eq(acme_retry_after("", 0), -1);
  char many[2000];
  memset(many, '9', sizeof many);
  long big = acme_retry_after(many, sizeof many);
  cr_assert(big >= 100000000 && big < 1000000000, "%ld: saturated", big);
  cr_assert_eq(acme_url_split("https://ca:/", h, sizeof h, p, sizeof p, &path), -1);
  cr_assert_eq(acme_url_split("https://[::1/", h, sizeof h, p, sizeof p, &path), -1);
}

/* The client gives up at once when told to stop, and at its deadline on a
 * server that never answers (a listening socket nobody accepts on). */
static void https_bounds(void) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  cr_assert(bind(ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(ls, 8) == 0);
  getsockname(ls, (struct sockaddr *)&a, &al);
  char url[64];
  snprintf(url, sizeof url, "https://127.0.0.1:%u/dir", ntohs(a.sin_port));
  int stop = eventfd(0, 0);
  struct acme_https h;
  char err[256];
  cr_assert_eq(acme_https_init(&h, NULL, stop, 400, err, sizeof err), 0, "%s", err);
  struct acme_resp r;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  cr_assert_eq(acme_https_do(&h, "GET", url, NULL, NULL, &r, err, sizeof err), -1);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  cr_assert(strstr(err, "timeout") && ms >= 350 && ms < 2000, "%s after %ld ms", err, ms);
  uint64_t one = 1;
  cr_assert(write(stop, &one, sizeof one) == sizeof one);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  h.timeout_ms = 30000;
  cr_assert_eq(acme_https_do(&h, "GET", url, NULL, NULL, &r, err, sizeof err), -1);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  cr_assert(strcmp(err, "stopping") == 0 && ms < 1000, "%s after %ld ms", err, ms);
  cr_assert_eq(acme_https_do(&h, "GET", "http://127.0.0.1/", NULL, NULL, &r, err, sizeof err), -1);
  acme_https_free(&h);
  cr_assert_eq(acme_https_init(&h, "/nonexistent/ca.pem", -1, 400, err, sizeof err), -1);
  cr_assert(strstr(err, "/nonexistent/ca.pem"), "%s", err);
  close(stop);
  close(ls);
}

/* ---- challenges ----------------------------------------------------------- */

#define NAME "derp.example.net"

/* The server's SSL_CTX as tls.c builds it for -certmode letsencrypt (the
 * parts that matter here): a certificate, ALPN http/1.1 only, the
 * select-certificate callback. */
static int server_alpn(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in, unsigned inlen, void *arg) {
  (void)ssl, (void)arg;
  if (inlen >= 9 && memcmp(in, "\x08http/1.1", 9) == 0) {
    *out = in + 1;
    *outlen = 8;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

static SSL_CTX *server_ctx(X509 **main_cert) {
  EVP_PKEY *k = acme_key_new();
  uint8_t zero[32] = {0};
  X509 *x = acme_chal_tls_cert(k, "main.example.net", zero); /* any certificate will do */
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  cr_assert(ctx && x && SSL_CTX_use_certificate(ctx, x) && SSL_CTX_use_PrivateKey(ctx, k));
  SSL_CTX_set_alpn_select_cb(ctx, server_alpn, NULL);
  SSL_CTX_set_select_certificate_cb(ctx, acme_chal_select_cert);
  *main_cert = x;
  EVP_PKEY_free(k);
  return ctx;
}

struct hs_result {
  bool ok;
  char alpn[16];
  X509 *peer;
};

/* One handshake in memory: client offers alpn (wire format) with sni. */
static struct hs_result handshake(SSL_CTX *sctx, const char *sni, const char *alpn, size_t alpn_len) {
  struct hs_result res = {0};
  SSL_CTX *cctx = SSL_CTX_new(TLS_method());
  SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
  BIO *bc, *bs;
  cr_assert(BIO_new_bio_pair(&bc, 0, &bs, 0));
  SSL_set_bio(c, bc, bc);
  SSL_set_bio(s, bs, bs);
  SSL_set_connect_state(c);
  SSL_set_accept_state(s);
  if (sni) SSL_set_tlsext_host_name(c, sni);
  SSL_set_alpn_protos(c, (const uint8_t *)alpn, alpn_len);
  bool cdone = false, sdone = false, failed = false;
  for (int i = 0; i < 50 && !(cdone && sdone) && !failed; i++) {
    int rc;
    if (!cdone && (rc = SSL_do_handshake(c)) == 1) cdone = true;
    else if (!cdone && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) failed = true;
    if (!sdone && (rc = SSL_do_handshake(s)) == 1) sdone = true;
    else if (!sdone && SSL_get_error(s, rc) != SSL_ERROR_WANT_READ) failed = true;
  }
  res.ok = cdone && sdone;
  if (res.ok) {
    const uint8_t *p;
    unsigned n;
    SSL_get0_alpn_selected(c, &p, &n);
    if (n < sizeof res.alpn) memcpy(res.alpn, p, n);
    res.peer = SSL_get_peer_certificate(c);
  }
  SSL_free(c);
  SSL_free(s);
  SSL_CTX_free(cctx);
  ERR_clear_error();
  return res;
}

static const char acme_alpn[] = "\x0a" "acme-tls/1";
static const char http_alpn[] = "\x08" "http/1.1";

static void tls_alpn_01(void) {
  X509 *main_cert;
  SSL_CTX *sctx = server_ctx(&main_cert);
  const char *keyauth = "tok-en.thumbprint";
  /* No challenge pending: acme-tls/1 is refused, http/1.1 works as ever. */
  struct hs_result r = handshake(sctx, NAME, acme_alpn, sizeof acme_alpn - 1);
  cr_assert(!r.ok, "acme-tls/1 without a challenge must fail");
  r = handshake(sctx, NAME, http_alpn, sizeof http_alpn - 1);
  cr_assert(r.ok && !strcmp(r.alpn, "http/1.1") && X509_cmp(r.peer, main_cert) == 0);
  X509_free(r.peer);
  cr_assert_eq(acme_chal_tls_set(NAME, keyauth), 0);
  /* The validator's handshake: SNI, ALPN acme-tls/1 only. */
  r = handshake(sctx, "DERP.example.net", acme_alpn, sizeof acme_alpn - 1);
  cr_assert(r.ok, "challenge handshake failed");
  cr_assert(!strcmp(r.alpn, "acme-tls/1"), "ALPN %s", r.alpn);
  cr_assert(X509_cmp(r.peer, main_cert) != 0);
  cr_assert_eq(X509_check_host(r.peer, NAME, strlen(NAME), 0, NULL), 1, "SAN must name the host");
  ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
  int idx = X509_get_ext_by_OBJ(r.peer, oid, -1);
  cr_assert(idx >= 0, "no acmeIdentifier extension");
  X509_EXTENSION *ext = X509_get_ext(r.peer, idx);
  cr_assert(X509_EXTENSION_get_critical(ext), "acmeIdentifier must be critical");
  const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
  uint8_t want[34] = {0x04, 0x20};
  SHA256((const uint8_t *)keyauth, strlen(keyauth), want + 2);
  cr_assert(ASN1_STRING_length(v) == 34 && memcmp(ASN1_STRING_get0_data(v), want, 34) == 0,
            "extnValue must be the DER OCTET STRING of SHA-256(keyauth)");
  ASN1_OBJECT_free(oid);
  X509_free(r.peer);
  /* Other names, and clients not offering acme-tls/1, are untouched. */
  r = handshake(sctx, "other.example.net", acme_alpn, sizeof acme_alpn - 1);
  cr_assert(!r.ok, "a challenge for another name");
  r = handshake(sctx, NULL, acme_alpn, sizeof acme_alpn - 1);
  cr_assert(!r.ok, "no SNI");
  r = handshake(sctx, NAME, http_alpn, sizeof http_alpn - 1);
  cr_assert(r.ok && X509_cmp(r.peer, main_cert) == 0, "a DERP client during a challenge");
  X509_free(r.peer);
  static const char both[] = "\x08http/1.1\x0a" "acme-tls/1";
  r = handshake(sctx, NAME, both, sizeof both - 1);
  cr_assert(r.ok && !strcmp(r.alpn, "acme-tls/1"), "acme-tls/1 offered among others");
  X509_free(r.peer);
  acme_chal_tls_clear(NAME);
  r = handshake(sctx, NAME, acme_alpn, sizeof acme_alpn - 1);
  cr_assert(!r.ok, "a cleared challenge still answered");
  X509_free(main_cert);
  SSL_CTX_free(sctx);
}

static bool route(const char *method, const char *path, struct http_reply *out) {
  char req[512];
  snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: " NAME "\r\n\r\n", method, path);
  struct http_req r;
  http_req_init(&r);
  size_t used;
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)req, strlen(req), &used), HTTP_FEED_DONE);
  return acme_chal_http_route(&r, out);
}

static void http_01(void) {
  struct http_reply out;
  cr_assert(!route("GET", ACME_HTTP01_PREFIX "tok", &out), "routed before acme_chal_enable");
  acme_chal_enable();
  cr_assert(!route("GET", "/generate_204", &out), "not an ACME path");
  cr_assert(route("GET", ACME_HTTP01_PREFIX "tok", &out) && out.status == 404);
  cr_assert_eq(acme_chal_http_set("tok", "tok.thumb"), 0);
  cr_assert(route("GET", ACME_HTTP01_PREFIX "tok", &out) && out.status == 200);
  out.buf[out.len] = 0;
  cr_assert(strstr(out.buf, "Content-Length: 9\r\n") && strstr(out.buf, "\r\n\r\ntok.thumb"), "%s", out.buf);
  cr_assert_eq(out.action, HTTP_ACT_CLOSE);
  cr_assert(route("HEAD", ACME_HTTP01_PREFIX "tok", &out) && out.status == 200);
  out.buf[out.len] = 0;
  cr_assert(strstr(out.buf, "\r\n\r\n")[4] == 0, "HEAD has no body");
  cr_assert(route("POST", ACME_HTTP01_PREFIX "tok", &out) && out.status == 404);
  cr_assert(route("GET", ACME_HTTP01_PREFIX "to", &out) && out.status == 404);
  cr_assert(route("GET", ACME_HTTP01_PREFIX, &out) && out.status == 404);
  char buf[64];
  cr_assert(acme_chal_http_get("tok", buf, sizeof buf) && !strcmp(buf, "tok.thumb"));
  /* A bounded table: four at once, a fifth refused, a cleared slot reused. */
  cr_assert_eq(acme_chal_http_set("t2", "a"), 0);
  cr_assert_eq(acme_chal_http_set("t3", "b"), 0);
  cr_assert_eq(acme_chal_http_set("t4", "c"), 0);
  cr_assert_eq(acme_chal_http_set("t5", "d"), -1);
  cr_assert_eq(acme_chal_http_set("tok", "tok.new"), 0, "the same token is replaced");
  acme_chal_http_clear("tok");
  cr_assert(route("GET", ACME_HTTP01_PREFIX "tok", &out) && out.status == 404);
  cr_assert_eq(acme_chal_http_set("t5", "d"), 0);
  cr_assert_eq(acme_chal_http_set("", "x"), -1);
}

/* ---- the client against a CA that refuses --------------------------------- */

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  int n = 0, ch;
  while (f && (ch = fgetc(f)) != EOF) n += ch == '\n';
  if (f) fclose(f);
  return n;
}

/* A CA whose authorizations are dead on arrival (invalid before anything was
 * tried): one order per challenge type, then a clear error; never a loop of
 * orders (each one spends the account's rate limit at a real CA). The stop
 * descriptor is a 20 s timer, so a loop ends the test instead of hanging it. */
static void obtain_refused(void) {
  make_tmpdir();
  char cert[128], key[128], ready[128], log[128], cmd[512], url[64];
  snprintf(cert, sizeof cert, "%s/ca.crt", tmpdir);
  snprintf(key, sizeof key, "%s/ca.key", tmpdir);
  snprintf(ready, sizeof ready, "%s/ready", tmpdir);
  snprintf(log, sizeof log, "%s/orders", tmpdir);
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=fake-ca "
           "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null", key, cert);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  const char *script = getenv("ACME_FAKE_CA");
  cr_assert(script && *script, "ACME_FAKE_CA is not set (meson sets it)");
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
    execlp("python3", "python3", script, cert, key, ready, log, (char *)NULL);
    _exit(127);
  }
  fake_ca = pid;
  int port = 0;
  for (int i = 0; i < 200 && !port; i++) {
    FILE *f = fopen(ready, "r");
    if (f) { if (fscanf(f, "%d", &port) != 1) port = 0; fclose(f); }
    if (!port) usleep(50000);
  }
  cr_assert(port > 0, "the fake CA did not start");
  snprintf(url, sizeof url, "https://127.0.0.1:%d/dir", port);
  int stop = timerfd_create(CLOCK_MONOTONIC, 0);
  struct itimerspec its = {.it_value = {.tv_sec = 20}};
  cr_assert(stop >= 0 && timerfd_settime(stop, 0, &its, NULL) == 0);
  const char *types[2] = {ACME_CHAL_TLS_ALPN, ACME_CHAL_HTTP};
  EVP_PKEY *account = acme_key_new();
  struct acme_client c;
  char err[600];
  cr_assert_eq(acme_client_init(&c, account, url, cert, types, 2, stop, err, sizeof err), 0, "%s", err);
  cr_assert_eq(acme_client_account(&c, "", "", ""), 0);
  EVP_PKEY *k = NULL;
  char *chain = NULL;
  int rc = acme_client_obtain(&c, "derp.example.net", &k, &chain, err, sizeof err);
  int orders = count_lines(log);
  cr_assert(rc == -1 && !k && !chain, "obtained a certificate from a CA that refuses");
  cr_assert_eq(orders, 2, "orders placed for a name: %d (last error: %s)", orders, err);
  cr_assert(strstr(err, "is invalid"), "%s", err);
  /* An address is asked for with http-01 only: one order. */
  rc = acme_client_obtain(&c, "192.0.2.7", &k, &chain, err, sizeof err);
  cr_assert(rc == -1 && !k && !chain);
  cr_assert_eq(count_lines(log) - orders, 1, "orders placed for an address: %d (%s)", count_lines(log) - orders, err);
  acme_client_free(&c);
  EVP_PKEY_free(account);
  close(stop);
}

static const struct mini_test tests[] = {
    {"b64url_vectors", b64url_vectors},
    {"account_key_file", account_key_file},
    {"jwk_and_thumbprint", jwk_and_thumbprint},
    {"jws_signed_requests", jws_signed_requests},
    {"eab_binding", eab_binding},
    {"ipcert_table", ipcert_table},
    {"url_split", url_split},
    {"https_bounds", https_bounds},
    {"tls_alpn_01", tls_alpn_01},
    {"http_01", http_01},
    {"obtain_refused", obtain_refused},
};

int main(int argc, char **argv) {
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, teardown);
}
