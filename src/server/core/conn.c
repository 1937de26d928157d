/* conn.c: a connection's life on its shard: creation, receive, deadlines,
 * keepalives, close and reaping (the outgoing queues and the writer are
 * conn_send.c).
 *
 * Owns struct conn's lifecycle. The handshake (HTTP, ServerKey, ClientInfo,
 * handoff) is upgrade.c; what frames mean is relay.c. Only the owning shard's
 * thread touches a conn. A conn is freed only when no SQE refers to it
 * (ops == 0): conn_close shuts the socket down, which completes every pending
 * op, and the flush pass reaps it. */
#include <assert.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "server/core/conn_internal.h"
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
  list_add_tail(&sh->conns, &c->all_node);
  sh->nconns++;
  STAT_INC(&sh->stats, open_conns);
}

struct conn *conn_new(struct shard *sh, int fd, bool port80) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  /* No handshake state until the first bytes (upgrade_input): a flood of
   * connections that send nothing costs a struct conn each, not 1.5 KB more. */
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
  if (!c->rx_paused) arm_recv(c); /* a link paused by its first bytes: its resume arms it */
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
  /* The flag, not res, says a ring buffer was used: a recv that ran from
   * io-wq takes its buffer before it learns of EOF or an error, and that
   * buffer must come back too, or the ring shrinks for good. */
  if (cqe->flags & IORING_CQE_F_BUFFER) {
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    if (res > 0 && c->state != CS_CLOSING) {
      const uint8_t *p = sh->bufs + (size_t)bid * sh->buf_size;
      if (c->xp->recv) c->xp->recv(c, p, (size_t)res);
      else conn_input(c, p, (size_t)res);
    }
    shard_recycle_buf(sh, bid);
  }
  if (res == -ENOBUFS) {
    STAT_INC(&sh->stats, recv_nobufs); /* buffers come back this turn; re-arm */
    shard_note_nobufs(sh);
  } else if (res == -ECANCELED && (hs ? c->state == CS_MOVING : c->rx_cancel)) {
    /* conn_cancel_hs_recv: the conn moves now; conn_cancel_recv: paused */
  } else if (res <= 0 && c->state != CS_CLOSING && !(res < 0 && c->xp->recv_error && c->xp->recv_error(c, res))) {
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
    if (st == DERP_READ_MORE) break; /* the skipped frames below are counted and charged */
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
    if (c->state != CS_ESTABLISHED || relay_frame(c, &f) < 0) break; /* closed: out of memory */
    /* A mesh conn's frames become region messages: not past a bound. */
    if (c->is_mesh && c->sh->outbox_n >= OUTBOX_PAUSE) pause = recv_pause_outbox(c);
    if (pause) {
      if (n && c->state == CS_ESTABLISHED) recv_pause_hold(c, p, n);
      break;
    }
  }
  if (c->rd.skipped_frames) {
    relay_note_activity(c); /* derper notes every frame read, skipped ones too */
    STAT_ADD(&c->sh->stats, unknown_frames, (int64_t)c->rd.skipped_frames);
    c->rd.skipped_frames = 0;
  }
  /* Frames the reader skipped (unknown types, a client's Pong or KeepAlive)
   * cost tokens too, as every frame does in derper: charged once the input
   * is parsed, so a flood of them pauses the reads behind it. A conn that a
   * frame of the same input paused already owes them too: its pause only
   * grows. */
  if (c->rd.skipped_bytes) {
    uint64_t sb = c->rd.skipped_bytes;
    c->rd.skipped_bytes = 0;
    if (c->sh->rl.bps && !c->is_mesh && c->state == CS_ESTABLISHED) recv_pause_take_skipped(c, sb);
  }
  return c->state == CS_CLOSING ? -1 : 0;
}

/* ---- adoption, close, reaping ------------------------------------------- */

