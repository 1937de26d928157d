/* conn.c: a connection's I/O on its shard: receive, the outgoing queues, the
 * one-send-in-flight writer, deadlines, keepalives and close.
 *
 * Owns struct conn's lifecycle. The handshake (HTTP, ServerKey, ClientInfo,
 * handoff) is upgrade.c; what frames mean is relay.c. Only the owning shard's
 * thread touches a conn. A conn is freed only when no SQE refers to it
 * (ops == 0): conn_close shuts the socket down, which completes every pending
 * op, and the flush pass reaps it. */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "server/log.h"
#include "server/operations/tcp_rtt.h"
#include "server/region/region.h"
#include "server/server.h"
#include "server/protocol/upgrade.h"
#include "server/transport/websocket.h"

/* As Go 1.23 sets up derper's accepted conns: -tcp-keepalive-time is the
 * idle time (0: Go's 15 s; negative: no keepalive), probes every 15 s, 9 of
 * them; -tcp-user-timeout in ms (0: the kernel's default). */
static void set_sockopts(int fd, const struct config *cfg) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (cfg->tcp_keepalive_ms >= 0) {
    int idle = cfg->tcp_keepalive_ms ? (int)((cfg->tcp_keepalive_ms + 999) / 1000) : 15;
    int intvl = 15, cnt = 9;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  int user_timeout_ms = (int)cfg->tcp_user_timeout_ms;
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

static void read_peer_addr(struct conn *c) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  memset(&c->addr, 0, sizeof c->addr);
  c->addr.sin6_family = AF_INET6;
  if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET6) {
    c->addr = *(struct sockaddr_in6 *)&ss;
  } else if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    c->addr.sin6_port = a->sin_port;
    c->addr.sin6_addr.s6_addr[10] = 0xff;
    c->addr.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&c->addr.sin6_addr.s6_addr[12], &a->sin_addr, 4);
  }
}

void conn_addr_str(const struct conn *c, char *out, size_t cap) {
  char ip[INET6_ADDRSTRLEN];
  const struct in6_addr *a = &c->addr.sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(a)) {
    inet_ntop(AF_INET, &a->s6_addr[12], ip, sizeof ip);
    snprintf(out, cap, "%s:%u", ip, ntohs(c->addr.sin6_port));
  } else {
    inet_ntop(AF_INET6, a, ip, sizeof ip);
    snprintf(out, cap, "[%s]:%u", ip, ntohs(c->addr.sin6_port));
  }
}

/* Empty list nodes, and the conn counted on its shard (every conn_new*). */
static void conn_register(struct shard *sh, struct conn *c) {
  list_init(&c->dl_node);
  list_init(&c->ka_node);
  list_init(&c->dirty_node);
  list_init(&c->rl_node);
  list_add_tail(&sh->conns, &c->all_node);
  sh->nconns++;
  STAT_INC(&sh->stats, cur_conns);
}

struct conn *conn_new(struct shard *sh, int fd, bool port80) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->hs = upgrade_new();
  if (!c->hs) { free(c); return NULL; }
  c->fd = fd;
  c->sh = sh;
  c->state = CS_HTTP;
  c->xp = &transport_plain;
  c->port80 = port80;
  if (sh->srv->tls && !port80 && transport_tls_attach(c) < 0) { /* TLS from the first byte */
    upgrade_free(c);
    free(c);
    return NULL;
  }
  c->id = atomic_fetch_add_explicit(&sh->srv->next_conn_id, 1, memory_order_relaxed) + 1;
  c->nothere_tokens = 3;
  set_sockopts(fd, &sh->srv->cfg);
  read_peer_addr(c);
  derp_frame_reader_init(&c->rd, DERP_FROM_CLIENT);
  conn_register(sh, c);
  c->deadline_ms = sh->now_ms + sh->srv->cfg.handshake_timeout_ms;
  list_add_tail(&sh->hs_fifo, &c->dl_node);
  return c;
}

