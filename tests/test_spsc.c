/* test_spsc.c: tests for the header-only SPSC ring (src/server/core/spsc.h).
 *
 * Normally a Criterion test. Criterion cannot start under ThreadSanitizer
 * (its BoxFort arena maps at fixed addresses TSan reserves for shadow memory:
 * "Could not initialize inheritable arena", Snaipe/Criterion#274), so when
 * built with -fsanitize=thread (or -DSPSC_STANDALONE) this file uses a tiny
 * built-in runner with the same Test()/cr_assert* spelling and its own main(),
 * and the same tests run unchanged. */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

#include "server/core/spsc.h"

#if defined(SPSC_STANDALONE) || defined(__SANITIZE_THREAD__)
#define SPSC_NO_CRITERION 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SPSC_NO_CRITERION 1
#endif
#endif

#ifndef SPSC_NO_CRITERION
#include <criterion/criterion.h>
#else
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>

struct sa_test {
  const char *name;
  void (*fn)(void);
};
static struct sa_test sa_tests[64];
static int sa_ntests;
static jmp_buf sa_jmp;

static void sa_register(const char *name, void (*fn)(void)) {
  if (sa_ntests < (int)(sizeof(sa_tests) / sizeof(sa_tests[0])))
    sa_tests[sa_ntests++] = (struct sa_test){name, fn};
}

__attribute__((format(printf, 4, 5), noreturn))
static void sa_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
  fprintf(stderr, "[----] %s:%d: Assertion Failed: %s\n", file, line, expr);
  if (fmt[1]) { /* fmt is " " followed by the caller's format, if any */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[----]  ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
  }
  longjmp(sa_jmp, 1);
}

#define Test(suite, name, ...)                                                 \
  static void suite##_##name(void);                                            \
  __attribute__((constructor)) static void suite##_##name##_reg(void) {        \
    sa_register(#suite "::" #name, suite##_##name);                            \
  }                                                                            \
  static void suite##_##name(void)
#define cr_assert(c, ...)                                                      \
  do {                                                                         \
    if (!(c)) sa_fail(__FILE__, __LINE__, #c, " " __VA_ARGS__);                \
  } while (0)
#define cr_assert_not(c, ...) cr_assert(!(c), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)

static int sa_failed, sa_i; /* static: survive longjmp */

int main(void) {
  for (sa_i = 0; sa_i < sa_ntests; sa_i++) {
    if (setjmp(sa_jmp) == 0) {
      sa_tests[sa_i].fn();
      printf("[PASS] %s\n", sa_tests[sa_i].name);
    } else {
      printf("[FAIL] %s\n", sa_tests[sa_i].name);
      sa_failed++;
    }
    fflush(stdout);
  }
  printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d\n", sa_ntests,
         sa_ntests - sa_failed, sa_failed);
  return sa_failed ? 1 : 0;
}
#endif

#define ITEM(i) ((void *)(uintptr_t)(i))
#define VAL(p) ((uintptr_t)(p))

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pop until the ring reports empty. spsc_pop_batch refreshes its cached tail
 * only once it has consumed everything it last saw, so a single call may
 * return fewer items than are published; callers loop. */
static uint32_t drain(struct spsc *q, void **out, uint32_t max) {
  uint32_t got = 0, n;
  while (got < max && (n = spsc_pop_batch(q, out + got, max - got)) > 0) got += n;
  return got;
}

/* Fill to capacity, publish, and drain in one batch: same items, same order. */
Test(spsc, fill_publish_pop_in_order) {
  const uint32_t cap = 64;
  struct spsc *q = spsc_new(cap);
  cr_assert_not_null(q);
  cr_assert(spsc_empty(q));
  for (uint32_t i = 0; i < cap; i++)
    cr_assert(spsc_push(q, ITEM(i + 1)), "push %u of %u failed", i, cap);
  cr_assert_not(spsc_push(q, ITEM(999)), "push into a full ring succeeded");
  cr_assert(spsc_publish(q));
  cr_assert_not(spsc_empty(q));

  void *out[128];
  uint32_t n = spsc_pop_batch(q, out, 128);
  cr_assert_eq(n, cap);
  for (uint32_t i = 0; i < cap; i++) cr_assert_eq(VAL(out[i]), i + 1);
  cr_assert(spsc_empty(q));
  cr_assert_eq(spsc_pop_batch(q, out, 128), 0);
  spsc_free(q);
}

/* A full ring refuses pushes until the consumer frees a slot, and then takes
 * exactly as many as were freed. */
