/* conn_send.c: a connection's outgoing side on its shard: the control,
 * disco and data queues with their bounds and drop policy, and the writer
 * that keeps one send in flight, coalescing queued frames into it (through
 * the transport's wrap for TLS and WebSocket), with the write deadlines.
 *
 * Only the owning shard's thread touches a conn. The conn's lifecycle
 * (receive, close, reaping, timers) is conn.c; frames are made elsewhere
 * (relay.c, region/) and only queued here. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/core/conn_internal.h"
#include "server/log.h"
#include "server/region/region.h"
#include "server/server.h"
#include "server/protocol/upgrade.h"
#include "server/transport/websocket.h"

/* ---- outgoing queues ---------------------------------------------------- */

static void q_append(struct pkt **h, struct pkt **t, struct pkt *p) {
  p->next = NULL;
  if (*t) (*t)->next = p;
  else *h = p;
  *t = p;
}

static struct pkt *q_pop(struct pkt **h, struct pkt **t) {
  struct pkt *p = *h;
  if (!p) return NULL;
  *h = p->next;
  if (!*h) *t = NULL;
  p->next = NULL;
  return p;
}

/* A conn with close_after_send has queued its last words: it takes nothing
 * more. PeerGone frames (MSG_FRAME_TO_KEY) have their own bound, so a burst
 * of them neither crowds out pongs nor is cut at CONN_CTRL_MAX. false: not
 * queued (freed; counted when a bound refused it). */
static bool ctrl_enqueue(struct conn *c, struct pkt *p, bool bounded) {
  bool gone = p->kind == MSG_FRAME_TO_KEY;
  bool full = bounded && (gone ? c->ngone >= CONN_GONE_MAX : c->nctrl >= CONN_CTRL_MAX);
  if (c->state == CS_CLOSING || c->close_after_send || full) {
    if (full && c->state != CS_CLOSING && !c->close_after_send) STAT_INC(&c->sh->stats, ctrl_frames_dropped);
    pkt_free(c->sh, p);
    return false;
  }
  q_append(&c->ctrl_h, &c->ctrl_t, p);
  if (gone) c->ngone++;
  else c->nctrl++;
  if (c->state != CS_MOVING) shard_mark_dirty(c->sh, c);
  return true;
}

bool conn_queue_ctrl(struct conn *c, struct pkt *p) { return ctrl_enqueue(c, p, true); }

/* A frame a conn sends at most once (ServerInfo, a WebSocket close) passes
 * the control bound: the bound is for what a peer can ask for without end
 * (pongs), and pongs a client asked for and never read may have filled it
 * (64 WebSocket pings in the read that finished ClientInfo did); losing the
 * one-off frame would break the stream or end it without its close. */
bool conn_queue_ctrl_once(struct conn *c, struct pkt *p) { return ctrl_enqueue(c, p, false); }

/* A goodbye is bounded even where writes are not (-tcp-write-timeout 0): a
 * client that stopped reading would otherwise keep its conn, and its key,
 * for ever after a ClosePeer. derper's Close gives its close_notify 5 s.
 * With that flag at 0 wr_fifo holds only these, all GOODBYE_MS: still in
 * deadline order. Armed here for a send already stuck; submit_send re-arms
 * at each send of the goodbye. */
#define GOODBYE_MS 5000
static int64_t own_timeout_ms(const struct conn *c) { /* 0: none */
  return c->is_link   ? LINK_WRITE_TIMEOUT_MS
         : c->is_mesh ? MESH_WRITE_TIMEOUT_MS
                      : c->sh->srv->cfg.tcp_write_timeout_ms;
}

static int64_t write_timeout_ms(const struct conn *c) {
  int64_t wt = own_timeout_ms(c);
  return wt > 0 || !c->close_after_send ? wt : GOODBYE_MS;
}

static void arm_goodbye(struct conn *c) {
  if (c->state != CS_ESTABLISHED || own_timeout_ms(c) > 0 || list_linked(&c->dl_node)) return;
  c->deadline_ms = c->sh->now_ms + GOODBYE_MS;
  list_add_tail(&c->sh->wr_fifo, &c->dl_node);
}

enum close_reason conn_last_words_reason(const struct conn *c) {
  return c->close_reason != CLOSE_none ? (enum close_reason)c->close_reason : CLOSE_http_done;
}

/* The first reason stands: a WebSocket client's echo of our close frame
 * (websocket_close) must not recount a stop or a ClosePeer. */
