/* shard_stop.c: a shard's part in stopping derpd (SIGTERM, SIGINT) and in
 * a live upgrade's hand-over (SIGUSR2).
 *
 * Owns the order of a stop: listeners shut (or, in a hand-over, their
 * accepts cancelled, the sockets left to the new process), Restarting to
 * every client with its orderly end asked for at once, the cut of what is
 * not out by the deadline, and the moment a shard may leave its loop. Runs
 * on the shard's own thread, but for shards_wake_for_stop (the main thread).
 * Does not touch the ring's teardown or the conns' memory (shard.c, conn.c). */
#include <sys/socket.h>

#include "server/core/shard_internal.h"
#include "server/server.h"
#include "server/stun/stun_server.h"

/* Tell an established client to come back soon: derpd is restarting, not gone. */
void shard_send_restarting(struct shard *sh, struct conn *c) {
  struct pkt *p = pkt_alloc(sh, DERP_FRAME_HDR_LEN + 8);
  if (!p) return;
  p->len = (uint32_t)derp_enc_restarting(p->data, p->cap, 1000, 30000);
  conn_queue_ctrl(c, p);
  STAT_INC(&sh->stats, restarting_sent);
}

/* In a live upgrade, connections the old process accepted in the last
 * moments finish their handshake (then hear Restarting) rather than being
 * cut: every shard keeps running this long, so handoffs between shards land. */
#define HANDOVER_DRAIN_MS 2000

void shard_begin_stop(struct shard *sh) {
  sh->stopping = true;
  bool handover = atomic_load(&sh->srv->handover);
  sh->stop_deadline_ms = sh->now_ms + (handover ? HANDOVER_DRAIN_MS : 1000);
  stun_shard_stop(sh);
  if (handover) {
    /* Live upgrade: the new process accepts on these very sockets; stop
     * accepting here without touching them (a shutdown would reset what
     * waits in their queues). */
    int lfds[3] = {sh->listen_fd, sh->listen80_fd, sh->metrics_fd};
    for (int i = 0; i < 3; i++) {
      if (lfds[i] < 0) continue;
      struct io_uring_sqe *sqe = shard_sqe(sh);
      io_uring_prep_cancel_fd(sqe, lfds[i], IORING_ASYNC_CANCEL_ALL);
      io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_NONE));
    }
  } else {
    shutdown(sh->listen_fd, SHUT_RDWR); /* ends the multishot accept */
    if (sh->listen80_fd >= 0) shutdown(sh->listen80_fd, SHUT_RDWR);
    if (sh->metrics_fd >= 0) shutdown(sh->metrics_fd, SHUT_RDWR);
  }
  struct list *n, *next;
  for (n = sh->conns.next; n != &sh->conns; n = next) {
    next = n->next;
    struct conn *c = list_entry(n, struct conn, all_node);
    if (c->is_link || (c->state != CS_ESTABLISHED && !handover)) {
      conn_close(c, CLOSE_shutdown, NULL);
      continue;
    }
    if (c->state != CS_ESTABLISHED) continue; /* a handover's late handshake: conn.c says Restarting */
    /* Restarting, then an orderly end once it is out (a WebSocket close
     * 1001, TLS close_notify: conn_flush): the client sees a clean end as
     * soon as it can, so the port is free for the next process sooner.
     * What is queued behind Restarting is dropped, as at any goodbye. */
    shard_send_restarting(sh, c);
    conn_close_after_send(c, CLOSE_shutdown);
  }
}

/* Each tick while stopping: a conn whose goodbye is not out by the
 * deadline (a client that stopped reading) is cut, and a handover's late
 * handshakes that have heard Restarting get their orderly end. */
void shard_continue_stop(struct shard *sh) {
  struct list *n, *next;
  for (n = sh->conns.next; n != &sh->conns; n = next) {
    next = n->next;
    struct conn *c = list_entry(n, struct conn, all_node);
    if (c->state == CS_CLOSING) continue;
    bool handshaking = c->state != CS_ESTABLISHED; /* only in a handover */
    if (c->send || c->ctrl_h || handshaking || c->close_after_send) {
      if (sh->now_ms >= sh->stop_deadline_ms) conn_close(c, CLOSE_shutdown, NULL);
      continue;
    }
    conn_close_after_send(c, CLOSE_shutdown);
  }
}

/* Checked every turn, not at ticks: the process exits as soon as its last
 * conn is reaped. A handover keeps the shard running for its drain (late
 * handshakes handed between shards land); conns the kernel never finishes
 * closing are given up a second after the deadline. */
bool shard_stop_done(struct shard *sh) {
  if (atomic_load(&sh->srv->handover) && sh->now_ms < sh->stop_deadline_ms) return false;
  return list_empty(&sh->conns) || sh->now_ms > sh->stop_deadline_ms + 1000;
}

/* From the main thread, once `stopping` is set: wake every shard sleeping
 * idle now rather than at its next tick (up to SHARD_TICK_MS later). A
 * batched sleeper wakes within --batch-wait by itself. The CAS pairs with
 * wait_events' re-check of `stopping`, as publish_to's does with inbound. A
 * shard that stopped and closed its ring meanwhile fails that MSG_RING,
 * harmlessly: its result is not looked at. */
void shards_wake_for_stop(struct server *s) {
  struct io_uring r;
  if (io_uring_queue_init(4, &r, 0) < 0) return; /* they stop at their next tick */
  for (int i = 0; i < s->nshards; i++) {
    struct shard *ts = &s->shards[i];
    int idle = SLEEP_IDLE;
    if (!atomic_compare_exchange_strong(&ts->sleeping, &idle, AWAKE)) continue;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r);
    io_uring_prep_msg_ring(sqe, ts->ring_fd, 0, ud_make(NULL, UD_WAKE), 0);
    struct io_uring_cqe *cqe;
    if (io_uring_submit_and_wait(&r, 1) >= 0 && io_uring_peek_cqe(&r, &cqe) == 0) io_uring_cqe_seen(&r, cqe);
  }
  io_uring_queue_exit(&r);
}
