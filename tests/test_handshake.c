/* test_handshake.c: ServerKey, ClientInfo and ServerInfo payloads, checked
 * against libsodium directly so both sides agree on the wire layout. */
#include <string.h>

#include <criterion/criterion.h>
#include <sodium.h>

#include "derp/frame.h"
#include "derp/handshake.h"

static derp_privkey spriv, cpriv;
static derp_key spub, cpub;

static void setup(void) {
  cr_assert_eq(derp_init(), 0);
  derp_key_generate(&spriv, &spub);
  derp_key_generate(&cpriv, &cpub);
}

TestSuite(handshake, .init = setup);

/* Seal plaintext JSON as a client would: key + nonce + box. */
static size_t raw_client_info(uint8_t *out, const char *json) {
  size_t jl = strlen(json);
  memcpy(out, cpub.b, 32);
  randombytes_buf(out + 32, 24);
  cr_assert_eq(crypto_box_easy(out + 56, (const uint8_t *)json, jl, out + 32, spub.b, cpriv.b), 0);
  return 56 + 16 + jl;
}

static size_t raw_server_info(uint8_t *out, const char *json) {
  size_t jl = strlen(json);
  randombytes_buf(out, 24);
  cr_assert_eq(crypto_box_easy(out + 24, (const uint8_t *)json, jl, out, cpub.b, spriv.b), 0);
  return 40 + jl;
}

Test(handshake, server_key_payload) {
  uint8_t p[64];
  derp_key got;
  cr_assert_eq(derp_server_key_payload(p, &spub), 40);
  cr_assert_eq(memcmp(p, DERP_MAGIC, 8), 0);
  cr_assert_eq(derp_server_key_parse(p, 40, &got), 0);
  cr_assert(derp_key_equal(&got, &spub));
  memset(p + 40, 0xCC, 24); /* future fields are ignored */
  memset(&got, 0, sizeof got);
  cr_assert_eq(derp_server_key_parse(p, 64, &got), 0);
  cr_assert(derp_key_equal(&got, &spub));
  cr_assert_eq(derp_server_key_parse(p, 39, &got), -1);
  p[3] ^= 0x20;
  cr_assert_eq(derp_server_key_parse(p, 40, &got), -1);
}

Test(handshake, client_info_seal_opens_with_libsodium) {
  struct derp_client_info ci = {.version = 2, .can_ack_pings = true};
  uint8_t out[DERP_CLIENT_INFO_SEAL_MAX];
  size_t n = derp_client_info_seal(out, sizeof out, &cpriv, &spub, &ci);
  cr_assert_gt(n, 72);
  cr_assert_eq(memcmp(out, cpub.b, 32), 0);
  char m[512] = {0};
  cr_assert_eq(crypto_box_open_easy((uint8_t *)m, out + 56, n - 56, out + 32, cpub.b, spriv.b), 0);
  cr_assert_str_eq(m, "{\"version\":2,\"CanAckPings\":true}");
}

Test(handshake, client_info_fields_round_trip) {
  struct derp_client_info ci = {.version = 2, .has_mesh_key = true, .can_ack_pings = true,
                                .is_prober = true};
  memset(ci.mesh_key, 'a', 64);
  strcpy(ci.app_name, "tailscaled");
  uint8_t out[DERP_CLIENT_INFO_SEAL_MAX];
  size_t n = derp_client_info_seal(out, sizeof out, &cpriv, &spub, &ci);
  cr_assert_neq(n, 0);
  struct derp_client_info got;
  derp_key who;
  const char *why = "unset";
  cr_assert_eq(derp_client_info_open(out, n, &spriv, &who, &got, &why), 0);
  cr_assert_null(why);
  cr_assert(derp_key_equal(&who, &cpub));
  cr_assert_eq(got.version, 2);
  cr_assert(got.has_mesh_key);
  cr_assert_str_eq(got.mesh_key, ci.mesh_key);
  cr_assert(got.can_ack_pings);
  cr_assert(got.is_prober);
  cr_assert_str_eq(got.app_name, "tailscaled");
}

