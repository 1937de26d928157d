/* shard.c: one shard's thread and event loop.
 *
 * Owns the shard's io_uring ring, its provided-buffer ring, its listening
 * socket's multishot accept, the drain of its inbound rings and the wake-ups
 * of other shards. Each loop turn: drain inbound rings, run timers, flush every
 * conn with new output (one sendmsg each), publish staged ring items and wake
 * sleepers, then one io_uring_enter that submits everything and waits. Conn
 * protocol logic lives in conn.c and relay.c; this file only dispatches.
 *
 * Sleeps are batched under steady load (wait_events): a sleep and wake-up
 * of a thread costs more CPU than relaying a packet, so a shard whose
 * arrivals would gather at least two per --batch-wait sleeps that long (or
 * until --batch-events complete) and serves them with one wake-up; other
 * shards then leave it to wake by itself instead of waking it. */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/admission/admission.h"
#include "server/core/shard_internal.h"
#include "server/log.h"
#include "server/operations/service.h"
#include "server/operations/tcp_rtt.h"
#include "server/region/region.h"
#include "server/server.h"
#include "server/stun/stun_server.h"

#define DRAIN_BATCH 256
/* Shortest arrival-rate window of the batching decision (wait_events). */
#define RATE_WINDOW_US 1000

int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The loop turn's clock: now_ms for timers, now_us for packet stamps, from
 * one clock read (none per packet). */
static void shard_clock(struct shard *sh) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  sh->now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  sh->now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct io_uring_sqe *shard_sqe(struct shard *sh) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&sh->ring);
  if (!sqe) {
    io_uring_submit(&sh->ring);
    sqe = io_uring_get_sqe(&sh->ring);
  }
  /* The SQ is sized far above what one loop turn can prepare between the
   * submit above and this point; running out is a bug, not a load condition. */
  if (!sqe) abort();
  return sqe;
}

bool shard_log_allowed(struct shard *sh) {
  if (sh->now_ms - sh->log_window_ms >= 1000) {
    if (sh->log_suppressed)
      log_warn("shard %d: %u connection log lines suppressed in the last second", sh->id,
               sh->log_suppressed);
    sh->log_window_ms = sh->now_ms;
    sh->log_budget = 50;
    sh->log_suppressed = 0;
  }
  if (sh->log_budget == 0) {
    sh->log_suppressed++;
    return false;
  }
  sh->log_budget--;
  return true;
}

void shard_mark_dirty(struct shard *sh, struct conn *c) {
  if (!c->dirty) {
    c->dirty = 1;
    list_add_tail(&sh->dirty, &c->dirty_node);
  }
}

static void mark_pending(struct shard *sh, int to) { sh->pending_pub[to / 64] |= 1ull << (to % 64); }

/* Stage item on ring q to shard `to`; published at the end of the turn. */
static bool push(struct shard *sh, struct spsc *q, int to, void *item) {
  if (!spsc_push(q, item)) return false;
  mark_pending(sh, to);
  return true;
}

bool shard_push_data(struct shard *sh, int to, struct pkt *p) { return push(sh, data_q(sh->srv, sh->id, to), to, p); }
bool shard_push_ctrl(struct shard *sh, int to, struct pkt *m) { return push(sh, ctrl_q(sh->srv, sh->id, to), to, m); }
bool shard_push_hand(struct shard *sh, int to, struct conn *c) { return push(sh, hand_q(sh->srv, sh->id, to), to, c); }

/* A control message for this shard: region/ or relay.c's. */
static void ctrl_dispatch(struct shard *sh, struct pkt *m) {
  if (m->kind >= MSG_REGION_FIRST) region_ctrl(sh, m);
  else relay_send_to_key(sh, m);
}

/* Ring full: wait in the outbox, behind anything already waiting for that
 * target, so that messages to one shard keep their order. A shard sends
 * such messages only as fast as events happen on it (joins, leaves, link
 * frames), and every target drains its rings every turn, so the outbox
 * empties; link frames, which a node can send as fast as TCP carries them,
 * stop being read while it holds OUTBOX_PAUSE (recv_pause_outbox), and its
 * size is logged if it ever grows large. */
