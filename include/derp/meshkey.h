/* derp/meshkey.h: the mesh pre-shared key, as derper reads and compares it.
 *
 * derper's -mesh-psk-file holds 64 or more hex digits: the file's text with
 * white space trimmed must match (?i)^[0-9a-f]{64,}$. The key is that text,
 * kept as written (case included): derper compares a client's "meshKey" with
 * it as strings, exactly. derpd bounds the length at DERP_MESH_KEY_MAX
 * characters, in key files and in ClientInfo alike (derp/handshake.h). */
#ifndef DERP_MESHKEY_H
#define DERP_MESHKEY_H

#include <stdbool.h>
#include <stddef.h>

#define DERP_MESH_KEY_MIN 64
#define DERP_MESH_KEY_MAX 512
/* The length derper's own keys have (32 random bytes in hex). */
#define DERP_MESH_KEY_HEXLEN DERP_MESH_KEY_MIN

/* Validate a key file's contents: text[0..n) with leading and trailing ASCII
 * white space (space, \t, \n, \v, \f, \r) trimmed must be DERP_MESH_KEY_MIN to
 * DERP_MESH_KEY_MAX hex digits, either case. The trimmed text goes to out
 * as is, NUL-terminated (cap > its length; DERP_MESH_KEY_MAX + 1 always
 * fits). Pure: no I/O. 0, or -1 with *why (may be NULL) a static sentence for
 * people: "empty", "fewer than 64 hex digits", "more than 512 hex digits",
 * "not hex: only 0-9, a-f and A-F may appear (white space only around it)",
 * "output buffer too small". */
int derp_mesh_key_parse(const char *text, size_t n, char *out, size_t cap, const char **why);

/* Read the key file at path (at most 64 KiB) and derp_mesh_key_parse it into
 * out. 0, or -1 with a message in msg ("PATH: reason"; msg may be NULL). */
int derp_mesh_key_load(const char *path, char *out, size_t cap, char *msg, size_t msglen);

/* Whether two NUL-terminated keys are the same text, in time that depends
 * only on their lengths (sodium_memcmp when the lengths are equal). An empty
 * or NULL key equals nothing, as in derper (no key, no mesh). */
bool derp_mesh_key_equal(const char *a, const char *b);

#endif
