/* derp/frame.h: the DERP v2 frame codec.
 *
 * A frame is 1 byte type, 4 byte big-endian payload length, payload. The reader
 * is incremental and bounded: the length is checked against the limits of its
 * type (and direction) as soon as the 5 header bytes are in, before a single
 * payload byte is buffered. Frames wholly inside the caller's input are handed
 * out in place (no copy); only a frame that spans inputs is assembled, in a
 * buffer the reader owns and frees when the frame has been delivered. */
#ifndef DERP_FRAME_H
#define DERP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp/key.h"

#define DERP_PROTOCOL_VERSION 2
#define DERP_MAGIC "DERP\xF0\x9F\x94\x91"
#define DERP_MAGIC_LEN 8
#define DERP_FRAME_HDR_LEN 5
#define DERP_NONCE_LEN 24
#define DERP_MAX_PACKET 65536
/* Known frames from a server longer than this close (one assembly buffer at
 * most, as a RecvPacket needs). */
#define DERP_MAX_UNKNOWN_FRAME (DERP_MAX_PACKET + 64)
/* Unknown frame types are skipped, never buffered: from a client at any
 * length (derper's server), from a server up to Go's client's 1 MiB bound
 * (derp_client.go: "unexpectedly large frame"); longer closes. */
#define DERP_MAX_SERVER_FRAME (1u << 20)
#define DERP_MAX_CLIENT_INFO (256 * 1024)
#define DERP_MIN_CLIENT_INFO (DERP_KEY_LEN + DERP_NONCE_LEN)
#define DERP_PING_MIN 8
#define DERP_PING_MAX 1000
/* Disco packets start with "TS" + U+1F4AC, then the sender's disco key (32)
 * and a nonce (24): anything shorter is not disco (upstream's
 * LooksLikeDiscoWrapper uses the same 62-byte minimum). */
#define DERP_DISCO_MAGIC "TS\xF0\x9F\x92\xAC"
#define DERP_DISCO_MAGIC_LEN 6
#define DERP_DISCO_MIN_LEN (DERP_DISCO_MAGIC_LEN + 32 + 24)

enum derp_frame_type {
  DERP_FRAME_SERVER_KEY = 0x01,
  DERP_FRAME_CLIENT_INFO = 0x02,
  DERP_FRAME_SERVER_INFO = 0x03,
  DERP_FRAME_SEND_PACKET = 0x04,
  DERP_FRAME_RECV_PACKET = 0x05,
  DERP_FRAME_KEEP_ALIVE = 0x06,
  DERP_FRAME_NOTE_PREFERRED = 0x07,
  DERP_FRAME_PEER_GONE = 0x08,
  DERP_FRAME_PEER_PRESENT = 0x09,
  DERP_FRAME_FORWARD_PACKET = 0x0a,
  DERP_FRAME_WATCH_CONNS = 0x10,
  DERP_FRAME_CLOSE_PEER = 0x11,
  DERP_FRAME_PING = 0x12,
  DERP_FRAME_PONG = 0x13,
  DERP_FRAME_HEALTH = 0x14,
  DERP_FRAME_RESTARTING = 0x15,
};

enum derp_peer_gone_reason {
  DERP_PEER_GONE_DISCONNECTED = 0,
  DERP_PEER_GONE_NOT_HERE = 1,
};

/* PeerPresent flags (derper v1.70+; bit 3 from v1.78). */
enum derp_peer_present_flag {
  DERP_PEER_PRESENT_REGULAR = 1 << 0,   /* a regular client */
  DERP_PEER_PRESENT_MESH = 1 << 1,      /* a mesh peer (another region node's link) */
  DERP_PEER_PRESENT_PROBER = 1 << 2,    /* a prober (derpprobe, IsProber) */
  DERP_PEER_PRESENT_NOT_IDEAL = 1 << 3, /* the client says this is not its ideal node */
};

/* Which side sent the frames a reader parses: limits differ by direction. */
enum derp_frame_dir {
  DERP_FROM_CLIENT = 0, /* the server reads these */
  DERP_FROM_SERVER = 1, /* a client reads these */
};

/* Verdict on a header: deliver the frame, skip its payload, or reject it. */
enum derp_frame_verdict {
  DERP_FRAME_DELIVER = 0,
  DERP_FRAME_SKIP = 1,
  DERP_FRAME_REJECT = 2,
};

/* Limits check for a frame header. A known type with a length no frame of that
 * type may have is REJECT; an unknown type is SKIP (from a server, up to
 * DERP_MAX_SERVER_FRAME). */
enum derp_frame_verdict derp_frame_check(enum derp_frame_dir dir, uint8_t type, uint32_t len);
const char *derp_frame_type_name(uint8_t type);

/* Header encode/decode. */
void derp_frame_put_header(uint8_t out[DERP_FRAME_HDR_LEN], uint8_t type, uint32_t len);
static inline uint32_t derp_get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void derp_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline bool derp_is_disco(const uint8_t *pkt, size_t len) {
  return len >= DERP_DISCO_MIN_LEN &&
         __builtin_memcmp(pkt, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN) == 0;
}

/* Encoders: write a whole frame (header + payload) into out; return its length,
 * or 0 if cap is too small / arguments are out of bounds. */
