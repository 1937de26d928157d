/* tcp_rtt.c: derper's derp_tcp_rtt on the shards: each client's TCP
 * round-trip time (TCP_INFO's tcpi_rtt) counted in derper's buckets about
 * every 10 s, as derper's per-client stats timer does.
 *
 * Owns one cursor per shard over the shard's conns list (shard->rtt_cursor,
 * rtt_lap_ms); touches a conn only on the shard that owns it. Bounded: a
 * tick visits nconns / ticks-per-lap + 1 conns, one getsockopt each, so a
 * lap of the list takes at most the lap time whatever the count, and no tick
 * walks them all; the next lap starts a lap time after this one started, so
 * each client is sampled once per 10 s however few there are. A conn's first
 * sample falls somewhere in its first lap (derper's: 10 s after the
 * connect); the buckets are the same. */
#include "server/operations/tcp_rtt.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "server/log.h"
#include "server/server.h"

#define LAP_MS 10000

_Static_assert(STAT_rtt_nontcp == STAT_rtt_10ms + TCP_RTT_NONTCP, "derp_tcp_rtt counters out of order");

static int lap_ms = LAP_MS; /* written once before the shards start */

void tcp_rtt_init(void) {
  int lap = LAP_MS;
  const char *v = getenv("DERPD_TEST_RTT_LAP_MS");
  if (v && v[0]) {
    lap = atoi(v);
    log_warn("tcp_rtt: DERPD_TEST_RTT_LAP_MS=%s (tests only)", v);
  }
  lap_ms = lap > 0 ? lap : 1;
}

static int rtt_us(const struct conn *c, uint32_t *out) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return -1;
  *out = ti.tcpi_rtt;
  return 0;
}

static void count(struct shard *sh, int bucket) {
  stat_add_slot(&sh->stats.v[STAT_rtt_10ms + bucket], 1);
}

void tcp_rtt_first(struct conn *c) {
  uint32_t us;
  if (c->ws) {
    count(c->sh, TCP_RTT_NONTCP);
  } else if (rtt_us(c, &us) != 0) {
    count(c->sh, TCP_RTT_ERROR);
  } else {
    c->rtt_sampled = 1;
  }
}

void tcp_rtt_tick(struct shard *sh) {
  if (list_empty(&sh->conns)) return;
  struct list *cur = sh->rtt_cursor ? sh->rtt_cursor : &sh->conns;
  if (cur == &sh->conns) { /* the head: the last lap is done */
    if (sh->rtt_cursor && sh->now_ms - sh->rtt_lap_ms < lap_ms) return;
    sh->rtt_lap_ms = sh->now_ms;
    cur = cur->next;
  }
  uint32_t lap_ticks = lap_ms > SHARD_TICK_MS ? (uint32_t)(lap_ms / SHARD_TICK_MS) : 1;
  uint32_t n = sh->nconns / lap_ticks + 1;
  for (uint32_t i = 0; i < n && cur != &sh->conns; i++) {
    struct conn *c = list_entry(cur, struct conn, all_node);
    uint32_t us;
    if (c->rtt_sampled && c->state == CS_ESTABLISHED && rtt_us(c, &us) == 0)
      count(sh, tcp_rtt_bucket(us));
    cur = cur->next;
  }
  sh->rtt_cursor = cur;
}

void tcp_rtt_forget(struct conn *c) {
  if (c->sh->rtt_cursor == &c->all_node) c->sh->rtt_cursor = c->all_node.next;
}
