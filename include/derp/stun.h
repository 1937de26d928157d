/* derp/stun.h: the STUN codec of a DERP server and its clients (RFC 5389,
 * the subset Tailscale uses).
 *
 * A Tailscale client's Binding Request is a 20-byte header (type 0x0001,
 * the magic cookie 2112A442, a 12-byte transaction id), a SOFTWARE
 * attribute "tailnode" and a FINGERPRINT (CRC-32 of everything before it,
 * XOR 0x5354554e). derper (net/stun, v1.78) answers exactly those, and
 * judges them by its own rules, which derp_stun_parse_request follows: the
 * header's length field is not looked at; the attributes, walked to the end
 * of the datagram, must each fit (padded to 4 bytes); one of them must be
 * SOFTWARE with the value "tailnode"; the last must be FINGERPRINT; the
 * last FINGERPRINT of 4 bytes must equal the CRC of the datagram but its
 * last 8 bytes. The answer is a Binding Success (0x0101) with one attribute,
 * XOR-MAPPED-ADDRESS, and nothing else (no SOFTWARE, no FINGERPRINT).
 *
 * Generic mode (derpd's --stun-generic) also answers plain RFC 5389 Binding
 * Requests, with the same reply: header length equal to the datagram's
 * attribute bytes (a multiple of 4), well-formed attributes, all of them
 * comprehension-optional (0x8000 and up: SOFTWARE, FINGERPRINT, ...; a
 * USERNAME or MESSAGE-INTEGRITY is for an ICE peer, not for us), and a
 * FINGERPRINT, if present, last and valid.
 *
 * Pure: no I/O, no allocation, bounded by the input's length. */
#ifndef DERP_STUN_H
#define DERP_STUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DERP_STUN_HDR_LEN 20
#define DERP_STUN_TXID_LEN 12
/* A Tailscale request: header, SOFTWARE "tailnode" (4 + 8), FINGERPRINT (4 + 4). */
#define DERP_STUN_REQUEST_LEN 40
/* The longest datagram derpd reads as a request (derper reads up to 64 KiB;
 * real requests are 20 to a few hundred bytes). Longer: DERP_STUN_OVERSIZED. */
#define DERP_STUN_REQUEST_MAX 1500
/* The longest reply: header + XOR-MAPPED-ADDRESS of an IPv6 address. */
#define DERP_STUN_REPLY_MAX (DERP_STUN_HDR_LEN + 4 + 20)
#define DERP_STUN_SOFTWARE "tailnode"

/* What a datagram is, as a request. Every value but DERP_STUN_OK is dropped
 * unanswered (derper counts them all as disposition "not_stun"). */
enum derp_stun_verdict {
  DERP_STUN_OK = 0,          /* a Binding Request to answer */
  DERP_STUN_SHORT,           /* fewer than 20 bytes */
  DERP_STUN_NOT_STUN,        /* either of the top two bits set, or not the magic cookie */
  DERP_STUN_NOT_BINDING,     /* STUN, but not a Binding Request (type 0x0001) */
  DERP_STUN_BAD_ATTRS,       /* an attribute runs past the end (generic: or the
                                header's length is not the datagram's) */
  DERP_STUN_SOFTWARE_MISSING, /* no SOFTWARE "tailnode" (not a Tailscale client) */
  DERP_STUN_NO_FINGERPRINT,  /* the last attribute is not FINGERPRINT */
  DERP_STUN_BAD_FINGERPRINT, /* FINGERPRINT does not match */
  DERP_STUN_UNKNOWN_ATTR,    /* generic: a comprehension-required attribute */
  DERP_STUN_OVERSIZED,       /* longer than DERP_STUN_REQUEST_MAX */
  DERP_STUN_NVERDICTS
};

/* A short name for logs and metric labels ("short", "not_stun", ...). */
const char *derp_stun_verdict_name(enum derp_stun_verdict v);

/* Judge p[0..n) as a Binding Request; on DERP_STUN_OK its transaction id is
 * copied to txid. generic: also accept plain RFC 5389 requests (above); a
 * datagram that fails both rules gets the generic rule's verdict. */
enum derp_stun_verdict derp_stun_parse_request(const uint8_t *p, size_t n, bool generic,
                                               uint8_t txid[DERP_STUN_TXID_LEN]);

/* The Binding Success for txid seen from ip (4 or 16 bytes, network order;
 * pass an IPv4-mapped IPv6 address as its 4 bytes) and port (host order):
 * 32 bytes for IPv4, 44 for IPv6. Bytes written, or 0 if cap is too small or
 * iplen is neither 4 nor 16. */
size_t derp_stun_reply(uint8_t *out, size_t cap, const uint8_t txid[DERP_STUN_TXID_LEN],
                       const uint8_t *ip, size_t iplen, uint16_t port);

/* A Tailscale client's Binding Request (DERP_STUN_REQUEST_LEN bytes) into out. */
void derp_stun_request(uint8_t out[DERP_STUN_REQUEST_LEN], const uint8_t txid[DERP_STUN_TXID_LEN]);

/* Read a Binding Success as Tailscale clients do (Go's stun.ParseResponse):
 * its transaction id, and the address of its last XOR-MAPPED-ADDRESS, or of
 * its MAPPED-ADDRESS without one (ip: 16 bytes of room; *iplen 4 or 16; an
 * IPv4-mapped IPv6 address comes back as its 4 bytes). 0, or -1 if p[0..n)
 * is not a Binding Success, an attribute is malformed or none is an address. */
int derp_stun_parse_response(const uint8_t *p, size_t n, uint8_t txid[DERP_STUN_TXID_LEN],
                             uint8_t ip[16], size_t *iplen, uint16_t *port);

/* FINGERPRINT's value for p[0..n): CRC-32 (IEEE) XOR 0x5354554e. */
uint32_t derp_stun_fingerprint(const uint8_t *p, size_t n);

#endif
