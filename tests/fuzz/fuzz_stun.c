/* fuzz_stun.c: libFuzzer target for the STUN codec (lib/stun.c).
 *
 * Input: byte 0 picks the rule (bit 0: generic) and what to repair before
 * judging, so that mutations reach past the checks a random input seldom
 * passes (bit 1: the header's length field set to the datagram's; bit 2:
 * the last 4 bytes set to the FINGERPRINT of the rest); the other bytes are
 * the datagram. Whatever is accepted must be a Binding Request within the
 * bounds, with "tailnode" in it under derper's rule, and its reply must
 * read back as the same transaction id, address and port. */
#include <string.h>

#include "derp/stun.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static uint8_t b[DERP_STUN_REQUEST_MAX + 64];
  size_t n = size - 1 < sizeof b ? size - 1 : sizeof b;
  memcpy(b, data + 1, n);
  bool generic = data[0] & 1;
  if ((data[0] & 2) && n >= DERP_STUN_HDR_LEN && n - DERP_STUN_HDR_LEN < 65536) {
    b[2] = (uint8_t)((n - DERP_STUN_HDR_LEN) >> 8);
    b[3] = (uint8_t)(n - DERP_STUN_HDR_LEN);
  }
  if ((data[0] & 4) && n >= 28) {
    uint32_t fp = derp_stun_fingerprint(b, n - 8);
    b[n - 4] = (uint8_t)(fp >> 24), b[n - 3] = (uint8_t)(fp >> 16);
    b[n - 2] = (uint8_t)(fp >> 8), b[n - 1] = (uint8_t)fp;
  }
  uint8_t txid[DERP_STUN_TXID_LEN];
  enum derp_stun_verdict v = derp_stun_parse_request(b, n, generic, txid);
  FUZZ_CHECK((unsigned)v < DERP_STUN_NVERDICTS);
  FUZZ_CHECK(strcmp(derp_stun_verdict_name(v), "?") != 0);
  if (v != DERP_STUN_OK) return 0;
  FUZZ_CHECK(n >= DERP_STUN_HDR_LEN && n <= DERP_STUN_REQUEST_MAX);
  FUZZ_CHECK(b[0] == 0 && b[1] == 1 && memcmp(b + 4, "\x21\x12\xa4\x42", 4) == 0);
  FUZZ_CHECK(memcmp(txid, b + 8, DERP_STUN_TXID_LEN) == 0);
  if (!generic) FUZZ_CHECK(memmem(b, n, DERP_STUN_SOFTWARE, 8) != NULL);
  /* The reply, for an address made of the input's bytes. */
  uint8_t ip[16], back[16], id[DERP_STUN_TXID_LEN], out[DERP_STUN_REPLY_MAX];
  for (size_t i = 0; i < 16; i++) ip[i] = b[(i * 7) % n];
  uint16_t port = (uint16_t)(b[n - 1] << 8 | b[n / 2]), got_port = 0;
  for (size_t iplen = 4; iplen <= 16; iplen += 12) {
    if (iplen == 16 && memcmp(ip, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) ip[0] = 0x20;
    size_t r = derp_stun_reply(out, sizeof out, txid, ip, iplen, port), got_len = 0;
    FUZZ_CHECK(r == DERP_STUN_HDR_LEN + 8 + iplen);
    FUZZ_CHECK(derp_stun_parse_response(out, r, id, back, &got_len, &got_port) == 0);
    FUZZ_CHECK(got_len == iplen && memcmp(back, ip, iplen) == 0 && got_port == port);
    FUZZ_CHECK(memcmp(id, txid, DERP_STUN_TXID_LEN) == 0);
  }
  return 0;
}