/* An outbound mesh link, already through its handshake (region/link.c):
 * it reads frames a server sends, and answers to the mesh write timeout. */
struct conn *conn_new_link(struct shard *sh, int fd) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->fd = fd;
  c->sh = sh;
  c->state = CS_ESTABLISHED;
  c->xp = &transport_plain;
  c->is_link = 1;
  c->is_mesh = 1;
  c->id = atomic_fetch_add_explicit(&sh->srv->next_conn_id, 1, memory_order_relaxed) + 1;
  set_sockopts(fd, &sh->srv->cfg);
  read_peer_addr(c);
  derp_frame_reader_init(&c->rd, DERP_FROM_SERVER);
  conn_register(sh, c);
  atomic_fetch_add_explicit(&sh->srv->open_conns, 1, memory_order_relaxed);
  return c;
}

/* Handshake reads are single-shot, so that when ClientInfo is complete no
 * recv is in flight and the conn can move shards at once. */
static void arm_hs_recv(struct conn *c) {
  struct io_uring_sqe *sqe = shard_sqe(c->sh);
  io_uring_prep_recv(sqe, c->fd, NULL, c->sh->buf_size, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BGID;
  io_uring_sqe_set_data64(sqe, ud_make(c, UD_HSRECV));
  c->ops++;
}

/* A paced conn (-rate-config) reads one buffer per recv: a multishot recv
 * would take in all its socket holds at each resume and relay that at once. */
static void arm_recv(struct conn *c) {
  struct io_uring_sqe *sqe = shard_sqe(c->sh);
  if (c->rx_single) io_uring_prep_recv(sqe, c->fd, NULL, c->sh->buf_size, 0);
  else io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BGID;
  io_uring_sqe_set_data64(sqe, ud_make(c, UD_RECV));
  c->ops++;
  c->recv_armed = 1;
}

void conn_arm_recv(struct conn *c) { arm_recv(c); }

/* Ends the multishot recv (a -rate-config pause): it completes with
 * -ECANCELED, or with data and no MORE flag if it was finishing anyway. */
void conn_cancel_recv(struct conn *c) {
  struct io_uring_sqe *sqe = shard_sqe(c->sh);
  io_uring_prep_cancel64(sqe, ud_make(c, UD_RECV), 0);
  io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_NONE));
  c->rx_cancel = 1;
}

void conn_start(struct conn *c) { arm_hs_recv(c); }

void conn_cancel_hs_recv(struct conn *c) {
  if (c->ops == 0) return;
  struct io_uring_sqe *sqe = shard_sqe(c->sh);
  io_uring_prep_cancel64(sqe, ud_make(c, UD_HSRECV), 0);
  io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_NONE));
}

static uint32_t jitter_ms(struct shard *sh);

void conn_start_established(struct conn *c) {
  struct shard *sh = c->sh;
  c->keepalive_ms = sh->now_ms + sh->srv->cfg.keepalive_ms + jitter_ms(sh);
  list_add_tail(&sh->ka_fifo, &c->ka_node);
  shard_mark_dirty(sh, c);
  arm_recv(c);
}

/* A failed read: EOF is a normal goodbye, anything else is logged. */
static void close_on_read(struct conn *c, int res) {
  if (res == 0) conn_close(c, CLOSE_eof, NULL);
  else conn_close(c, CLOSE_read_error, strerror(-res));
}