void shard_send_ctrl(struct shard *sh, int to, struct pkt *m) {
  if (to == sh->id) {
    ctrl_dispatch(sh, m);
    return;
  }
  bool queued = sh->outbox_pend[to / 64] & (1ull << (to % 64));
  if (!queued && push(sh, ctrl_q(sh->srv, sh->id, to), to, m)) return;
  m->next = NULL;
  if (queued) sh->outbox_t[to]->next = m;
  else sh->outbox_h[to] = m;
  sh->outbox_t[to] = m;
  sh->outbox_pend[to / 64] |= 1ull << (to % 64);
  STAT_INC(&sh->stats, outbox);
  if (++sh->outbox_n % 65536 == 0)
    log_warn("shard %d: %u region messages waiting for ring space", sh->id, sh->outbox_n);
}

static void drain_outbox(struct shard *sh) {
  for (int w = 0; w < (sh->srv->nshards + 63) / 64; w++) {
    uint64_t bits = sh->outbox_pend[w];
    while (bits) {
      int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      int to = w * 64 + b;
      struct spsc *q = ctrl_q(sh->srv, sh->id, to);
      while (sh->outbox_h[to]) {
        struct pkt *m = sh->outbox_h[to];
        if (!push(sh, q, to, m)) break;
        sh->outbox_h[to] = m->next;
        sh->outbox_n--;
        STAT_ADD(&sh->stats, outbox, -1);
      }
      if (!sh->outbox_h[to]) {
        sh->outbox_t[to] = NULL;
        sh->outbox_pend[w] &= ~(1ull << b);
      }
    }
  }
}

/* A shard's listeners. The helpers' accepts carry UD_ACCEPT80 with the
 * listener in the pointer bits, above the tag's. */
enum listener { LS_MAIN, LS_PORT80, LS_METRICS, LS_COUNT };

static int listener_fd(const struct shard *sh, enum listener ls) {
  return ls == LS_MAIN ? sh->listen_fd : ls == LS_PORT80 ? sh->listen80_fd : sh->metrics_fd;
}

/* In the pointer bits of a UD_ACCEPT80: a one-shot accept (accept_nudge),
 * which is not re-armed when it completes. */
#define ACCEPT_ONESHOT 4u

static void arm_accept(struct shard *sh, enum listener ls) {
  struct io_uring_sqe *sqe = shard_sqe(sh);
  io_uring_prep_multishot_accept(sqe, listener_fd(sh, ls), NULL, NULL, SOCK_CLOEXEC);
  uint64_t ud = ls == LS_MAIN ? ud_make(NULL, UD_ACCEPT)
                              : ud_make((void *)(uintptr_t)((unsigned)ls << UD_TAG_BITS), UD_ACCEPT80);
  io_uring_sqe_set_data64(sqe, ud);
}

/* A listening socket's queue can hold connections that no armed accept
 * will take until the next connection comes: io_uring's accepts wait
 * exclusively (one waiter woken per arrival), and a waiter that took the
 * wake-up and was then cancelled (the old process's accepts in a live
 * upgrade, which share these sockets with ours) passes it on to no one.
 * Such a queue is non-empty at two ticks in a row with no accept completed
 * between them: a one-shot accept then tries at once and takes them (its
 * multishot sibling drains the rest, as it does after any wake-up). */
static void accept_nudge(struct shard *sh) {
  for (int ls = 0; ls < LS_COUNT; ls++) {
    int fd = listener_fd(sh, (enum listener)ls);
    uint8_t bit = (uint8_t)(1u << ls);
    if (fd < 0 || (sh->accept_rearm & bit) || (sh->accept_oneshot & bit)) continue; /* one at a time */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    bool queued = poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
    if (queued && (sh->accept_backlog & bit) && !(sh->accept_seen & bit)) {
      struct io_uring_sqe *sqe = shard_sqe(sh);
      io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
      io_uring_sqe_set_data64(sqe, ud_make((void *)(uintptr_t)(((unsigned)ls | ACCEPT_ONESHOT) << UD_TAG_BITS),
                                           UD_ACCEPT80));
      sh->accept_oneshot |= bit;
      log_debug("shard %d: listener %d: connections queued with no accept woken; accepting", sh->id, ls);
    }
    sh->accept_backlog = (uint8_t)(queued ? sh->accept_backlog | bit : sh->accept_backlog & ~bit);
  }
  sh->accept_seen = 0;
}

