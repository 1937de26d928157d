/* hashset.h: a bounded set of keys known by their keyed hashes, for "who
 * must hear PeerGone" (a peer's receivers in protocol/relay.c, a remote
 * key's local contacts in region/forward.c).
 *
 * Only the 8-byte hash (key_hash: SipHash under a per-process secret, never
 * 0) is kept, not the 32-byte key: the PeerGone that a member is owed is
 * routed and looked up by that hash alone (relay_peer_gone). Two keys whose
 * hashes are equal count as one; among n keys the chance of any such pair
 * is about n^2 / 2^65, and nobody can aim for one without the secret. The
 * worst it could do is one PeerGone missed or sent to the wrong client.
 * Keeping hashes makes a member 8 bytes instead of 40: in a load where every
 * packet reaches a new (sender, receiver) pair, each packet writes one cold
 * cache line, not two, and the sets take a fifth of the memory.
 *
 * Open addressing, never more than 3/4 full, grown by doubling up to a cap.
 * Owned by one shard; no locking. */
#ifndef DERPD_HASHSET_H
#define DERPD_HASHSET_H

#include <stdbool.h>
#include <stdint.h>

struct hashset {
  uint64_t *h;     /* cap slots; 0 = empty */
  uint32_t cap, n;
};

enum hashset_add_result { HASHSET_ADDED, HASHSET_KNOWN, HASHSET_FULL, HASHSET_NOMEM };

/* Adds h (a key_hash, not 0) unless present; at most `max` members. */
enum hashset_add_result hashset_add(struct hashset *s, uint64_t h, uint32_t max);
void hashset_free(struct hashset *s);

/* Iterate: for (uint32_t i = 0; i < s->cap; i++) if (s->h[i]) use s->h[i]. */

#endif