/* Both recv kinds land here; hs tells whether it was the single-shot one. */
static void on_recv(struct conn *c, struct io_uring_cqe *cqe, bool hs) {
  struct shard *sh = c->sh;
  bool more = !hs && (cqe->flags & IORING_CQE_F_MORE);
  int res = cqe->res;
  if (!more) c->ops--;
  if (!more && !hs) c->recv_armed = 0;
  if (res > 0) {
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    const uint8_t *p = sh->bufs + (size_t)bid * sh->buf_size;
    if (c->state != CS_CLOSING) {
      if (c->xp->recv) c->xp->recv(c, p, (size_t)res);
      else conn_input(c, p, (size_t)res);
    }
    shard_recycle_buf(sh, bid);
  } else if (res == -ENOBUFS) {
    STAT_INC(&sh->stats, recv_nobufs); /* buffers come back this turn; re-arm */
    shard_note_nobufs(sh);
  } else if (res == -ECANCELED && (hs ? c->state == CS_MOVING : c->rx_cancel)) {
    /* conn_cancel_hs_recv: the conn moves now; conn_cancel_recv: paused */
  } else if (c->state != CS_CLOSING && !(res < 0 && c->xp->recv_error && c->xp->recv_error(c, res))) {
    close_on_read(c, res);
  }
  if (c->state == CS_CLOSING) {
    if (c->ops == 0) shard_mark_dirty(sh, c);
    return;
  }
  if (more) return;
  if (!hs) c->rx_cancel = 0;
  if (c->state == CS_ESTABLISHED) {
    if (!c->rx_paused) arm_recv(c); /* else recv_pause_resume_due arms it */
  }
  else if (c->state == CS_HTTP || c->state == CS_CLIENT_INFO) arm_hs_recv(c);
  /* CS_MOVING: no read until the owner shard adopts it; the flush pass moves it. */
  else if (c->ops == 0) shard_mark_dirty(sh, c);
}

void conn_on_recv(struct conn *c, struct io_uring_cqe *cqe) { on_recv(c, cqe, false); }
void conn_on_hs_recv(struct conn *c, struct io_uring_cqe *cqe) { on_recv(c, cqe, true); }

/* Plaintext from the transport. Returns -1 once the conn is closing. */
int conn_input(struct conn *c, const uint8_t *p, size_t n) {
  if (c->ws) return ws_conn_input(c, p, n); /* unwraps, then conn_stream_input */
  return conn_stream_input(c, p, n);
}

int conn_stream_input(struct conn *c, const uint8_t *p, size_t n) {
  if (c->state != CS_ESTABLISHED) return upgrade_input(c, p, n);
  if (c->rx_paused) return recv_pause_hold(c, p, n); /* -rate-config: later */
  while (c->state == CS_ESTABLISHED) {
    struct derp_frame f;
    enum derp_read_status st = derp_frame_read(&c->rd, &p, &n, &f);
    if (st == DERP_READ_MORE) return 0;
    if (st == DERP_READ_NOMEM) { conn_close(c, CLOSE_nomem, "frame buffer"); break; }
    if (st == DERP_READ_ERROR) {
      char d[96];
      if (f.type < 32 && (c->rd.reject_types & (1u << f.type))) {
        snprintf(d, sizeof d, "%s from a client without the mesh key", derp_frame_type_name(f.type));
        conn_close(c, CLOSE_not_mesh, d);
      } else {
        snprintf(d, sizeof d, "%s frame with length %u", derp_frame_type_name(f.type), f.len);
        conn_close(c, CLOSE_frame_length, d);
      }
      break;
    }
    /* -rate-config: every client frame counts, mesh peers' none; the
     * frame that runs the bucket into debt passes, the bytes behind it wait. */
    bool pause = c->sh->rl.bps && !c->is_mesh && recv_pause_take(c, f.len);
    if (relay_frame(c, &f) < 0) break;
    if (pause) {
      if (n && c->state == CS_ESTABLISHED) recv_pause_hold(c, p, n);
      break;
    }
  }
  if (c->rd.skipped_frames) {
    STAT_ADD(&c->sh->stats, unknown_frames, (int64_t)c->rd.skipped_frames);
    c->rd.skipped_frames = 0;
  }
  return c->state == CS_CLOSING ? -1 : 0;
}

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

/* A conn with close_after_send has queued its last words: it takes nothing more. */
void conn_queue_ctrl(struct conn *c, struct pkt *p) {
  if (c->state == CS_CLOSING || c->close_after_send || c->nctrl >= CONN_CTRL_MAX) {
    pkt_free(c->sh, p);
    return;
  }
  q_append(&c->ctrl_h, &c->ctrl_t, p);
  c->nctrl++;
  if (c->state != CS_MOVING) shard_mark_dirty(c->sh, c);
}