static void on_accept(struct shard *sh, struct io_uring_cqe *cqe, unsigned which) {
  int res = cqe->res;
  bool oneshot = which & ACCEPT_ONESHOT;
  enum listener ls = (enum listener)(which & ~ACCEPT_ONESHOT);
  sh->accept_seen |= (uint8_t)(1u << ls);
  if (oneshot) sh->accept_oneshot &= (uint8_t)~(1u << ls);
  if (!(cqe->flags & IORING_CQE_F_MORE) && !sh->stopping && !oneshot) {
    /* A multishot that ended, or an accept that failed for one connection,
     * re-arms at once. Any other failure is the listener's (no fds or
     * memory, a socket that no longer listens): re-armed at once it would
     * fail again at once, a spin; retry at the next tick. */
    if (res >= 0 || res == -ECONNABORTED || res == -EPROTO || res == -EPERM || res == -EINTR || res == -EAGAIN)
      arm_accept(sh, ls);
    else
      sh->accept_rearm |= (uint8_t)(1u << ls);
  }
  if (res < 0) {
    if (res != -ECANCELED && res != -EINVAL) {
      STAT_INC(&sh->stats, accept_errors);
      if (shard_log_allowed(sh)) log_warn("shard %d: accept: %s", sh->id, strerror(-res));
    }
    return;
  }
  int fd = cqe->res;
  STAT_INC(&sh->stats, tcp_accepts);
  /* Stopping for good: refused. In a live upgrade an accept that completed
   * before the cancel (rings without DEFER_TASKRUN) is served like those
   * accepted just before: shard_continue_stop lets its handshake finish. */
  if (sh->stopping && !atomic_load(&sh->srv->handover)) {
    close(fd);
    return;
  }
  /* -accept-connection-limit (derper's, main listener only): accepted, then
   * closed at once, which tells the client at once; the server goes on. */
  if (ls == LS_MAIN) {
    if (!rate_limiter_allow(&sh->srv->accept_lim, rate_now_ns())) {
      STAT_INC(&sh->stats, accepts_limited);
      STAT_CLOSE(&sh->stats, CLOSE_accept_limit);
      log_debug("shard %d: connection closed: -accept-connection-limit", sh->id);
      close(fd);
      return;
    }
    STAT_INC(&sh->stats, accepts_admitted);
  }
  _Atomic int64_t *count = ls == LS_METRICS ? &sh->srv->metrics_conns : &sh->srv->open_conns;
  int64_t open = atomic_fetch_add_explicit(count, 1, memory_order_relaxed);
  if (open >= (ls == LS_METRICS ? METRICS_CONNS_MAX : sh->srv->max_conns)) {
    atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
    STAT_CLOSE(&sh->stats, CLOSE_conn_limit);
    if (shard_log_allowed(sh)) {
      if (ls == LS_METRICS)
        log_warn("shard %d: --metrics-listen connection refused: %d open already", sh->id, METRICS_CONNS_MAX);
      else
        log_warn("shard %d: connection refused: --max-conns=%d reached", sh->id, sh->srv->max_conns);
    }
    close(fd);
    return;
  }
  struct conn *c = conn_new(sh, fd, ls != LS_MAIN); /* the helpers speak plain HTTP */
  if (c && ls == LS_METRICS) {
    c->port80 = 0;
    c->metrics_only = 1;
  }
  if (!c) {
    atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
    STAT_CLOSE(&sh->stats, CLOSE_nomem);
    close(fd);
    return;
  }
  conn_start(c);
}

/* Buffers in the ring at start; the first ENOBUFS under load doubles it. */
#define BUF_TARGET_START 32

/* Tops the ring up to buf_target from the top of the free stack; published
 * with the turn's other additions. */
