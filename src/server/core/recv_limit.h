/* recv_limit.h: derper's -rate-config (v1.98+): a receive rate limit per
 * client, in bytes per second with a burst, counted over DERP frame lengths
 * (header and TLS excluded). Mesh peers and our own links are exempt.
 *
 * Owns the setting's arithmetic, its JSON file and the one copy every shard
 * reads; not the pausing of reads, which is conn.c's (a conn over its rate
 * stops reading its socket until the debt is paid, so the client's TCP window
 * closes, as derper's paced reads do).
 *
 * The bucket decides as golang.org/x/time/rate's ReserveN (derper's): full
 * at start, refilled at the rate, a frame takes its length (clamped to
 * RECV_LIMIT_MIN_BURST) and may leave it in debt; the debt is how long
 * derper would have waited before reading the next frame. Kept as a
 * "theoretical arrival time" (GCRA): one int64 per conn. */
#ifndef DERPD_RECV_LIMIT_H
#define DERPD_RECV_LIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* derper's minRateLimitTokenBucketSize: the largest SendPacket frame
 * (64 KiB of payload and a key). A smaller burst is raised to it. */
#define RECV_LIMIT_MIN_BURST (65536 + 32)

struct rate_cfg {
  uint64_t bps;   /* PerClientRateLimitBytesPerSec; 0 = no limit */
  uint64_t burst; /* PerClientRateBurstBytes */
};

/* derper's UpdateRateLimits: bps 0 clears both; else burst >= the minimum. */
struct rate_cfg rate_cfg_applied(struct rate_cfg c);

/* Reads the JSON file as derper's LoadRateConfig (encoding/json: field names
 * matched without regard to case, unknown fields ignored, values unsigned
 * integers). 0, or -1 with a message in err. Not applied: see above. */
int rate_cfg_load(const char *path, struct rate_cfg *out, char *err, size_t errcap);

/* The setting in force, written by the main thread (start, SIGHUP) and read
 * by every shard: a sequence lock over atomics, so a reader never sees half
 * of an update (and never waits). */
struct recv_limit_shared {
  _Atomic uint32_t seq; /* odd while written */
  _Atomic uint64_t bps, burst;
};
void recv_limit_publish(struct recv_limit_shared *g, struct rate_cfg c);
/* The setting and its generation (seq). False while a write is under way:
 * keep the old one and ask again later. */
bool recv_limit_read(struct recv_limit_shared *g, struct rate_cfg *c, uint32_t *gen);

/* A conn's bucket; gen: the setting it was made for (a new setting makes a
 * new, full bucket, as derper's UpdateRateLimits does). */
struct recv_bucket {
  int64_t tat_ns; /* when the bucket is out of debt; at most burst before now when full */
  uint32_t gen;
};

/* A new bucket, full (its tat far enough in the past for any burst). */
#define RECV_BUCKET_FULL (INT64_MIN / 4)
static inline void recv_bucket_reset(struct recv_bucket *b, uint32_t gen) {
  b->tat_ns = RECV_BUCKET_FULL;
  b->gen = gen;
}

/* Takes n bytes at now_ns under c (c.bps > 0). Returns how long a reader
 * must wait before the next frame (0: the tokens were there); the bucket is
 * out of debt again at b->tat_ns. */
int64_t recv_bucket_take(struct recv_bucket *b, struct rate_cfg c, int64_t now_ns, uint64_t n);

#endif