void conn_queue_ctrl_nodrop(struct conn *c, struct pkt *p) {
  if (c->state == CS_CLOSING || c->close_after_send) {
    pkt_free(c->sh, p);
    return;
  }
  q_append(&c->ctrl_h, &c->ctrl_t, p);
  c->nctrl++;
  if (c->state != CS_MOVING) shard_mark_dirty(c->sh, c);
}

bool conn_queue_copy(struct conn *c, const void *p, size_t n, bool ws_raw) {
  struct pkt *m = pkt_alloc(c->sh, (uint32_t)n);
  if (!m) return false;
  memcpy(m->data, p, n);
  m->ws_raw = ws_raw;
  conn_queue_ctrl(c, m);
  return true;
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

/* derper's policy: a full queue drops its oldest packet, so a receiver that
 * fell behind gets the freshest data and the sender never waits. */
void conn_queue_packet(struct conn *c, struct pkt *p) {
  struct shard *sh = c->sh;
  if (c->state != CS_ESTABLISHED || c->close_after_send) {
    STAT_DROP_T(&sh->stats, gone_disconnected, p->disco, 1);
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
      STAT_DROP_T(&sh->stats, gone_disconnected, p->disco, 1);
      pkt_free(sh, p);
      return;
    }
  }
  if (*n >= max) {
    pkt_free(sh, q_pop(h, t));
    (*n)--;
    if (c->is_link) {
      STAT_DROP_T(&sh->stats, mesh_queue, p->disco, 1);
      region_link_note_drop(c);
    } else {
      STAT_DROP_T(&sh->stats, queue_head, p->disco, 1); /* same queue: same kind */
    }
  }
  q_append(h, t, p);
  (*n)++;
  shard_mark_dirty(sh, c);
}

static struct send_ctx *send_ctx_get(struct shard *sh) {
  struct send_ctx *x = sh->free_send;
  if (x) sh->free_send = x->next_free;
  else if (!(x = malloc(sizeof *x))) return NULL;
  x->pkts = NULL;
  x->niov = x->first = x->nhdr = 0;
  memset(&x->msg, 0, sizeof x->msg);
  return x;
}

static void send_ctx_put(struct shard *sh, struct send_ctx *x) {
  x->next_free = sh->free_send;
  sh->free_send = x;
}

/* The next frame to send, left queued. */
static struct pkt *peek_out(const struct conn *c) {
  return c->ctrl_h ? c->ctrl_h : c->disco_h ? c->disco_h : c->data_h;
}

/* Take the next frame to send: control first, then disco, then data. */
static struct pkt *next_out(struct conn *c) {
  struct pkt *p;
  if ((p = q_pop(&c->ctrl_h, &c->ctrl_t))) { c->nctrl--; return p; }
  if ((p = q_pop(&c->disco_h, &c->disco_t))) { c->ndisco--; return p; }
  if ((p = q_pop(&c->data_h, &c->data_t))) { c->ndata--; return p; }
  return NULL;
}

/* A short write re-arms the write deadline only if it moved at least this
 * much: a receiver that reads a trickle (less than 8 KiB/s at the default 2 s)
 * cannot keep a batch, and the packets it pins, pending for ever. */
#define SEND_PROGRESS_MIN 16384

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
  /* derper's: 30 s for mesh peers, 5 s for our own links (its mesh
   * client's ForwardPacket); each in a FIFO of its own, so that each FIFO
   * stays ordered by deadline. */
  struct shard *sh = c->sh;
  int64_t wt = c->is_link   ? LINK_WRITE_TIMEOUT_MS
               : c->is_mesh ? MESH_WRITE_TIMEOUT_MS
                            : sh->srv->cfg.tcp_write_timeout_ms;
  if (c->state == CS_ESTABLISHED && wt > 0 && (fresh || wrote >= SEND_PROGRESS_MIN)) {
    c->deadline_ms = sh->now_ms + wt;
    list_move_tail(c->is_link ? &sh->link_wr_fifo : c->is_mesh ? &sh->mesh_wr_fifo : &sh->wr_fifo, &c->dl_node);
  }
}

