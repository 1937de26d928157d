/* list.h: intrusive doubly-linked list (circular, with a sentinel head).
 * Used for a shard's connection set and its deadline FIFOs. Not thread-safe:
 * a list and every node on it belong to one shard. */
#ifndef DERPD_LIST_H
#define DERPD_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list { struct list *prev, *next; };

static inline void list_init(struct list *l) { l->prev = l->next = l; }
static inline bool list_empty(const struct list *l) { return l->next == l; }
/* A node not on any list points at itself (list_init it once at creation). */
static inline bool list_linked(const struct list *n) { return n->next != n; }

static inline void list_del(struct list *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

static inline void list_add_tail(struct list *head, struct list *n) {
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

/* Moves every node of src to the empty list dst; src is left empty. */
static inline void list_take(struct list *dst, struct list *src) {
  list_init(dst);
  if (list_empty(src)) return;
  dst->next = src->next;
  dst->prev = src->prev;
  dst->next->prev = dst;
  dst->prev->next = dst;
  list_init(src);
}

/* Move n to the tail (unlinking it first if it is on a list). */
static inline void list_move_tail(struct list *head, struct list *n) {
  if (list_linked(n)) list_del(n);
  list_add_tail(head, n);
}

#define list_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
