/* pctdecode.h (libderp internal): percent-decoding as Go's net/url does it,
 * for the two places derpd reads escaped text: a URL's userinfo (admission's
 * -verify-client-url) and a query value (/debug/'s ?debugkey=). */
#ifndef DERP_LIB_PCTDECODE_H
#define DERP_LIB_PCTDECODE_H

#include <stdbool.h>
#include <stddef.h>

/* The value of one hex digit, -1 if c is none (NUL included). */
int derp_hex_digit(char c);

/* Decode s[0..n) into out (cap bytes, NUL-terminated); '+' becomes ' ' when
 * plus_is_space (a query, as Go's QueryUnescape). Returns the length, -1 if
 * an escape is malformed, -2 if it does not fit. */
int derp_pct_decode(const char *s, size_t n, bool plus_is_space, char *out, size_t cap);

#endif
