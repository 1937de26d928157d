/* server.h: the structures every server module shares: the server, its shards,
 * connections, peers (a key's connections) and packet buffers.
 *
 * Ownership, the rule everything else follows: a shard thread touches only its
 * own struct shard, the conns and peers on it, and the producer end of its
 * outbound rings / consumer end of its inbound rings. The struct server is
 * read-only after start except `stopping` (atomic). A conn changes owner only
 * by being pushed through a control ring (handoff); after the push the sender
 * never touches it again. */
#ifndef DERPD_SERVER_H
#define DERPD_SERVER_H

#include <assert.h>
#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "derp/frame.h"
#include "derp/handshake.h"
#include "derp/key.h"
#include "server/config.h"
#include "server/core/hashset.h"
#include "server/core/list.h"
#include "server/core/ratelimit.h"
#include "server/core/recv_limit.h"
#include "server/operations/metrics.h"
#include "server/core/spsc.h"

struct shard;
struct conn;

/* ---- packet / message buffers (pool.c) ---------------------------------- */

enum msg_kind {
  MSG_PKT = 1,       /* a RecvPacket frame for key `dst` */
  MSG_FRAME_TO_KEY,  /* a control frame (PeerGone) for the key whose hash is `hash` */
  MSG_SAW,           /* the key hashed `src_hash` got packets from the one hashed `hash` */
  MSG_UNSAW,         /* a MSG_SAW found no such sender: the receiver hashed `hash`
                        forgets that it told (sender tag in dst) */
  MSG_RAW,           /* bytes to write as-is (HTTP replies, local frames) */
  /* Region (region/): control messages between shards. The routing facts sit
   * in the pkt's `dst` bytes (struct rmsg, region.h); payloads in data. */
  MSG_REGION_FIRST,
  MSG_WATCH_SUB = MSG_REGION_FIRST, /* a watcher appeared: snapshot this shard's keys to it */
  MSG_WATCH_UNSUB,   /* the watcher is gone: forget it */
  MSG_PRESENCE,      /* PeerPresent/PeerGone frames for a watcher (data) */
  MSG_WATCH_ACK,     /* the watcher wrote a MSG_PRESENCE: one more credit */
  MSG_FWD_ADD,       /* link L forwards for key dst */
  MSG_FWD_DEL,       /* link L no longer forwards for key dst */
  MSG_LINK_DOWN,     /* link L dropped: forget all it forwarded */
  MSG_CLOSE_PEER,    /* a mesh peer asked to close key dst's connections */
  MSG_WATCH_RESNAP,  /* the watcher sent WatchConns again: tell it every key here again */
  MSG_FWD_PKT,       /* data ring: a ForwardPacket frame for link L's conn */
};

/* One frame on its way to a socket, or a message between shards. `data` holds
 * the whole wire frame: for MSG_PKT, [5 header][32 src key][payload], built
 * in place so the egress write needs no second copy. */
struct pkt {
  struct pkt *next;     /* conn queue / send batch link; owner: current shard */
  uint8_t kind;         /* enum msg_kind */
  uint8_t cls;          /* pool size class */
  uint8_t disco;        /* payload looks like disco: goes on the disco queue */
  uint8_t not_here;     /* MSG_FRAME_TO_KEY: a PeerGone(not here), rate-limited */
  uint8_t wire;         /* bytes already in wire form (TLS records made outside
                           wrap): sent as they are, never wrapped (conn_queue_wire) */
  uint32_t t_us;        /* shard clock (now_us, low 32 bits) at pkt_alloc: a packet's
                           queue wait is measured from here (derpd_queue_wait_seconds) */
  uint32_t len;         /* bytes used in data */
  uint32_t cap;         /* bytes available in data */
  uint8_t ws_raw;       /* WebSocket conn: bytes already framed (101, pong, close):
                           never under a batch's WebSocket header */
  uint8_t from_fwd;     /* MSG_PKT that came in as a ForwardPacket: local delivery only */
  uint64_t hash;        /* key_hash(dst) */
  uint64_t src_hash;    /* MSG_PKT: key_hash(sender), 0 = not known yet;
                           MSG_SAW: the receiver's */
  uint64_t via_hash;    /* from_fwd: key_hash of the mesh peer that forwarded it
                           (a PeerGone(not here) goes back to it) */
  derp_key dst;         /* routing key */
  uint8_t data[];
};