static void destroy(struct conn *c);
static void release_send(struct conn *c, bool count_drops);

static void count_sent(struct shard *sh, struct pkt *p) {
  if (p->kind == MSG_PRESENCE) watch_presence_written(sh, p); /* the credit goes back */
  if (p->kind != MSG_PKT) return;
  ops_queue_wait(&sh->stats.ops, (uint32_t)((uint32_t)sh->now_us - p->t_us)); /* mod 2^32 µs */
  STAT_INC(&sh->stats, pkts_sent);
  STAT_ADD(&sh->stats, bytes_sent, p->len - DERP_FRAME_HDR_LEN - DERP_KEY_LEN);
}

/* The transport copied the frames into its own wire bytes: they are written
 * as far as the queues are concerned. */
static void consume_wrapped(struct conn *c, struct send_ctx *x) {
  for (struct pkt *p = x->pkts, *n; p; p = n) {
    n = p->next;
    count_sent(c->sh, p);
    pkt_free(c->sh, p);
  }
  x->pkts = NULL;
  x->nhdr = 0; /* a WebSocket header, if any, is inside the wire bytes now */
}

/* Coalesce every queued frame (up to the batch bounds) into one sendmsg. */
void conn_flush(struct conn *c) {
  if (c->state == CS_CLOSING) {
    if (c->ops == 0) destroy(c);
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
    conn_close(c, c->close_reason ? c->close_reason : CLOSE_http_done, upgrade_detail(c));
    return;
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
  if (c->ws && !ws_raw && !wire) x->niov = x->nhdr = 1;
  while (x->niov < SEND_IOV_MAX && bytes < SEND_BYTES_MAX) {
    struct pkt *p = peek_out(c);
    if (!p || p->wire != wire || p->ws_raw != ws_raw) break;
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
    x->iov[0] = (struct iovec){.iov_base = x->ws_hdr, .iov_len = ws_batch_header(x->ws_hdr, bytes)};
  if (c->state == CS_ESTABLISHED && !wire) /* derp_buffered_write_frames */
    hist_observe(&c->sh->stats.ops, HIST_write_frames, x->niov - x->nhdr);
  c->send = x;
  int w = wire || !c->xp->wrap ? 0 : c->xp->wrap(c, x);
  if (w < 0) {
    release_send(c, true);
    conn_close(c, CLOSE_write_error, "transport");
    return;
  }
  if (w > 0) consume_wrapped(c, x);
  submit_send(c, true, 0);
}

static void release_send(struct conn *c, bool count_drops) {
  struct send_ctx *x = c->send;
  struct shard *sh = c->sh;
  for (struct pkt *p = x->pkts; p;) {
    struct pkt *n = p->next;
    if (count_drops && p->kind == MSG_PKT) STAT_DROP_T(&sh->stats, write_error, p->disco, 1);
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
    /* NULL when the transport wrapped the batch; none for a WebSocket header */
    struct pkt *p = x->first >= x->nhdr ? x->pkts : NULL;
    if (p) {
      x->pkts = p->next;
      count_sent(sh, p);
      pkt_free(sh, p);
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
  STAT_INC(&sh->stats, sends);
  if (c->state == CS_CLOSING) {
    release_send(c, true);
    if (c->ops == 0) shard_mark_dirty(sh, c);
    return;
  }
  if (res < 0) {
    release_send(c, true);
    conn_close(c, CLOSE_write_error, strerror(-res));
    return;
  }
  advance_send(c, (size_t)res);
  if (c->send->first < c->send->niov) { /* short write: finish it first */
    submit_send(c, false, (size_t)res);
    return;
  }
  release_send(c, false);
  if (c->state == CS_ESTABLISHED && list_linked(&c->dl_node)) list_del(&c->dl_node);
  shard_mark_dirty(sh, c); /* more queued, close_after_send, or a pending move */
}

/* ---- adoption, close, reaping ------------------------------------------- */

void conn_attach(struct shard *sh, struct conn *c) {
  c->sh = sh;
  list_add_tail(&sh->conns, &c->all_node);
  sh->nconns++;
  STAT_INC(&sh->stats, cur_conns);
}

void conn_adopt(struct shard *sh, struct conn *c) {
  conn_attach(sh, c);
  STAT_INC(&sh->stats, handoffs);
  if (sh->stopping && !atomic_load(&sh->srv->handover)) {
    conn_close(c, CLOSE_shutdown, NULL);
    return;
  }
  conn_establish(c);
}

/* derper adds up to 5 s to its 60 s interval; keep that ratio for shorter
 * intervals so a keepalive never arrives late by more than 1/12 of one. */
static uint32_t jitter_ms(struct shard *sh) {
  uint64_t x = sh->rng;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  sh->rng = x;
  int64_t span = sh->srv->cfg.keepalive_ms / 12;
  if (span > 5000) span = 5000;
  return span > 0 ? (uint32_t)(x % (uint64_t)span) : 0;
}

_Static_assert(STAT_conns_tls == STAT_conns_plain + XP_TLS && STAT_conns_ktls == STAT_conns_plain + XP_KTLS,
               "derpd_conns_mode counters follow enum xp_mode");

/* On the owner shard: register, send ServerInfo and whatever else is queued,
 * run the frames that arrived behind ClientInfo, then start reading. */
void conn_establish(struct conn *c) {
  struct shard *sh = c->sh;
  c->state = CS_ESTABLISHED;
  /* A late ClientInfo is skipped unbuffered; mesh-only frames from a client
   * without the mesh key fail at their header (derper closes there too). */
  c->rd.skip_types = 1u << DERP_FRAME_CLIENT_INFO;
  if (!c->is_mesh)
    c->rd.reject_types = (1u << DERP_FRAME_WATCH_CONNS) | (1u << DERP_FRAME_CLOSE_PEER) |
                         (1u << DERP_FRAME_FORWARD_PACKET);
  relay_register(c);
  if (c->state != CS_ESTABLISHED) return; /* closed: out of memory */
  tcp_rtt_first(c);
  /* deadline_ms is still the handshake deadline set at accept. */
  hist_observe(&sh->stats.ops, HIST_handshake,
               sh->now_ms - (c->deadline_ms - sh->srv->cfg.handshake_timeout_ms));
  stat_add_slot(&sh->stats.v[STAT_conns_plain + c->xp->mode], 1); /* derpd_conns_mode{mode} */
  c->keepalive_ms = sh->now_ms + sh->srv->cfg.keepalive_ms + jitter_ms(sh);
  list_add_tail(&sh->ka_fifo, &c->ka_node);
  shard_mark_dirty(sh, c);
  upgrade_finish(c); /* feeds carried bytes through conn_input, frees hs */
  if (c->state != CS_ESTABLISHED) return;
  if (!c->rx_paused) arm_recv(c); /* else -rate-config's resume does */
  if (sh->stopping) shard_send_restarting(sh, c); /* came in during a live upgrade */
}

static void drop_queues(struct conn *c) {
  struct shard *sh = c->sh;
  STAT_DROP_T(&sh->stats, gone_disconnected, true, c->ndisco);
  STAT_DROP_T(&sh->stats, gone_disconnected, false, c->ndata);
  pkt_free_list(sh, c->ctrl_h);
  pkt_free_list(sh, c->disco_h);
  pkt_free_list(sh, c->data_h);
  c->ctrl_h = c->ctrl_t = c->disco_h = c->disco_t = c->data_h = c->data_t = NULL;
  c->nctrl = c->ndisco = c->ndata = 0;
}

static bool reason_is_quiet(enum close_reason why) {
  return why == CLOSE_eof || why == CLOSE_http_done || why == CLOSE_shutdown;
}

void conn_close(struct conn *c, enum close_reason why, const char *detail) {
  if (c->state == CS_CLOSING) return;
  struct shard *sh = c->sh;
  uint8_t prev = c->state;
  c->state = CS_CLOSING;
  c->close_reason = (uint8_t)why;
  STAT_CLOSE(&sh->stats, why);
  if (!detail && c->hs && (why == CLOSE_http_bad)) detail = upgrade_detail(c);
  int lvl = reason_is_quiet(why) ? LOG_DEBUG : LOG_INFO;
  if (log_get_level() >= lvl && shard_log_allowed(sh)) {
    char addr[64], key[DERP_KEY_STRLEN] = "-";
    conn_addr_str(c, addr, sizeof addr);
    if (prev == CS_ESTABLISHED || prev == CS_MOVING) derp_key_format(&c->key, key);
    log_msg(lvl, "shard %d: conn %llu %s %s: closed: %s%s%s", sh->id, (unsigned long long)c->id,
            addr, key, close_reason_name(why), detail ? ": " : "", detail ? detail : "");
  }
  if (prev == CS_ESTABLISHED) relay_unregister(c);
  if (c->is_watcher) watch_conn_closed(c);
  if (c->is_link) link_conn_closed(c);
  if (list_linked(&c->dl_node)) list_del(&c->dl_node);
  if (list_linked(&c->ka_node)) list_del(&c->ka_node);
  recv_pause_forget(c);
  drop_queues(c);
  shutdown(c->fd, SHUT_RDWR); /* completes pending recv/send promptly */
  /* And cancel them by their user_data, which the kernel finds in a hash: a
   * cancel by fd scans every request in flight on the ring, so closing many
   * connections at once (a stop, a flood's end) cost O(n) each. */
  static const enum ud_tag kinds[] = {UD_HSRECV, UD_RECV, UD_SEND};
  for (size_t k = 0; c->ops > 0 && k < sizeof kinds / sizeof kinds[0]; k++) {
    struct io_uring_sqe *sqe = shard_sqe(sh);
    io_uring_prep_cancel64(sqe, ud_make(c, kinds[k]), IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_NONE));
  }
  shard_mark_dirty(sh, c); /* reaped by conn_flush once ops == 0 */
}

static void free_conn_memory(struct conn *c) {
  if (c->fd >= 0) close(c->fd);
  if (c->xp->destroy) c->xp->destroy(c);
  upgrade_free(c);
  ws_conn_free(c);
  derp_frame_reader_reset(&c->rd);
  recv_pause_forget(c);
  free(c);
}

static void destroy(struct conn *c) {
  struct shard *sh = c->sh;
  if (c->send) release_send(c, true);
  drop_queues(c);
  tcp_rtt_forget(c);
  list_del(&c->all_node);
  if (list_linked(&c->dirty_node)) list_del(&c->dirty_node);
  if (list_linked(&c->dl_node)) list_del(&c->dl_node);
  if (list_linked(&c->ka_node)) list_del(&c->ka_node);
  sh->nconns--;
  STAT_ADD(&sh->stats, cur_conns, -1);
  if (c->ws) STAT_ADD(&sh->stats, ws_conns, -1);
  atomic_fetch_sub_explicit(&sh->srv->open_conns, 1, memory_order_relaxed);
  free_conn_memory(c);
}

/* Detach a conn from its shard before it moves (upgrade.c). */
void conn_detach(struct conn *c) {
  struct shard *sh = c->sh;
  tcp_rtt_forget(c);
  list_del(&c->all_node);
  if (list_linked(&c->dirty_node)) list_del(&c->dirty_node);
  c->dirty = 0;
  if (list_linked(&c->dl_node)) list_del(&c->dl_node);
  sh->nconns--;
  STAT_ADD(&sh->stats, cur_conns, -1);
}

void conn_free_orphan(struct conn *c) {
  for (struct pkt *q[3] = {c->ctrl_h, c->disco_h, c->data_h}, **it = q; it < q + 3; it++)
    for (struct pkt *p = *it; p;) { struct pkt *n = p->next; free(p); p = n; }
  free_conn_memory(c);
}

/* At shard exit: whatever is left is freed; in-flight ops died with the ring. */
void conn_destroy_all(struct shard *sh) {
  while (!list_empty(&sh->conns)) {
    struct conn *c = list_entry(sh->conns.next, struct conn, all_node);
    if (c->state == CS_ESTABLISHED) relay_unregister(c);
    c->state = CS_CLOSING;
    if (list_linked(&c->dl_node)) list_del(&c->dl_node);
    if (list_linked(&c->ka_node)) list_del(&c->ka_node);
    destroy(c);
  }
}

/* ---- timers: three FIFOs, each ordered by deadline because every entry in
 * one FIFO was added with the same timeout (keepalive jitter aside, which can
 * delay a keepalive by at most the 5 s jitter). ---------------------------- */

static void tick_keepalives(struct shard *sh) {
  while (!list_empty(&sh->ka_fifo)) {
    struct conn *c = list_entry(sh->ka_fifo.next, struct conn, ka_node);
    if (c->keepalive_ms > sh->now_ms) break;
    /* A frame started but not one more byte of it for a whole keepalive
     * interval: the peer pins up to 64 KiB of assembly buffer; cut it. */
    /* Not while -rate-config held its reads back in this interval. */
    bool stalled = derp_frame_reader_held(&c->rd) && c->rd.consumed == c->ka_consumed &&
                   !c->rx_was_paused;
    c->rx_was_paused = c->rx_paused;
    if (stalled) {
      conn_close(c, CLOSE_frame_stall, "no byte of a started frame for a keepalive interval");
      continue;
    }
    /* A mesh link whose node answered nothing, not even our last Ping, for
     * a whole interval is hung (a stopped process, a black hole): its
     * kernel may still ACK, so neither TCP nor the write timeout notices. */
    if (c->is_link && c->link_ping_out && c->rd.consumed == c->ka_consumed) {
      conn_close(c, CLOSE_link_silent, "no frame from the node for a keepalive interval");
      continue;
    }
    c->ka_consumed = c->rd.consumed;
    struct pkt *p = pkt_alloc(sh, DERP_FRAME_HDR_LEN + 8);
    if (p && c->is_link) { /* we are the client here: a Ping keeps the link honest */
      c->link_ping_out = 1;
      uint8_t data[8];
      memcpy(data, &sh->rng, sizeof data);
      p->len = (uint32_t)derp_enc_ping(p->data, p->cap, DERP_FRAME_PING, data);
      conn_queue_ctrl(c, p);
    } else if (p) {
      p->len = (uint32_t)derp_enc_keep_alive(p->data, p->cap);
      conn_queue_ctrl(c, p);
      STAT_INC(&sh->stats, keepalives);
    }
    c->keepalive_ms = sh->now_ms + sh->srv->cfg.keepalive_ms + jitter_ms(sh);
    list_move_tail(&sh->ka_fifo, &c->ka_node);
  }
}

static void tick_deadlines(struct shard *sh, struct list *fifo, enum close_reason why) {
  while (!list_empty(fifo)) {
    struct conn *c = list_entry(fifo->next, struct conn, dl_node);
    if (c->deadline_ms > sh->now_ms) break;
    conn_close(c, why, why == CLOSE_write_timeout ? "receiver not reading" : NULL);
  }
}

void conn_tick(struct shard *sh) {
  tick_deadlines(sh, &sh->hs_fifo, CLOSE_handshake_timeout);
  tick_deadlines(sh, &sh->wr_fifo, CLOSE_write_timeout);
  tick_deadlines(sh, &sh->mesh_wr_fifo, CLOSE_write_timeout);
  tick_deadlines(sh, &sh->link_wr_fifo, CLOSE_write_timeout);
  tick_keepalives(sh);
}