void conn_attach(struct shard *sh, struct conn *c) {
  c->sh = sh;
  list_add_tail(&sh->conns, &c->all_node);
  sh->nconns++;
  STAT_INC(&sh->stats, open_conns);
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
  c->rd.skip_charge_max = RECV_LIMIT_MIN_BURST; /* derper clamps each frame's charge so */
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
  /* Each packet, for its bytes: the queues are bounded (CONN_QUEUE_MAX, LINK_QUEUE_MAX). */
  for (const struct pkt *p = c->disco_h; p; p = p->next) STAT_DROP_PKT(&sh->stats, gone_disconnected, p);
  for (const struct pkt *p = c->data_h; p; p = p->next) STAT_DROP_PKT(&sh->stats, gone_disconnected, p);
  pkt_free_list(sh, c->ctrl_h);
  pkt_free_list(sh, c->disco_h);
  pkt_free_list(sh, c->data_h);
  c->ctrl_h = c->ctrl_t = c->disco_h = c->disco_t = c->data_h = c->data_t = NULL;
  c->nctrl = c->ndisco = c->ndata = c->link_kib = c->ngone = 0;
}

static bool reason_is_quiet(enum close_reason why) {
  return why == CLOSE_eof || why == CLOSE_http_done || why == CLOSE_shutdown;
}

void conn_close(struct conn *c, enum close_reason why, const char *detail) {
  if (c->state == CS_CLOSING) return;
  /* Our last words were queued for a reason (a WebSocket protocol error, a
   * ClosePeer, a stop, an HTTP reply): the peer leaving before they are sent
   * is the end we asked for, not a new reason: the first reason stands (a
   * client that reads an HTTP reply and closes at once can be seen in the
   * same batch of completions as the reply's send, before the flush). */
  if (c->close_after_send && (why == CLOSE_eof || why == CLOSE_read_error || why == CLOSE_write_error))
    why = conn_last_words_reason(c);
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
    if (c->key_hash) derp_key_format(&c->key, key); /* known once its ClientInfo is opened */
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
   * connections at once (a stop, a flood's end) cost O(n) each. Only those
   * in flight: a cancel that finds nothing still walks its hash bucket and
   * io-wq's lists (a stop with 15,000 clients spent 15% of its CPU on
   * cancels). ops counts one of each kind at most: the single-shot
   * handshake recv, the recv (recv_armed) and the send (send_armed: not
   * c->send, which is set before a transport's wrap that may close the
   * conn); so no CANCEL_ALL, which looks again after the match until it
   * finds none. */
  static const enum ud_tag kinds[] = {UD_HSRECV, UD_RECV, UD_SEND};
  bool sending = c->send_armed;
  assert(c->ops <= 3 && c->ops >= c->recv_armed + sending);
  bool inflight[] = {c->ops > c->recv_armed + sending, c->recv_armed, sending};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    if (!inflight[k]) continue;
    struct io_uring_sqe *sqe = shard_sqe(sh);
    io_uring_prep_cancel64(sqe, ud_make(c, kinds[k]), 0);
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

void conn_destroy(struct conn *c) {
  struct shard *sh = c->sh;
  if (c->send) conn_release_send(c, true);
  drop_queues(c);
  tcp_rtt_forget(c);
  list_del(&c->all_node);
  if (list_linked(&c->dirty_node)) list_del(&c->dirty_node);
  if (list_linked(&c->dl_node)) list_del(&c->dl_node);
  if (list_linked(&c->ka_node)) list_del(&c->ka_node);
  sh->nconns--;
  STAT_ADD(&sh->stats, open_conns, -1);
  if (c->ws) STAT_ADD(&sh->stats, ws_conns, -1);
  if (c->tls_active) stat_add_slot(&sh->stats.v[STAT_TLS_ACTIVE(c->tls_ver)], -1);
  atomic_fetch_sub_explicit(c->metrics_only ? &sh->srv->metrics_conns : &sh->srv->open_conns, 1,
                            memory_order_relaxed);
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
  STAT_ADD(&sh->stats, open_conns, -1);
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
    conn_destroy(c);
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
