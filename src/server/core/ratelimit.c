/* ratelimit.c: owns the shared token bucket (ratelimit.h). Pure: the clock
 * is the caller's. */
#include "server/core/ratelimit.h"

#include <math.h>

/* Bounds that keep every sum below INT64_MAX for a monotonic clock's
 * lifetime (now + tau + interval): about 73 years each. */
#define SPAN_MAX (INT64_MAX / 4)
/* Compare-and-swap attempts before refusing: each failure means another
 * thread took a token, so this is only reached under a storm of accepts. */
#define CAS_TRIES 1024

void rate_limiter_init(struct rate_limiter *rl, double limit, int64_t burst) {
  rl->interval_ns = rl->tau_ns = 0;
  if (isinf(limit) && limit > 0) {
    rl->mode = RATE_UNLIMITED;
    atomic_init(&rl->state, 0);
  } else if (limit <= 0 || burst <= 0) {
    rl->mode = RATE_FIXED; /* limit 0: burst events in all; burst 0: none */
    atomic_init(&rl->state, limit <= 0 && burst > 0 ? burst : 0);
  } else {
    rl->mode = RATE_BUCKET;
    double iv = 1e9 / limit;
    rl->interval_ns = iv >= (double)SPAN_MAX ? SPAN_MAX : iv < 1 ? 1 : (int64_t)(iv + 0.5);
    rl->tau_ns = burst > SPAN_MAX / rl->interval_ns ? SPAN_MAX : burst * rl->interval_ns;
    atomic_init(&rl->state, 0); /* long past: the bucket is full */
  }
}

bool rate_limiter_allow(struct rate_limiter *rl, int64_t now_ns) {
  if (rl->mode == RATE_UNLIMITED) return true;
  int64_t cur = atomic_load_explicit(&rl->state, memory_order_relaxed);
  for (int i = 0; i < CAS_TRIES; i++) {
    int64_t next;
    if (rl->mode == RATE_FIXED) {
      if (cur <= 0) return false;
      next = cur - 1;
    } else {
      next = (cur > now_ns ? cur : now_ns) + rl->interval_ns;
      if (next - now_ns > rl->tau_ns) return false; /* fewer than one token left */
    }
    if (atomic_compare_exchange_weak_explicit(&rl->state, &cur, next, memory_order_relaxed,
                                              memory_order_relaxed))
      return true;
  }
  return false;
}
