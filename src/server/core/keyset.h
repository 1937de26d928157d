/* keyset.h: a bounded set of keys, for "who must hear PeerGone" (a peer's
 * receivers in protocol/relay.c, a remote key's local senders in
 * region/forward.c).
 *
 * Open addressing on the key's keyed hash, never more than 3/4 full, grown
 * by doubling up to a cap. Probes read an array of 8-byte tags (the hash,
 * never 0: 0 marks an empty slot) and touch a 32-byte key only on a tag
 * match: at modest rates with many peers every packet probes a cold set,
 * and eight tags share a cache line where two keys would. Owned by one
 * shard; no locking. */
#ifndef DERPD_KEYSET_H
#define DERPD_KEYSET_H

#include <stdbool.h>
#include <stdint.h>

#include "derp/key.h"

struct keyset {
  uint64_t *tag;   /* cap tags, then (same allocation) cap keys */
  derp_key *key;
  uint32_t cap, n;
};

enum keyset_add_result { KEYSET_ADDED, KEYSET_KNOWN, KEYSET_FULL, KEYSET_NOMEM };

/* Adds k (hash h: key_hash) unless present; at most `max` keys. */
enum keyset_add_result keyset_add(struct keyset *s, const derp_key *k, uint64_t h, uint32_t max);
void keyset_free(struct keyset *s);

/* Iterate: for (uint32_t i = 0; i < s->cap; i++) if (s->tag[i]) use s->key[i]. */

#endif