void conn_close_after_send(struct conn *c, enum close_reason why) {
  if (c->close_after_send) return;
  ws_conn_goodbye(c, why == CLOSE_shutdown); /* a no-op unless WebSocket */
  c->close_reason = (uint8_t)why;
  c->close_after_send = 1;
  arm_goodbye(c);
  if (c->state != CS_MOVING) shard_mark_dirty(c->sh, c);
}

/* A watcher's presence batch (MSG_PRESENCE): bounded by the watch credits
 * (2 per shard), so not counted against CONN_CTRL_MAX, where 32 shards' or
 * more would crowd out the keepalives and pongs. */
void conn_queue_ctrl_nodrop(struct conn *c, struct pkt *p) {
  assert(p->kind == MSG_PRESENCE);
  if (c->state == CS_CLOSING || c->close_after_send) {
    pkt_free(c->sh, p);
    return;
  }
  q_append(&c->ctrl_h, &c->ctrl_t, p);
  if (c->state != CS_MOVING) shard_mark_dirty(c->sh, c);
}

static struct pkt *copy_pkt(struct conn *c, const void *p, size_t n, bool ws_raw) {
  struct pkt *m = pkt_alloc(c->sh, (uint32_t)n);
  if (!m) return NULL;
  memcpy(m->data, p, n);
  m->ws_raw = ws_raw;
  return m;
}

bool conn_queue_copy(struct conn *c, const void *p, size_t n, bool ws_raw) {
  struct pkt *m = copy_pkt(c, p, n, ws_raw);
  if (!m) return false;
  conn_queue_ctrl(c, m);
  return true;
}

/* The WebSocket close frame (one per conn: its close_sent), as a copy. */
bool conn_queue_ws_close(struct conn *c, const void *p, size_t n) {
  struct pkt *m = copy_pkt(c, p, n, true);
  return m && conn_queue_ctrl_once(c, m);
}

/* Wire bytes made by the transport outside wrap (TLS handshake flights,
 * alerts). Every record made later carries a later TLS sequence number, so
 * these must reach the socket before anything not yet wrapped: they go at the
 * front of the control queue, behind earlier wire pkts only. They are never
 * dropped to the queue bound like control frames (that would break the
 * stream); past a hard bound the caller closes the conn instead. */
bool conn_queue_wire(struct conn *c, struct pkt *p) {
  if (c->state == CS_CLOSING || c->nctrl >= 2 * CONN_CTRL_MAX) {
    pkt_free(c->sh, p);
    return false;
  }
  p->wire = 1;
  struct pkt **at = &c->ctrl_h;
  while (*at && (*at)->wire) at = &(*at)->next;
  p->next = *at;
  *at = p;
  if (!p->next) c->ctrl_t = p;
  c->nctrl++;
  if (c->state != CS_MOVING) shard_mark_dirty(c->sh, c);
  return true;
}

/* A link's queued bytes are counted in KiB, each packet rounded up the same
 * way when queued and when taken, so the sum is exact. */
static uint16_t pkt_kib(const struct pkt *p) { return (uint16_t)((p->len + 1023) >> 10); }

/* A link over LINK_QUEUE_KIB: its oldest packets go, data before disco. */
static void link_trim(struct conn *c, uint16_t adding) {
  while (c->link_kib + adding > LINK_QUEUE_KIB && (c->data_h || c->disco_h)) {
    bool d = c->data_h != NULL;
    struct pkt *o = d ? q_pop(&c->data_h, &c->data_t) : q_pop(&c->disco_h, &c->disco_t);
    if (d) c->ndata--;
    else c->ndisco--;
    c->link_kib -= pkt_kib(o);
    STAT_DROP_PKT(&c->sh->stats, mesh_queue, o);
    region_link_note_drop(c);
    pkt_free(c->sh, o);
  }
}

/* derper's policy: a full queue drops its oldest packet, so a receiver that
 * fell behind gets the freshest data and the sender never waits. */
