/* shard_internal.h: what shard.c (the loop) and shard_stop.c (stopping)
 * share and nobody else calls. */
#ifndef DERPD_SHARD_INTERNAL_H
#define DERPD_SHARD_INTERNAL_H

#include <stdbool.h>

struct shard;

/* shard->sleeping, set before waiting: producers wake a SLEEP_IDLE shard
 * (MSG_RING), never a SLEEP_BATCH one (server.h). */
enum sleep_mode { AWAKE = 0, SLEEP_IDLE = 1, SLEEP_BATCH = 2 };

/* The shard's own thread, once it sees srv->stopping. */
void shard_begin_stop(struct shard *sh);
/* At each tick while stopping. */
void shard_continue_stop(struct shard *sh);
/* Every turn while stopping: whether the loop may end. */
bool shard_stop_done(struct shard *sh);

#endif
