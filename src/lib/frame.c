/* frame.c: the DERP v2 frame codec.
 *
 * Owns the per-type length limits (derp_frame_check), the frame encoders, and
 * the incremental bounded reader. The reader never buffers a byte of payload
 * before the header has been judged, never buffers skipped frames, and copies
 * only frames that span input chunks; see derp/frame.h for the contract. */
#include <stdlib.h>
#include <string.h>

#include "derp/frame.h"

#define KEY DERP_KEY_LEN

struct limit {
  uint32_t min, max;
};

/* Limits for frames a client sends (the server reads them). Types that only a
 * server sends (ServerKey, RecvPacket, KeepAlive, ...) are not listed: a client
 * sending one gets the unknown-type treatment (skip, bounded), exactly as
 * derper's read loop sends every type it does not handle to its default
 * "unknown frame" case. That keeps us as forward compatible as derper. */
static bool client_limit(uint8_t type, struct limit *l) {
  switch (type) {
  case DERP_FRAME_CLIENT_INFO: *l = (struct limit){DERP_MIN_CLIENT_INFO, DERP_MAX_CLIENT_INFO}; return true;
  case DERP_FRAME_SEND_PACKET: *l = (struct limit){KEY, KEY + DERP_MAX_PACKET}; return true;
  case DERP_FRAME_FORWARD_PACKET: *l = (struct limit){2 * KEY, 2 * KEY + DERP_MAX_PACKET}; return true;
  case DERP_FRAME_NOTE_PREFERRED: *l = (struct limit){1, 1}; return true;
  case DERP_FRAME_PING: *l = (struct limit){DERP_PING_MIN, DERP_PING_MAX}; return true;
  /* Pong from a client: derper's read loop has no case for it, so any
   * length is skipped as an unknown frame. */
  case DERP_FRAME_WATCH_CONNS: *l = (struct limit){0, 0}; return true;
  case DERP_FRAME_CLOSE_PEER: *l = (struct limit){KEY, KEY}; return true;
  default: return false;
  }
}

/* Limits for frames a server sends (a client reads them). derper's client
 * takes any frame up to 1 MiB and reads the fields it knows from the front,
 * ignoring what follows (ServerKey, PeerGone, PeerPresent and Restarting all
 * grew trailing bytes over the years), so the control frames' upper bound is
 * the unknown-frame bound (64 KiB + 64: one assembly buffer at most, as a
 * RecvPacket needs), not their present size; client-only types coming from a
 * server are skipped like unknown ones, for the same reason as above. */
#define TAIL DERP_MAX_UNKNOWN_FRAME
static bool server_limit(uint8_t type, struct limit *l) {
  switch (type) {
  case DERP_FRAME_SERVER_KEY: *l = (struct limit){DERP_MAGIC_LEN + KEY, 1024}; return true;
  case DERP_FRAME_SERVER_INFO: *l = (struct limit){DERP_NONCE_LEN + 16, 64 * 1024}; return true;
  case DERP_FRAME_RECV_PACKET: *l = (struct limit){KEY, KEY + DERP_MAX_PACKET}; return true;
  case DERP_FRAME_KEEP_ALIVE: *l = (struct limit){0, TAIL}; return true;
  /* key + optional reason byte */
  case DERP_FRAME_PEER_GONE: *l = (struct limit){KEY, TAIL}; return true;
  /* key (32) [+ ip16 + port2 (50)] [+ flags1 (51, v1.70+)] (derp_peer_present_parse) */
  case DERP_FRAME_PEER_PRESENT: *l = (struct limit){KEY, TAIL}; return true;
  case DERP_FRAME_PING:
  case DERP_FRAME_PONG: *l = (struct limit){DERP_PING_MIN, TAIL}; return true;
  case DERP_FRAME_HEALTH: *l = (struct limit){0, 64 * 1024}; return true;
  case DERP_FRAME_RESTARTING: *l = (struct limit){8, TAIL}; return true;
  default: return false;
  }
}

/* Derper's client drops these from a server when too short ("[unexpected]
 * dropping short ... frame") and reads on; the handshake's frames (ServerKey,
 * ServerInfo) still fail it, and a client's short frame still closes it
 * (derper's server). */
static bool short_server_frame_skips(uint8_t type) {
  switch (type) {
  case DERP_FRAME_RECV_PACKET:
  case DERP_FRAME_PEER_GONE:
  case DERP_FRAME_PEER_PRESENT:
  case DERP_FRAME_PING:
  case DERP_FRAME_PONG:
  case DERP_FRAME_RESTARTING: return true;
  default: return false;
  }
}