static void refill_buf_ring(struct shard *sh) {
  if (sh->nobufs) {
    sh->nobufs = false;
    if (sh->buf_target < sh->nbufs) {
      sh->buf_target = sh->buf_target * 2 < sh->nbufs ? sh->buf_target * 2 : sh->nbufs;
      log_debug("shard %d: receive buffers in the ring: %u (ENOBUFS)", sh->id, sh->buf_target);
    }
  }
  int mask = io_uring_buf_ring_mask(sh->nbufs);
  while (sh->in_ring < sh->buf_target && sh->nfree > 0) {
    unsigned bid = sh->buf_free[--sh->nfree];
    io_uring_buf_ring_add(sh->br, sh->bufs + (size_t)bid * sh->buf_size, sh->buf_size,
                          (unsigned short)bid, mask, (int)sh->br_pending);
    sh->br_pending++;
    sh->in_ring++;
  }
  if (sh->br_pending) {
    io_uring_buf_ring_advance(sh->br, (int)sh->br_pending);
    sh->br_pending = 0;
  }
}

static int setup_buf_ring(struct shard *sh) {
  sh->nbufs = (uint32_t)sh->srv->cfg.recv_bufs;
  sh->buf_size = (uint32_t)sh->srv->cfg.recv_buf_size;
  size_t ring_bytes = sh->nbufs * sizeof(struct io_uring_buf);
  void *mem = NULL;
  if (posix_memalign(&mem, 4096, ring_bytes) != 0) return -ENOMEM;
  memset(mem, 0, ring_bytes);
  sh->br = mem;
  sh->bufs = malloc((size_t)sh->nbufs * sh->buf_size);
  sh->buf_free = malloc(sh->nbufs * sizeof *sh->buf_free);
  if (!sh->bufs || !sh->buf_free) return -ENOMEM;
  struct io_uring_buf_reg reg = {
      .ring_addr = (uint64_t)(uintptr_t)sh->br, .ring_entries = sh->nbufs, .bgid = BGID};
  int r = io_uring_register_buf_ring(&sh->ring, &reg, 0);
  if (r < 0) return r;
  io_uring_buf_ring_init(sh->br);
  sh->nfree = 0;
  for (uint32_t i = sh->nbufs; i-- > 0;) sh->buf_free[sh->nfree++] = (uint16_t)i; /* bid 0 on top */
  sh->in_ring = sh->br_pending = 0;
  sh->buf_target = sh->nbufs < BUF_TARGET_START ? sh->nbufs : BUF_TARGET_START;
  sh->nobufs = false;
  refill_buf_ring(sh);
  return 0;
}

/* A buffer the kernel filled and derpd has used: onto the free stack; the
 * turn's refill puts it back into the ring. */
void shard_recycle_buf(struct shard *sh, unsigned bid) {
  assert(sh->nfree < sh->nbufs && sh->in_ring > 0);
  sh->buf_free[sh->nfree++] = (uint16_t)bid;
  sh->in_ring--;
}

void shard_note_nobufs(struct shard *sh) { sh->nobufs = true; }

static int setup_ring(struct shard *sh) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
  p.cq_entries = 16384;
  int r = io_uring_queue_init_params(4096, &sh->ring, &p);
  if (r == -EINVAL) { /* older kernel: plain ring */
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 16384;
    r = io_uring_queue_init_params(4096, &sh->ring, &p);
  }
  if (r < 0) return r;
  sh->ring_fd = sh->ring.ring_fd;
  r = setup_buf_ring(sh);
  return r < 0 ? r : stun_shard_ring_init(sh);
}

static int inbound_words(const struct server *s) { return (s->nshards + 63) / 64; }

/* Drains up to DRAIN_BATCH items of each ring from source f; true if a ring
 * may hold more (then f is looked at again next turn). */
static bool drain_from(struct shard *sh, int f) {
  struct server *s = sh->srv;
  void *items[DRAIN_BATCH];
  uint32_t n = spsc_pop_batch(hand_q(s, f, sh->id), items, DRAIN_BATCH);
  bool more = n == DRAIN_BATCH;
  sh->turn_arrivals += n;
  for (uint32_t i = 0; i < n; i++) conn_adopt(sh, items[i]);
  n = spsc_pop_batch(ctrl_q(s, f, sh->id), items, DRAIN_BATCH);
  more |= n == DRAIN_BATCH;
  sh->turn_arrivals += n;
  for (uint32_t i = 0; i < n; i++) {
    ctrl_dispatch(sh, items[i]);
  }
  n = spsc_pop_batch(data_q(s, f, sh->id), items, DRAIN_BATCH);
  more |= n == DRAIN_BATCH;
  sh->turn_arrivals += n;
  for (uint32_t i = 0; i < n; i++) {
    struct pkt *p = items[i];
    if (p->kind == MSG_FWD_PKT) link_deliver(sh, p);
    else relay_deliver(sh, p);
  }
  return more;
}