struct pkt *pkt_alloc(struct shard *sh, uint32_t len);
void pkt_free(struct shard *sh, struct pkt *p);
void pkt_free_list(struct shard *sh, struct pkt *p);
void pool_destroy(struct shard *sh);

/* A packet's payload bytes, as derper counts them in derp_bytes_dropped: a
 * RecvPacket frame past its sender's key, a ForwardPacket past both keys. */
static inline uint32_t pkt_payload_len(const struct pkt *p) {
  uint32_t head = p->kind == MSG_PKT       ? DERP_FRAME_HDR_LEN + DERP_KEY_LEN
                  : p->kind == MSG_FWD_PKT ? DERP_FRAME_HDR_LEN + 2 * DERP_KEY_LEN
                                           : p->len;
  return p->len > head ? p->len - head : 0;
}
#define STAT_DROP_PKT(st, reason, p) STAT_DROP_N(st, reason, (p)->disco, 1, pkt_payload_len(p))

/* ---- peers: a key and its connections (relay.c) ------------------------- */

#define SENT_TO_MAX 4096 /* distinct destinations remembered for PeerGone */

struct peer {
  struct peer *hnext;    /* peer table chain */
  uint64_t hash;
  derp_key key;
  struct conn *conns;    /* all conns of this key (conn->pnext); those with
                            dup_hist in the order of derper's sendHistory,
                            most recent first (relay.c) */
  struct conn *active;   /* receives packets; NULL = none (dup fight) */
  uint32_t nconns;
  /* Keys this peer sent to: they get PeerGone when its last conn ends. */
  struct hashset sent_to; /* their hashes, at most SENT_TO_MAX */
  uint64_t last_dst;      /* cache: skips the set lookup for repeat sends */
};

struct peer_table {
  struct peer **buckets;
  uint32_t mask, count;
};

/* ---- connections (conn.c) ------------------------------------------------ */

enum conn_state {
  CS_HTTP = 1,        /* reading the HTTP request head */
  CS_CLIENT_INFO,     /* ServerKey sent, waiting for ClientInfo */
  CS_MOVING,          /* handshake done, waiting for I/O to drain, then handoff */
  CS_ESTABLISHED,     /* relaying on the owner shard */
  CS_CLOSING,         /* shut down, waiting for in-flight ops */
};

/* Handshake-time state, freed once the conn is established. */
struct hs_state;

/* One sendmsg in flight: the frames it writes, and their iovecs. Pooled per
 * shard; a conn holds one only while a send is in flight. */
#define SEND_IOV_MAX 64
#define SEND_BYTES_MAX (256 * 1024)
/* A WebSocket frame larger than one message goes as at most this many
 * (conn_send.c): 4 x 32 KiB, above any DERP frame. */
#define WS_SPLIT_MAX 4

struct send_ctx {
  struct send_ctx *next_free;
  struct pkt *pkts;        /* frames in this send, in order, one per iovec
                              from iov[nhdr] on (a split frame: one in all) */
  struct msghdr msg;
  int niov, first;         /* iov[first..niov) not yet fully written */
  int nhdr;                /* leading iovecs with no pkt: the WebSocket header */
  bool split;              /* WebSocket: one frame in WS_SPLIT_MAX messages at most,
                              a header before each chunk; the pkt ends with the last iovec */
  uint8_t ws_hdr[WS_SPLIT_MAX][10]; /* WebSocket conn: the batch's binary message
                              header ([0]), or one per chunk of a split frame */
  struct iovec iov[SEND_IOV_MAX];
};

struct transport;
struct ws_conn;

