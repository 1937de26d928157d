/* hashset.c: see hashset.h. */
#include "server/core/hashset.h"

#include <assert.h>
#include <stdlib.h>

/* The slot holding h, or the empty slot where it would go. Ends: the set is
 * never full. Probing starts from the hash's high half, since the low bits
 * of a key_hash chose its shard and so are alike in one shard's keys. */
static uint32_t slot(const struct hashset *s, uint64_t h) {
  uint32_t m = s->cap - 1, j = (uint32_t)(h >> 32) & m;
  while (s->h[j] && s->h[j] != h) j = (j + 1) & m;
  return j;
}

static bool grow(struct hashset *s) {
  uint32_t ncap = s->cap ? s->cap * 2 : 8;
  uint64_t *nh = calloc(ncap, sizeof *nh);
  if (!nh) return false;
  struct hashset ns = {.h = nh, .cap = ncap, .n = s->n};
  for (uint32_t i = 0; i < s->cap; i++)
    if (s->h[i]) nh[slot(&ns, s->h[i])] = s->h[i];
  free(s->h);
  *s = ns;
  return true;
}

enum hashset_add_result hashset_add(struct hashset *s, uint64_t h, uint32_t max) {
  assert(h != 0);
  if (s->cap && s->h[slot(s, h)]) return HASHSET_KNOWN;
  if (s->n >= max) return HASHSET_FULL;
  if ((s->n + 1) * 4 > s->cap * 3 && !grow(s)) return HASHSET_NOMEM;
  s->h[slot(s, h)] = h;
  s->n++;
  return HASHSET_ADDED;
}

void hashset_free(struct hashset *s) {
  free(s->h);
  *s = (struct hashset){0};
}
