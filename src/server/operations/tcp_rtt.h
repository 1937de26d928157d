/* tcp_rtt.h: derper's derp_tcp_rtt (see tcp_rtt.c). */
#ifndef DERPD_TCP_RTT_H
#define DERPD_TCP_RTT_H

#include <stdint.h>

struct conn;
struct shard;

/* The derp_tcp_rtt{le} series, in the order of their STAT_rtt_* counters:
 * derper's seven bounds, then inf, error and non-tcp. */
enum { TCP_RTT_BOUNDS = 7, TCP_RTT_INF = 7, TCP_RTT_ERROR = 8, TCP_RTT_NONTCP = 9 };

/* derper's buckets (derp/derp_server_linux.go durationToLabel): the first
 * whose bound the RTT does not exceed, else TCP_RTT_INF. */
static inline int tcp_rtt_bucket(uint32_t rtt_us) {
  static const uint32_t le_ms[TCP_RTT_BOUNDS] = {10, 20, 50, 100, 150, 250, 500};
  for (int i = 0; i < TCP_RTT_BOUNDS; i++)
    if (rtt_us <= le_ms[i] * 1000u) return i;
  return TCP_RTT_INF;
}

/* Once, before the shards start: the lap time (10 s; DERPD_TEST_RTT_LAP_MS
 * for tests) in shard ticks. */
void tcp_rtt_init(void);
/* A client just registered: "non-tcp" for WebSocket, "error" if TCP_INFO
 * fails (never sampled then), else it joins the sampling, as derper. */
void tcp_rtt_first(struct conn *c);
/* Each shard tick: sample the next slice of the shard's conns. */
void tcp_rtt_tick(struct shard *sh);
/* c is leaving the shard's conns list: keep the cursor off it. */
void tcp_rtt_forget(struct conn *c);

#endif