/* The sources whose bit is set, and only those. The acquire exchange pairs
 * with the source's release OR, made after it published: the rings' new
 * items are visible here. A bit set again meanwhile is seen next turn. */
static void drain_inbound(struct shard *sh) {
  for (int w = 0; w < inbound_words(sh->srv); w++) {
    uint64_t bits = atomic_exchange_explicit(&sh->inbound[w], 0, memory_order_acquire);
    uint64_t again = 0;
    while (bits) {
      int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      if (drain_from(sh, w * 64 + b)) again |= 1ull << b;
    }
    if (again) atomic_fetch_or_explicit(&sh->inbound[w], again, memory_order_relaxed);
  }
}

/* After wait_events' fence: a source that published before its own fence
 * either shows here or sees our `sleeping` and wakes us. */
static bool inbound_empty(struct shard *sh) {
  for (int w = 0; w < inbound_words(sh->srv); w++)
    if (atomic_load_explicit(&sh->inbound[w], memory_order_relaxed)) return false;
  return true;
}

/* Publish what this turn staged to target t, set our bit in its inbound
 * mask, and wake it if it announced sleep. The fence pairs with the one in
 * wait_events: either the sleeper sees our bit when it re-checks, or we see
 * its flag here. */
static void publish_to(struct shard *sh, int t) {
  struct server *s = sh->srv;
  bool any = spsc_publish(data_q(s, sh->id, t));
  any |= spsc_publish(ctrl_q(s, sh->id, t));
  any |= spsc_publish(hand_q(s, sh->id, t));
  if (!any) return;
  struct shard *ts = &s->shards[t];
  /* Release: whoever takes the bit sees the items published above. */
  atomic_fetch_or_explicit(&ts->inbound[sh->id / 64], 1ull << (sh->id % 64), memory_order_release);
  atomic_thread_fence(memory_order_seq_cst);
  /* A plain load first: the line stays shared while the target is awake.
   * A batched sleeper wakes within --batch-wait by itself and finds our
   * bit then: no wake-up (the coalescing that makes batching pay across
   * shards). Only an idle sleeper is woken, once (the CAS). */
  int idle = SLEEP_IDLE;
  if (atomic_load_explicit(&ts->sleeping, memory_order_relaxed) == SLEEP_IDLE &&
      atomic_compare_exchange_strong_explicit(&ts->sleeping, &idle, AWAKE, memory_order_seq_cst,
                                              memory_order_relaxed)) {
    struct io_uring_sqe *sqe = shard_sqe(sh);
    io_uring_prep_msg_ring(sqe, ts->ring_fd, 0, ud_make(NULL, UD_WAKE), 0);
    io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_MSGRING));
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    STAT_INC(&sh->stats, wakeups);
  }
}

static void publish_and_wake(struct shard *sh) {
  for (int w = 0; w < inbound_words(sh->srv); w++) {
    uint64_t bits = sh->pending_pub[w];
    sh->pending_pub[w] = 0;
    while (bits) {
      int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      publish_to(sh, w * 64 + b);
    }
  }
}

static void flush_dirty(struct shard *sh) {
  while (!list_empty(&sh->dirty)) {
    struct conn *c = list_entry(sh->dirty.next, struct conn, dirty_node);
    list_del(&c->dirty_node);
    c->dirty = 0;
    conn_flush(c);
  }
}

/* True for an arrival: work that came from outside (not our own sends).
 * A wake-up counts as well as the items it announced (drain_from), and a
 * recv that only ran out of buffers counts: the rule was tuned so. Counting
 * only the items measured no better (2026-12-07, bench/compare --only many,
 * 2 shards, 10k-50k pps: CPU per packet 1.03x-1.15x, context switches
 * 0.92x-1.00x, p99 0.88x-1.23x of this rule's, within this VM's noise or
 * worse; docs/benchmarks.md). */
