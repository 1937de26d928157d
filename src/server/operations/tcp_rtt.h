/* tcp_rtt.h: derper's derp_tcp_rtt (see tcp_rtt.c). */
#ifndef DERPD_TCP_RTT_H
#define DERPD_TCP_RTT_H

#include <stdint.h>

struct conn;
struct shard;

/* derper's buckets (derp/derp_server_linux.go durationToLabel): the first
 * whose bound the RTT does not exceed; 7 is "inf". */
static inline int tcp_rtt_bucket(uint32_t rtt_us) {
  static const uint32_t le_ms[] = {10, 20, 50, 100, 150, 250, 500};
  for (int i = 0; i < 7; i++)
    if (rtt_us <= le_ms[i] * 1000u) return i;
  return 7;
}

/* Once, before the shards start: the lap time (10 s; DERPD_TEST_RTT_LAP_MS
 * for tests) in shard ticks of tick_ms. */
void tcp_rtt_init(int tick_ms);
/* A client just registered: "non-tcp" for WebSocket, "error" if TCP_INFO
 * fails (never sampled then), else it joins the sampling, as derper. */
void tcp_rtt_first(struct conn *c);
/* Each shard tick: sample the next slice of the shard's conns. */
void tcp_rtt_tick(struct shard *sh);
/* c is leaving the shard's conns list: keep the cursor off it. */
void tcp_rtt_forget(struct conn *c);

#endif
