/* test_stun.c: the STUN codec (src/lib/stun.c): derper's request rules,
 * the generic RFC 5389 rule, the reply's exact bytes, and the client side.
 *
 * The golden bytes were taken from derper v1.78.3 on loopback: a request
 * built by an independent implementation (Python's zlib.crc32) with the
 * transaction id 01..0c, and derper's replies to it from 127.0.0.1:50031 (an
 * IPv4 socket) and from [::1]:56934. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "derp/stun.h"

static const uint8_t txid[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static size_t unhex(const char *h, uint8_t *out) {
  size_t n = 0;
  for (; h[0] && h[1]; h += 2) {
    unsigned v;
    sscanf(h, "%2x", &v);
    out[n++] = (uint8_t)v;
  }
  return n;
}

#define TS_REQUEST "000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f"
#define REPLY_V4 "0101000c2112a4420102030405060708090a0b0c002000080001e27d5e12a443"
#define REPLY_V6 "010100182112a4420102030405060708090a0b0c002000140002ff742112a4420102030405060708090a0b0d"

static enum derp_stun_verdict judge(const uint8_t *p, size_t n, bool generic) {
  uint8_t got[12] = {0};
  enum derp_stun_verdict v = derp_stun_parse_request(p, n, generic, got);
  if (v == DERP_STUN_OK) cr_assert_arr_eq(got, p + 8, 12, "transaction id not copied");
  return v;
}

/* Re-seal the FINGERPRINT at the end of b[0..n) (the last 8 bytes). */
static void reseal(uint8_t *b, size_t n) {
  uint32_t fp = derp_stun_fingerprint(b, n - 8);
  b[n - 4] = (uint8_t)(fp >> 24), b[n - 3] = (uint8_t)(fp >> 16);
  b[n - 2] = (uint8_t)(fp >> 8), b[n - 1] = (uint8_t)fp;
}

Test(stun, request_matches_golden) {
  uint8_t want[64], got[DERP_STUN_REQUEST_LEN];
  size_t n = unhex(TS_REQUEST, want);
  cr_assert_eq(n, DERP_STUN_REQUEST_LEN);
  derp_stun_request(got, txid);
  cr_assert_arr_eq(got, want, n);
  cr_assert_eq(judge(got, n, false), DERP_STUN_OK);
  cr_assert_eq(judge(got, n, true), DERP_STUN_OK);
}

Test(stun, reply_v4_exact) {
  uint8_t want[64], out[DERP_STUN_REPLY_MAX];
  size_t wn = unhex(REPLY_V4, want);
  const uint8_t ip[4] = {127, 0, 0, 1};
  size_t n = derp_stun_reply(out, sizeof out, txid, ip, 4, 50031);
  cr_assert_eq(n, 32);
  cr_assert_eq(n, wn);
  cr_assert_arr_eq(out, want, n);
}

Test(stun, reply_v6_exact) {
  uint8_t want[64], out[DERP_STUN_REPLY_MAX];
  size_t wn = unhex(REPLY_V6, want);
  uint8_t ip[16] = {0};
  ip[15] = 1;
  size_t n = derp_stun_reply(out, sizeof out, txid, ip, 16, 56934);
  cr_assert_eq(n, 44);
  cr_assert_eq(n, wn);
  cr_assert_eq(n, DERP_STUN_REPLY_MAX);
  cr_assert_arr_eq(out, want, n);
}

Test(stun, reply_bounds) {
  uint8_t out[64];
  const uint8_t ip[16] = {0};
  cr_assert_eq(derp_stun_reply(out, 31, txid, ip, 4, 1), 0);
  cr_assert_eq(derp_stun_reply(out, 43, txid, ip, 16, 1), 0);
  cr_assert_eq(derp_stun_reply(out, sizeof out, txid, ip, 8, 1), 0);
  cr_assert_eq(derp_stun_reply(out, 32, txid, ip, 4, 1), 32);
}