Test(spsc, push_after_full_fails_until_pop) {
  const uint32_t cap = 8;
  struct spsc *q = spsc_new(cap);
  cr_assert_not_null(q);
  for (uint32_t i = 0; i < cap; i++) cr_assert(spsc_push(q, ITEM(i + 1)));
  cr_assert_not(spsc_push(q, ITEM(100)));
  cr_assert_not(spsc_push(q, ITEM(101)));
  spsc_publish(q);
  cr_assert_not(spsc_push(q, ITEM(102)), "still full after publish");

  void *out[3];
  cr_assert_eq(spsc_pop_batch(q, out, 3), 3);
  cr_assert_eq(VAL(out[0]), 1);
  cr_assert_eq(VAL(out[2]), 3);
  for (uint32_t i = 0; i < 3; i++) cr_assert(spsc_push(q, ITEM(cap + 1 + i)));
  cr_assert_not(spsc_push(q, ITEM(103)));
  spsc_publish(q);

  void *all[16];
  uint32_t n = drain(q, all, 16);
  cr_assert_eq(n, cap);
  for (uint32_t i = 0; i < n; i++) cr_assert_eq(VAL(all[i]), i + 4);
  spsc_free(q);
}

/* Staged items are invisible to the consumer until spsc_publish. */
Test(spsc, staged_invisible_until_publish) {
  struct spsc *q = spsc_new(16);
  cr_assert_not_null(q);
  void *out[16];
  cr_assert_not(spsc_publish(q), "publish with nothing staged reported new items");
  cr_assert(spsc_push(q, ITEM(1)));
  cr_assert(spsc_push(q, ITEM(2)));
  cr_assert(spsc_empty(q));
  cr_assert_eq(spsc_pop_batch(q, out, 16), 0);
  cr_assert(spsc_publish(q));
  cr_assert_not(spsc_publish(q), "second publish reported new items");
  cr_assert(spsc_push(q, ITEM(3))); /* staged after the publish */
  cr_assert_eq(spsc_pop_batch(q, out, 16), 2);
  cr_assert_eq(VAL(out[0]), 1);
  cr_assert_eq(VAL(out[1]), 2);
  cr_assert(spsc_empty(q));
  cr_assert_eq(spsc_pop_batch(q, out, 16), 0);
  cr_assert(spsc_publish(q));
  cr_assert_eq(spsc_pop_batch(q, out, 16), 1);
  cr_assert_eq(VAL(out[0]), 3);
  spsc_free(q);
}

/* pop_batch honours max and leaves the rest queued in order. */
Test(spsc, pop_batch_respects_max) {
  struct spsc *q = spsc_new(32);
  cr_assert_not_null(q);
  for (uint32_t i = 0; i < 20; i++) cr_assert(spsc_push(q, ITEM(i + 1)));
  spsc_publish(q);
  void *out[32];
  uint32_t got = 0;
  uint32_t n;
  while ((n = spsc_pop_batch(q, out, 3)) > 0) {
    cr_assert_leq(n, 3);
    for (uint32_t i = 0; i < n; i++) cr_assert_eq(VAL(out[i]), got + i + 1);
    got += n;
  }
  cr_assert_eq(got, 20);
  spsc_free(q);
}

/* A short batch means the ring is empty: the consumer drains a source again
 * only when a batch came back full or the producer set its bit anew, and the
 * producer's bit for what it published meanwhile may already be taken (the
 * shards' inbound mask). So a pop that its cached tail would cut short must
 * look at the published tail. Before: 256, then 44 of 144 while 100 more were
 * published, and those 100 stayed in the ring until the producer's next
 * publish. */
Test(spsc, short_batch_means_empty) {
  struct spsc *q = spsc_new(1024);
  cr_assert_not_null(q);
  for (uint32_t i = 0; i < 300; i++) cr_assert(spsc_push(q, ITEM(i + 1)));
  spsc_publish(q);
  void *out[256];
  cr_assert_eq(spsc_pop_batch(q, out, 256), 256);
  for (uint32_t i = 300; i < 400; i++) cr_assert(spsc_push(q, ITEM(i + 1)));
  spsc_publish(q);
  uint32_t n = spsc_pop_batch(q, out, 256);
  cr_assert_eq(n, 144, "popped %u of the 144 published", n);
  for (uint32_t i = 0; i < n; i++) cr_assert_eq(VAL(out[i]), 256 + i + 1);
  cr_assert(spsc_empty(q));
  spsc_free(q);
}

