/* stats_hist.h: derpd's histograms: fixed buckets, one set per shard with a
 * single writer (the shard), summed by whoever renders a page (stats_page.c).
 *
 * Observing costs a short bucket search and two relaxed load+stores; the
 * buckets are per bucket, not cumulative (the page accumulates them). */
#ifndef DERPD_STATS_HIST_H
#define DERPD_STATS_HIST_H

#include <stdatomic.h>
#include <stdint.h>

enum hist_id {
  HIST_write_frames, /* derp_buffered_write_frames: frames per send batch (derper's buckets) */
  HIST_queue_wait,   /* derpd_queue_wait_seconds: a packet's wait, received to written (µs) */
  HIST_handshake,    /* derpd_handshake_seconds: accept to established (ms) */
  HIST_mesh_batch,   /* derp_mesh_update_batch_size: presence frames per batch to a watcher */
  HIST_mesh_loops,   /* derp_mesh_update_loop_count: batches per flush of a watcher's changes */
  HIST_N
};

#define HIST_BOUNDS_MAX 17 /* finite upper bounds; one more bucket for +Inf */

struct hist {
  _Atomic int64_t bucket[HIST_BOUNDS_MAX + 1];
  _Atomic int64_t sum; /* in the unit observed */
};

struct hist_def {
  const char *name, *help;
  int n;                            /* finite bounds used */
  int64_t bound[HIST_BOUNDS_MAX];   /* upper bounds (le), ascending, in the unit observed */
  double scale;                     /* that unit in Prometheus' (µs -> s: 1e-6) */
};
extern const struct hist_def hist_defs[HIST_N];

/* A shard's operations statistics beside its counters (struct stats). */
struct stats_ops {
  struct hist hist[HIST_N];
  _Atomic uint64_t queue_ms_ema;  /* derp_average_queue_duration_ms: a double's bits */
  _Atomic int64_t queue_ema_n;    /* packets in that average (0: none yet) */
};

static inline void ops_add(_Atomic int64_t *x, int64_t d) {
  atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + d, memory_order_relaxed);
}

/* Single writer: the owning shard only. */
static inline void hist_observe(struct stats_ops *o, enum hist_id id, int64_t v) {
  const struct hist_def *d = &hist_defs[id];
  int i = 0;
  while (i < d->n && v > d->bound[i]) i++;
  ops_add(&o->hist[id].bucket[i], 1);
  ops_add(&o->hist[id].sum, v);
}

/* A packet waited wait_us from receipt until written: the histogram and
 * derper's moving average (alpha 0.1 per packet, in milliseconds). */
static inline void ops_queue_wait(struct stats_ops *o, int64_t wait_us) {
  hist_observe(o, HIST_queue_wait, wait_us);
  union { uint64_t u; double d; } ema = {atomic_load_explicit(&o->queue_ms_ema, memory_order_relaxed)};
  double ms = (double)wait_us / 1000.0;
  ema.d = atomic_load_explicit(&o->queue_ema_n, memory_order_relaxed) ? 0.1 * ms + 0.9 * ema.d : ms;
  atomic_store_explicit(&o->queue_ms_ema, ema.u, memory_order_relaxed);
  ops_add(&o->queue_ema_n, 1);
}

#endif
