/* stun.c: owns the STUN codec (derp/stun.h): judging Binding Requests by
 * derper's rules (and, on request, RFC 5389's), the Binding Success reply,
 * and the client's side for tests and tools. Pure; every loop is bounded by
 * the input's length. */
#include "derp/stun.h"

#include <string.h>

#define TYPE_BINDING_REQUEST 0x0001
#define TYPE_BINDING_SUCCESS 0x0101
#define ATTR_MAPPED_ADDRESS 0x0001
#define ATTR_XOR_MAPPED_ADDRESS 0x0020
#define ATTR_XOR_MAPPED_ADDRESS_ALT 0x8020 /* what some servers send; clients read it too */
#define ATTR_SOFTWARE 0x8022
#define ATTR_FINGERPRINT 0x8028
#define ATTR_OPTIONAL_MIN 0x8000 /* below: comprehension-required (RFC 5389 §15) */
#define FP_ATTR_LEN 8            /* type, length, CRC */
#define FP_XOR 0x5354554eu       /* "STUN" */
static const uint8_t cookie[4] = {0x21, 0x12, 0xa4, 0x42};

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

/* CRC-32 (IEEE 802.3, reflected, as Go's crc32.ChecksumIEEE), four bits at
 * a time: a 16-entry table, no start-up work. */
static uint32_t crc32_ieee(const uint8_t *p, size_t n) {
  static const uint32_t t[16] = {
      0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
      0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
  };
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    c = (c >> 4) ^ t[c & 15];
    c = (c >> 4) ^ t[c & 15];
  }
  return c ^ 0xffffffffu;
}

uint32_t derp_stun_fingerprint(const uint8_t *p, size_t n) { return crc32_ieee(p, n) ^ FP_XOR; }

const char *derp_stun_verdict_name(enum derp_stun_verdict v) {
  static const char *const names[DERP_STUN_NVERDICTS] = {
      [DERP_STUN_OK] = "ok",
      [DERP_STUN_SHORT] = "short",
      [DERP_STUN_NOT_STUN] = "not_stun",
      [DERP_STUN_NOT_BINDING] = "not_binding",
      [DERP_STUN_BAD_ATTRS] = "bad_attrs",
      [DERP_STUN_SOFTWARE_MISSING] = "software",
      [DERP_STUN_NO_FINGERPRINT] = "no_fingerprint",
      [DERP_STUN_BAD_FINGERPRINT] = "bad_fingerprint",
      [DERP_STUN_UNKNOWN_ATTR] = "unknown_attr",
      [DERP_STUN_OVERSIZED] = "oversized",
  };
  return (unsigned)v < DERP_STUN_NVERDICTS ? names[v] : "?";
}

/* The checks both rules start with: header, cookie, Binding Request. */
static enum derp_stun_verdict check_header(const uint8_t *p, size_t n) {
  if (n > DERP_STUN_REQUEST_MAX) return DERP_STUN_OVERSIZED;
  if (n < DERP_STUN_HDR_LEN) return DERP_STUN_SHORT;
  if ((p[0] & 0xc0) || memcmp(p + 4, cookie, 4) != 0) return DERP_STUN_NOT_STUN;
  if (be16(p) != TYPE_BINDING_REQUEST) return DERP_STUN_NOT_BINDING;
  return DERP_STUN_OK;
}

/* One attribute at p[*off..n): its type, value and length; *off moves past
 * its padding. False if it does not fit (derper's foreachAttr). */
static bool next_attr(const uint8_t *p, size_t n, size_t *off, uint16_t *type, const uint8_t **val,
                      size_t *len) {
  if (n - *off < 4) return false;
  *type = be16(p + *off);
  *len = be16(p + *off + 2);
  size_t padded = (*len + 3) & ~(size_t)3;
  if (padded > n - *off - 4) return false;
  *val = p + *off + 4;
  *off += 4 + padded;
  return true;
}

