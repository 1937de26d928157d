/* recv_pause.c: -rate-config on a shard: each client's bucket, and its reads
 * paused while the bucket is in debt (core/recv_limit.h has the arithmetic
 * and the file).
 *
 * derper waits before it reads a frame over the rate, so TCP pushes back on
 * the client and nothing is dropped. Here the frame that leaves the bucket
 * in debt is relayed, and the conn is paused: the stream bytes behind it,
 * and whatever the recv already in flight brings, are held (struct
 * recv_held), and its multishot recv is cancelled. When the debt is paid
 * (recv_pause_resume_due; the shard's sleep ends for it) the held bytes are
 * parsed as if they had just arrived, which may pause the conn again, and
 * only then is the socket read again, now one buffer per single-shot recv
 * so that the client's backlog waits in its socket, not here. Pacing is
 * exact to a frame; what is held is bounded by what one recv can bring in a
 * turn (the shard's receive buffers), and RECV_HELD_MAX closes the conn
 * beyond it (rate_limit_backlog) rather than grow.
 *
 * Mesh peers and links are never paced by -rate-config, but they pause here
 * for another reason: each of their PeerPresent, PeerGone and ClosePeer
 * frames becomes a region message for the key's owner shard, and past
 * OUTBOX_PAUSE of those waiting for ring space (core/shard.c's outbox) their
 * reads stop for OUTBOX_RETRY_NS at a time, so that a node flooding us is
 * paced by TCP, not by our memory (recv_pause_outbox).
 *
 * Owns sh->rl* and c->pace (allocated at a conn's first use of it, so that
 * a node without -rate-config carries none per idle client); only the
 * conn's shard touches them. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

/* Paused conns are scanned when the earliest is due, and every conn due
 * within this much after it resumes in the same scan: at most one scan per
 * millisecond however many conns wait, for at most 1 ms of extra burst. */
#define RESUME_SLACK_NS 1000000
/* Held bytes per conn, at most: more than the most one multishot recv can
 * take in before its cancel lands (--recv-bufs x --recv-buf-size at their
 * defaults is 4 MiB) is not a client being paced but a bug to stop. */
#define RECV_HELD_MAX (16u << 20)
/* How long a mesh conn's reads stop when the outbox is full (OUTBOX_PAUSE,
 * server.h): the targets drain their rings every turn, so a millisecond is
 * many turns. */
#define OUTBOX_RETRY_NS 1000000

struct recv_held {
  uint32_t off, len, cap; /* bytes [off, len) are still to parse */
  uint8_t b[];
};

/* A conn's pacing state, apart from struct conn: most conns never need it. */
struct conn_pace {
  struct recv_bucket rl;   /* -rate-config: this client's bucket (core/recv_limit.h);
                              a mesh conn's tat_ns: when to look at the outbox again */
  struct recv_held *held;  /* stream bytes received while paused */
  struct list node;        /* shard's rl_paused while rx_paused */
  struct conn *c;
};

/* The held bytes resume() is parsing now (one at a time: the shard's thread). */
static _Thread_local struct recv_held *feeding;

/* c's pacing state, made at its first use; NULL after closing c (no memory). */
static struct conn_pace *pace(struct conn *c) {
  if (c->pace) return c->pace;
  struct conn_pace *z = calloc(1, sizeof *z);
  if (!z) {
    conn_close(c, CLOSE_nomem, "-rate-config state");
    return NULL;
  }
  list_init(&z->node);
  z->c = c;
  return c->pace = z;
}

static struct conn *paused_conn(struct list *n) { return list_entry(n, struct conn_pace, node)->c; }

int recv_pause_hold(struct conn *c, const uint8_t *p, size_t n) {
  struct conn_pace *z = pace(c);
  if (!z) return -1;
  struct recv_held *h = z->held;
  /* Paused again while resume() parses its held bytes: the rest stays
   * where it is, not copied once per frame. */
  if (!h && feeding && p >= feeding->b && p + n == feeding->b + feeding->len) {
    feeding->off = (uint32_t)(p - feeding->b);
    z->held = feeding;
    return 0;
  }
  if (h && h->off) { /* parsed bytes at the front: drop them before growing */
    memmove(h->b, h->b + h->off, h->len - h->off);
    h->len -= h->off;
    h->off = 0;
  }
  size_t len = h ? h->len : 0;
  if (len + n > RECV_HELD_MAX) {
    conn_close(c, CLOSE_rate_backlog, "more held for -rate-config than one receive can bring");
    return -1;
  }
  if (!h || h->cap < len + n) {
    size_t cap = h ? h->cap : 0;
    while (cap < len + n) cap = cap ? cap * 2 : 65536;
    struct recv_held *g = realloc(h, sizeof *g + cap);
    if (!g) {
      conn_close(c, CLOSE_nomem, "-rate-config held bytes");
      return -1;
    }
    g->off = 0;
    g->len = (uint32_t)len;
    g->cap = (uint32_t)cap;
    z->held = h = g;
  }
  memcpy(h->b + h->len, p, n);
  h->len += (uint32_t)n;
  return 0;
}

static void unpause(struct shard *sh, struct conn *c) {
  list_del(&c->pace->node);
  c->rx_paused = 0;
  sh->rl_npaused--;
  if (!c->is_mesh) STAT_ADD(&sh->stats, rl_paused, -1);
}

/* Reads stop until the bucket's tat_ns: the rest of this input is held by
 * the caller, the recv in flight is cancelled. */
