/* test_keyset.c: the PeerGone key sets (src/server/core/keyset.c): every
 * key added is found and iterated once, duplicates and the cap are refused,
 * growth keeps every key, and keys whose hashes collide (tags equal) stay
 * distinct. */
#include <criterion/criterion.h>
#include <string.h>

#include "server/core/keyset.h"

static derp_key key_n(uint32_t n) {
  derp_key k;
  memset(k.b, 0, sizeof k.b);
  memcpy(k.b + 7, &n, sizeof n);
  return k;
}

static uint32_t members(const struct keyset *s, uint32_t upto, uint8_t *seen) {
  uint32_t live = 0;
  memset(seen, 0, upto);
  for (uint32_t i = 0; i < s->cap; i++) {
    if (!s->tag[i]) continue;
    uint32_t n;
    memcpy(&n, s->key[i].b + 7, sizeof n);
    cr_assert_lt(n, upto);
    cr_assert_eq(seen[n], 0, "key %u twice", n);
    seen[n] = 1;
    live++;
  }
  return live;
}

Test(keyset, add_known_grow_iterate) {
  struct keyset s = {0};
  enum { N = 3000 };
  static uint8_t seen[N];
  for (uint32_t i = 0; i < N; i++) {
    derp_key k = key_n(i);
    cr_assert_eq(keyset_add(&s, &k, i * 0x9E3779B97F4A7C15ull, N), KEYSET_ADDED);
    cr_assert_eq(keyset_add(&s, &k, i * 0x9E3779B97F4A7C15ull, N), KEYSET_KNOWN);
    cr_assert_leq(s.n * 4, s.cap * 3, "over 3/4 full");
  }
  cr_assert_eq(s.n, N);
  cr_assert_eq(members(&s, N, seen), N);
  derp_key extra = key_n(N);
  cr_assert_eq(keyset_add(&s, &extra, 7, N), KEYSET_FULL);
  cr_assert_eq(s.n, N);
  keyset_free(&s);
  cr_assert_null(s.tag);
  cr_assert_eq(s.cap, 0);
}

Test(keyset, colliding_hashes_and_zero) {
  struct keyset s = {0};
  static uint8_t seen[100];
  /* Every key with hash 0 (stored as tag 1) or 1: one long probe chain. */
  for (uint32_t i = 0; i < 100; i++) {
    derp_key k = key_n(i);
    cr_assert_eq(keyset_add(&s, &k, i & 1, 1000), KEYSET_ADDED);
  }
  for (uint32_t i = 0; i < 100; i++) {
    derp_key k = key_n(i);
    cr_assert_eq(keyset_add(&s, &k, i & 1, 1000), KEYSET_KNOWN, "key %u lost", i);
  }
  cr_assert_eq(members(&s, 100, seen), 100);
  derp_key zero = key_n(0); /* the all-zero key is a key like any other */
  cr_assert_eq(keyset_add(&s, &zero, 0, 1000), KEYSET_KNOWN);
  keyset_free(&s);
}