struct conn {
  int fd;
  uint32_t rate_win;       /* the shard's batching window it last received in (shard.c) */
  uint8_t state;           /* enum conn_state */
  uint8_t close_reason;    /* enum close_reason, once closing */
  uint8_t close_after_send : 1, preferred : 1, is_mesh : 1, dirty : 1;
  uint8_t is_watcher : 1;  /* a mesh peer that sent WatchConns (region/watch.c) */
  uint8_t is_link : 1;     /* our outbound mesh link to another node (region/link.c) */
  uint8_t not_ideal : 1;   /* Ideal-Node header named another node */
  uint8_t is_prober : 1;   /* ClientInfo IsProber */
  uint8_t port80 : 1;      /* accepted on the port-80 helper (plain HTTP, no DERP) */
  uint8_t link_ping_out : 1; /* a link's keepalive Ping not answered yet */
  uint8_t rtt_sampled : 1; /* TCP_INFO worked at connect: derp_tcp_rtt samples it */
  uint8_t ktls_ignored : 2; /* kTLS: no-data records ignored so far (ktls_may_ignore) */
  uint8_t metrics_only : 1; /* accepted on --metrics-listen (plain HTTP, /debug/ only) */
  /* -rate-config (core/recv_pause.c): reads stopped until the bucket is out
   * of debt; the multishot recv being cancelled for that; a recv in flight;
   * paused since the last keepalive (no frame_stall check); reads one
   * buffer at a time (paced since the setting began). */
  uint8_t rx_paused : 1, rx_cancel : 1, recv_armed : 1, rx_was_paused : 1, rx_single : 1;
  uint8_t send_armed : 1;  /* a send in flight (c->send is set before the transport's wrap,
                              which may close the conn before the send is submitted) */
  uint8_t dup_hist : 1;    /* in its key's duplicate history (protocol/relay.c) */
  uint8_t goodbye_sent : 1; /* the transport's goodbye (TLS close_notify) is queued */
  uint8_t tls_ver : 2;     /* TLS 1.2: 2, 1.3: 3, once its handshake is done; 0: not TLS */
  uint8_t tls_active : 1;  /* counted in derper_tls_active_version until it closes */
  uint8_t ops;             /* SQEs in flight that reference this conn */
  uint8_t nothere_tokens;  /* PeerGone(not here) rate limit: 1/s, burst 3 */
  uint16_t ndisco, ndata, nctrl; /* 16 bits: a link's queue and a watcher's
                                    presence frames pass 255 */
  uint16_t link_kib;       /* a link: KiB in its disco and data queues (pkt_kib) */
  uint16_t ngone;          /* PeerGone frames in the control queue (CONN_GONE_MAX) */
  uint32_t reg_ms;         /* shard now_ms when registered, mod 2^32 (derp_home_moves_*) */
  uint64_t id;             /* process-unique, for logs */
  const struct transport *xp;
  void *xp_state;          /* the transport's per-conn state (TLS: SSL and buffers);
                              heap, travels with the conn on a handoff */
  struct shard *sh;        /* current owner */
  struct peer *peer;       /* established only */
  uint64_t last_src_tag;   /* last sender reported with MSG_SAW (fast path) */
  struct conn *pnext;      /* next conn of the same peer */
  struct conn **pprev;     /* what points at this conn in that list: O(1)
                              unlink however many conns share the key */
  derp_key key;            /* client's key, once known */
  uint64_t key_hash;
  struct sockaddr_in6 addr; /* peer address (v4 as v4-mapped) */
  uint32_t ka_consumed;    /* rd.consumed at the last keepalive (frame_stall) */
  struct derp_frame_reader rd;
  struct hs_state *hs;
  struct ws_conn *ws;      /* WebSocket framing (websocket.c); NULL = none */
  /* Outgoing queues: control frames first, then disco, then data. */
  struct pkt *ctrl_h, *ctrl_t, *disco_h, *disco_t, *data_h, *data_t;
  struct send_ctx *send;   /* non-NULL while a sendmsg is in flight */
  int64_t nothere_ms;      /* last token refill */
  int64_t deadline_ms;     /* handshake or write deadline (one at a time) */
  int64_t keepalive_ms;    /* next KeepAlive */
  struct list all_node;    /* shard's conns */
  struct list dl_node;     /* shard's handshake or write deadline FIFO */
  struct list ka_node;     /* shard's keepalive FIFO; or, while CS_MOVING,
                              the shard's list of handoffs waiting for room */
  struct list dirty_node;  /* shard's flush list for this loop turn */
  struct conn_pace *pace;  /* -rate-config and a mesh conn's outbox pauses
                              (core/recv_pause.c): NULL until first needed */
};

