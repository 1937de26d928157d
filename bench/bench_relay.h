/* bench_relay.h: the relay mode's state, shared by its two halves:
 * bench_relay.c (the worker threads' event loops) and bench_relay_run.c (the
 * main thread: set-up, the phase clock, progress and totals).
 *
 * The mode owns the per-client state after set-up (frame reader, output buffer, the
 * closed-loop window), the worker threads (one epoll loop each, every client
 * owned by exactly one thread), packet generation for both loops, the
 * receiver side (latency, acks), and the phase clock run by the main thread:
 * route sync (--servers only), warm-up, measurement, drain, stop.
 *
 * Packet payload (little-endian, >= 24 bytes, zero padding after):
 *   [0] 'D' data / 'A' ack   [1] flags (bit 0: sent while measuring)
 *   [2..3] window slot       [4..7] sender index
 *   [8..15] sequence         [16..23] CLOCK_MONOTONIC send time, ns
 * An ack echoes the data packet's first 24 bytes with the type changed, so
 * the sender finds its slot without any lookup. A route-sync probe is the
 * 24-byte header alone, type 'P'.
 *
 * Route sync (several --servers, e.g. a region): a node learns a client
 * connected elsewhere only when the mesh tells it (PeerPresent, some time
 * after the connect), and until then drops packets for it. So before
 * warm-up the first client on each server (its hub) sends a probe to every
 * client on the other servers, again every SYNC_EVERY_NS while it has not
 * arrived, and the main thread starts warm-up only once every client has
 * heard from every other server that has clients (or fails after
 * SYNC_TIMEOUT_NS). A packet from any client of a server then reaches any
 * client of another: the route depends on the sending node, not the sender.
 *
 * Cost per packet is kept low on purpose (the server is what is measured):
 * frames are appended to a per-client buffer and each client gets at most
 * one send() per loop turn; reads use one per-thread buffer and
 * derp_frame_read parses in place.
 *
 * Over TLS (--tls) the same buffers go through the connection's SSL object:
 * a turn's frames for a client go out in one SSL_write (BoringSSL cuts
 * records of up to 16 KiB), and each SSL_read's plaintext (one record) goes
 * to the frame reader. The only cost to the plain path is one well-predicted
 * branch on c->ssl per flush and per readable event.
 *
 * Over WebSocket (--websocket) every frame a client writes is one masked
 * binary message with the mask key 0 (masking is then the identity, so the
 * generator pays nothing for it; the server unmasks as always), and what the
 * server sends goes through a WebSocket decoder (libderp's) before the frame
 * reader. */
#ifndef DERP_BENCH_RELAY_H
#define DERP_BENCH_RELAY_H

#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "derp/frame.h"
#include "lib/wsframe.h"

#define PKT_DATA 'D'
#define PKT_ACK 'A'
#define PKT_PROBE 'P'
#define PKT_HDR 24
#define FLAG_MEASURED 1u
#define RBUF_CAP (256 * 1024)
#define OUT_INIT_CAP (16 * 1024)
#define OUT_MAX_CAP (64u << 20)   /* acks owed can pile up, but not forever */
#define OUT_HIGH (256 * 1024)     /* stop generating data above this backlog */
#define READS_PER_EVENT 4         /* fairness between clients of one thread */
#define TLS_READS_PER_EVENT 64    /* records (<= 16 KiB each) per readable event */
#define MAX_EVENTS 256
#define OPEN_MAX_BURST 4096       /* packets one thread may catch up in a turn */
#define TICK_NS 100000000         /* slot timeout scan and phase checks */
#define IDLE_WAIT_NS 10000000     /* epoll wait when nothing is due */
#define SYNC_EVERY_NS 20000000    /* route sync: probes not yet arrived go again */
#define SYNC_TIMEOUT_NS 10000000000LL

enum phase { PH_SYNC, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_STOP };

struct slot {
  uint64_t seq;
  int64_t sent_ns; /* 0 = free */
};

struct client {
  int fd, idx;
  SSL *ssl;             /* --tls: the connection's SSL object; NULL = plain */
  struct worker *w;
  struct derp_frame_reader rd;
  uint8_t *out;
  size_t opos, olen, ocap;
  bool pollout, dirty, ready;
  bool write_wants_read; /* TLS: SSL_write waits for the socket to be readable */
  bool ws;               /* --websocket: wsd decodes what the server sends */
  struct ws_decoder wsd;
  /* sender side */
  bool sender;
  int dst;              /* fixed destination; -1 = random */
  uint64_t seq;
  uint32_t inflight;
  struct slot *slots;   /* closed loop: window slots */
  uint16_t *free_slots; /* stack of free slot numbers */
  uint32_t nfree;
};

/* Counters have one writer (the worker) and are read by the main thread for
 * progress: relaxed load + store, no locked instructions. */
#define CTR_ADD(c, v) \
  atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + (v), \
                        memory_order_relaxed)

struct worker {
  int id, ep;
  pthread_t th;
  struct relay *r;
  struct client **cl;       /* clients this thread owns */
  int ncl;
  struct client **senders;  /* the senders among them */
  int nsenders;
  unsigned rr;              /* open-loop round robin: next sender, < nsenders */
  struct client **dirty;
  int ndirty;
  struct client **ready;
  int nready;
  uint8_t *rbuf;
  uint64_t rng;
  /* open loop pacing */
  double rate;              /* packets/s for this thread */
  int64_t pace_t0;
  uint64_t paced;
  struct hist lat;
  /* --report-every: every data packet's latency this interval (ilat); at a
   * new epoch the worker moves it to isnap and says so in snap_epoch. */
  struct hist ilat, isnap;
  int64_t istall, isnap_stall; /* the longest gap between loop turns beyond the wait asked for */
  uint64_t seen_epoch;
  _Atomic uint64_t snap_epoch;
  _Atomic uint64_t sent, delivered, delivered_bytes, acks, timeouts, late_acks, skipped, bad,
      peer_gone, rx_all, rx_bytes_all;
  atomic_bool drained_inflight;
};

struct relay {
  const struct bench_cfg *cfg;
  struct bench_peer *peers;
  struct client *clients;
  struct worker *w;
  int nw;
  /* route sync */
  int *server;               /* client -> its server (bench_server_of) */
  int hub[BENCH_MAX_SERVERS]; /* each server's first client, -1 = none */
  uint64_t hubs;             /* servers that have a hub */
  _Atomic uint64_t *heard;   /* per client: servers whose probe reached it */
  _Atomic int phase;
  _Atomic uint64_t epoch; /* --report-every: bumped by the main thread per interval */
  atomic_bool failed;
  pthread_mutex_t err_mu;
  char error[300];
  uint8_t pad[256]; /* zero filler for payloads */
};

/* Any thread: the run's first error wins; every thread then stops. */
void relay_fail(struct relay *r, const char *fmt, int idx, const char *why);
/* Worker side (bench_relay.c), also used by set-up before the workers run. */
void relay_mark_ready(struct client *c);
void relay_parse_derp(struct client *c, const uint8_t *in, size_t inlen, int64_t now);
void *relay_worker_main(void *arg);

#endif