static bool handle_cqe(struct shard *sh, struct io_uring_cqe *cqe) {
  uint64_t ud = io_uring_cqe_get_data64(cqe);
  switch (ud_tag(ud)) {
  case UD_ACCEPT: on_accept(sh, cqe, LS_MAIN); break;
  case UD_ACCEPT80: on_accept(sh, cqe, (unsigned)((uintptr_t)ud_ptr(ud) >> UD_TAG_BITS)); break;
  case UD_RECV: {
    struct conn *c = ud_ptr(ud);
    if (c->rate_win != sh->rate_win_id) {
      c->rate_win = sh->rate_win_id;
      sh->rate_conns++;
    }
    conn_on_recv(c, cqe);
    break;
  }
  case UD_HSRECV: conn_on_hs_recv(ud_ptr(ud), cqe); break;
  case UD_SEND: conn_on_send(ud_ptr(ud), cqe->res); return false;
  case UD_STUN: stun_on_cqe(sh, cqe); break;
  case UD_WAKE: break; /* the wake itself is the point; drain runs next turn */
  case UD_MSGRING: /* only failures post (CQE_SKIP_SUCCESS): the target may
                      sleep until its next tick with work queued */
    STAT_INC(&sh->stats, wake_failures);
    if (shard_log_allowed(sh)) log_warn("shard %d: wake-up failed: %s", sh->id, strerror(-cqe->res));
    break;
  case UD_NONE:
    if (cqe->res < 0 && cqe->res != -ENOENT && cqe->res != -EALREADY && cqe->res != -ECANCELED)
      log_debug("shard %d: aux op failed: %s", sh->id, strerror(-cqe->res));
    return false;
  }
  return true;
}

/* Whether this shard's sleeps should gather events: once per window, from
 * the arrivals counted in it. Batching pays when a --batch-wait sleep would
 * gather at least two arrivals on average; below that it only adds latency. */
static void update_batching(struct shard *sh) {
  if (sh->turn_arrivals == 0 && sh->last_wait_batched) {
    /* The load stopped: start over, idle, with a fresh window (its
     * arrivals would keep batching on after the load). */
    sh->batching = false;
    sh->rate_arrivals = sh->rate_conns = 0;
    sh->rate_win_id++;
    sh->rate_pkts0 = atomic_load_explicit(&sh->stats.v[STAT_pkts_recv], memory_order_relaxed);
    sh->rate_win_us = sh->now_us;
    return;
  }
  sh->rate_arrivals += sh->turn_arrivals;
  int64_t el = sh->now_us - sh->rate_win_us, t = sh->srv->cfg.batch_wait_us;
  /* A window spans two --batch-waits at least, so that one lone arrival
   * in a short window never reads as a rate. */
  if (el < RATE_WINDOW_US || el < 2 * t) return;
  /* Thin streams only: where a client sends a packet per --batch-wait or
   * more (bulk or closed-loop flows), each wake-up already serves many
   * packets and a wait would only stretch their round trips. Packets per
   * client is a property of the traffic, not of how long this shard
   * sleeps (packets per receive would be: a longer sleep finds more in
   * each socket). */
  int64_t pkts = atomic_load_explicit(&sh->stats.v[STAT_pkts_recv], memory_order_relaxed);
  bool thin = (pkts - sh->rate_pkts0) * t < (int64_t)sh->rate_conns * el;
  sh->batching = t > 0 && thin && (int64_t)sh->rate_arrivals * t >= 2 * el;
  sh->rate_arrivals = sh->rate_conns = 0;
  sh->rate_win_id++;
  sh->rate_pkts0 = pkts;
  sh->rate_win_us = sh->now_us;
}

/* Sleep until the next event (idle) or, under steady load, until
 * --batch-wait has passed or --batch-events have completed (batch): one
 * wake-up then serves all that came meanwhile. A batched sleep that brought
 * no arrivals ends batching until load shows again (update_batching), so a
 * shard whose load stopped sleeps idle after one --batch-wait. With the kernel's lazy wake-up
 * of DEFER_TASKRUN rings (Linux 6.5+), completions short of the count do not
 * wake the thread at all; older kernels wake it inside io_uring_enter per
 * completion and put it back to sleep, which saves the returns to user space
 * but not the context switches. */