enum derp_frame_verdict derp_frame_check(enum derp_frame_dir dir, uint8_t type, uint32_t len) {
  struct limit l;
  bool known = dir == DERP_FROM_CLIENT ? client_limit(type, &l) : server_limit(type, &l);
  /* derper discards a client's unknown frame of any length as it streams
   * (io.CopyN to io.Discard), so the server side does too; skipping never
   * buffers. A client reading a server keeps a bound. */
  if (!known)
    return dir == DERP_FROM_CLIENT || len <= DERP_MAX_SERVER_FRAME ? DERP_FRAME_SKIP : DERP_FRAME_REJECT;
  if (len < l.min && dir == DERP_FROM_SERVER && short_server_frame_skips(type))
    return DERP_FRAME_SKIP;
  return len >= l.min && len <= l.max ? DERP_FRAME_DELIVER : DERP_FRAME_REJECT;
}

const char *derp_frame_type_name(uint8_t type) {
  switch (type) {
  case DERP_FRAME_SERVER_KEY: return "ServerKey";
  case DERP_FRAME_CLIENT_INFO: return "ClientInfo";
  case DERP_FRAME_SERVER_INFO: return "ServerInfo";
  case DERP_FRAME_SEND_PACKET: return "SendPacket";
  case DERP_FRAME_RECV_PACKET: return "RecvPacket";
  case DERP_FRAME_KEEP_ALIVE: return "KeepAlive";
  case DERP_FRAME_NOTE_PREFERRED: return "NotePreferred";
  case DERP_FRAME_PEER_GONE: return "PeerGone";
  case DERP_FRAME_PEER_PRESENT: return "PeerPresent";
  case DERP_FRAME_FORWARD_PACKET: return "ForwardPacket";
  case DERP_FRAME_WATCH_CONNS: return "WatchConns";
  case DERP_FRAME_CLOSE_PEER: return "ClosePeer";
  case DERP_FRAME_PING: return "Ping";
  case DERP_FRAME_PONG: return "Pong";
  case DERP_FRAME_HEALTH: return "Health";
  case DERP_FRAME_RESTARTING: return "Restarting";
  default: return "unknown";
  }
}

void derp_frame_put_header(uint8_t out[DERP_FRAME_HDR_LEN], uint8_t type, uint32_t len) {
  out[0] = type;
  derp_put_be32(out + 1, len);
}

/* ---- encoders ---- */

/* Write a header plus up to three payload pieces; 0 if it does not fit. */
static size_t enc3(uint8_t *out, size_t cap, uint8_t type, const void *a, size_t alen,
                   const void *b, size_t blen, const void *c, size_t clen) {
  size_t plen = alen + blen + clen;
  if (out == NULL || plen > UINT32_MAX || cap < DERP_FRAME_HDR_LEN + plen) return 0;
  derp_frame_put_header(out, type, (uint32_t)plen);
  uint8_t *p = out + DERP_FRAME_HDR_LEN;
  if (alen) memcpy(p, a, alen);
  if (blen) memcpy(p + alen, b, blen);
  if (clen) memcpy(p + alen + blen, c, clen);
  return DERP_FRAME_HDR_LEN + plen;
}

size_t derp_enc_server_key(uint8_t *out, size_t cap, const derp_key *server_pub) {
  return enc3(out, cap, DERP_FRAME_SERVER_KEY, DERP_MAGIC, DERP_MAGIC_LEN, server_pub->b, KEY,
              NULL, 0);
}

size_t derp_enc_send_packet(uint8_t *out, size_t cap, const derp_key *dst, const void *pkt,
                            size_t len) {
  if (len > DERP_MAX_PACKET) return 0;
  return enc3(out, cap, DERP_FRAME_SEND_PACKET, dst->b, KEY, pkt, len, NULL, 0);
}

size_t derp_enc_recv_packet(uint8_t *out, size_t cap, const derp_key *src, const void *pkt,
                            size_t len) {
  if (len > DERP_MAX_PACKET) return 0;
  return enc3(out, cap, DERP_FRAME_RECV_PACKET, src->b, KEY, pkt, len, NULL, 0);
}

size_t derp_enc_forward_packet(uint8_t *out, size_t cap, const derp_key *src, const derp_key *dst,
                               const void *pkt, size_t len) {
  if (len > DERP_MAX_PACKET) return 0;
  return enc3(out, cap, DERP_FRAME_FORWARD_PACKET, src->b, KEY, dst->b, KEY, pkt, len);
}

