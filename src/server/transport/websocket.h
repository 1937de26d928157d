/* websocket.h: DERP inside WebSocket (RFC 6455), as a framing layer of the
 * connection between the transport (plain TCP or TLS) and the DERP stream.
 *
 * Receive: conn_input() sends a WebSocket conn's plaintext through
 * ws_conn_input(), which decodes client frames (lib/wsframe.c: masks required,
 * no extensions, bounded) and feeds the unmasked message bytes to
 * conn_stream_input(), the same DERP stream a plain conn gets. Pings are
 * answered, a close is echoed, and a protocol error is answered with a close
 * frame carrying its code; in both cases the conn closes once that is written.
 *
 * Send: every send batch of DERP frames goes out as one unmasked binary frame
 * whose header conn_flush() puts in front of the batch (ws_batch_header), so
 * relayed frames cost no extra copy. The 101 reply and the control frames
 * are queued already framed, with pkt->ws_raw set, and never share a batch
 * with DERP frames. */
#ifndef DERPD_WEBSOCKET_H
#define DERPD_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct ws_conn;

/* After a WebSocket upgrade was routed: queue the 101 reply (raw) and switch
 * the conn into WebSocket mode. -1 on allocation failure (nothing closed). */
int ws_conn_start(struct conn *c, const void *reply, size_t reply_len);
/* Plaintext of a WebSocket conn (writable: masked payload is unmasked in
 * place). Returns 0, or -1 once the conn is closing. */
int ws_conn_input(struct conn *c, const uint8_t *p, size_t n);
/* The header of one binary frame of len bytes (2 to 10 bytes into out). */
size_t ws_batch_header(uint8_t out[10], size_t len);
/* derpd ends the conn in order (conn_close_after_send, before the flag is
 * set): queue a close frame, 1001 when stopping, else 1000, unless one is
 * queued already (an echo). Past the control bound (conn_queue_ws_close):
 * only a lack of memory loses it. */
void ws_conn_goodbye(struct conn *c, bool stopping);
/* Static text about a pending WebSocket close, or NULL. */
const char *ws_conn_detail(const struct conn *c);
void ws_conn_free(struct conn *c);

#endif