/* derper's ParseBindingRequest. */
static enum derp_stun_verdict tailscale_rule(const uint8_t *p, size_t n) {
  bool software_ok = false;
  uint16_t last = 0;
  uint32_t got_fp = 0;
  for (size_t off = DERP_STUN_HDR_LEN; off < n;) {
    uint16_t type;
    const uint8_t *val;
    size_t len;
    if (!next_attr(p, n, &off, &type, &val, &len)) return DERP_STUN_BAD_ATTRS;
    last = type;
    if (type == ATTR_SOFTWARE && len == sizeof DERP_STUN_SOFTWARE - 1 &&
        memcmp(val, DERP_STUN_SOFTWARE, len) == 0)
      software_ok = true;
    if (type == ATTR_FINGERPRINT && len == 4) got_fp = be32(val);
  }
  if (!software_ok) return DERP_STUN_SOFTWARE_MISSING;
  if (last != ATTR_FINGERPRINT) return DERP_STUN_NO_FINGERPRINT;
  /* A FINGERPRINT last means n >= 24; derper takes the CRC of all but 8 bytes. */
  if (got_fp != derp_stun_fingerprint(p, n - FP_ATTR_LEN)) return DERP_STUN_BAD_FINGERPRINT;
  return DERP_STUN_OK;
}

/* RFC 5389 §7.3 for a server without credentials. */
static enum derp_stun_verdict generic_rule(const uint8_t *p, size_t n) {
  size_t body = be16(p + 2);
  if (body != n - DERP_STUN_HDR_LEN || body % 4) return DERP_STUN_BAD_ATTRS;
  for (size_t off = DERP_STUN_HDR_LEN; off < n;) {
    size_t at = off;
    uint16_t type;
    const uint8_t *val;
    size_t len;
    if (!next_attr(p, n, &off, &type, &val, &len)) return DERP_STUN_BAD_ATTRS;
    if (type == ATTR_FINGERPRINT) {
      if (len != 4 || off != n || be32(val) != derp_stun_fingerprint(p, at))
        return DERP_STUN_BAD_FINGERPRINT;
    } else if (type < ATTR_OPTIONAL_MIN) {
      return DERP_STUN_UNKNOWN_ATTR;
    }
  }
  return DERP_STUN_OK;
}

enum derp_stun_verdict derp_stun_parse_request(const uint8_t *p, size_t n, bool generic,
                                               uint8_t txid[DERP_STUN_TXID_LEN]) {
  enum derp_stun_verdict v = check_header(p, n);
  if (v != DERP_STUN_OK) return v;
  v = tailscale_rule(p, n);
  if (v != DERP_STUN_OK && generic) v = generic_rule(p, n);
  if (v == DERP_STUN_OK) memcpy(txid, p + 8, DERP_STUN_TXID_LEN);
  return v;
}

size_t derp_stun_reply(uint8_t *out, size_t cap, const uint8_t txid[DERP_STUN_TXID_LEN],
                       const uint8_t *ip, size_t iplen, uint16_t port) {
  if (iplen != 4 && iplen != 16) return 0;
  size_t attrs = 8 + iplen; /* one XOR-MAPPED-ADDRESS: type, length, 0, family, port, address */
  if (cap < DERP_STUN_HDR_LEN + attrs) return 0;
  put16(out, TYPE_BINDING_SUCCESS);
  put16(out + 2, (uint16_t)attrs);
  memcpy(out + 4, cookie, 4);
  memcpy(out + 8, txid, DERP_STUN_TXID_LEN);
  uint8_t *a = out + DERP_STUN_HDR_LEN;
  put16(a, ATTR_XOR_MAPPED_ADDRESS);
  put16(a + 2, (uint16_t)(4 + iplen));
  a[4] = 0;
  a[5] = iplen == 4 ? 1 : 2;
  put16(a + 6, port ^ 0x2112); /* the cookie's first half */
  for (size_t i = 0; i < iplen; i++) a[8 + i] = ip[i] ^ (i < 4 ? cookie[i] : txid[i - 4]);
  return DERP_STUN_HDR_LEN + attrs;
}