#define SHARD_TICK_MS 100  /* a shard's timers (deadlines, keepalives, samples) run this often */
#define CONN_QUEUE_MAX 32   /* per conn, for disco and for data (derper's depth) */
#define LINK_QUEUE_MAX 2048 /* an outbound mesh link's data queue (ForwardPacket) */
#define LINK_QUEUE_KIB 8192 /* and its disco and data queues together, in KiB: 2048
                               full-size packets would pin 128 MiB per link */
#define CONN_CTRL_MAX 64    /* control frames (pong, keepalive, replies) */
#define CONN_GONE_MAX 1024  /* PeerGone frames, bounded apart: a node that leaves
                               the region tells a client about every key of it the
                               client talked to, at once (about 340 KiB at most) */

/* ---- the transport seam (transport.h) ----------------------------------- */

/* What a transport is, for the per-mode counters (derpd_conns_mode). */
enum xp_mode { XP_PLAIN = 0, XP_TLS, XP_KTLS };

/* How bytes become frames and frames become bytes. Plain TCP passes them
 * through; userspace TLS wraps and unwraps here; kTLS passes them through
 * again once the kernel has the keys. WebSocket framing is a layer above
 * this (websocket.c), so it stacks on any transport. */
struct transport {
  const char *name;
  uint8_t mode;            /* enum xp_mode */
  /* Wire bytes arrived: turn them into plaintext and hand that to
   * conn_input(). Returns 0, or -1 after closing the conn. NULL: the wire
   * bytes are plaintext (plain TCP, kTLS RX) and go to conn_input as they are. */
  int (*recv)(struct conn *c, const uint8_t *p, size_t n);
  /* A send batch is ready: ctx->iov[0..niov) are plaintext: a WebSocket
   * header in iov[0..nhdr) if the conn speaks WebSocket, then frames, one per
   * pkt of ctx->pkts. Return 0 to send them as they are (plain, kTLS), or 1
   * after replacing ctx->iov / niov with the transport's own wire bytes (TLS
   * records): the frames then count as written and are
   * freed at once, and the wire buffer must stay valid and untouched until
   * c->send is NULL again. -1 closes the connection. Batches of wire pkts
   * (conn_queue_wire) are never passed to wrap. NULL: always 0. */
  int (*wrap)(struct conn *c, struct send_ctx *ctx);
  /* Optional: the send batch is done (written, failed or dropped); a wire
   * buffer that wrap handed out may be freed now. */
  void (*sent)(struct conn *c);
  /* Optional: frees xp_state; called when the conn is freed. */
  void (*destroy)(struct conn *c);
  /* Optional: a receive failed with res (< 0, not -ENOBUFS). Return 1 if the
   * transport dealt with it (the conn then reads on, unless it closed it),
   * 0 to let conn.c close the conn as a read error. kTLS: a record that is
   * not application data fails a plain recv with -EIO. */
  int (*recv_error)(struct conn *c, int res);
  /* Optional: the conn's last words are out (close_after_send): queue the
   * transport's own closing bytes (TLS close_notify, as Go's tls.Conn.Close
   * sends) as wire pkts. 1 if it queued some (the conn closes once they are
   * written), 0 if none, -1 after closing the conn. */
  int (*goodbye)(struct conn *c);
};
extern const struct transport transport_plain;
extern const struct transport transport_tls;
/* transport_tls.c: make c a TLS conn (at accept). 0, or -1 (out of memory). */
int transport_tls_attach(struct conn *c);
/* The socket of the conn an SSL made by transport_tls serves; -1 if none. */
struct ssl_st;
int transport_tls_fd(const struct ssl_st *ssl);
/* Take over a client SSL whose handshake is done (an outbound mesh link):
 * our BIO replaces its socket BIO. No kTLS. 0, or -1 (the SSL is then freed). */
struct ssl_st;
int transport_tls_adopt(struct conn *c, struct ssl_st *ssl);
/* Once at start, before any TLS conn: the BIO glue. 0 or -1. */
int transport_tls_init(void);
/* transport_ktls.c: the transport of a conn whose keys are both in the
 * kernel (TLS_1_2_VERSION / TLS_1_3_VERSION from linux/tls.h). */
const struct transport *transport_ktls(uint16_t version);
/* A failed receive on a conn with TLS_RX in the kernel (transport_ktls and
 * the TLS transport while its TX still waits): reads the record the kernel
 * holds back and acts on it. tx_kernel: our alerts can go out as records.
 * Same contract as transport.recv_error. */