static void pause_until_tat(struct shard *sh, struct conn *c) {
  struct conn_pace *z = c->pace;
  c->rx_paused = 1;
  c->rx_was_paused = 1;
  list_add_tail(&sh->rl_paused, &z->node);
  if (sh->rl_npaused++ == 0 || z->rl.tat_ns < sh->rl_next_ns) sh->rl_next_ns = z->rl.tat_ns;
  if (c->recv_armed && !c->rx_cancel) conn_cancel_recv(c);
}

/* The held bytes first, as if they came now (they may pause it again and
 * be held anew); then the socket, unless paused again. */
static void resume(struct shard *sh, struct conn *c) {
  unpause(sh, c);
  struct recv_held *h = c->pace->held;
  c->pace->held = NULL;
  if (h) {
    feeding = h;
    conn_stream_input(c, h->b + h->off, h->len - h->off);
    feeding = NULL;
    /* Paused again: kept (recv_pause_hold); closed: c->pace is gone. */
    if (!c->pace || c->pace->held != h) free(h);
  }
  /* A cancel still in flight: its completion arms the recv again. */
  if (c->state == CS_ESTABLISHED && !c->rx_paused && !c->recv_armed) conn_arm_recv(c);
}

void recv_pause_refresh(struct shard *sh) {
  struct rate_cfg rc;
  uint32_t gen;
  if (!recv_limit_read(&sh->srv->recv_lim, &rc, &gen) || gen == sh->rl_gen) return;
  sh->rl = rc;
  sh->rl_gen = gen;
  /* derper gives every client a new, full bucket: nobody waits any more,
   * and all read by multishot again until paced anew (a SIGHUP: rare). */
  for (struct list *n = sh->conns.next; n != &sh->conns; n = n->next)
    list_entry(n, struct conn, all_node)->rx_single = 0;
  /* From a copy of the list: a conn whose held bytes exceed the new
   * burst is paused again, onto sh->rl_paused. */
  struct list all;
  list_take(&all, &sh->rl_paused);
  while (!list_empty(&all)) {
    struct conn *c = paused_conn(all.next);
    list_move_tail(&sh->rl_paused, &c->pace->node);
    resume(sh, c);
  }
}

bool recv_pause_take(struct conn *c, uint32_t frame_len) {
  struct shard *sh = c->sh;
  assert(!c->rx_paused); /* a paused conn's bytes are held, not parsed */
  struct conn_pace *z = pace(c);
  if (!z) return true; /* closed */
  if (z->rl.gen != sh->rl_gen) recv_bucket_reset(&z->rl, sh->rl_gen);
  if (recv_bucket_take(&z->rl, sh->rl, sh->now_us * 1000, frame_len) == 0) return false;
  STAT_INC(&sh->stats, rl_waited); /* derper: a frame that waited for tokens */
  c->rx_single = 1;
  STAT_INC(&sh->stats, rl_paused);
  STAT_INC(&sh->stats, rl_pauses);
  pause_until_tat(sh, c);
  return true;
}

/* A mesh conn's rl bucket is never charged (rate-config skips it), so its
 * tat_ns is free to say when to look at the outbox again. Its reads stay
 * multishot: this is a burst to absorb, not a rate to keep. */
bool recv_pause_outbox(struct conn *c) {
  struct shard *sh = c->sh;
  assert(c->is_mesh && !c->rx_paused);
  if (sh->outbox_n < OUTBOX_PAUSE || c->state != CS_ESTABLISHED) return false;
  struct conn_pace *z = pace(c);
  if (!z) return true; /* closed */
  z->rl.tat_ns = sh->now_us * 1000 + OUTBOX_RETRY_NS;
  STAT_INC(&sh->stats, mesh_paused);
  pause_until_tat(sh, c);
  return true;
}

bool recv_pause_take_skipped(struct conn *c, uint64_t bytes) {
  struct shard *sh = c->sh;
  struct conn_pace *z = pace(c);
  if (!z) return true; /* closed */
  if (z->rl.gen != sh->rl_gen) recv_bucket_reset(&z->rl, sh->rl_gen);
  /* In pieces the bucket takes. Not paused: the last piece may start a
   * pause. Paused already (by a frame of the same input): charged whole,
   * the pause only grows. */
  uint64_t keep = c->rx_paused ? 0 : RECV_LIMIT_MIN_BURST;
  while (bytes > keep) {
    uint64_t k = bytes - keep < RECV_LIMIT_MIN_BURST ? bytes - keep : RECV_LIMIT_MIN_BURST;
    recv_bucket_take(&z->rl, sh->rl, sh->now_us * 1000, k);
    bytes -= k;
  }
  return !c->rx_paused && recv_pause_take(c, (uint32_t)bytes);
}

void recv_pause_resume_due(struct shard *sh) {
  int64_t due = sh->now_us * 1000 + RESUME_SLACK_NS;
  struct list all;
  list_take(&all, &sh->rl_paused);
  sh->rl_next_ns = INT64_MAX;
  while (!list_empty(&all)) {
    struct conn *c = paused_conn(all.next);
    list_move_tail(&sh->rl_paused, &c->pace->node);
    int64_t tat = c->pace->rl.tat_ns;
    if (tat <= due) resume(sh, c); /* may pause it again: then it set rl_next_ns */
    else if (tat < sh->rl_next_ns) sh->rl_next_ns = tat;
  }
}

void recv_pause_forget(struct conn *c) {
  if (!c->pace) return;
  if (c->rx_paused) unpause(c->sh, c);
  free(c->pace->held);
  free(c->pace);
  c->pace = NULL;
}
