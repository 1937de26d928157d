/* test_ratelimit.c: the shared token bucket (src/server/core/ratelimit.c)
 * against golang.org/x/time/rate's Allow, on a clock the test drives, and
 * exactness when threads take tokens at once. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "server/core/ratelimit.h"

#define MS 1000000LL
#define SEC 1000000000LL

static int allow_n(struct rate_limiter *rl, int64_t now, int n) {
  int ok = 0;
  for (int i = 0; i < n; i++) ok += rate_limiter_allow(rl, now);
  return ok;
}

Test(ratelimit, unlimited) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, INFINITY, INT64_MAX);
  cr_assert_eq(allow_n(&rl, 1, 100000), 100000);
  rate_limiter_init(&rl, INFINITY, 0); /* x/time: an infinite limit ignores the burst */
  cr_assert_eq(allow_n(&rl, 1, 1000), 1000);
}

Test(ratelimit, bucket_starts_full_and_refills) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 5, 5);
  int64_t t = 123 * SEC;
  cr_assert_eq(allow_n(&rl, t, 40), 5, "a full bucket holds the burst");
  cr_assert_eq(allow_n(&rl, t + 199 * MS, 1), 0, "not yet a whole token");
  cr_assert_eq(allow_n(&rl, t + 200 * MS, 2), 1, "one token per 200 ms");
  cr_assert_eq(allow_n(&rl, t + 1200 * MS, 10), 5, "a second refills five");
  cr_assert_eq(allow_n(&rl, t + 100 * SEC, 10), 5, "never more than the burst");
}

Test(ratelimit, fractional_rate) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 0.5, 1);
  cr_assert(rate_limiter_allow(&rl, 10 * SEC));
  cr_assert(!rate_limiter_allow(&rl, 10 * SEC + 1999 * MS));
  cr_assert(rate_limiter_allow(&rl, 12 * SEC));
  cr_assert(!rate_limiter_allow(&rl, 12 * SEC));
}

Test(ratelimit, zero_limit_allows_the_burst_once) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 0, 3);
  cr_assert_eq(allow_n(&rl, 0, 10), 3);
  cr_assert_eq(allow_n(&rl, 1000 * SEC, 10), 0);
}

Test(ratelimit, zero_burst_allows_nothing) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 1000, 0);
  cr_assert_eq(allow_n(&rl, 5 * SEC, 10), 0);
  cr_assert_eq(allow_n(&rl, 500 * SEC, 10), 0);
}

/* derper's default burst (Go's MaxInt) with a limit set: no limit at all. */
Test(ratelimit, default_burst_with_a_limit) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 5, INT64_MAX);
  cr_assert_eq(allow_n(&rl, 1, 1000000), 1000000);
}

Test(ratelimit, extreme_rates) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 1e12, 2); /* beyond a token a nanosecond */
  cr_assert_eq(allow_n(&rl, 7, 10), 2);
  cr_assert_eq(allow_n(&rl, 9, 10), 2);
  rate_limiter_init(&rl, 1e-30, 1); /* practically never refills */
  cr_assert(rate_limiter_allow(&rl, 7));
  cr_assert(!rate_limiter_allow(&rl, 7 + 3650LL * 86400 * SEC));
}

/* A reading older than the last one (another shard's clock) never yields
 * more tokens than the bucket holds. */
Test(ratelimit, clocks_out_of_step) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 10, 2);
  cr_assert_eq(allow_n(&rl, 50 * SEC, 2), 2);
  cr_assert_eq(allow_n(&rl, 50 * SEC - 5 * MS, 5), 0);
  cr_assert_eq(allow_n(&rl, 50 * SEC + 100 * MS, 5), 1);
}

struct taker { struct rate_limiter *rl; int got; };

static void *take(void *arg) {
  struct taker *t = arg;
  for (int i = 0; i < 20000; i++) t->got += rate_limiter_allow(t->rl, 42 * SEC);
  return NULL;
}

Test(ratelimit, threads_share_one_exact_bucket) {
  struct rate_limiter rl;
  rate_limiter_init(&rl, 1, 1000);
  pthread_t th[4];
  struct taker tk[4];
  for (int i = 0; i < 4; i++) {
    tk[i] = (struct taker){&rl, 0};
    pthread_create(&th[i], NULL, take, &tk[i]);
  }
  int total = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    total += tk[i].got;
  }
  cr_assert_eq(total, 1000);
}