int ktls_recv_error(struct conn *c, int res, uint16_t version, bool tx_kernel);

/* ---- shards and the server ---------------------------------------------- */

struct server;

struct shard {
  int id;
  struct server *srv;
  pthread_t thread;
  struct io_uring ring;
  int ring_fd;                 /* for MSG_RING from other shards */
  bool ring_exited;            /* the shard tore its ring down (read by main after join) */
  int listen_fd;
  int listen80_fd;             /* port-80 helper listener, -1 if none */
  int metrics_fd;              /* --metrics-listen listener, -1 if none */
  /* enum sleep_mode, set before waiting: producers wake a SLEEP_IDLE shard
   * (MSG_RING), never a SLEEP_BATCH one (it wakes by itself within
   * --batch-wait). Other shards read it every turn they publish to this
   * one, so it has a cache line to itself. */
  alignas(64) _Atomic int sleeping;
  /* Which shards published to this one since it last looked: a bit per
   * source, set by the source after publishing (atomic OR), taken by this
   * shard (exchange) before draining, so a turn reads the rings of the
   * sources that sent something, not all 3(n-1). Its own cache line(s);
   * the pointer is fixed before any shard runs. */
  _Atomic uint64_t *inbound;
  /* Provided buffer ring for multishot recv. The kernel takes buffers in
   * ring order, so whatever the ring holds is touched in turn: it holds only
   * buf_target of the nbufs buffers, topped up each turn from buf_free, a
   * stack (most recently returned on top, so refills reuse warm buffers). A
   * shard touches about buf_target buffers of its pool, not all of it; an
   * ENOBUFS doubles buf_target (up to nbufs), for good. */
  alignas(64) struct io_uring_buf_ring *br;
  uint8_t *bufs;
  uint32_t nbufs, buf_size, br_pending;
  uint16_t *buf_free;          /* bids not in the ring */
  uint32_t nfree, in_ring, buf_target;
  bool nobufs;                 /* an ENOBUFS this turn */
  int64_t now_ms;
  int64_t now_us;              /* the same instant in µs (packet queue-wait stamps) */
  /* Batched waits (shard.c, wait_events): arrivals (receives, accepts,
   * ring items; not our own send completions) counted per window decide
   * whether the coming sleeps gather events for --batch-wait. */
  int64_t rate_win_us;         /* the window's start */
  uint32_t rate_arrivals;      /* arrivals in the window so far */
  uint32_t turn_arrivals;      /* arrivals the last wake-up brought */
  uint32_t rate_conns;         /* conns that received in the window */
  uint32_t rate_win_id;        /* the window's number (conn->rate_win) */
  int64_t rate_pkts0;          /* stats pkts_recv at the window's start */
  bool batching;               /* the last window's rate makes batching pay */
  bool last_wait_batched;      /* the sleep just ended was a batched one */
  struct peer_table peers;
  struct list conns, hs_fifo, wr_fifo, ka_fifo, dirty, handoff_pending;
  struct list mesh_wr_fifo;    /* write deadlines of mesh peers (30 s, not -tcp-write-timeout) */
  struct list link_wr_fifo;    /* write deadlines of our mesh links (5 s) */
  /* -rate-config (core/recv_pause.c): the setting this shard applies (read
   * from srv->recv_lim at each tick), and its conns whose reads wait. */
  struct rate_cfg rl;
  uint32_t rl_gen;
  uint32_t rl_npaused;
  int64_t rl_next_ns;          /* the earliest rl.tat_ns of rl_paused */
  struct list rl_paused;
  struct region_shard *rg;     /* this shard's part of the region (region/) */
  /* (sender, receiver conn) pairs already reported with MSG_SAW. A miss only
   * costs a redundant message; the sender's set dedupes. A pair is forgotten
   * when the receiver hears PeerGone about the sender, or the report found
   * no sender (MSG_UNSAW): the same key back later is reported again. */
  uint64_t saw_cache[4096];
  /* MSG_UNSAW forgets at most this many pairs a second (relay.c): a sender
   * that stays unknown (a forwarding node this one does not watch) would
   * otherwise cost two messages per packet. */
  int64_t unsaw_ms;
  uint32_t unsaw_tokens;
  /* PeerGone(not here) made on this shard, limited per sender before it
   * crosses a ring (direct-mapped on the sender key's hash, one sender a
   * slot: relay.c, not_here_allowed): 1 token/s, 3 at most, full at first. */
  struct { int64_t ms; uint64_t hash; uint8_t tokens; } nothere_rl[256];
  uint32_t nconns;
  struct list *rtt_cursor;     /* next of conns for derp_tcp_rtt (operations/tcp_rtt.c) */
  int64_t rtt_lap_ms;          /* when its lap began */
  /* Pools. */
  struct pkt *free_pkts[3];
  uint32_t nfree_pkts[3];
  struct send_ctx *free_send;
  uint32_t nfree_send;
  /* Outbound rings that have staged items this turn (bitmap by target). */
  uint64_t *pending_pub;
  /* Control messages that must not be lost, waiting for room in the ring to
   * each target (shard_send_ctrl), in order; a bit per target that has some. */
  struct pkt **outbox_h, **outbox_t;
  uint64_t *outbox_pend;
  uint32_t outbox_n;
  struct stats stats;
  uint64_t rng;                /* xorshift state for keepalive jitter */
  uint32_t log_budget;         /* close-log lines left this second */
  uint32_t log_suppressed;
  int64_t log_window_ms;
  bool stopping;
  uint8_t accept_rearm;        /* listeners to re-arm at the next tick: bit 1 << enum listener */
  uint8_t accept_seen;         /* listeners with an accept completion since the last tick: same bits */
  uint8_t accept_backlog;      /* listeners whose queue held connections at the last tick: same bits */
  uint8_t accept_oneshot;      /* listeners with accept_nudge's single-shot accept in flight: same bits */
  struct stun_shard *stun;     /* STUN socket and buffers (stun/stun_server.c); NULL: -stun=false */
  int64_t stop_deadline_ms;
};

