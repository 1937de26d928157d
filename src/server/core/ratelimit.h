/* ratelimit.h: a token bucket shared by every shard, lock-free: derper's
 * -accept-connection-limit / -accept-connection-burst.
 *
 * It decides as golang.org/x/time/rate's Limiter.Allow (v0.5.0, derper's):
 * a bucket of `burst` tokens, full at start, refilled at `limit` tokens a
 * second; an event takes a token or is refused. limit +Inf: everything
 * passes; limit 0: `burst` events pass in all, then none; burst 0 (and a
 * finite limit): nothing passes. Kept as GCRA: one atomic "theoretical
 * arrival time", moved by one compare-and-swap per allowed event, so shards
 * accepting at once share one exact bucket and never wait on a lock. */
#ifndef DERPD_RATELIMIT_H
#define DERPD_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

enum rate_mode { RATE_UNLIMITED = 0, RATE_FIXED, RATE_BUCKET };

struct rate_limiter {
  enum rate_mode mode;
  int64_t interval_ns;   /* RATE_BUCKET: nanoseconds per token */
  int64_t tau_ns;        /* RATE_BUCKET: burst * interval, how far ahead `tat` may run */
  _Atomic int64_t state; /* RATE_BUCKET: the theoretical arrival time (ns);
                            RATE_FIXED: the events still allowed */
};

/* limit: events per second (>= 0, may be +Inf); burst >= 0. */
void rate_limiter_init(struct rate_limiter *rl, double limit, int64_t burst);
/* One event at now_ns (CLOCK_MONOTONIC; threads' readings that disagree by
 * a little move the outcome by as little). True: allowed. Any thread. */
bool rate_limiter_allow(struct rate_limiter *rl, int64_t now_ns);

static inline int64_t rate_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