void derp_stun_request(uint8_t out[DERP_STUN_REQUEST_LEN], const uint8_t txid[DERP_STUN_TXID_LEN]) {
  put16(out, TYPE_BINDING_REQUEST);
  put16(out + 2, DERP_STUN_REQUEST_LEN - DERP_STUN_HDR_LEN);
  memcpy(out + 4, cookie, 4);
  memcpy(out + 8, txid, DERP_STUN_TXID_LEN);
  put16(out + 20, ATTR_SOFTWARE);
  put16(out + 22, sizeof DERP_STUN_SOFTWARE - 1);
  memcpy(out + 24, DERP_STUN_SOFTWARE, sizeof DERP_STUN_SOFTWARE - 1);
  put16(out + 32, ATTR_FINGERPRINT);
  put16(out + 34, 4);
  put32(out + 36, derp_stun_fingerprint(out, 32));
}

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An address attribute's value: family, port, address (XORed with the
 * cookie and txid when xor). 0, or -1 when malformed. */
static int read_addr(const uint8_t *val, size_t len, bool xor, const uint8_t *txid, uint8_t ip[16], size_t *iplen,
                     uint16_t *port) {
  size_t alen = len >= 4 && val[1] == 1 ? 4 : len >= 4 && val[1] == 2 ? 16 : 0;
  if (!alen || len < 4 + alen) return -1;
  *port = be16(val + 2) ^ (xor ? 0x2112 : 0);
  /* Constant bounds: gcc -O3 misreads a loop to alen as overflowing ip. */
  for (size_t i = 0; i < 4; i++) ip[i] = val[4 + i] ^ (xor ? cookie[i] : 0);
  if (alen == 16)
    for (size_t i = 4; i < 16; i++) ip[i] = val[4 + i] ^ (xor ? txid[i - 4] : 0);
  *iplen = alen;
  if (alen == 16 && memcmp(ip, v4_mapped, 12) == 0) {
    memmove(ip, ip + 12, 4);
    *iplen = 4;
  }
  return 0;
}

/* Go's stun.ParseResponse: every attribute must parse; the last
 * XOR-MAPPED-ADDRESS wins, MAPPED-ADDRESS is the fallback. */
int derp_stun_parse_response(const uint8_t *p, size_t n, uint8_t txid[DERP_STUN_TXID_LEN],
                             uint8_t ip[16], size_t *iplen, uint16_t *port) {
  if (n < DERP_STUN_HDR_LEN || (p[0] & 0xc0) || memcmp(p + 4, cookie, 4) != 0 ||
      be16(p) != TYPE_BINDING_SUCCESS)
    return -1;
  size_t body = be16(p + 2);
  if (body > n - DERP_STUN_HDR_LEN) return -1;
  n = DERP_STUN_HDR_LEN + body;
  memcpy(txid, p + 8, DERP_STUN_TXID_LEN);
  uint8_t fip[16];
  size_t flen = 0;
  uint16_t fport = 0;
  bool have = false, fallback = false;
  for (size_t off = DERP_STUN_HDR_LEN; off < n;) {
    uint16_t type;
    const uint8_t *val;
    size_t len;
    if (!next_attr(p, n, &off, &type, &val, &len)) return -1;
    if (type == ATTR_XOR_MAPPED_ADDRESS || type == ATTR_XOR_MAPPED_ADDRESS_ALT) {
      if (read_addr(val, len, true, txid, ip, iplen, port) != 0) return -1;
      have = true;
    } else if (type == ATTR_MAPPED_ADDRESS) {
      if (read_addr(val, len, false, txid, fip, &flen, &fport) != 0) return -1;
      fallback = true;
    }
  }
  if (!have && fallback) {
    memcpy(ip, fip, 16);
    *iplen = flen;
    *port = fport;
  }
  return have || fallback ? 0 : -1;
}