#define METRICS_CONNS_MAX 16 /* --metrics-listen connections open at once */

struct server {
  struct config cfg;
  derp_privkey priv;
  derp_key pub;
  char pub_hex[DERP_KEY_HEXLEN + 1];
  int nshards;
  struct shard *shards;
  uint8_t hash_key[16];
  uint16_t port;               /* bound port */
  uint16_t port80;             /* bound port of the port-80 helper, 0 if none */
  bool tls;                    /* new conns speak TLS (tls.c holds the SSL_CTX) */
  bool ktls;                   /* TLS conns move to kTLS after the handshake
                                  (the kernel has it and --ktls is not off) */
  /* Rings, [from * n + to]: packets; control messages (PeerGone, MSG_SAW);
   * handoffs. Separate so a flood of one cannot starve another. */
  struct spsc **data_q, **ctrl_q, **hand_q;
  void *ring_mem;      /* every ring's slots (one mapping, main.c) */
  size_t ring_mem_len;
  struct region *region;        /* mesh key, links (region/); read-only after start
                                  but for the links' atomics */
  struct admission *admission;  /* -verify-client-url, -verify-clients (admission/);
                                  NULL when off */
  _Atomic bool stopping;
  _Atomic bool handover;       /* stopping for a live upgrade: the listening
                                  sockets live on in the new process */
  _Atomic int64_t open_conns;  /* for --max-conns */
  _Atomic int64_t metrics_conns; /* --metrics-listen's, outside --max-conns (METRICS_CONNS_MAX):
                                    a scrape still answers while a flood holds the limit */
  struct rate_limiter accept_lim; /* -accept-connection-limit, all shards' main listeners */
  struct recv_limit_shared recv_lim; /* -rate-config in force (main thread writes) */
  _Atomic uint64_t next_conn_id;
  int max_conns;
  struct debug_state *debug;   /* operations/debug_http.c: /debug/ access rules;
                                  read-only after start */
};

static inline struct spsc *data_q(struct server *s, int from, int to) { return s->data_q[from * s->nshards + to]; }
static inline struct spsc *ctrl_q(struct server *s, int from, int to) { return s->ctrl_q[from * s->nshards + to]; }
static inline struct spsc *hand_q(struct server *s, int from, int to) { return s->hand_q[from * s->nshards + to]; }

/* key_hash: keyed SipHash of a key (clients choose keys; a keyed hash keeps
 * them from aiming at one shard or one bucket). owner = hash mod nshards.
 * Never 0 (0 marks "not known" and an empty hashset slot). */
