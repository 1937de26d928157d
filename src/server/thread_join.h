/* thread_join.h: joining a thread within a time on the monotonic clock.
 *
 * pthread_timedjoin_np's deadline is on CLOCK_REALTIME, so a clock step
 * while the process stops would stretch or cut the wait by the step; and
 * pthread_clockjoin_np, which takes CLOCK_MONOTONIC, is not intercepted by
 * GCC 12's TSan, which would then miss the join's happens-before. So: try
 * the join, and sleep in short slices between tries (a stop waits at most
 * one slice longer than the thread takes). Any thread may call it. */
#ifndef DERPD_THREAD_JOIN_H
#define DERPD_THREAD_JOIN_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define JOIN_POLL_NS 2000000L /* 2 ms */

static inline int64_t join_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* 0 once t is joined, ETIMEDOUT if it still runs after ms milliseconds. */
static inline int join_within(pthread_t t, int64_t ms) {
  int64_t end = join_now_ns() + ms * 1000000;
  for (;;) {
    if (pthread_tryjoin_np(t, NULL) == 0) return 0;
    int64_t left = end - join_now_ns();
    if (left <= 0) return ETIMEDOUT;
    struct timespec d = {0, left < JOIN_POLL_NS ? left : JOIN_POLL_NS};
    nanosleep(&d, NULL);
  }
}

#endif