Test(stun, parse_response_roundtrip) {
  uint8_t buf[64], id[12], ip[16];
  size_t iplen = 0;
  uint16_t port = 0;
  size_t n = unhex(REPLY_V4, buf);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), 0);
  cr_assert_arr_eq(id, txid, 12);
  cr_assert_eq(iplen, 4);
  cr_assert_arr_eq(ip, ((uint8_t[]){127, 0, 0, 1}), 4);
  cr_assert_eq(port, 50031);
  n = unhex(REPLY_V6, buf);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), 0);
  cr_assert_eq(iplen, 16);
  cr_assert_eq(ip[15], 1);
  cr_assert_eq(port, 56934);
  /* derper on a dual-stack socket answers IPv4 clients with the mapped
   * address (family 2): clients read it as IPv4. */
  uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
  n = derp_stun_reply(buf, sizeof buf, txid, mapped, 16, 7);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), 0);
  cr_assert_eq(iplen, 4);
  cr_assert_arr_eq(ip, ((uint8_t[]){10, 1, 2, 3}), 4);
  /* Not a response, truncated, a request. */
  cr_assert_eq(derp_stun_parse_response(buf, 19, id, ip, &iplen, &port), -1);
  cr_assert_eq(derp_stun_parse_response(buf, n - 1, id, ip, &iplen, &port), -1);
  derp_stun_request(buf, txid);
  cr_assert_eq(derp_stun_parse_response(buf, DERP_STUN_REQUEST_LEN, id, ip, &iplen, &port), -1);
}

/* A Binding Success with the given attributes (each 4-byte aligned). */
static size_t success_with(uint8_t *out, const uint8_t *attrs, size_t alen) {
  static const uint8_t head[8] = {0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42};
  memcpy(out, head, 8);
  out[2] = (uint8_t)(alen >> 8);
  out[3] = (uint8_t)alen;
  memcpy(out + 8, txid, 12);
  memcpy(out + 20, attrs, alen);
  return 20 + alen;
}

/* As Go's stun.ParseResponse: the last XOR-MAPPED-ADDRESS wins,
 * MAPPED-ADDRESS is read when there is none, and one malformed address
 * attribute fails the whole response. */
Test(stun, parse_response_as_go) {
  /* XOR-MAPPED 10.0.0.1:1 (port ^ 0x2112, address ^ cookie), then 10.0.0.2:2. */
  static const uint8_t xor1[] = {0, 0x20, 0, 8, 0, 1, 0x21, 0x13, 10 ^ 0x21, 0 ^ 0x12, 0 ^ 0xa4, 1 ^ 0x42};
  static const uint8_t xor2[] = {0, 0x20, 0, 8, 0, 1, 0x21, 0x10, 10 ^ 0x21, 0 ^ 0x12, 0 ^ 0xa4, 2 ^ 0x42};
  static const uint8_t mapped[] = {0, 0x01, 0, 8, 0, 1, 0, 9, 192, 0, 2, 9}; /* 192.0.2.9:9 */
  static const uint8_t bad_mapped[] = {0, 0x01, 0, 4, 0, 3, 0, 9};          /* family 3 */
  uint8_t attrs[64], buf[96], id[12], ip[16];
  size_t iplen = 0, n;
  uint16_t port = 0;
  memcpy(attrs, xor1, 12);
  memcpy(attrs + 12, xor2, 12);
  n = success_with(buf, attrs, 24);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), 0);
  cr_assert(iplen == 4 && ip[3] == 2 && port == 2, "last XOR-MAPPED-ADDRESS: .%u:%u", ip[3], port);
  n = success_with(buf, mapped, 12);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), 0, "MAPPED-ADDRESS alone");
  cr_assert(iplen == 4 && ip[0] == 192 && ip[3] == 9 && port == 9);
  memcpy(attrs, mapped, 12);
  memcpy(attrs + 12, xor1, 12);
  n = success_with(buf, attrs, 24);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), 0);
  cr_assert(ip[0] == 10 && ip[3] == 1 && port == 1, "XOR-MAPPED-ADDRESS over MAPPED-ADDRESS");
  memcpy(attrs, xor1, 12);
  memcpy(attrs + 12, bad_mapped, 8);
  n = success_with(buf, attrs, 20);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), -1, "a malformed MAPPED-ADDRESS");
  n = success_with(buf, (const uint8_t[]){0x80, 0x22, 0, 0}, 4);
  cr_assert_eq(derp_stun_parse_response(buf, n, id, ip, &iplen, &port), -1, "no address at all");
}