Test(handshake, client_info_open_from_libsodium) {
  uint8_t p[1024];
  size_t n = raw_client_info(p, "{\"version\":2,\"meshKey\":\"abc\",\"Future\":[1,{\"x\":2}],"
                                "\"isprober\":true}");
  struct derp_client_info ci;
  derp_key who;
  const char *why = NULL;
  cr_assert_eq(derp_client_info_open(p, n, &spriv, &who, &ci, &why), 0, "why=%s", why);
  cr_assert(derp_key_equal(&who, &cpub));
  cr_assert_eq(ci.version, 2);
  cr_assert(ci.has_mesh_key);
  cr_assert_str_eq(ci.mesh_key, "abc");
  cr_assert_not(ci.can_ack_pings);
  cr_assert(ci.is_prober, "keys match case-insensitively, as in Go");
}

Test(handshake, client_info_lenient_fields) {
  uint8_t p[1024];
  char json[512];
  char longkey[70];
  memset(longkey, 'f', 65);
  longkey[65] = '\0';
  snprintf(json, sizeof json,
           "{\"meshKey\":\"%s\",\"AppName\":\"%s\",\"CanAckPings\":null}", longkey,
           "0123456789012345678901234567890123456789012345678901234567890123456789");
  size_t n = raw_client_info(p, json);
  struct derp_client_info ci;
  derp_key who;
  const char *why = NULL;
  cr_assert_eq(derp_client_info_open(p, n, &spriv, &who, &ci, &why), 0);
  cr_assert(ci.has_mesh_key, "derper takes mesh keys of 64 hex digits or more");
  cr_assert_str_eq(ci.mesh_key, longkey);
  cr_assert_eq(strlen(ci.app_name), DERP_APP_NAME_MAX);
  cr_assert_eq(ci.version, 0);
}

/* Open JSON {"meshKey":"<key>"} (through both opens); returns the rc. */
static int open_mesh_key(const char *key, struct derp_client_info *ci, const char **why) {
  static uint8_t p[DERP_MESH_KEY_MAX + 256];
  char json[DERP_MESH_KEY_MAX + 64];
  snprintf(json, sizeof json, "{\"version\":2,\"meshKey\":\"%s\"}", key);
  size_t n = raw_client_info(p, json);
  derp_key who;
  derp_box_key k;
  struct derp_client_info ci2;
  const char *why2 = NULL;
  int rc = derp_client_info_open(p, n, &spriv, &who, ci, why);
  cr_assert_eq(derp_client_info_open_k(p, n, &spriv, &who, &ci2, &k, &why2), rc);
  cr_assert(*why == why2 || strcmp(*why, why2) == 0);
  return rc;
}

Test(handshake, client_info_mesh_key_bound) {
  char key[DERP_MESH_KEY_MAX + 2];
  struct derp_client_info ci;
  const char *why = NULL;
  memset(key, 'A', DERP_MESH_KEY_MAX);
  key[DERP_MESH_KEY_MAX] = '\0';
  cr_assert_eq(open_mesh_key(key, &ci, &why), 0, "%s", why);
  cr_assert(ci.has_mesh_key);
  cr_assert_str_eq(ci.mesh_key, key, "kept whole, as sent");
  strcat(key, "A");
  cr_assert_eq(open_mesh_key(key, &ci, &why), -1);
  cr_assert_str_eq(why, "mesh_key_too_long");
  cr_assert_eq(open_mesh_key("", &ci, &why), 0);
  cr_assert_not(ci.has_mesh_key, "an empty key is no key");
}

Test(handshake, client_info_seals_the_longest_fields) {
  struct derp_client_info ci = {.version = 2, .has_mesh_key = true, .can_ack_pings = true,
                                .is_prober = true};
  memset(ci.mesh_key, 'f', DERP_MESH_KEY_MAX);
  memset(ci.app_name, '\x01', DERP_APP_NAME_MAX); /* each one escaped as \u0001 */
  uint8_t out[DERP_CLIENT_INFO_SEAL_MAX];
  size_t n = derp_client_info_seal(out, sizeof out, &cpriv, &spub, &ci);
  cr_assert_neq(n, 0);
  struct derp_client_info got;
  derp_key who;
  const char *why = NULL;
  cr_assert_eq(derp_client_info_open(out, n, &spriv, &who, &got, &why), 0, "%s", why);
  cr_assert_str_eq(got.mesh_key, ci.mesh_key);
  cr_assert_str_eq(got.app_name, ci.app_name);
}

