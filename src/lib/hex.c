/* hex.c: hex encoding and decoding (derp/hex.h). No allocation, no locale. */
#include "derp/hex.h"
#include "lib/pctdecode.h"

int derp_hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1; /* NUL included: a short string fails here, never reads past it */
}

void derp_hex_encode(const uint8_t *b, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 0xf];
  }
  out[2 * n] = '\0';
}

int derp_hex_decode(const char *s, size_t n, uint8_t *out) {
  for (size_t i = 0; i < n; i++) {
    int hi = derp_hex_digit(s[2 * i]);
    if (hi < 0) return -1;
    int lo = derp_hex_digit(s[2 * i + 1]);
    if (lo < 0) return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

int derp_pct_decode(const char *s, size_t n, bool plus_is_space, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= n) return -1;
      int h = derp_hex_digit(s[i + 1]), l = derp_hex_digit(s[i + 2]);
      if (h < 0 || l < 0) return -1;
      c = (char)(h * 16 + l);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (o + 1 >= cap) return -2;
    out[o++] = c;
  }
  out[o] = 0;
  return (int)o;
}
