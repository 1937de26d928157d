/* derp/client.h: a small blocking DERP client.
 *
 * Connects over plain TCP, upgrades with HTTP (optionally fast start) or to
 * WebSocket (DERP inside binary messages, as browsers speak it), runs the
 * handshake, then sends and receives frames. One thread per client; the socket
 * fd is exposed for poll(). Tests and tools build on it; the load generator
 * uses it for set-up. Not thread-safe: one client, one thread. */
#ifndef DERP_CLIENT_H
#define DERP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp/frame.h"
#include "derp/handshake.h"
#include "derp/key.h"

struct derp_client;

/* A byte stream over the connected socket other than plain TCP (TLS, made by
 * libderp_tls; see derp/client_tls.h). The client owns it once made. */
struct derp_client_stream {
  void *ctx;
  /* Up to cap bytes: >0 = bytes, 0 = EOF, -1 = error (errno), -2 = the
   * deadline (CLOCK_MONOTONIC ms; -1 = none) passed first. */
  long (*read)(void *ctx, void *buf, size_t cap, int64_t deadline_ms);
  /* Write all n bytes (blocking): 0, or -1 with errno. */
  int (*write)(void *ctx, const void *buf, size_t n);
  /* Free the stream (the client closes the socket itself). */
  void (*close)(void *ctx);
};

struct derp_client_opts {
  const char *host;            /* numeric address or name, e.g. "127.0.0.1" */
  uint16_t port;
  const derp_privkey *priv;    /* the client's key; required */
  bool fast_start;             /* send Derp-Fast-Start: 1 and ClientInfo at once */
  const derp_key *server_key;  /* required for fast start: the server's public key */
  const char *mesh_key;        /* NULL, or sent as meshKey: at most
                                  DERP_MESH_KEY_MAX characters (derp/meshkey.h) */
  bool can_ack_pings;
  bool is_prober;
  int timeout_ms;              /* connect + handshake deadline (the name lookup
                                  before it is the resolver's own, unless `dial`
                                  bounds it); 0 = 10000 */
  /* Optional: make the TCP connection instead of getaddrinfo + connect, by
   * deadline_ms (CLOCK_MONOTONIC ms): a connected socket (the client makes it
   * blocking and sets TCP_NODELAY), or -1 with err. derpd's mesh links use it
   * to bound the name lookup and to stop a dial at once. */
  int (*dial)(void *arg, const char *host, uint16_t port, int64_t deadline_ms, char *err, size_t errlen);
  void *dial_arg;
  /* Optional, after the TCP connect and before HTTP: wrap the socket (TLS).
   * May set *learned + *have_learned (the server key seen on the way, from
   * the TLS meta certificate): fast start then uses it if server_key is NULL.
   * 0, or -1 with err. derp_client_connect_tls fills these in. */
  int (*wrap_stream)(void *arg, int fd, int64_t deadline_ms, struct derp_client_stream *out,
                     derp_key *learned, bool *have_learned, char *err, size_t errlen);
  void *wrap_arg;
  const char *ideal_node;      /* NULL, or sent as Ideal-Node: the client's ideal node
                                  when it is not this one (Tailscale's hint for rebalancing) */
  bool websocket;              /* Upgrade: websocket, subprotocol derp (no fast start) */
  uint32_t ws_frame_max;       /* WebSocket: split each write into a fragmented
                                  message of frames of at most this many bytes
                                  (0 = one frame per write); for tests */
};

/* A received frame. For RECV_PACKET, src and packet/len are set; for PEER_GONE,
 * src and reason; for PEER_PRESENT (to watchers), src and, as far as the
 * server sent them, the address and the flags (derp_peer_present_parse); for
 * PING/PONG, ping_data; for RESTARTING, the two times. payload/len hold the
 * raw payload of every type. Pointers are valid until the next
 * derp_client_recv. */