Test(stun, short_and_not_stun) {
  uint8_t b[64];
  derp_stun_request(b, txid);
  for (size_t n = 0; n < DERP_STUN_HDR_LEN; n++) {
    cr_assert_eq(judge(b, n, false), DERP_STUN_SHORT, "%zu bytes", n);
    cr_assert_eq(judge(b, n, true), DERP_STUN_SHORT, "%zu bytes", n);
  }
  uint8_t c[64];
  memcpy(c, b, sizeof c);
  c[4] ^= 1; /* the cookie */
  cr_assert_eq(judge(c, DERP_STUN_REQUEST_LEN, true), DERP_STUN_NOT_STUN);
  memcpy(c, b, sizeof c);
  c[0] |= 0x40; /* a top bit */
  reseal(c, DERP_STUN_REQUEST_LEN);
  cr_assert_eq(judge(c, DERP_STUN_REQUEST_LEN, true), DERP_STUN_NOT_STUN);
  memset(c, 0, sizeof c); /* 20 zero bytes: no cookie */
  cr_assert_eq(judge(c, 20, false), DERP_STUN_NOT_STUN);
  cr_assert_str_eq(derp_stun_verdict_name(DERP_STUN_NOT_STUN), "not_stun");
  cr_assert_str_eq(derp_stun_verdict_name(DERP_STUN_NVERDICTS), "?");
}

Test(stun, wrong_type) {
  static const uint16_t types[] = {0x0101, 0x0111, 0x0011, 0x0002, 0x0003, 0x0000};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    uint8_t b[64];
    derp_stun_request(b, txid);
    b[0] = (uint8_t)(types[i] >> 8), b[1] = (uint8_t)types[i];
    reseal(b, DERP_STUN_REQUEST_LEN);
    cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, true), DERP_STUN_NOT_BINDING, "type %04x", types[i]);
  }
}

Test(stun, oversized) {
  static uint8_t b[DERP_STUN_REQUEST_MAX + 8];
  /* A valid request padded with an optional attribute to the limit. */
  size_t n = DERP_STUN_REQUEST_MAX;
  memset(b, 0, sizeof b);
  derp_stun_request(b, txid);
  size_t pad = n - DERP_STUN_REQUEST_LEN - 4; /* value bytes of one 0x8001 attribute */
  memmove(b + 32 + 4 + pad, b + 32, 8);       /* FINGERPRINT to the end */
  b[32] = 0x80, b[33] = 0x01, b[34] = (uint8_t)(pad >> 8), b[35] = (uint8_t)pad;
  memset(b + 36, 0xee, pad);
  b[2] = (uint8_t)((n - 20) >> 8), b[3] = (uint8_t)(n - 20);
  reseal(b, n);
  cr_assert_eq(judge(b, n, false), DERP_STUN_OK);
  cr_assert_eq(judge(b, n, true), DERP_STUN_OK);
  cr_assert_eq(judge(b, n + 4, false), DERP_STUN_OVERSIZED);
  cr_assert_eq(judge(b, n + 1, true), DERP_STUN_OVERSIZED);
}

Test(stun, fingerprint_rules) {
  uint8_t b[64];
  derp_stun_request(b, txid);
  b[39] ^= 1;
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_BAD_FINGERPRINT);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, true), DERP_STUN_BAD_FINGERPRINT);
  /* A changed transaction id breaks the CRC too. */
  derp_stun_request(b, txid);
  b[10] ^= 0x80;
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_BAD_FINGERPRINT);
  /* No FINGERPRINT at all. */
  derp_stun_request(b, txid);
  cr_assert_eq(judge(b, 32, false), DERP_STUN_NO_FINGERPRINT);
  /* Something after the FINGERPRINT (an empty attribute of type 0). */
  derp_stun_request(b, txid);
  memset(b + 40, 0, 4);
  cr_assert_eq(judge(b, 44, false), DERP_STUN_NO_FINGERPRINT);
  /* FINGERPRINT with a length other than 4, last: derper finds no CRC to
   * compare (0 is what it then compares with). */
  derp_stun_request(b, txid);
  b[35] = 8;
  memset(b + 40, 0, 4);
  cr_assert_eq(judge(b, 44, false), DERP_STUN_BAD_FINGERPRINT);
}