/* Wrap the ring many times with varying batch sizes (and odd phase) so every
 * slot index and the uint32 arithmetic around the mask are exercised. */
Test(spsc, wrap_around_many_times) {
  const uint32_t cap = 16;
  struct spsc *q = spsc_new(cap);
  cr_assert_not_null(q);
  uintptr_t next_in = 1, next_out = 1;
  void *out[16];
  for (uint32_t round = 0; round < 20000; round++) {
    uint32_t k = 1 + round % cap; /* 1..cap items this round */
    uint32_t pushed = 0;
    while (pushed < k && spsc_push(q, ITEM(next_in))) { next_in++; pushed++; }
    spsc_publish(q);
    /* Drain fewer than we pushed on odd rounds so the ring stays part full. */
    uint32_t want = (round & 1) ? (k > 1 ? k - 1 : 1) : cap;
    uint32_t n = spsc_pop_batch(q, out, want);
    for (uint32_t i = 0; i < n; i++)
      cr_assert_eq(VAL(out[i]), next_out + i, "round %u: got %lu want %lu", round,
                   (unsigned long)VAL(out[i]), (unsigned long)(next_out + i));
    next_out += n;
  }
  uint32_t n;
  while ((n = spsc_pop_batch(q, out, 16)) > 0) {
    for (uint32_t i = 0; i < n; i++) cr_assert_eq(VAL(out[i]), next_out + i);
    next_out += n;
  }
  cr_assert_eq(next_out, next_in);
  cr_assert_gt(next_in, 20000 * 2, "ring did not wrap many times");
  spsc_free(q);
}

/* Capacity 2: the smallest legal ring. */
Test(spsc, capacity_two) {
  struct spsc *q = spsc_new(2);
  cr_assert_not_null(q);
  void *out[4];
  uintptr_t next_in = 1, next_out = 1;
  for (int round = 0; round < 1000; round++) {
    cr_assert(spsc_push(q, ITEM(next_in++)));
    cr_assert(spsc_push(q, ITEM(next_in++)));
    cr_assert_not(spsc_push(q, ITEM(0)));
    spsc_publish(q);
    uint32_t n = spsc_pop_batch(q, out, round % 2 ? 1 : 4);
    cr_assert_eq(n, round % 2 ? 1u : 2u);
    for (uint32_t i = 0; i < n; i++) cr_assert_eq(VAL(out[i]), next_out + i);
    next_out += n;
    if (n == 1) { /* one slot free: exactly one push fits */
      cr_assert(spsc_push(q, ITEM(next_in++)));
      cr_assert_not(spsc_push(q, ITEM(0)));
      spsc_publish(q);
      n = drain(q, out, 4);
      cr_assert_eq(n, 2);
      for (uint32_t i = 0; i < n; i++) cr_assert_eq(VAL(out[i]), next_out + i);
      next_out += n;
    }
    cr_assert(spsc_empty(q));
  }
  cr_assert_eq(next_out, next_in);
  spsc_free(q);
}

/* ---- Two threads ------------------------------------------------------- */

struct hammer {
  struct spsc *q;
  uint64_t count;       /* items to send */
  uint32_t publish_every;
  double deadline;      /* monotonic seconds; both sides give up after it */
  /* Results (written by their own thread, read after join). */
  uint64_t received;
  uint64_t bad_at;      /* 0, or the received value that broke the order */
  uint64_t bad_want;
  bool producer_timed_out;
  bool consumer_timed_out;
};

/* Back off: spin briefly, then yield. Bounded by the caller's deadline. */
static void backoff(unsigned *spins) {
  if (++*spins < 64) return;
  *spins = 0;
  sched_yield();
}

static void *producer(void *arg) {
  struct hammer *h = arg;
  unsigned spins = 0;
  uint32_t since = 0;
  for (uint64_t i = 0; i < h->count; i++) {
    while (!spsc_push(h->q, ITEM(i + 1))) {
      /* Full: make sure the consumer can see what is staged, then wait. */
      spsc_publish(h->q);
      since = 0;
      backoff(&spins);
      if (spins == 0 && now_s() > h->deadline) {
        h->producer_timed_out = true;
        return NULL;
      }
    }
    if (++since >= h->publish_every) {
      spsc_publish(h->q);
      since = 0;
    }
  }
  spsc_publish(h->q);
  return NULL;
}

