/* meshkey.c: the mesh pre-shared key (derp/meshkey.h).
 *
 * Owns reading and validating a key file's text the way derper does (trim
 * white space, 64+ hex digits, kept as written) within derpd's bound, and the
 * constant-time comparison of a client's "meshKey" with the server's key. */
#include "derp/meshkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#define FILE_MAX (64 * 1024)

_Static_assert(DERP_MESH_KEY_MIN == 64 && DERP_MESH_KEY_MAX == 512,
               "the messages below name the bounds");

/* Go's strings.TrimSpace trims unicode.IsSpace: ASCII's six, and these in
 * UTF-8 (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F,
 * U+205F, U+3000): a key an editor saved with a no-break space after it
 * works in derper, so here too. */
static const char *const uspaces[] = {
    "\xc2\x85",     "\xc2\xa0",     "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82",
    "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88",
    "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f",
    "\xe3\x80\x80"};

/* The length of the white space that starts (at_end: ends) text[0..n), 0 if none. */
static size_t space_len(const char *text, size_t n, bool at_end) {
  if (n == 0) return 0;
  char c = at_end ? text[n - 1] : text[0];
  if (c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r') return 1;
  for (size_t i = 0; i < sizeof uspaces / sizeof *uspaces; i++) {
    size_t k = strlen(uspaces[i]);
    if (n >= k && memcmp(at_end ? text + n - k : text, uspaces[i], k) == 0) return k;
  }
  return 0;
}

static bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int derp_mesh_key_parse(const char *text, size_t n, char *out, size_t cap, const char **why) {
  const char *dummy;
  if (why == NULL) why = &dummy;
  if (text == NULL) n = 0;
  for (size_t k; (k = space_len(text, n, false)) > 0;) text += k, n -= k;
  for (size_t k; (k = space_len(text, n, true)) > 0;) n -= k;
  if (n == 0) return *why = "empty", -1;
  for (size_t i = 0; i < n; i++)
    if (!is_hex(text[i]))
      return *why = "not hex: only 0-9, a-f and A-F may appear (white space only around it)", -1;
  if (n < DERP_MESH_KEY_MIN) return *why = "fewer than 64 hex digits", -1;
  if (n > DERP_MESH_KEY_MAX) return *why = "more than 512 hex digits", -1;
  if (out == NULL || cap <= n) return *why = "output buffer too small", -1;
  memcpy(out, text, n);
  out[n] = '\0';
  *why = NULL;
  return 0;
}

static void msgf(char *msg, size_t msglen, const char *path, const char *why) {
  if (msg && msglen) snprintf(msg, msglen, "%s: %s", path, why);
}

int derp_mesh_key_load(const char *path, char *out, size_t cap, char *msg, size_t msglen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return msgf(msg, msglen, path, strerror(errno)), -1;
  char *buf = malloc(FILE_MAX + 1); /* one byte more: tells a larger file */
  if (buf == NULL) {
    close(fd);
    return msgf(msg, msglen, path, "out of memory"), -1;
  }
  size_t n = 0;
  int err = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, FILE_MAX + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) err = errno;
    if (r <= 0) break;
    n += (size_t)r;
    if (n == FILE_MAX + 1) break;
  }
  close(fd);
  const char *why = NULL;
  int rc = -1;
  if (err) why = strerror(err);
  else if (n > FILE_MAX) why = "larger than 64 KiB: not a mesh key file";
  else rc = derp_mesh_key_parse(buf, n, out, cap, &why);
  sodium_memzero(buf, n);
  free(buf);
  if (rc < 0) msgf(msg, msglen, path, why);
  return rc;
}

bool derp_mesh_key_equal(const char *a, const char *b) {
  if (a == NULL || b == NULL) return false;
  size_t la = strlen(a), lb = strlen(b);
  if (la == 0 || la != lb) return false;
  return sodium_memcmp(a, b, la) == 0;
}
