/* region_internal.h: what the region's files share and nothing outside
 * src/server/region/ uses: each shard's watch and forward state, and the
 * control-message dispatch between them. */
#ifndef DERPD_REGION_INTERNAL_H
#define DERPD_REGION_INTERNAL_H

#include "server/region/region.h"

struct watch_shard;
struct fwd_shard;

struct region_shard {
  struct watch_shard *watch;
  struct fwd_shard *fwd;
};

static inline struct watch_shard *region_watch(struct shard *sh) { return sh->rg->watch; }
static inline struct fwd_shard *region_fwd(struct shard *sh) { return sh->rg->fwd; }

struct watch_shard *region_watch_new(void);
void region_watch_free(struct shard *sh, struct watch_shard *ws);
void region_watch_ctrl(struct shard *sh, struct pkt *m);
void region_watch_end_turn(struct shard *sh);
void region_watch_tick(struct shard *sh);

struct fwd_shard *region_fwd_new(uint32_t max_keys);
void region_fwd_free(struct fwd_shard *t);
void region_fwd_ctrl(struct shard *sh, struct pkt *m);

/* link.c */
int region_link_shard(const struct server *s, uint8_t link);
void region_links_tick(struct shard *sh);
void link_shard_free(struct shard *sh); /* exiting: what the shard's links still hold */

#endif
