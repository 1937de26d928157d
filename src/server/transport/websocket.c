/* websocket.c: a conn's WebSocket layer (see websocket.h).
 *
 * Owns struct ws_conn (the decoder and the reason of a pending close), which
 * hangs off struct conn and so travels with it when it moves shards. Bounds:
 * the decoder's (14 header bytes, one 125-byte control payload, data frames
 * of at most 16 MiB declared, never buffered); pongs and the close go through
 * the bounded control queue. */
#include "server/transport/websocket.h"

#include <stdlib.h>
#include <string.h>

#include "lib/wsframe.h"
#include "server/server.h"

struct ws_conn {
  struct ws_decoder dec;
  const char *detail; /* why the conn is closing, for the close log line */
  bool close_sent;    /* our close frame is queued: never a second */
};

/* Queue bytes that are already WebSocket framing (or the 101): no batch header. */
static bool queue_raw(struct conn *c, const void *p, size_t n) { return conn_queue_copy(c, p, n, true); }

int ws_conn_start(struct conn *c, const void *reply, size_t reply_len) {
  struct ws_conn *w = malloc(sizeof *w);
  if (!w) return -1;
  ws_decoder_init(&w->dec, true);
  w->detail = NULL;
  w->close_sent = false;
  if (!queue_raw(c, reply, reply_len)) {
    free(w);
    return -1;
  }
  c->ws = w;
  STAT_INC(&c->sh->stats, ws_upgrades);
  STAT_INC(&c->sh->stats, ws_conns);
  return 0;
}

void ws_conn_free(struct conn *c) {
  free(c->ws);
  c->ws = NULL;
}

const char *ws_conn_detail(const struct conn *c) { return c->ws ? c->ws->detail : NULL; }

size_t ws_batch_header(uint8_t out[10], size_t len) {
  uint8_t h[WS_HDR_MAX];
  size_t n = ws_put_header(h, WS_OP_BINARY, true, len, NULL);
  memcpy(out, h, n);
  return n;
}

/* Say goodbye with a close frame; the conn closes once it is written (queued
 * frames behind it are dropped, and nothing more is queued: conn.c). */
static bool queue_close(struct conn *c, uint16_t code) {
  uint8_t f[4] = {0x80 | WS_OP_CLOSE, 2, (uint8_t)(code >> 8), (uint8_t)code};
  if (!conn_queue_ws_close(c, f, sizeof f)) return false;
  c->ws->close_sent = true;
  return true;
}

/* The peer's close after ours (its echo) needs no second close frame. */
static void send_close(struct conn *c, uint16_t code, enum close_reason why, const char *detail) {
  c->ws->detail = detail;
  if (!c->ws->close_sent && !queue_close(c, code)) {
    conn_close(c, CLOSE_nomem, "websocket close");
    return;
  }
  conn_close_after_send(c, why);
}

void ws_conn_goodbye(struct conn *c, bool stopping) {
  if (c->ws && !c->ws->close_sent) queue_close(c, stopping ? WS_CLOSE_GOING_AWAY : WS_CLOSE_NORMAL);
}

/* The conn_input contract lets a layer write to the bytes it is given: they
 * are the shard's provided receive buffer, a transport's plaintext buffer or
 * the handshake buffer, all owned by this conn for the call. */
int ws_conn_input(struct conn *c, const uint8_t *p, size_t n) {
  struct ws_conn *w = c->ws;
  uint8_t *in = (uint8_t *)(uintptr_t)p;
  while (c->state != CS_CLOSING) {
    struct ws_event ev;
    switch (ws_decode(&w->dec, &in, &n, &ev)) {
    case WS_EV_MORE:
      return 0;
    case WS_EV_DATA:
      if (conn_stream_input(c, ev.data, ev.len) < 0) return -1;
      break;
    case WS_EV_PING: {
      uint8_t f[2 + WS_CTRL_MAX];
      size_t h = ws_put_header(f, WS_OP_PONG, true, ev.len, NULL);
      memcpy(f + h, ev.data, ev.len);
      if (!queue_raw(c, f, h + ev.len)) { conn_close(c, CLOSE_nomem, "websocket pong"); return -1; }
      STAT_INC(&c->sh->stats, ws_pings);
      break;
    }
    case WS_EV_PONG:
      break;
    case WS_EV_CLOSE:
      send_close(c, ev.code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : ev.code, CLOSE_websocket_close,
                 NULL);
      break;
    case WS_EV_ERROR:
      send_close(c, ev.code, CLOSE_websocket_protocol, ev.why);
      break;
    }
  }
  return -1;
}
