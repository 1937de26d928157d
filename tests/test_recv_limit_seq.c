/* test_recv_limit_seq.c: -rate-config's setting as the shards read it
 * (recv_limit_publish / recv_limit_read in src/server/core/recv_limit.c):
 * with the main thread publishing, a reader never sees half of an update.
 * mini_test.h, not Criterion, so that it runs under TSan (scripts/test's tsan
 * phase), which is the point: a data race here is a torn setting. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <pthread.h>
#include <stdatomic.h>

#include "server/core/recv_limit.h"

/* The writer publishes pairs (n, 2n); a reader must never see a mixed one. */
static struct recv_limit_shared g_shared;
static _Atomic int g_done;
static _Atomic long g_reads;
static uint64_t g_last; /* written before g_done, read after the join */

/* Publishes at least 200000 updates and goes on (bounded) until the reader
 * has read 1000 times while it ran: a loaded machine may not schedule the
 * reader during the first 200000. */
static void *writer(void *arg) {
  (void)arg;
  uint64_t n = 1;
  for (; n <= 200000 || (atomic_load(&g_reads) < 1000 && n < 50000000); n++)
    recv_limit_publish(&g_shared, (struct rate_cfg){n, 2 * n});
  g_last = n - 1;
  atomic_store(&g_done, 1);
  return NULL;
}

static void readers_never_see_half_an_update(void) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, writer, NULL), 0);
  long reads = 0;
  uint32_t last_gen = 0;
  while (!atomic_load(&g_done)) {
    struct rate_cfg c;
    uint32_t gen;
    if (!recv_limit_read(&g_shared, &c, &gen)) continue;
    cr_assert_eq(c.burst, 2 * c.bps, "torn read: %llu, %llu", (unsigned long long)c.bps,
                 (unsigned long long)c.burst);
    cr_assert_eq(gen & 1, 0);
    cr_assert(gen >= last_gen);
    last_gen = gen;
    reads++;
    atomic_store(&g_reads, reads);
  }
  pthread_join(t, NULL);
  struct rate_cfg c;
  uint32_t gen;
  cr_assert(recv_limit_read(&g_shared, &c, &gen));
  cr_assert_eq(c.bps, g_last);
  cr_assert_eq(gen, 2 * g_last);
  cr_assert(reads >= 1000, "only %ld reads while the writer ran", reads);
}

int main(int argc, char **argv) {
  static const struct mini_test tests[] = {
      {"readers_never_see_half_an_update", readers_never_see_half_an_update},
  };
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, NULL);
}