static void wait_events(struct shard *sh, int64_t next_tick) {
  int64_t wait_us = (next_tick - sh->now_ms) * 1000;
  if (wait_us < 0) wait_us = 0;
  int64_t bw = sh->srv->cfg.batch_wait_us;
  /* A batched sleep may outlast the next tick: timers (deadlines,
   * keepalives, the watchdog) run at most --batch-wait late. */
  bool batch = sh->batching && !sh->stopping && wait_us > 0;
  unsigned wait_nr = 1;
  sh->last_wait_batched = batch;
  if (batch) {
    wait_us = bw;
    wait_nr = (unsigned)sh->srv->cfg.batch_events;
    STAT_INC(&sh->stats, waits_batch);
  } else {
    STAT_INC(&sh->stats, waits_idle);
  }
  atomic_store_explicit(&sh->sleeping, batch ? SLEEP_BATCH : SLEEP_IDLE, memory_order_seq_cst);
  atomic_thread_fence(memory_order_seq_cst);
  /* Items published before the flag was seen: no one will wake an idle
   * sleeper for them. A batched sleeper takes them when it wakes. */
  if (!batch && !inbound_empty(sh)) wait_us = 0;
  if (!sh->stopping && atomic_load(&sh->srv->stopping)) wait_us = 0; /* shards_wake_for_stop may have missed us */
  /* A full ring held back a handoff or a region message: try again within
   * a millisecond (draining a ring does not wake its producer), not at the
   * next event or tick. */
  if ((sh->outbox_n || !list_empty(&sh->handoff_pending)) && wait_us > 1000) wait_us = 1000;
  /* A -rate-config pause ends on time, not at the next tick. */
  if (sh->rl_npaused) {
    int64_t until_us = sh->rl_next_ns / 1000 - sh->now_us;
    if (until_us < wait_us) wait_us = until_us > 0 ? until_us : 0;
  }
  struct __kernel_timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
  struct io_uring_cqe *cqe;
  int r = io_uring_submit_and_wait_timeout(&sh->ring, &cqe, wait_nr, &ts, NULL);
  atomic_store_explicit(&sh->sleeping, AWAKE, memory_order_relaxed);
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN)
    log_error("shard %d: io_uring_enter: %s", sh->id, strerror(-r));
}

static void process_cqes(struct shard *sh) {
  unsigned head, n = 0, arrivals = 0;
  struct io_uring_cqe *cqe;
  io_uring_for_each_cqe(&sh->ring, head, cqe) {
    arrivals += handle_cqe(sh, cqe);
    n++;
  }
  io_uring_cq_advance(&sh->ring, n);
  refill_buf_ring(sh);
  sh->turn_arrivals += arrivals;
}

static void loop(struct shard *sh) {
  int64_t next_tick = now_ms() + SHARD_TICK_MS;
  for (;;) {
    shard_clock(sh);
    if (!sh->stopping && atomic_load_explicit(&sh->srv->stopping, memory_order_relaxed)) shard_begin_stop(sh);
    drain_inbound(sh);
    if (sh->rl_npaused && sh->now_us * 1000 >= sh->rl_next_ns) recv_pause_resume_due(sh);
    update_batching(sh);
    admission_drain(sh);
    if (sh->now_ms >= next_tick) {
      next_tick = sh->now_ms + SHARD_TICK_MS;
      service_shard_tick(sh->id, sh->now_ms); /* the watchdog's heartbeat */
      conn_tick(sh);
      recv_pause_refresh(sh);
      tcp_rtt_tick(sh);
      region_tick(sh);
      stun_shard_poll(sh);
      if (sh->accept_rearm && !sh->stopping) {
        for (int ls = 0; ls < LS_COUNT; ls++)
          if (sh->accept_rearm & (1u << ls)) arm_accept(sh, (enum listener)ls);
        sh->accept_rearm = 0;
      }
      if (!sh->stopping) accept_nudge(sh);
      if (sh->stopping) shard_continue_stop(sh);
    }
    region_end_turn(sh);
    flush_dirty(sh);
    upgrade_retry_handoffs(sh);
    if (sh->outbox_n) drain_outbox(sh);
    publish_and_wake(sh);
    if (sh->stopping && shard_stop_done(sh)) {
      io_uring_submit(&sh->ring); /* this turn's wake-ups of other shards */
      break;
    }
    wait_events(sh, next_tick);
    shard_clock(sh);
    sh->turn_arrivals = 0;
    process_cqes(sh);
  }
}