Test(handshake, client_info_bad_json) {
  const char *bad[] = {"[1,2]", "\"str\"", "not json", "", "{\"version\":\"2\"}",
                       "{\"CanAckPings\":1}", "{\"meshKey\":5}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t p[1024];
    size_t n = raw_client_info(p, bad[i]);
    struct derp_client_info ci;
    derp_key who;
    const char *why = NULL;
    cr_assert_eq(derp_client_info_open(p, n, &spriv, &who, &ci, &why), -1, "%s", bad[i]);
    cr_assert_str_eq(why, "json", "%s", bad[i]);
  }
}

Test(handshake, client_info_wrong_key_and_tamper) {
  struct derp_client_info ci = {.version = 2};
  uint8_t out[DERP_CLIENT_INFO_SEAL_MAX];
  size_t n = derp_client_info_seal(out, sizeof out, &cpriv, &spub, &ci);
  struct derp_client_info got;
  derp_key who, otherpub;
  derp_privkey other;
  const char *why = NULL;
  derp_key_generate(&other, &otherpub);
  cr_assert_eq(derp_client_info_open(out, n, &other, &who, &got, &why), -1);
  cr_assert_str_eq(why, "box");
  for (size_t i = 0; i < n; i++) {
    out[i] ^= 0x01;
    why = NULL;
    cr_assert_eq(derp_client_info_open(out, n, &spriv, &who, &got, &why), -1, "byte %zu", i);
    cr_assert_str_eq(why, "box");
    out[i] ^= 0x01;
  }
  cr_assert_eq(derp_client_info_open(out, n, &spriv, &who, &got, &why), 0);
}

Test(handshake, client_info_sizes) {
  static uint8_t p[DERP_MAX_CLIENT_INFO + 1];
  struct derp_client_info ci;
  derp_key who;
  const char *why = NULL;
  cr_assert_eq(derp_client_info_open(p, 71, &spriv, &who, &ci, &why), -1);
  cr_assert_str_eq(why, "short");
  cr_assert_eq(derp_client_info_open(p, sizeof p, &spriv, &who, &ci, &why), -1);
  cr_assert_str_eq(why, "too_long");
  cr_assert_eq(derp_client_info_open(p, 72, &spriv, &who, &ci, &why), -1);
  cr_assert_str_eq(why, "box", "72 bytes is big enough to try");
  struct derp_client_info in = {.version = 2};
  uint8_t small[80];
  cr_assert_eq(derp_client_info_seal(small, sizeof small, &cpriv, &spub, &in), 0);
}

Test(handshake, server_info_round_trip) {
  struct derp_server_info si = {.version = 2, .token_bucket_bytes_per_second = 1000000,
                                .token_bucket_bytes_burst = 4096};
  uint8_t out[DERP_SERVER_INFO_SEAL_MAX];
  size_t n = derp_server_info_seal(out, sizeof out, &spriv, &cpub, &si);
  cr_assert_gt(n, 40);
  char m[256] = {0};
  cr_assert_eq(crypto_box_open_easy((uint8_t *)m, out + 24, n - 24, out, spub.b, cpriv.b), 0);
  cr_assert_str_eq(m, "{\"version\":2,\"TokenBucketBytesPerSecond\":1000000,"
                      "\"TokenBucketBytesBurst\":4096}");
  struct derp_server_info got;
  const char *why = "unset";
  cr_assert_eq(derp_server_info_open(out, n, &cpriv, &spub, &got, &why), 0);
  cr_assert_eq(got.version, 2);
  cr_assert_eq(got.token_bucket_bytes_per_second, 1000000);
  cr_assert_eq(got.token_bucket_bytes_burst, 4096);
}