size_t derp_enc_keep_alive(uint8_t *out, size_t cap) {
  return enc3(out, cap, DERP_FRAME_KEEP_ALIVE, NULL, 0, NULL, 0, NULL, 0);
}

size_t derp_enc_note_preferred(uint8_t *out, size_t cap, bool preferred) {
  uint8_t b = preferred ? 1 : 0;
  return enc3(out, cap, DERP_FRAME_NOTE_PREFERRED, &b, 1, NULL, 0, NULL, 0);
}

/* Always key + reason byte, as derper writes it (reason 0 included). */
size_t derp_enc_peer_gone(uint8_t *out, size_t cap, const derp_key *peer, uint8_t reason) {
  return enc3(out, cap, DERP_FRAME_PEER_GONE, peer->b, KEY, &reason, 1, NULL, 0);
}

size_t derp_enc_ping(uint8_t *out, size_t cap, uint8_t type, const uint8_t data[8]) {
  if (type != DERP_FRAME_PING && type != DERP_FRAME_PONG) return 0;
  return enc3(out, cap, type, data, 8, NULL, 0, NULL, 0);
}

size_t derp_enc_health(uint8_t *out, size_t cap, const char *problem) {
  size_t n = problem ? strlen(problem) : 0;
  if (n > 64 * 1024) return 0; /* a reader would reject it */
  return enc3(out, cap, DERP_FRAME_HEALTH, problem, n, NULL, 0, NULL, 0);
}

size_t derp_enc_restarting(uint8_t *out, size_t cap, uint32_t reconnect_in_ms, uint32_t try_for_ms) {
  uint8_t b[8];
  derp_put_be32(b, reconnect_in_ms);
  derp_put_be32(b + 4, try_for_ms);
  return enc3(out, cap, DERP_FRAME_RESTARTING, b, 8, NULL, 0, NULL, 0);
}

size_t derp_enc_watch_conns(uint8_t *out, size_t cap) {
  return enc3(out, cap, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0, NULL, 0);
}

size_t derp_enc_close_peer(uint8_t *out, size_t cap, const derp_key *peer) {
  return enc3(out, cap, DERP_FRAME_CLOSE_PEER, peer->b, KEY, NULL, 0, NULL, 0);
}

#define PP_IP 16
#define PP_ADDR (KEY + PP_IP + 2)  /* 50: key + ip + port */

size_t derp_enc_peer_present(uint8_t *out, size_t cap, const derp_key *peer,
                             const uint8_t ip16[16], uint16_t port, uint8_t flags) {
  if (ip16 == NULL) return enc3(out, cap, DERP_FRAME_PEER_PRESENT, peer->b, KEY, NULL, 0, NULL, 0);
  uint8_t tail[3] = {(uint8_t)(port >> 8), (uint8_t)port, flags};
  return enc3(out, cap, DERP_FRAME_PEER_PRESENT, peer->b, KEY, ip16, PP_IP, tail, sizeof tail);
}

int derp_peer_present_parse(const uint8_t *p, size_t n, struct derp_peer_present *out) {
  memset(out, 0, sizeof *out);
  if (p == NULL || n < KEY) return -1;
  memcpy(out->key.b, p, KEY);
  if (n >= PP_ADDR) {
    out->has_addr = true;
    memcpy(out->ip, p + KEY, PP_IP);
    out->port = (uint16_t)(p[KEY + PP_IP] << 8 | p[KEY + PP_IP + 1]);
  }
  if (n > PP_ADDR) {
    out->has_flags = true;
    out->flags = p[PP_ADDR];
  }
  return 0;
}

/* ---- incremental reader ---- */

void derp_frame_reader_init(struct derp_frame_reader *r, enum derp_frame_dir dir) {
  memset(r, 0, sizeof *r);
  r->dir = dir;
}

void derp_frame_reader_reset(struct derp_frame_reader *r) {
  free(r->buf);
  r->buf = NULL;
  r->hdr_have = 0;
  r->skipping = false;
  r->have = 0;
}

bool derp_frame_reader_busy(const struct derp_frame_reader *r) {
  return r->hdr_have > 0;
}

uint32_t derp_frame_reader_held(const struct derp_frame_reader *r) { return r->buf ? r->have : 0; }

static void consume(const uint8_t **in, size_t *inlen, size_t n) {
  *in += n;
  *inlen -= n;
}

