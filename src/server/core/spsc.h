/* spsc.h: bounded single-producer / single-consumer ring of pointers.
 *
 * The only thing shards share on the packet path. One producer thread pushes,
 * one consumer thread pops; head and tail live on their own cache lines and
 * each side caches the other's index so it touches the shared line only when
 * its cache says full / empty. Pushes are staged and made visible in a batch by
 * spsc_publish (one release store per loop turn, not per packet). A full ring
 * refuses the push: the caller drops and counts; a shard never blocks. */
#ifndef DERPD_SPSC_H
#define DERPD_SPSC_H

#include <assert.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define SPSC_CACHELINE 64

struct spsc {
  /* Consumer side. */
  alignas(SPSC_CACHELINE) _Atomic uint32_t head; /* next slot to pop; written by consumer */
  uint32_t tail_cache;                            /* consumer's copy of tail */
  /* Producer side. */
  alignas(SPSC_CACHELINE) _Atomic uint32_t tail; /* published end; written by producer */
  uint32_t head_cache;                            /* producer's copy of head */
  uint32_t staged;                                /* producer's unpublished end */
  /* Read-only after init. */
  alignas(SPSC_CACHELINE) uint32_t mask;
  bool own_slots;   /* slots came from spsc_new, not from the caller */
  void **slots;
};

/* A ring on cap zeroed slots that the caller owns (spsc_free leaves them):
 * derpd carves every ring's slots out of one mapping. cap: a power of two >= 2. */
static inline struct spsc *spsc_new_at(uint32_t cap, void **slots) {
  assert(cap >= 2 && (cap & (cap - 1)) == 0 && slots);
  struct spsc *q = aligned_alloc(SPSC_CACHELINE, sizeof(*q));
  if (!q) return NULL;
  q->slots = slots;
  atomic_init(&q->head, 0);
  atomic_init(&q->tail, 0);
  q->tail_cache = q->head_cache = q->staged = 0;
  q->mask = cap - 1;
  q->own_slots = false;
  return q;
}

/* As spsc_new_at, with slots of its own. NULL on allocation failure. */
static inline struct spsc *spsc_new(uint32_t cap) {
  void **slots = calloc(cap, sizeof(void *));
  struct spsc *q = slots ? spsc_new_at(cap, slots) : NULL;
  if (!q) { free(slots); return NULL; }
  q->own_slots = true;
  return q;
}

static inline void spsc_free(struct spsc *q) {
  if (q) {
    if (q->own_slots) free(q->slots);
    free(q);
  }
}

/* Producer: stage one item. False if the ring is full (nothing staged). */
static inline bool spsc_push(struct spsc *q, void *item) {
  uint32_t t = q->staged;
  if (t - q->head_cache > q->mask) {
    q->head_cache = atomic_load_explicit(&q->head, memory_order_acquire);
    if (t - q->head_cache > q->mask) return false;
  }
  q->slots[t & q->mask] = item;
  q->staged = t + 1;
  return true;
}

/* Producer: make staged items visible. True if anything new was published. */
static inline bool spsc_publish(struct spsc *q) {
  uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
  if (t == q->staged) return false;
  atomic_store_explicit(&q->tail, q->staged, memory_order_release);
  return true;
}

/* Consumer: pop up to max items into out; returns how many. Fewer than max
 * means nothing more was published when it looked: the cached tail is
 * reloaded whenever it holds fewer than max (callers take a short batch for
 * an empty ring, and may not look again until the producer says so). */
static inline uint32_t spsc_pop_batch(struct spsc *q, void **out, uint32_t max) {
  uint32_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
  if (q->tail_cache - h < max) {
    q->tail_cache = atomic_load_explicit(&q->tail, memory_order_acquire);
    if (h == q->tail_cache) return 0;
  }
  uint32_t n = q->tail_cache - h;
  if (n > max) n = max;
  for (uint32_t i = 0; i < n; i++) out[i] = q->slots[(h + i) & q->mask];
  atomic_store_explicit(&q->head, h + n, memory_order_release);
  return n;
}

/* Consumer: true if nothing is published. Used after announcing sleep. */
static inline bool spsc_empty(struct spsc *q) {
  uint32_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
  return h == atomic_load_explicit(&q->tail, memory_order_acquire);
}

#endif