Test(handshake, server_info_minimal_and_from_libsodium) {
  struct derp_server_info si = {.version = 2};
  uint8_t out[DERP_SERVER_INFO_SEAL_MAX];
  size_t n = derp_server_info_seal(out, sizeof out, &spriv, &cpub, &si);
  cr_assert_eq(n, 40 + strlen("{\"version\":2}"));
  n = raw_server_info(out, "{\"version\":2,\"Unknown\":true}");
  struct derp_server_info got;
  const char *why = NULL;
  cr_assert_eq(derp_server_info_open(out, n, &cpriv, &spub, &got, &why), 0);
  cr_assert_eq(got.version, 2);
  cr_assert_eq(got.token_bucket_bytes_burst, 0);
  n = raw_server_info(out, "7");
  cr_assert_eq(derp_server_info_open(out, n, &cpriv, &spub, &got, &why), -1);
  cr_assert_str_eq(why, "json");
}

Test(handshake, server_info_failures) {
  struct derp_server_info si = {.version = 2};
  uint8_t out[DERP_SERVER_INFO_SEAL_MAX];
  size_t n = derp_server_info_seal(out, sizeof out, &spriv, &cpub, &si);
  struct derp_server_info got;
  const char *why = NULL;
  derp_key otherpub;
  derp_privkey other;
  derp_key_generate(&other, &otherpub);
  cr_assert_eq(derp_server_info_open(out, n, &cpriv, &otherpub, &got, &why), -1);
  cr_assert_str_eq(why, "box");
  out[n - 1] ^= 0x80;
  cr_assert_eq(derp_server_info_open(out, n, &cpriv, &spub, &got, &why), -1);
  cr_assert_str_eq(why, "box");
  cr_assert_eq(derp_server_info_open(out, 39, &cpriv, &spub, &got, &why), -1);
  cr_assert_str_eq(why, "short");
  static uint8_t big[64 * 1024 + 1];
  cr_assert_eq(derp_server_info_open(big, sizeof big, &cpriv, &spub, &got, &why), -1);
  cr_assert_str_eq(why, "too_long");
  cr_assert_eq(derp_server_info_seal(out, 40, &spriv, &cpub, &si), 0, "cap too small");
}

Test(handshake, nonces_are_random) {
  struct derp_server_info si = {.version = 2};
  uint8_t a[DERP_SERVER_INFO_SEAL_MAX], b[DERP_SERVER_INFO_SEAL_MAX];
  derp_server_info_seal(a, sizeof a, &spriv, &cpub, &si);
  derp_server_info_seal(b, sizeof b, &spriv, &cpub, &si);
  cr_assert_neq(memcmp(a, b, 24), 0);
}

/* The one-X25519 server path interoperates with the two-key client path. */
Test(handshake, precomputed_key_roundtrip) {
  derp_privkey s_priv, c_priv;
  derp_key s_pub, c_pub, got;
  derp_key_generate(&s_priv, &s_pub);
  derp_key_generate(&c_priv, &c_pub);
  struct derp_client_info ci = {.version = 2, .can_ack_pings = true}, out;
  uint8_t buf[DERP_CLIENT_INFO_SEAL_MAX];
  size_t n = derp_client_info_seal(buf, sizeof buf, &c_priv, &s_pub, &ci);
  cr_assert_gt(n, 0);
  derp_box_key k;
  const char *why = NULL;
  cr_assert_eq(derp_client_info_open_k(buf, n, &s_priv, &got, &out, &k, &why), 0, "%s", why);
  cr_assert(derp_key_equal(&got, &c_pub));
  cr_assert(out.can_ack_pings && out.version == 2);
  buf[n - 1] ^= 1;
  cr_assert_eq(derp_client_info_open_k(buf, n, &s_priv, &got, &out, &k, &why), -1);
  cr_assert_str_eq(why, "box");
  /* ServerInfo sealed with the shared key opens with the client's keys. */
  cr_assert_eq(crypto_box_beforenm(k.b, c_pub.b, s_priv.b), 0);
  struct derp_server_info si = {.version = 2}, so;
  n = derp_server_info_seal_k(buf, sizeof buf, &k, &si);
  cr_assert_gt(n, 0);
  cr_assert_eq(derp_server_info_open(buf, n, &c_priv, &s_pub, &so, &why), 0, "%s", why);
  cr_assert_eq(so.version, 2);
}
