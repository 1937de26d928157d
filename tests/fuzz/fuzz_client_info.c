/* fuzz_client_info.c: libFuzzer target for the handshake's JSON, the one
 * part of a ClientInfo (and ServerInfo) a key-holding peer fully controls.
 *
 * The input is sealed as the plaintext of a real box (fixed keys and nonce),
 * so every run gets past the crypto to the JSON parser of
 * derp_client_info_open_k (what derpd calls) and derp_server_info_open. On success the kept
 * strings must be NUL terminated within their arrays. */
#include <string.h>

#include <sodium.h>

#include "derp/frame.h"
#include "derp/handshake.h"
#include "derp/key.h"
#include "fuzz.h"

static derp_privkey srv_priv, cli_priv;
static derp_key srv_pub, cli_pub;

static void keys_once(void) {
  static bool done;
  if (done) return;
  FUZZ_CHECK(derp_init() == 0);
  memset(srv_priv.b, 0x11, sizeof srv_priv.b);
  memset(cli_priv.b, 0x22, sizeof cli_priv.b);
  derp_key_public(&srv_priv, &srv_pub);
  derp_key_public(&cli_priv, &cli_pub);
  done = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192) return 0;
  keys_once();
  static uint8_t msg[DERP_KEY_LEN + DERP_NONCE_LEN + 8192 + crypto_box_MACBYTES];
  uint8_t nonce[DERP_NONCE_LEN] = {7};
  /* ClientInfo: client key, nonce, box(json) from client to server. */
  memcpy(msg, cli_pub.b, DERP_KEY_LEN);
  memcpy(msg + DERP_KEY_LEN, nonce, DERP_NONCE_LEN);
  FUZZ_CHECK(crypto_box_easy(msg + DERP_KEY_LEN + DERP_NONCE_LEN, data, size, nonce, srv_pub.b,
                             cli_priv.b) == 0);
  size_t n = DERP_KEY_LEN + DERP_NONCE_LEN + size + crypto_box_MACBYTES;
  struct derp_client_info ci;
  derp_key who;
  derp_box_key k;
  const char *why = NULL;
  int rc = derp_client_info_open_k(msg, n, &srv_priv, &who, &ci, &k, &why); /* derpd's call */
  sodium_memzero(&k, sizeof k);
  if (rc == 0) {
    FUZZ_CHECK(derp_key_equal(&who, &cli_pub));
    FUZZ_CHECK(memchr(ci.mesh_key, '\0', sizeof ci.mesh_key) != NULL);
    FUZZ_CHECK(memchr(ci.app_name, '\0', sizeof ci.app_name) != NULL);
    FUZZ_CHECK(!ci.has_mesh_key || strlen(ci.mesh_key) > 0);
  } else {
    FUZZ_CHECK(why != NULL);
  }
  /* ServerInfo: nonce, box(json) from server to client. */
  memcpy(msg, nonce, DERP_NONCE_LEN);
  FUZZ_CHECK(crypto_box_easy(msg + DERP_NONCE_LEN, data, size, nonce, cli_pub.b, srv_priv.b) == 0);
  struct derp_server_info si;
  why = NULL;
  if (derp_server_info_open(msg, DERP_NONCE_LEN + size + crypto_box_MACBYTES, &cli_priv, &srv_pub,
                            &si, &why) != 0)
    FUZZ_CHECK(why != NULL);
  return 0;
}