void conn_queue_packet(struct conn *c, struct pkt *p) {
  struct shard *sh = c->sh;
  if (c->state != CS_ESTABLISHED || c->close_after_send) {
    STAT_DROP_PKT(&sh->stats, gone_disconnected, p);
    pkt_free(sh, p);
    return;
  }
  struct pkt **h = p->disco ? &c->disco_h : &c->data_h;
  struct pkt **t = p->disco ? &c->disco_t : &c->data_t;
  uint16_t *n = p->disco ? &c->ndisco : &c->ndata;
  uint16_t max = c->is_link ? LINK_QUEUE_MAX : CONN_QUEUE_MAX;
  if (*n >= max && !c->send) {
    /* A burst arrived within one loop turn (a ring drain) and nothing is
     * being written yet: start the write now rather than drop. Only a
     * receiver whose previous write is still pending loses packets. */
    conn_flush(c);
    if (c->state != CS_ESTABLISHED) {
      STAT_DROP_PKT(&sh->stats, gone_disconnected, p);
      pkt_free(sh, p);
      return;
    }
  }
  if (*n >= max) {
    struct pkt *o = q_pop(h, t);
    (*n)--;
    if (c->is_link) {
      c->link_kib -= pkt_kib(o);
      STAT_DROP_PKT(&sh->stats, mesh_queue, o);
      region_link_note_drop(c);
    } else {
      STAT_DROP_PKT(&sh->stats, queue_head, o);
    }
    pkt_free(sh, o);
  }
  if (c->is_link) {
    link_trim(c, pkt_kib(p));
    c->link_kib += pkt_kib(p);
  }
  q_append(h, t, p);
  (*n)++;
  shard_mark_dirty(sh, c);
}

static struct send_ctx *send_ctx_get(struct shard *sh) {
  struct send_ctx *x = sh->free_send;
  if (x) {
    sh->free_send = x->next_free;
    sh->nfree_send--;
  } else if (!(x = malloc(sizeof *x))) return NULL;
  x->pkts = NULL;
  x->niov = x->first = x->nhdr = 0;
  x->split = false;
  memset(&x->msg, 0, sizeof x->msg);
  return x;
}

/* Kept for reuse up to SEND_KEEP (about 1.2 MiB a shard); the rest go
 * back to malloc, so a burst of stuck receivers (a send each until its
 * write timeout) does not hold its peak for good. */
#define SEND_KEEP 1024
static void send_ctx_put(struct shard *sh, struct send_ctx *x) {
  if (sh->nfree_send >= SEND_KEEP) {
    free(x);
    return;
  }
  x->next_free = sh->free_send;
  sh->free_send = x;
  sh->nfree_send++;
}

/* The next frame to send, left queued. */
static struct pkt *peek_out(const struct conn *c) {
  return c->ctrl_h ? c->ctrl_h : c->disco_h ? c->disco_h : c->data_h;
}

/* Take the next frame to send: control first, then disco, then data. */
static struct pkt *next_out(struct conn *c) {
  struct pkt *p;
  if ((p = q_pop(&c->ctrl_h, &c->ctrl_t))) {
    if (p->kind == MSG_FRAME_TO_KEY) c->ngone--;
    else if (p->kind != MSG_PRESENCE) c->nctrl--; /* see conn_queue_ctrl_nodrop */
    return p;
  }
  if ((p = q_pop(&c->disco_h, &c->disco_t))) c->ndisco--;
  else if ((p = q_pop(&c->data_h, &c->data_t))) c->ndata--;
  else return NULL;
  if (c->is_link) c->link_kib -= pkt_kib(p);
  return p;
}

/* A short write re-arms the write deadline only if it moved at least this
 * much: a receiver that reads a trickle (less than 8 KiB/s at the default 2 s)
 * cannot keep a batch, and the packets it pins, pending for ever. */
#define SEND_PROGRESS_MIN 16384

/* A WebSocket message carries at most this many bytes: coder/websocket's
 * default read limit, which Tailscale's clients keep (net/wsconn never
 * raises it, v1.78.3 to 2026-08; a bigger message ends their connection).
 * A batch is one message; a frame larger than that (a packet over 32 KiB)
 * goes alone, cut into several messages, which wsconn reads as one byte
 * stream, as it does the frames of a batch. */
#define WS_MSG_MAX 32768

static void build_ws_split(struct send_ctx *x, struct pkt *p) {
  for (uint32_t off = 0, k = 0; off < p->len; off += WS_MSG_MAX, k++) {
    size_t n = p->len - off < WS_MSG_MAX ? p->len - off : WS_MSG_MAX;
    x->iov[x->niov++] = (struct iovec){.iov_base = x->ws_hdr[k], .iov_len = ws_batch_header(x->ws_hdr[k], n)};
    x->iov[x->niov++] = (struct iovec){.iov_base = p->data + off, .iov_len = n};
  }
  x->pkts = p;
  x->split = true;
}