static void *shard_main(void *arg) {
  struct shard *sh = arg;
  shard_clock(sh);
  for (int ls = 0; ls < LS_COUNT; ls++)
    if (listener_fd(sh, (enum listener)ls) >= 0) arm_accept(sh, (enum listener)ls);
  stun_shard_poll(sh);
  recv_pause_refresh(sh); /* -rate-config from the first client, not the first tick */
  loop(sh);
  /* Tear the ring down first: no send may still point at buffers freed below. */
  io_uring_queue_exit(&sh->ring);
  stun_shard_free(sh);
  /* Not ring_fd = -1: other shards still running may read ring_fd to wake
   * this one (a data race, and TSan says so); main.c reads ring_exited. */
  sh->ring_exited = true;
  conn_destroy_all(sh);
  for (int t = 0; t < sh->srv->nshards; t++)
    for (struct pkt *m = sh->outbox_h[t], *n; m; m = n) { n = m->next; pkt_free(sh, m); }
  region_shard_free(sh);
  pool_destroy(sh);
  peer_table_free(&sh->peers);
  return NULL;
}

/* Set up the ring on the calling thread's behalf is not possible with
 * SINGLE_ISSUER, so shard_start creates the thread and the thread creates the
 * ring; init_barrier (in main.c) orders ring_fd before any peer reads it. */
struct shard_boot { struct shard *sh; pthread_barrier_t *bar; int *err; };

static void *shard_boot_main(void *arg) {
  struct shard_boot b = *(struct shard_boot *)arg;
  free(arg);
  char name[16]; /* top -H, perf and /proc show which shard is busy */
  snprintf(name, sizeof name, "shard-%d", b.sh->id);
  pthread_setname_np(pthread_self(), name);
  int r = setup_ring(b.sh);
  if (r < 0) {
    log_error("shard %d: io_uring set-up failed: %s", b.sh->id, strerror(-r));
    *b.err = r;
  }
  pthread_barrier_wait(b.bar); /* everyone's ring exists (or failed) */
  pthread_barrier_wait(b.bar); /* main checked errors and said go */
  if (atomic_load(&b.sh->srv->stopping)) return NULL;
  return shard_main(b.sh);
}

int shard_spawn(struct shard *sh, pthread_barrier_t *bar, int *err) {
  list_init(&sh->conns);
  list_init(&sh->hs_fifo);
  list_init(&sh->wr_fifo);
  list_init(&sh->ka_fifo);
  list_init(&sh->dirty);
  list_init(&sh->handoff_pending);
  list_init(&sh->mesh_wr_fifo);
  list_init(&sh->link_wr_fifo);
  list_init(&sh->rl_paused);
  peer_table_init(&sh->peers);
  int words = inbound_words(sh->srv);
  sh->pending_pub = calloc((size_t)words, sizeof(uint64_t));
  sh->outbox_pend = calloc((size_t)words, sizeof(uint64_t));
  sh->outbox_h = calloc((size_t)sh->srv->nshards, sizeof *sh->outbox_h);
  sh->outbox_t = calloc((size_t)sh->srv->nshards, sizeof *sh->outbox_t);
  if (!sh->outbox_pend || !sh->outbox_h || !sh->outbox_t || region_shard_init(sh) < 0) return -ENOMEM;
  /* Whole cache lines: the bits are written by other shards. */
  size_t ib = ((size_t)words * sizeof(uint64_t) + 63) & ~(size_t)63;
  sh->inbound = aligned_alloc(64, ib);
  if (sh->inbound)
    for (int w = 0; w < words; w++) atomic_init(&sh->inbound[w], 0);
  struct shard_boot *b = malloc(sizeof *b);
  if (!sh->pending_pub || !sh->inbound || !b) { free(b); return -ENOMEM; }
  *b = (struct shard_boot){sh, bar, err};
  int r = pthread_create(&sh->thread, NULL, shard_boot_main, b);
  if (r != 0) { free(b); return -r; }
  return 0;
}