Test(stun, software_rules) {
  uint8_t b[64];
  /* Another SOFTWARE value, correctly sealed. */
  derp_stun_request(b, txid);
  b[31] = 'f';
  reseal(b, DERP_STUN_REQUEST_LEN);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_SOFTWARE_MISSING);
  /* ... which the generic rule answers. */
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, true), DERP_STUN_OK);
  /* "tailnod" (7 bytes, padded): not "tailnode". */
  derp_stun_request(b, txid);
  b[23] = 7;
  reseal(b, DERP_STUN_REQUEST_LEN);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_SOFTWARE_MISSING);
  /* No SOFTWARE: header + FINGERPRINT only. */
  uint8_t h[28];
  memcpy(h, b, 20);
  h[2] = 0, h[3] = 8;
  h[20] = 0x80, h[21] = 0x28, h[22] = 0, h[23] = 4;
  reseal(h, sizeof h);
  cr_assert_eq(judge(h, sizeof h, false), DERP_STUN_SOFTWARE_MISSING);
  cr_assert_eq(judge(h, sizeof h, true), DERP_STUN_OK);
  /* The bare header, as many RFC 5389 clients send it. */
  cr_assert_eq(judge(h, 20, false), DERP_STUN_SOFTWARE_MISSING);
  h[3] = 0;
  cr_assert_eq(judge(h, 20, true), DERP_STUN_OK);
}

Test(stun, attribute_lengths) {
  uint8_t b[64];
  /* SOFTWARE's length runs past the end. */
  derp_stun_request(b, txid);
  b[23] = 0xff;
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_BAD_ATTRS);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, true), DERP_STUN_BAD_ATTRS);
  b[22] = 0xff; /* 65535 */
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_BAD_ATTRS);
  /* A 1..3-byte tail that is no attribute header. */
  derp_stun_request(b, txid);
  for (size_t extra = 1; extra < 4; extra++)
    cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN + extra, false), DERP_STUN_BAD_ATTRS);
  /* A length whose padding is missing: 9 bytes need 12. */
  derp_stun_request(b, txid);
  b[23] = 9;
  cr_assert_eq(judge(b, 33, false), DERP_STUN_BAD_ATTRS);
}

/* derper does not look at the header's length field; the generic rule does. */
Test(stun, header_length_field) {
  uint8_t b[64];
  derp_stun_request(b, txid);
  b[3] = 0;
  reseal(b, DERP_STUN_REQUEST_LEN);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_OK);
  b[31] = 'x'; /* now only the generic rule could take it, and it will not */
  reseal(b, DERP_STUN_REQUEST_LEN);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, true), DERP_STUN_BAD_ATTRS);
}

Test(stun, generic_rules) {
  uint8_t b[64];
  /* A comprehension-required attribute (USERNAME) in a plain request. */
  memset(b, 0, sizeof b);
  derp_stun_request(b, txid);
  b[31] = 'x';
  b[20] = 0x00, b[21] = 0x06; /* SOFTWARE -> USERNAME */
  reseal(b, DERP_STUN_REQUEST_LEN);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, true), DERP_STUN_UNKNOWN_ATTR);
  cr_assert_eq(judge(b, DERP_STUN_REQUEST_LEN, false), DERP_STUN_SOFTWARE_MISSING);
  /* FINGERPRINT not last. */
  uint8_t c[48];
  derp_stun_request(c, txid);
  c[31] = 'x';
  reseal(c, DERP_STUN_REQUEST_LEN);
  c[3] = 28;
  c[40] = 0x80, c[41] = 0x22, c[42] = 0, c[43] = 4;
  memset(c + 44, 'a', 4);
  cr_assert_eq(judge(c, sizeof c, true), DERP_STUN_BAD_FINGERPRINT);
  /* A header length that is not a multiple of 4. */
  uint8_t h[24] = {0x00, 0x01, 0x00, 0x03, 0x21, 0x12, 0xa4, 0x42};
  cr_assert_eq(judge(h, 23, true), DERP_STUN_BAD_ATTRS);
}

Test(stun, every_truncation_is_dropped) {
  uint8_t b[64];
  derp_stun_request(b, txid);
  for (size_t n = 0; n < DERP_STUN_REQUEST_LEN; n++) {
    cr_assert_neq(judge(b, n, false), DERP_STUN_OK, "%zu bytes", n);
    cr_assert_neq(judge(b, n, true), DERP_STUN_OK, "%zu bytes", n);
  }
}