static void *consumer(void *arg) {
  struct hammer *h = arg;
  void *out[64];
  uint64_t want = 1;
  unsigned spins = 0;
  while (want <= h->count) {
    uint32_t n = spsc_pop_batch(h->q, out, 64);
    if (n == 0) {
      backoff(&spins);
      if (spins == 0 && now_s() > h->deadline) {
        h->consumer_timed_out = true;
        break;
      }
      continue;
    }
    for (uint32_t i = 0; i < n; i++, want++) {
      if (VAL(out[i]) != want) {
        h->bad_at = VAL(out[i]);
        h->bad_want = want;
        h->received = want - 1;
        return NULL;
      }
    }
  }
  h->received = want - 1;
  return NULL;
}

static void hammer_run(uint32_t cap, uint64_t count, uint32_t publish_every, double limit_s) {
  struct hammer h = {0};
  h.q = spsc_new(cap);
  cr_assert_not_null(h.q);
  h.count = count;
  h.publish_every = publish_every;
  double start = now_s();
  h.deadline = start + limit_s;

  pthread_t pt, ct;
  cr_assert_eq(pthread_create(&ct, NULL, consumer, &h), 0);
  cr_assert_eq(pthread_create(&pt, NULL, producer, &h), 0);
  pthread_join(pt, NULL);
  pthread_join(ct, NULL);
  double took = now_s() - start;

  cr_assert_eq(h.bad_at, 0, "order broken: got %llu, want %llu",
               (unsigned long long)h.bad_at, (unsigned long long)h.bad_want);
  cr_assert_not(h.producer_timed_out, "producer did not finish within %.0f s", limit_s);
  cr_assert_not(h.consumer_timed_out, "consumer did not finish within %.0f s (got %llu of %llu)",
                limit_s, (unsigned long long)h.received, (unsigned long long)count);
  cr_assert_eq(h.received, count);
  cr_assert(spsc_empty(h.q));
  cr_assert_lt(took, limit_s);
  spsc_free(h.q);
}

/* Divides the hammer counts; -DHAMMER_SCALE=10 for a slow machine. The full
 * 10M run takes ~1 s plain and ~1.5 s under TSan -O0 on 2 cores; but with
 * capacity 2 every item is a hand-over, and under TSan with another process
 * busy on both cores the 1M run took up to 25 s of its 60, so TSan runs a
 * quarter (250,000 hand-overs still wrap a 2-slot ring 125,000 times). */
#if !defined(HAMMER_SCALE) && defined(__SANITIZE_THREAD__)
#define HAMMER_SCALE 4
#endif
#ifndef HAMMER_SCALE
#define HAMMER_SCALE 1
#endif

Test(spsc, two_threads_10m_in_order, .timeout = 90) {
  hammer_run(1024, 10000000ull / HAMMER_SCALE, 32, 60.0);
}

/* Tiny ring: the producer is full nearly all the time, so the head/tail caches
 * are refreshed constantly. */
Test(spsc, two_threads_capacity_two, .timeout = 90) {
  hammer_run(2, 1000000ull / HAMMER_SCALE, 1, 60.0);
}

Test(spsc, two_threads_small_ring_batched_publish, .timeout = 90) {
  hammer_run(8, 2000000ull / HAMMER_SCALE, 5, 60.0);
}

/* A ring on slots the caller owns (derpd carves all rings out of one
 * mapping): same behaviour, and spsc_free leaves the slots alone (ASan would
 * report freeing a static array). */
Test(spsc, caller_slots_wrap_and_free_leaves_them) {
  static void *slots[8];
  struct spsc *q = spsc_new_at(8, slots);
  cr_assert_not_null(q);
  cr_assert_eq(q->slots, slots);
  uintptr_t next = 1, want = 1;
  for (int round = 0; round < 100; round++) {
    int k = 0;
    while (spsc_push(q, (void *)next)) next++, k++;
    cr_assert_eq(k, round == 0 ? 8 : 5, "round %d pushed %d", round, k);
    spsc_publish(q);
    for (uint32_t got = 0; got < 5;) { /* a batch stops at the consumer's cached tail */
      void *out[5];
      uint32_t n = spsc_pop_batch(q, out, 5 - got);
      cr_assert_gt(n, 0, "round %d: published items not popped", round);
      for (uint32_t i = 0; i < n; i++) cr_assert_eq((uintptr_t)out[i], want++);
      got += n;
    }
  }
  spsc_free(q);
  slots[0] = slots; /* still ours */
  cr_assert_eq(slots[0], (void *)slots);
}
