/* keyset.c: see keyset.h. */
#include "server/core/keyset.h"

#include <stdlib.h>
#include <string.h>

static uint64_t tag_of(uint64_t h) { return h ? h : 1; }

/* The slot holding k, or the empty slot where it would go. */
static uint32_t slot(const struct keyset *s, const derp_key *k, uint64_t t) {
  uint32_t m = s->cap - 1, j = (uint32_t)t & m;
  while (s->tag[j] && (s->tag[j] != t || memcmp(s->key[j].b, k->b, DERP_KEY_LEN) != 0)) j = (j + 1) & m;
  return j; /* ends: the set is never full */
}

static bool grow(struct keyset *s) {
  uint32_t ncap = s->cap ? s->cap * 2 : 8;
  uint64_t *nt = calloc(ncap, sizeof *nt + sizeof(derp_key));
  if (!nt) return false;
  struct keyset ns = {.tag = nt, .key = (derp_key *)(nt + ncap), .cap = ncap, .n = s->n};
  for (uint32_t i = 0; i < s->cap; i++) {
    if (!s->tag[i]) continue;
    uint32_t j = slot(&ns, &s->key[i], s->tag[i]);
    ns.tag[j] = s->tag[i];
    ns.key[j] = s->key[i];
  }
  free(s->tag);
  *s = ns;
  return true;
}

enum keyset_add_result keyset_add(struct keyset *s, const derp_key *k, uint64_t h, uint32_t max) {
  uint64_t t = tag_of(h);
  if (s->cap && s->tag[slot(s, k, t)]) return KEYSET_KNOWN;
  if (s->n >= max) return KEYSET_FULL;
  if ((s->n + 1) * 4 > s->cap * 3 && !grow(s)) return KEYSET_NOMEM;
  uint32_t j = slot(s, k, t);
  s->tag[j] = t;
  s->key[j] = *k;
  s->n++;
  return KEYSET_ADDED;
}

void keyset_free(struct keyset *s) {
  free(s->tag);
  *s = (struct keyset){0};
}
