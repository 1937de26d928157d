/* thread_join.h: a join within a time joins a thread that ends in time,
 * reports ETIMEDOUT for one that does not (and leaves it joinable). */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <unistd.h>

#include "server/thread_join.h"

static atomic_bool release;

static void *waits_for_release(void *arg) {
  (void)arg;
  while (!atomic_load(&release)) usleep(1000);
  return NULL;
}

static void *sleeps_20ms(void *arg) {
  (void)arg;
  usleep(20000);
  return NULL;
}

Test(thread_join, joins_a_thread_that_ends_in_time) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, sleeps_20ms, NULL), 0);
  int64_t t0 = join_now_ns();
  cr_assert_eq(join_within(t, 5000), 0);
  int64_t took = join_now_ns() - t0;
  cr_assert_lt(took, 4000 * 1000000LL, "joined after %lld ns", (long long)took);
}

Test(thread_join, times_out_and_leaves_the_thread_joinable) {
  pthread_t t;
  atomic_store(&release, false);
  cr_assert_eq(pthread_create(&t, NULL, waits_for_release, NULL), 0);
  int64_t t0 = join_now_ns();
  cr_assert_eq(join_within(t, 50), ETIMEDOUT);
  int64_t took = join_now_ns() - t0;
  cr_assert_geq(took, 50 * 1000000LL, "gave up after %lld ns", (long long)took);
  cr_assert_eq(join_within(t, 0), ETIMEDOUT, "a zero wait tries once");
  atomic_store(&release, true);
  cr_assert_eq(join_within(t, 5000), 0);
}