/* fresh: a new batch (the write deadline starts); else the rest of a batch
 * after a short write of `wrote` bytes. */
static void submit_send(struct conn *c, bool fresh, size_t wrote) {
  struct send_ctx *x = c->send;
  struct io_uring_sqe *sqe = shard_sqe(c->sh);
  if (x->niov - x->first == 1) {
    /* One buffer (most sends at modest rates): a plain send spares the
     * kernel copying in a msghdr and importing an iovec. */
    io_uring_prep_send(sqe, c->fd, x->iov[x->first].iov_base, x->iov[x->first].iov_len, MSG_NOSIGNAL);
  } else {
    x->msg.msg_iov = &x->iov[x->first];
    x->msg.msg_iovlen = (size_t)(x->niov - x->first);
    io_uring_prep_sendmsg(sqe, c->fd, &x->msg, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data64(sqe, ud_make(c, UD_SEND));
  c->ops++;
  c->send_armed = 1;
  /* derper's: 30 s for mesh peers, 5 s for our own links (its mesh
   * client's ForwardPacket); each in a FIFO of its own, so that each FIFO
   * stays ordered by deadline. */
  struct shard *sh = c->sh;
  int64_t wt = write_timeout_ms(c);
  if (c->state == CS_ESTABLISHED && wt > 0 && (fresh || wrote >= SEND_PROGRESS_MIN)) {
    c->deadline_ms = sh->now_ms + wt;
    list_move_tail(c->is_link ? &sh->link_wr_fifo : c->is_mesh ? &sh->mesh_wr_fifo : &sh->wr_fifo, &c->dl_node);
  }
}


/* A frame is written: counted, then freed, except a watcher's MSG_PRESENCE,
 * which goes back to the shard that made it as its credit. */
static void sent(struct shard *sh, struct pkt *p) {
  if (p->kind == MSG_PRESENCE) {
    watch_presence_written(sh, p);
    return;
  }
  if (p->kind == MSG_PKT) {
    ops_queue_wait(&sh->stats.ops, (uint32_t)((uint32_t)sh->now_us - p->t_us)); /* mod 2^32 µs */
    STAT_INC(&sh->stats, pkts_sent);
    STAT_ADD(&sh->stats, bytes_sent, p->len - DERP_FRAME_HDR_LEN - DERP_KEY_LEN);
  }
  pkt_free(sh, p);
}

/* The transport copied the frames into its own wire bytes: they are written
 * as far as the queues are concerned. */
static void consume_wrapped(struct conn *c, struct send_ctx *x) {
  for (struct pkt *p = x->pkts, *n; p; p = n) {
    n = p->next;
    sent(c->sh, p);
  }
  x->pkts = NULL;
  x->nhdr = 0; /* a WebSocket header, if any, is inside the wire bytes now */
  x->split = false;
}

/* Coalesce every queued frame (up to the batch bounds) into one sendmsg. */
void conn_flush(struct conn *c) {
  if (c->state == CS_CLOSING) {
    if (c->ops == 0) conn_destroy(c);
    return;
  }
  if (c->state == CS_MOVING) {
    if (c->ops == 0) upgrade_move(c);
    return;
  }
  if (c->send) return;
  /* Last words (an HTTP reply, a WebSocket close) go out on the control
   * queue; what is queued behind them is dropped. */
  if (c->close_after_send && !c->ctrl_h) {
    int g = 0; /* the transport's goodbye, once: queued (1), none (0), closed (-1) */
    if (!c->goodbye_sent && c->xp->goodbye) {
      c->goodbye_sent = 1;
      g = c->xp->goodbye(c);
    }
    if (g < 0) return;
    if (g == 0) {
      conn_close(c, conn_last_words_reason(c), upgrade_detail(c));
      return;
    }
  }
  if (!c->ctrl_h && !c->disco_h && !c->data_h) return;
  struct send_ctx *x = send_ctx_get(c->sh);
  if (!x) { conn_close(c, CLOSE_nomem, "send context"); return; }
  struct pkt *tail = NULL;
  size_t bytes = 0;
  /* A batch holds one class of pkt: TLS handshake bytes already on the wire
   * (pkt->wire, sent as they are, at the front of the control queue), or
   * WebSocket frames already built (pkt->ws_raw: 101, pong, close), or DERP
   * frames, which on a WebSocket conn go under one binary frame header
   * (iov[0], filled in below). Only wire bytes skip the transport's wrap. */
  const struct pkt *first = peek_out(c);
  bool wire = first->wire, ws_raw = first->ws_raw;
  static_assert(2 * WS_SPLIT_MAX <= SEND_IOV_MAX, "a split frame fits one send");
  if (c->ws && !ws_raw && !wire) {
    if (first->len > WS_MSG_MAX && first->len <= (uint32_t)WS_SPLIT_MAX * WS_MSG_MAX)
      build_ws_split(x, next_out(c));
    else
      x->niov = x->nhdr = 1;
  }
  while (!x->split && x->niov < SEND_IOV_MAX && bytes < SEND_BYTES_MAX) {
    struct pkt *p = peek_out(c);
    if (!p || p->wire != wire || p->ws_raw != ws_raw) break;
    if (x->nhdr && bytes && bytes + p->len > WS_MSG_MAX) break;
    next_out(c);
    x->iov[x->niov].iov_base = p->data;
    x->iov[x->niov].iov_len = p->len;
    x->niov++;
    bytes += p->len;
    if (tail) tail->next = p;
    else x->pkts = p;
    tail = p;
  }
  if (x->nhdr)
    x->iov[0] = (struct iovec){.iov_base = x->ws_hdr[0], .iov_len = ws_batch_header(x->ws_hdr[0], bytes)};
  if (c->state == CS_ESTABLISHED && !wire) /* derp_buffered_write_frames */
    hist_observe(&c->sh->stats.ops, HIST_write_frames, x->split ? 1 : x->niov - x->nhdr);
  c->send = x;
  int w = wire || !c->xp->wrap ? 0 : c->xp->wrap(c, x);
  if (w < 0) {
    conn_release_send(c, true);
    conn_close(c, CLOSE_write_error, "transport");
    return;
  }
  if (w > 0) consume_wrapped(c, x);
  submit_send(c, true, 0);
}

void conn_release_send(struct conn *c, bool count_drops) {
  struct send_ctx *x = c->send;
  struct shard *sh = c->sh;
  for (struct pkt *p = x->pkts; p;) {
    struct pkt *n = p->next;
    if (count_drops && p->kind == MSG_PKT) STAT_DROP_PKT(&sh->stats, write_error, p);
    pkt_free(sh, p);
    p = n;
  }
  send_ctx_put(sh, x);
  c->send = NULL;
  if (c->xp->sent) c->xp->sent(c); /* the transport's wire buffer is free again */
}

/* Account for res bytes written: free whole frames, trim a partial one. */
static void advance_send(struct conn *c, size_t res) {
  struct send_ctx *x = c->send;
  struct shard *sh = c->sh;
  while (x->first < x->niov && res >= x->iov[x->first].iov_len) {
    res -= x->iov[x->first].iov_len;
    /* An iovec ends a pkt unless it is the batch's WebSocket header or a
     * split frame's header or chunk before its last (x->pkts is NULL once
     * the transport wrapped the batch). */
    bool ends_pkt = x->first >= x->nhdr && (!x->split || x->first == x->niov - 1);
    struct pkt *p = ends_pkt ? x->pkts : NULL;
    if (p) {
      x->pkts = p->next;
      sent(sh, p);
    }
    x->first++;
  }
  if (x->first < x->niov) {
    x->iov[x->first].iov_base = (uint8_t *)x->iov[x->first].iov_base + res;
    x->iov[x->first].iov_len -= res;
  }
}

void conn_on_send(struct conn *c, int res) {
  struct shard *sh = c->sh;
  c->ops--;
  c->send_armed = 0;
  STAT_INC(&sh->stats, sends);
  if (c->state == CS_CLOSING) {
    /* Closed while the send was in flight (an EOF in the same batch of
     * completions): what it wrote was sent, only the rest is dropped. */
    if (res > 0) advance_send(c, (size_t)res);
    conn_release_send(c, true);
    if (c->ops == 0) shard_mark_dirty(sh, c);
    return;
  }
  if (res < 0) {
    conn_release_send(c, true);
    conn_close(c, CLOSE_write_error, strerror(-res));
    return;
  }
  advance_send(c, (size_t)res);
  if (c->send->first < c->send->niov) { /* short write: finish it first */
    submit_send(c, false, (size_t)res);
    return;
  }
  conn_release_send(c, false);
  if (c->state == CS_ESTABLISHED && list_linked(&c->dl_node)) list_del(&c->dl_node);
  shard_mark_dirty(sh, c); /* more queued, close_after_send, or a pending move */
}
