/* pool.c: packet buffers and send contexts, recycled per shard.
 *
 * Three size classes cover the packet sizes DERP sees (control frames and
 * small disco, typical MTU-sized WireGuard packets, and the 64 KiB maximum).
 * A buffer freed on a shard goes on that shard's free list whatever shard
 * allocated it (a packet crosses shards once), so no return ring is needed;
 * each list is capped and the excess goes back to malloc, which bounds what
 * an idle shard holds. The hot path allocates only when a list is empty. */
#include <stdlib.h>

#include "server/server.h"

static const uint32_t class_cap[3] = {
  256,
  2048,
  DERP_FRAME_HDR_LEN + 2 * DERP_KEY_LEN + DERP_MAX_PACKET,
};
static const uint32_t class_keep[3] = {1024, 1024, 16}; /* about 3.5 MiB per shard at most */

struct pkt *pkt_alloc(struct shard *sh, uint32_t len) {
  int cls = len <= class_cap[0] ? 0 : len <= class_cap[1] ? 1 : 2;
  if (len > class_cap[2]) return NULL;
  struct pkt *p = sh->free_pkts[cls];
  if (p) {
    sh->free_pkts[cls] = p->next;
    sh->nfree_pkts[cls]--;
  } else {
    p = malloc(sizeof(*p) + class_cap[cls]);
    if (!p) return NULL;
    p->cls = (uint8_t)cls;
    p->cap = class_cap[cls];
  }
  p->next = NULL;
  p->kind = MSG_RAW;
  p->disco = 0;
  p->not_here = 0;
  p->wire = 0;
  p->ws_raw = 0;
  p->from_fwd = 0;
  p->src_hash = 0;
  p->t_us = (uint32_t)sh->now_us;
  p->len = len;
  return p;
}

void pkt_free(struct shard *sh, struct pkt *p) {
  int cls = p->cls;
  if (sh->nfree_pkts[cls] >= class_keep[cls]) {
    free(p);
    return;
  }
  p->next = sh->free_pkts[cls];
  sh->free_pkts[cls] = p;
  sh->nfree_pkts[cls]++;
}

void pkt_free_list(struct shard *sh, struct pkt *p) {
  while (p) {
    struct pkt *n = p->next;
    pkt_free(sh, p);
    p = n;
  }
}

void pool_destroy(struct shard *sh) {
  for (int i = 0; i < 3; i++) {
    struct pkt *p = sh->free_pkts[i];
    while (p) {
      struct pkt *n = p->next;
      free(p);
      p = n;
    }
    sh->free_pkts[i] = NULL;
    sh->nfree_pkts[i] = 0;
  }
  while (sh->free_send) {
    struct send_ctx *n = sh->free_send->next_free;
    free(sh->free_send);
    sh->free_send = n;
  }
  sh->nfree_send = 0;
}
