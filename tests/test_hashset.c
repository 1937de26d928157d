/* test_hashset.c: the PeerGone sets (src/server/core/hashset.c): every hash
 * added is found and iterated once, duplicates and the cap are refused,
 * growth keeps every member, and hashes that share their probe start (equal
 * high halves, as one shard's keys may) stay distinct. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/core/hashset.h"

/* Members of s that are i * mul + 1 for i < upto; each at most once. */
static uint32_t members(const struct hashset *s, uint64_t mul, uint32_t upto, uint8_t *seen) {
  uint32_t live = 0;
  memset(seen, 0, upto);
  for (uint32_t i = 0; i < s->cap; i++) {
    if (!s->h[i]) continue;
    uint64_t n = (s->h[i] - 1) / mul;
    cr_assert_eq(n * mul + 1, s->h[i], "a member that was never added: %llu", (unsigned long long)s->h[i]);
    cr_assert_lt(n, upto);
    cr_assert_eq(seen[n], 0, "member %llu twice", (unsigned long long)n);
    seen[n] = 1;
    live++;
  }
  return live;
}

Test(hashset, add_known_grow_iterate) {
  struct hashset s = {0};
  enum { N = 3000 };
  const uint64_t mul = 0x9E3779B97F4A7C15ull / N;
  static uint8_t seen[N];
  for (uint32_t i = 0; i < N; i++) {
    cr_assert_eq(hashset_add(&s, i * mul + 1, N), HASHSET_ADDED);
    cr_assert_eq(hashset_add(&s, i * mul + 1, N), HASHSET_KNOWN);
    cr_assert_leq(s.n * 4, s.cap * 3, "over 3/4 full");
  }
  cr_assert_eq(s.n, N);
  cr_assert_eq(members(&s, mul, N, seen), N);
  cr_assert_eq(hashset_add(&s, N * mul + 1, N), HASHSET_FULL);
  cr_assert_eq(hashset_add(&s, 1, N), HASHSET_KNOWN, "known members are found even when full");
  cr_assert_eq(s.n, N);
  hashset_free(&s);
  cr_assert_null(s.h);
  cr_assert_eq(s.cap, 0);
}

Test(hashset, same_probe_start) {
  struct hashset s = {0};
  static uint8_t seen[100];
  /* Equal high halves: every member starts at the same slot, one long chain
   * that wraps the table's end as it grows. */
  for (uint32_t i = 0; i < 100; i++) cr_assert_eq(hashset_add(&s, i * 2 + 1, 1000), HASHSET_ADDED);
  for (uint32_t i = 0; i < 100; i++)
    cr_assert_eq(hashset_add(&s, i * 2 + 1, 1000), HASHSET_KNOWN, "member %u lost", i);
  cr_assert_eq(members(&s, 2, 100, seen), 100);
  cr_assert_eq(hashset_add(&s, 0xFFFFFFFF00000000ull, 1000), HASHSET_ADDED, "the last slot's start");
  cr_assert_eq(hashset_add(&s, 0xFFFFFFFF00000000ull, 1000), HASHSET_KNOWN);
  hashset_free(&s);
}