/* The current frame is done: the next byte starts a new header. */
static enum derp_read_status deliver(struct derp_frame_reader *r, const uint8_t *payload,
                                     struct derp_frame *out) {
  out->type = r->type;
  out->len = r->len;
  out->payload = payload;
  r->hdr_have = 0;
  r->have = 0;
  return DERP_READ_FRAME;
}

/* Collect header bytes; true once all 5 are in. */
static bool take_header(struct derp_frame_reader *r, const uint8_t **in, size_t *inlen) {
  size_t n = DERP_FRAME_HDR_LEN - r->hdr_have;
  if (n > *inlen) n = *inlen;
  memcpy(r->hdr + r->hdr_have, *in, n);
  consume(in, inlen, n);
  r->hdr_have = (uint8_t)(r->hdr_have + n);
  if (r->hdr_have < DERP_FRAME_HDR_LEN) return false;
  r->type = r->hdr[0];
  r->len = derp_get_be32(r->hdr + 1);
  r->have = 0;
  return true;
}

/* Discard skipped payload; true once the whole frame is gone. */
static bool skip_payload(struct derp_frame_reader *r, const uint8_t **in, size_t *inlen) {
  size_t n = r->len - r->have;
  if (n > *inlen) n = *inlen;
  consume(in, inlen, n);
  r->have += (uint32_t)n;
  if (r->have < r->len) return false;
  r->skipping = false;
  r->hdr_have = 0;
  r->have = 0;
  r->skipped_frames++;
  return true;
}

/* Payload of a frame being delivered: in place if the input holds all of it,
 * else assembled in a buffer of exactly len bytes. Allocation waits until a
 * payload byte is actually pending, so a header that ends one chunk does not
 * force a copy when the next chunk carries the whole payload. */
static enum derp_read_status take_payload(struct derp_frame_reader *r, const uint8_t **in,
                                          size_t *inlen, struct derp_frame *out) {
  if (r->len == 0) return deliver(r, r->hdr, out);
  if (r->buf == NULL) {
    if (*inlen >= r->len) {
      const uint8_t *p = *in;
      consume(in, inlen, r->len);
      return deliver(r, p, out);
    }
    if (*inlen == 0) return DERP_READ_MORE;
    r->buf = malloc(r->len);
    if (r->buf == NULL) return DERP_READ_NOMEM;
  }
  size_t n = r->len - r->have;
  if (n > *inlen) n = *inlen;
  memcpy(r->buf + r->have, *in, n);
  consume(in, inlen, n);
  r->have += (uint32_t)n;
  if (r->have < r->len) return DERP_READ_MORE;
  return deliver(r, r->buf, out);
}

static enum derp_read_status read_one(struct derp_frame_reader *r, const uint8_t **in,
                                      size_t *inlen, struct derp_frame *out) {
  /* A buffer still held between frames belongs to the frame delivered last
   * time; the caller is done with it now. */
  if (r->buf != NULL && r->hdr_have < DERP_FRAME_HDR_LEN) {
    free(r->buf);
    r->buf = NULL;
  }
  for (;;) {
    if (r->hdr_have < DERP_FRAME_HDR_LEN) {
      if (*inlen == 0 || !take_header(r, in, inlen)) return DERP_READ_MORE;
      enum derp_frame_verdict v = derp_frame_check(r->dir, r->type, r->len);
      if (r->type < 32) {
        if (v == DERP_FRAME_DELIVER && (r->reject_types & (1u << r->type))) v = DERP_FRAME_REJECT;
        else if (r->skip_types & (1u << r->type)) v = DERP_FRAME_SKIP; /* at any length, as unknown ones */
      }
      if (v == DERP_FRAME_REJECT) {
        out->type = r->type;
        out->len = r->len;
        out->payload = NULL;
        r->hdr_have = 0; /* the stream is dead; leave no half state behind */
        return DERP_READ_ERROR;
      }
      r->skipping = v == DERP_FRAME_SKIP;
      if (r->skipping)
        r->skipped_bytes += r->skip_charge_max && r->len > r->skip_charge_max ? r->skip_charge_max : r->len;
    }
    if (!r->skipping) return take_payload(r, in, inlen, out);
    if (!skip_payload(r, in, inlen)) return DERP_READ_MORE;
  }
}

enum derp_read_status derp_frame_read(struct derp_frame_reader *r, const uint8_t **in,
                                      size_t *inlen, struct derp_frame *out) {
  size_t before = *inlen;
  enum derp_read_status st = read_one(r, in, inlen, out);
  r->consumed += (uint32_t)(before - *inlen);
  return st;
}