struct derp_client_msg {
  uint8_t type;
  const uint8_t *payload;
  uint32_t len;
  derp_key src;
  const uint8_t *packet;
  uint32_t packet_len;
  uint8_t reason;
  uint8_t ping_data[8];
  uint32_t reconnect_in_ms, try_for_ms;
  /* PEER_PRESENT */
  bool has_addr;           /* ip and port were sent */
  uint8_t ip[16];          /* IPv6, or IPv4 as ::ffff:a.b.c.d */
  uint16_t port;
  bool has_flags;          /* the flags byte was sent (derper v1.70+) */
  uint8_t flags;           /* enum derp_peer_present_flag bits (derp/frame.h) */
};

/* 0 on success, -1 on failure with a reason in err. */
int derp_client_connect(struct derp_client **out, const struct derp_client_opts *o,
                        char *err, size_t errlen);
void derp_client_close(struct derp_client *c);

/* Take the connection over and free c without closing anything: *fd gets
 * the socket (blocking, unless the stream made it non-blocking: TLS does);
 * *st the wrapped stream and *has_stream whether there is one (the caller
 * then owns it: st->close frees it, and the caller closes the fd); *buf a
 * malloc'd copy of the bytes received after the last frame read but not
 * yet parsed, *buflen of them (NULL and 0 when none). Nothing is lost: the
 * frame reader holds no partial frame between derp_client_* calls that
 * returned whole frames (connect, recv). Over WebSocket the bytes handed
 * back are unwrapped but the decoder's state is not: the stream that
 * follows must start at a WebSocket frame boundary (derp-bench's use). 0, or -1 with errno ENOMEM (c is
 * then left as it was). */
int derp_client_detach(struct derp_client *c, int *fd, struct derp_client_stream *st,
                       bool *has_stream, uint8_t **buf, size_t *buflen);

int derp_client_fd(const struct derp_client *c);
/* HTTP status of the upgrade response (101), or 0 if none came (fast start). */
int derp_client_http_status(const struct derp_client *c);
const derp_key *derp_client_server_key(const struct derp_client *c);
const derp_key *derp_client_public_key(const struct derp_client *c);
const struct derp_server_info *derp_client_server_info(const struct derp_client *c);

/* Blocking writes of whole frames. 0 on success, -1 on error (errno set). */
int derp_client_send(struct derp_client *c, const derp_key *dst, const void *pkt, size_t len);
int derp_client_ping(struct derp_client *c, const uint8_t data[8]);
int derp_client_pong(struct derp_client *c, const uint8_t data[8]);
int derp_client_note_preferred(struct derp_client *c, bool preferred);
/* Mesh frames: the server acts on them only for a client whose meshKey
 * matches its own (derpd and derper close the connection of any other).
 * WatchConns: the server sends PeerPresent for every client connected now,
 * then PeerPresent / PeerGone as clients come and go. ClosePeer: the server
 * closes peer's connections to it. ForwardPacket: deliver pkt (at most
 * DERP_MAX_PACKET bytes, else EMSGSIZE) to dst as if src had sent it there. */
int derp_client_watch_conns(struct derp_client *c);
int derp_client_close_peer(struct derp_client *c, const derp_key *peer);
int derp_client_forward_packet(struct derp_client *c, const derp_key *src, const derp_key *dst,
                               const void *pkt, size_t len);
/* Any frame, for tests of malformed input: writes header(type, len) + payload. */
int derp_client_send_raw(struct derp_client *c, uint8_t type, const void *payload, uint32_t len);
/* Raw bytes with no framing at all (not even WebSocket framing: tests use it
 * to write their own WebSocket frames). */
int derp_client_write_bytes(struct derp_client *c, const void *p, size_t n);

/* Wait up to timeout_ms (-1 forever) for one frame. 1 = got a frame, 0 = timed
 * out, -1 = connection closed or protocol error (errno set; EPIPE on EOF). */
int derp_client_recv(struct derp_client *c, struct derp_client_msg *m, int timeout_ms);
/* Like recv, but answers Ping with Pong and skips every other frame until a
 * RecvPacket or a PeerGone arrives (m->type tells which). */
int derp_client_recv_packet(struct derp_client *c, struct derp_client_msg *m, int timeout_ms);

#endif
