/* derp/hex.h: the one hex codec of libderp and derpd (keys, certificate
 * fingerprints, TLS key-log secrets, derp-bench's --pin-sha256). */
#ifndef DERP_HEX_H
#define DERP_HEX_H

#include <stddef.h>
#include <stdint.h>

/* n bytes as 2n lowercase hex digits and a NUL into out (2n + 1 bytes). */
void derp_hex_encode(const uint8_t *b, size_t n, char *out);
/* Exactly 2n hex digits (either case) from s into out[n]. 0, or -1 on a
 * non-hex digit or a NUL before 2n digits; out is then unspecified. */
int derp_hex_decode(const char *s, size_t n, uint8_t *out);

#endif
