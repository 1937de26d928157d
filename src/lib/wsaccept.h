/* wsaccept.h (libderp internal): the few primitives the WebSocket handshake
 * needs on both ends: SHA-1, base64 and Sec-WebSocket-Accept (RFC 6455
 * §4.2.2). Here so that neither derpd nor libderp needs a crypto library
 * with SHA-1 (libsodium has none). SHA-1 is used only for that handshake
 * value, never for anything that must resist collisions. */
#ifndef DERP_LIB_WSACCEPT_H
#define DERP_LIB_WSACCEPT_H

#include <stddef.h>
#include <stdint.h>

#define DERP_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest, without the NUL */

/* SHA-1 (FIPS 180-4) of msg[0..len). */
void derp_sha1(const uint8_t *msg, size_t len, uint8_t out[20]);
/* Standard base64 with padding; out needs 4 * ceil(n / 3) + 1 bytes (NUL-terminated). */
void derp_base64(const uint8_t *in, size_t n, char *out);
/* base64(SHA-1(key + the RFC 6455 GUID)) into out (DERP_WS_ACCEPT_LEN + 1
 * bytes). key is the Sec-WebSocket-Key value as sent, of at most 256 bytes
 * (longer keys give an empty string). */
void derp_ws_accept(const char *key, char *out);

#endif
