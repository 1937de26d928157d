/* key.c: Curve25519 key generation and the nodekey:/privkey: text forms.
 *
 * Owns derp_init (libsodium start-up), key generation, and parsing/formatting
 * of keys as hex. Output hex is lowercase; input hex may be either case. */
#include <string.h>

#include <sodium.h>

#include "derp/hex.h"
#include "derp/key.h"

#define PUB_PREFIX "nodekey:"
#define PRIV_PREFIX "privkey:"
#define PREFIX_LEN 8

int derp_init(void) {
  /* sodium_init is itself idempotent and thread-safe: 0 first time, 1 after. */
  return sodium_init() < 0 ? -1 : 0;
}

void derp_key_generate(derp_privkey *priv, derp_key *pub) {
  crypto_box_keypair(pub->b, priv->b);
}

void derp_key_public(const derp_privkey *priv, derp_key *pub) {
  crypto_scalarmult_base(pub->b, priv->b);
}

int derp_key_equal(const derp_key *a, const derp_key *b) {
  return memcmp(a->b, b->b, DERP_KEY_LEN) == 0;
}

/* Public keys are not secret, so no constant-time loop: derpd asks this of
 * every slot it probes in a PeerGone set, on the packet path. */
int derp_key_is_zero(const derp_key *k) {
  uint64_t w[4];
  _Static_assert(sizeof w == DERP_KEY_LEN, "a key is four words");
  memcpy(w, k->b, sizeof w);
  return (w[0] | w[1] | w[2] | w[3]) == 0;
}

/* Strip an optional prefix, then require exactly 64 hex digits. */
static int parse_hex_key(const char *s, const char *prefix, uint8_t out[DERP_KEY_LEN]) {
  if (s == NULL) return -1;
  if (strncmp(s, prefix, PREFIX_LEN) == 0) s += PREFIX_LEN;
  if (strlen(s) != DERP_KEY_HEXLEN) return -1;
  uint8_t tmp[DERP_KEY_LEN];
  if (derp_hex_decode(s, DERP_KEY_LEN, tmp) != 0) {
    sodium_memzero(tmp, sizeof tmp);
    return -1;
  }
  /* Only touch *out once the whole string is known good. */
  memcpy(out, tmp, DERP_KEY_LEN);
  sodium_memzero(tmp, sizeof tmp);
  return 0;
}

int derp_key_parse(const char *s, derp_key *out) {
  return parse_hex_key(s, PUB_PREFIX, out->b);
}

int derp_privkey_parse(const char *s, derp_privkey *out) {
  return parse_hex_key(s, PRIV_PREFIX, out->b);
}

void derp_key_hex(const derp_key *k, char out[DERP_KEY_HEXLEN + 1]) {
  derp_hex_encode(k->b, DERP_KEY_LEN, out);
}

void derp_key_format(const derp_key *k, char out[DERP_KEY_STRLEN]) {
  memcpy(out, PUB_PREFIX, PREFIX_LEN);
  derp_hex_encode(k->b, DERP_KEY_LEN, out + PREFIX_LEN);
}

void derp_privkey_format(const derp_privkey *k, char out[DERP_KEY_STRLEN]) {
  memcpy(out, PRIV_PREFIX, PREFIX_LEN);
  derp_hex_encode(k->b, DERP_KEY_LEN, out + PREFIX_LEN);
}

void derp_key_short(const derp_key *k, char out[9]) {
  derp_hex_encode(k->b, 4, out);
}
