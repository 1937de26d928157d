/* wsframe.h (libderp internal): the WebSocket framing (RFC 6455 §5) that DERP
 * over WebSocket needs, for both ends: an incremental, bounded frame decoder
 * and the frame header encoder.
 *
 * DERP rides as a byte stream inside binary messages, split anywhere: the
 * decoder hands out payload bytes of binary and continuation frames as they
 * arrive (never buffered), unmasked in place, and answers control frames
 * (ping, pong, close) as whole events. What it buffers is bounded: at most 14
 * header bytes and one control payload (125 bytes). No extension is ever
 * negotiated, so any RSV bit is an error.
 *
 * Errors carry the close code to send (1002 protocol error, 1003 text data,
 * 1009 too big); after an error or a close frame the decoder is finished and
 * drops whatever follows. */
#ifndef DERP_LIB_WSFRAME_H
#define DERP_LIB_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WS_HDR_MAX 14                    /* 2 + 8 length + 4 mask key */
#define WS_CTRL_MAX 125                  /* control frame payload limit */
#define WS_DATA_FRAME_MAX (16u << 20)    /* one data frame's declared length */

enum ws_opcode {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA,
};

enum ws_close_code {
  WS_CLOSE_NORMAL = 1000,
  WS_CLOSE_GOING_AWAY = 1001,  /* the server is stopping or restarting */
  WS_CLOSE_PROTOCOL = 1002,
  WS_CLOSE_UNSUPPORTED = 1003,  /* text frames: DERP is binary */
  WS_CLOSE_NO_STATUS = 1005,    /* a close frame without a code (never sent) */
  WS_CLOSE_TOO_BIG = 1009,
};

struct ws_decoder {
  bool masked;            /* frames must carry a mask (client->server) or must not */
  bool done;              /* a close or an error was reported: input is dropped */
  bool in_payload;        /* header complete, payload bytes follow */
  bool in_message;        /* a fragmented binary message waits for continuations */
  uint8_t op;             /* opcode of the frame being read */
  bool fin;
  uint8_t hlen;           /* header bytes gathered in hdr */
  uint8_t kpos;           /* mask key position of the next payload byte */
  uint8_t ctl_len;        /* control payload bytes gathered */
  uint8_t hdr[WS_HDR_MAX];
  uint8_t key[4];
  uint64_t left;          /* payload bytes of this frame not yet read */
  uint8_t ctl[WS_CTRL_MAX];
};

enum ws_event_type {
  WS_EV_MORE = 0,   /* input consumed; need more bytes */
  WS_EV_DATA,       /* data/len: message bytes, unmasked in place in the input */
  WS_EV_PING,       /* data/len: the ping payload (in the decoder; answer with a pong) */
  WS_EV_PONG,       /* data/len: the pong payload (ignore) */
  WS_EV_CLOSE,      /* code: the peer's close code (1005 = none); data/len: its reason */
  WS_EV_ERROR,      /* code: the close code to answer with; why: static text */
};

struct ws_event {
  enum ws_event_type type;
  uint8_t *data;
  size_t len;
  uint16_t code;
  const char *why;
};

/* masked: true on the server (client frames must be masked), false on a client. */
void ws_decoder_init(struct ws_decoder *d, bool masked);
/* Decode from *in (advanced past what was used) until one event. The input
 * must be writable: masked payload is unmasked where it lies, and WS_EV_DATA
 * points into it. Returns ev->type. */
enum ws_event_type ws_decode(struct ws_decoder *d, uint8_t **in, size_t *inlen,
                             struct ws_event *ev);

/* Frame header for a final frame of len payload bytes; with mask_key (4 bytes)
 * the header says masked and carries the key (the caller masks the payload).
 * Writes 2 to 14 bytes to out, returns how many. */
size_t ws_put_header(uint8_t out[WS_HDR_MAX], uint8_t opcode, bool fin, uint64_t len,
                     const uint8_t *mask_key);
/* XOR p[0..n) with key, starting at key position pos (0..3). */
void ws_mask(uint8_t *p, size_t n, const uint8_t key[4], unsigned pos);
/* A close code a peer may send (RFC 6455 §7.4): 1000-1003, 1007-1014, 3000-4999. */
bool ws_close_code_valid(uint16_t code);

#endif