uint64_t key_hash(const struct server *s, const derp_key *k);
static inline int owner_of(const struct server *s, uint64_t h) { return (int)(h % (uint64_t)s->nshards); }

int64_t now_ms(void);

/* shard.c */
int shard_spawn(struct shard *sh, pthread_barrier_t *bar, int *err);
struct io_uring_sqe *shard_sqe(struct shard *sh);
bool shard_push_ctrl(struct shard *sh, int to, struct pkt *m);
bool shard_push_hand(struct shard *sh, int to, struct conn *c);
bool shard_push_data(struct shard *sh, int to, struct pkt *p);
/* A control message that must not be lost (region): pushed now, or held in a
 * FIFO per target until the ring has room; order per target is kept. To this
 * shard itself it is handled at once. */
void shard_send_ctrl(struct shard *sh, int to, struct pkt *m);
void shard_recycle_buf(struct shard *sh, unsigned bid);
void shard_note_nobufs(struct shard *sh);
void shard_mark_dirty(struct shard *sh, struct conn *c);
bool shard_log_allowed(struct shard *sh);
void shard_send_restarting(struct shard *sh, struct conn *c);
void shards_wake_for_stop(struct server *s);

/* user_data tags in the low UD_TAG_BITS bits of a pointer (conns come from
 * calloc, aligned for max_align_t; STUN's ops are declared 16-aligned). */
#define UD_TAG_BITS 4
enum ud_tag { UD_NONE = 0, UD_ACCEPT = 1, UD_RECV = 2, UD_SEND = 3, UD_WAKE = 4, UD_HSRECV = 5,
              UD_MSGRING = 6, UD_ACCEPT80 = 7, UD_STUN = 8 };
_Static_assert(_Alignof(max_align_t) >= 16, "user_data tags need 16-byte aligned allocations");
struct region;
struct region_shard;
struct stun_shard;
#define BGID 0 /* provided buffer group of every shard's recv buffers */
#define UD_TAG_MASK ((uint64_t)(1u << UD_TAG_BITS) - 1)
static inline uint64_t ud_make(void *p, enum ud_tag t) {
  assert(((uintptr_t)p & UD_TAG_MASK) == 0);
  return (uint64_t)(uintptr_t)p | (uint64_t)t;
}
static inline enum ud_tag ud_tag(uint64_t ud) { return (enum ud_tag)(ud & UD_TAG_MASK); }
static inline void *ud_ptr(uint64_t ud) { return (void *)(uintptr_t)(ud & ~UD_TAG_MASK); }
_Static_assert(UD_STUN < (1 << UD_TAG_BITS), "user_data tags overflow their bits");

/* conn.c */
struct conn *conn_new(struct shard *sh, int fd, bool port80);
struct conn *conn_new_link(struct shard *sh, int fd);
void conn_start(struct conn *c);                 /* arm the first recv */
/* Cancel the handshake read in flight, if any (the conn is about to move:
 * an admission verdict came while it read on); it completes with -ECANCELED. */
void conn_cancel_hs_recv(struct conn *c);
void conn_on_hs_recv(struct conn *c, struct io_uring_cqe *cqe); /* single-shot handshake recv */
void conn_on_recv(struct conn *c, struct io_uring_cqe *cqe);
void conn_on_send(struct conn *c, int res);
/* Plaintext from the transport. p may be written to during the call (the
 * WebSocket layer unmasks in place): callers pass their own scratch memory,
 * never bytes that must stay as they are. */
int conn_input(struct conn *c, const uint8_t *p, size_t n);
/* The DERP stream itself (HTTP head, handshake, frames), past any WebSocket
 * framing. */
int conn_stream_input(struct conn *c, const uint8_t *p, size_t n);
void conn_close(struct conn *c, enum close_reason why, const char *detail);
void conn_flush(struct conn *c);
void conn_adopt(struct shard *sh, struct conn *c); /* handoff arrived */
void conn_establish(struct conn *c);             /* on the owner shard */
void conn_detach(struct conn *c);                /* before a handoff */
void conn_attach(struct shard *sh, struct conn *c);
void upgrade_retry_handoffs(struct shard *sh);
bool conn_queue_ctrl(struct conn *c, struct pkt *p);
/* As conn_queue_ctrl, past the control bound: a frame a conn sends at most
 * once (ServerInfo, a WebSocket close). */