size_t derp_enc_server_key(uint8_t *out, size_t cap, const derp_key *server_pub);
size_t derp_enc_send_packet(uint8_t *out, size_t cap, const derp_key *dst, const void *pkt, size_t len);
size_t derp_enc_recv_packet(uint8_t *out, size_t cap, const derp_key *src, const void *pkt, size_t len);
size_t derp_enc_forward_packet(uint8_t *out, size_t cap, const derp_key *src, const derp_key *dst,
                               const void *pkt, size_t len);
size_t derp_enc_keep_alive(uint8_t *out, size_t cap);
size_t derp_enc_note_preferred(uint8_t *out, size_t cap, bool preferred);
size_t derp_enc_peer_gone(uint8_t *out, size_t cap, const derp_key *peer, uint8_t reason);
size_t derp_enc_ping(uint8_t *out, size_t cap, uint8_t type /* PING or PONG */, const uint8_t data[8]);
size_t derp_enc_health(uint8_t *out, size_t cap, const char *problem);
size_t derp_enc_restarting(uint8_t *out, size_t cap, uint32_t reconnect_in_ms, uint32_t try_for_ms);
size_t derp_enc_watch_conns(uint8_t *out, size_t cap);
size_t derp_enc_close_peer(uint8_t *out, size_t cap, const derp_key *peer);
/* PeerPresent as derper v1.70+ writes it: key + ip (16 bytes, IPv4 as
 * v4-mapped IPv6) + port (big-endian) + flags, 51 bytes of payload. ip16 NULL
 * writes the key alone (as servers before the address did; port and flags
 * unused). */
size_t derp_enc_peer_present(uint8_t *out, size_t cap, const derp_key *peer,
                             const uint8_t ip16[16], uint16_t port, uint8_t flags);

/* A PeerPresent payload, parsed as Go clients do: the key (32 bytes), then
 * the address if the 18 bytes of ip + port follow, then the flags byte if it
 * follows; anything after it is for newer readers and ignored. */
struct derp_peer_present {
  derp_key key;
  bool has_addr;  /* ip and port were sent (payload >= 50 bytes) */
  uint8_t ip[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
  uint16_t port;
  bool has_flags; /* the flags byte was sent (payload >= 51 bytes) */
  uint8_t flags;  /* enum derp_peer_present_flag bits */
};
/* 0, or -1 if n < 32 (out then zeroed). */
int derp_peer_present_parse(const uint8_t *p, size_t n, struct derp_peer_present *out);

/* A parsed frame. payload points into the caller's input or the reader's
 * assembly buffer; valid until the next call on the reader. */
struct derp_frame {
  uint8_t type;
  uint32_t len;
  const uint8_t *payload;
};

struct derp_frame_reader {
  enum derp_frame_dir dir;
  uint8_t hdr[DERP_FRAME_HDR_LEN];
  uint8_t hdr_have;  /* header bytes collected, 0..5 */
  bool skipping;     /* discarding an unknown frame's payload */
  uint8_t type;
  uint32_t len;      /* payload length of the current frame */
  uint32_t have;     /* payload bytes assembled or skipped so far */
  uint32_t consumed; /* input bytes taken, ever (wraps): progress, for stall checks */
  uint8_t *buf;      /* assembly buffer, NULL unless a frame spans inputs */
  uint64_t skipped_frames; /* unknown frames skipped (for counters) */
  uint64_t skipped_bytes;  /* their payload lengths, each at most
                              skip_charge_max (0: not capped), summed: a
                              server charges them to -rate-config, as derper
                              charges every frame; the caller resets it */
  uint32_t skip_charge_max;
  /* Per-connection overrides for types below 32: a type in skip_types is
   * skipped at any length (never buffered), as an unknown type is; a type
   * in reject_types fails at its header. A server skips a late ClientInfo
   * (derper discards it, whatever its length) and rejects mesh-only frames
   * from clients without the mesh key. */
  uint32_t skip_types, reject_types;
};

enum derp_read_status {
  DERP_READ_FRAME = 1,  /* *out holds a frame */
  DERP_READ_MORE = 0,   /* input consumed, need more bytes */
  DERP_READ_ERROR = -1, /* bad length for the type: close the connection */
  DERP_READ_NOMEM = -2, /* could not allocate the assembly buffer */
};

void derp_frame_reader_init(struct derp_frame_reader *r, enum derp_frame_dir dir);
/* Release the assembly buffer, if any. */
void derp_frame_reader_reset(struct derp_frame_reader *r);
/* Consume bytes from *in (advancing *in and *inlen) until a frame completes or
 * the input is exhausted. Call in a loop until it returns MORE or an error.
 * On ERROR, out->type and out->len hold the offending header. */
enum derp_read_status derp_frame_read(struct derp_frame_reader *r, const uint8_t **in,
                                      size_t *inlen, struct derp_frame *out);
/* True while a partial frame is held (for memory accounting and tests). */
bool derp_frame_reader_busy(const struct derp_frame_reader *r);
/* Payload bytes of a partial frame held in the assembly buffer (0: none). A
 * caller that sees it nonzero while `consumed` has not moved since a while
 * ago has a peer that stopped mid-frame with the buffer (up to 64 KiB) held. */
uint32_t derp_frame_reader_held(const struct derp_frame_reader *r);

#endif