bool conn_queue_ctrl_once(struct conn *c, struct pkt *p);
/* The conn's last words are queued (or none are due): it closes with why
 * once they, and its transport's goodbye, are written. */
void conn_close_after_send(struct conn *c, enum close_reason why);
/* A copy of n bytes as a control pkt; ws_raw: already WebSocket framing (or
 * the 101), no batch header. False if out of memory; past the control bound
 * the copy is dropped and counted, as conn_queue_ctrl does. */
bool conn_queue_copy(struct conn *c, const void *p, size_t n, bool ws_raw);
/* The WebSocket close frame, a copy, by conn_queue_ctrl_once; false: not queued (out
 * of memory, or the conn is closing or has said its last words). */
bool conn_queue_ws_close(struct conn *c, const void *p, size_t n);
bool conn_queue_wire(struct conn *c, struct pkt *p); /* false: refused (freed) */
void conn_queue_packet(struct conn *c, struct pkt *p);
/* A frame that must not be dropped to the control bound (a watcher's
 * presence frames: bounded by credits instead). */
void conn_queue_ctrl_nodrop(struct conn *c, struct pkt *p);
/* Arm the multishot receive of a conn made established outside the
 * handshake (an outbound mesh link). */
void conn_start_established(struct conn *c);
void conn_tick(struct shard *sh);                /* deadlines and keepalives */
/* The multishot receive of an established conn again (a pause ended), and
 * its cancel (a pause began): recv_armed and rx_cancel say which is in
 * flight. */
void conn_arm_recv(struct conn *c);
void conn_cancel_recv(struct conn *c);

/* recv_pause.c: -rate-config on the shard (see the file's head). */
void recv_pause_refresh(struct shard *sh);       /* at each tick: a new setting? */
/* Per frame, sh->rl.bps > 0: true if the conn is paused now (the caller
 * holds the rest of its bytes with recv_pause_hold). */
bool recv_pause_take(struct conn *c, uint32_t frame_len);
/* The same for the skipped frames of one input, summed (each already capped
 * at RECV_LIMIT_MIN_BURST): charged in pieces of that size, then paused; a
 * conn paused already is charged and stays paused (false). */
bool recv_pause_take_skipped(struct conn *c, uint64_t bytes);
/* Stream bytes that came while paused, kept for the resume. -1 after
 * closing the conn (past RECV_HELD_MAX or out of memory). */
int recv_pause_hold(struct conn *c, const uint8_t *p, size_t n);
/* After each frame of a mesh conn: true if its reads stop now because the
 * shard's outbox holds OUTBOX_PAUSE region messages, about 6 MiB of small
 * pkts (the caller holds the rest of its bytes with recv_pause_hold). */
#define OUTBOX_PAUSE 16384
/* PeerGone(disconnected) waits in the outbox rather than be lost to a full
 * ring, up to this many region messages waiting (about 24 MiB): a link drop
 * whose keys had hundreds of thousands of contacts here must not hold a
 * message for each. Past it they are dropped and counted (ctrl_drops); a
 * client keeps at most CONN_GONE_MAX of them anyway, and derper drops past
 * its per-client queue. */
#define OUTBOX_GONE_MAX (4 * OUTBOX_PAUSE)
bool recv_pause_outbox(struct conn *c);
void recv_pause_resume_due(struct shard *sh);    /* when now passes rl_next_ns */
void recv_pause_forget(struct conn *c);          /* the conn closes: unlink, free held */
void conn_destroy_all(struct shard *sh);
void conn_free_orphan(struct conn *c); /* a conn left in a ring at exit */
void conn_addr_str(const struct conn *c, char *out, size_t cap);

/* relay.c */
int relay_frame(struct conn *c, const struct derp_frame *f);
void relay_note_activity(struct conn *c); /* a duplicate conn spoke: it receives now */
void relay_register(struct conn *c);
void relay_unregister(struct conn *c);
void relay_deliver(struct shard *sh, struct pkt *p);   /* from another shard */
void relay_send_to_key(struct shard *sh, struct pkt *m); /* control frame for a key */
void peer_table_init(struct peer_table *t);
void peer_table_free(struct peer_table *t);

#endif
