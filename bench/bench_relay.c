/* bench_relay.c: the relay mode's event loops.
 *
 * Owns the per-client state after set-up (frame reader, output buffer, the
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
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
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
  int nsenders, rr;         /* rr: open-loop round robin */
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

static void fail(struct relay *r, const char *fmt, int idx, const char *why) {
  pthread_mutex_lock(&r->err_mu);
  if (!r->error[0]) snprintf(r->error, sizeof r->error, fmt, idx, why);
  pthread_mutex_unlock(&r->err_mu);
  atomic_store(&r->failed, true);
  atomic_store(&r->phase, PH_STOP);
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

/* ---- output ---- */

static void mark_dirty(struct client *c) {
  if (c->dirty) return;
  c->dirty = true;
  c->w->dirty[c->w->ndirty++] = c;
}

/* Room for n more bytes at the tail, compacting or growing. -1 past the cap. */
static int out_reserve(struct client *c, size_t n) {
  if (c->opos == c->olen) c->opos = c->olen = 0;
  if (c->ocap - c->olen >= n) return 0;
  if (c->opos > 0) {
    memmove(c->out, c->out + c->opos, c->olen - c->opos);
    c->olen -= c->opos;
    c->opos = 0;
    if (c->ocap - c->olen >= n) return 0;
  }
  size_t cap = c->ocap ? c->ocap : OUT_INIT_CAP;
  while (cap - c->olen < n) cap *= 2;
  if (cap > OUT_MAX_CAP) return -1;
  uint8_t *nb = realloc(c->out, cap);
  if (!nb) return -1;
  c->out = nb;
  c->ocap = cap;
  return 0;
}

static const uint8_t ws_zero_mask[4];

/* Room for one frame of flen bytes (in its own WebSocket message over
 * WebSocket), appended: where its bytes go, or NULL past the cap. */
static uint8_t *out_frame(struct client *c, uint8_t ws_op, size_t flen) {
  uint8_t wh[WS_HDR_MAX];
  size_t wl = c->ws ? ws_put_header(wh, ws_op, true, flen, ws_zero_mask) : 0;
  if (out_reserve(c, wl + flen) < 0) return NULL;
  uint8_t *p = c->out + c->olen;
  memcpy(p, wh, wl);
  c->olen += wl + flen;
  mark_dirty(c);
  return p + wl;
}

/* Append a SendPacket frame: header, destination key, 24-byte header, padding. */
static int out_packet(struct client *c, int dst, const uint8_t hdr[PKT_HDR], uint32_t size) {
  size_t flen = DERP_FRAME_HDR_LEN + DERP_KEY_LEN + size;
  uint8_t *p = out_frame(c, WS_OP_BINARY, flen);
  if (!p) return -1;
  derp_frame_put_header(p, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + size);
  memcpy(p + DERP_FRAME_HDR_LEN, c->w->r->peers[dst].pub.b, DERP_KEY_LEN);
  p += DERP_FRAME_HDR_LEN + DERP_KEY_LEN;
  memcpy(p, hdr, PKT_HDR);
  for (uint32_t off = PKT_HDR; off < size;) {
    uint32_t n = size - off < sizeof c->w->r->pad ? size - off : (uint32_t)sizeof c->w->r->pad;
    memcpy(p + off, c->w->r->pad, n);
    off += n;
  }
  return 0;
}

static void set_pollout(struct client *c, bool on) {
  if (c->pollout == on) return;
  struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->pollout = on;
}

static void tls_flush(struct client *c);

static void flush(struct client *c) {
  if (c->ssl) {
    tls_flush(c);
    return;
  }
  while (c->opos < c->olen) {
    ssize_t n = send(c->fd, c->out + c->opos, c->olen - c->opos, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->opos += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      set_pollout(c, true);
      return;
    }
    fail(c->w->r, "client %d: send: %s (server closed the connection?)", c->idx, strerror(errno));
    return;
  }
  c->opos = c->olen = 0;
  set_pollout(c, false);
}

/* The whole backlog in SSL_write calls (partial writes on: each call returns
 * after a record). A write that would block stays committed in the SSL
 * object; the retry passes the same bytes, possibly moved and with more after
 * them, which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows. */
static void tls_flush(struct client *c) {
  while (c->opos < c->olen) {
    size_t left = c->olen - c->opos;
    int r = SSL_write(c->ssl, c->out + c->opos, left > INT32_MAX ? INT32_MAX : (int)left);
    if (r > 0) {
      c->opos += (size_t)r;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE) {
      set_pollout(c, true);
      return;
    }
    if (e == SSL_ERROR_WANT_READ) { /* rare in TLS 1.3: on_readable retries */
      c->write_wants_read = true;
      return;
    }
    int saved = errno;
    ERR_clear_error();
    fail(c->w->r, "client %d: SSL_write: %s (server closed the connection?)", c->idx,
         e == SSL_ERROR_SYSCALL && saved ? strerror(saved) : "TLS error");
    return;
  }
  c->opos = c->olen = 0;
  set_pollout(c, false);
}

static void flush_dirty(struct worker *w) {
  for (int i = 0; i < w->ndirty; i++) {
    w->dirty[i]->dirty = false;
    if (!w->dirty[i]->pollout) flush(w->dirty[i]); /* else EPOLLOUT will */
  }
  w->ndirty = 0;
}

/* ---- packets ---- */

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static int pick_dst(struct client *c) {
  if (c->dst >= 0) return c->dst;
  int n = c->w->r->cfg->clients;
  int d = (int)(rng_next(&c->w->rng) % (uint64_t)(n - 1));
  return d >= c->idx ? d + 1 : d;
}

/* Queue one data packet from c; slot is ignored in open loop. */
static int send_data(struct client *c, uint16_t slot, bool measured, int64_t now) {
  uint8_t h[PKT_HDR];
  h[0] = PKT_DATA;
  h[1] = measured ? FLAG_MEASURED : 0;
  put_le(h + 2, slot, 2);
  put_le(h + 4, (uint32_t)c->idx, 4);
  put_le(h + 8, c->seq, 8);
  put_le(h + 16, (uint64_t)now, 8);
  if (out_packet(c, pick_dst(c), h, c->w->r->cfg->size) < 0) {
    fail(c->w->r, "client %d: %s", c->idx, "output buffer over its cap");
    return -1;
  }
  c->seq++;
  if (measured) CTR_ADD(c->w->sent, 1);
  return 0;
}

/* Closed loop: fill c's window (bounded by the window and the backlog). */
static void fill_window(struct client *c, bool measured, int64_t now) {
  while (c->nfree > 0 && c->olen - c->opos < OUT_HIGH) {
    uint16_t s = c->free_slots[--c->nfree];
    c->slots[s].seq = c->seq;
    c->slots[s].sent_ns = now;
    c->inflight++;
    if (send_data(c, s, measured, now) < 0) return;
  }
}

static void mark_ready(struct client *c) {
  if (c->ready) return;
  c->ready = true;
  c->w->ready[c->w->nready++] = c;
}

static void on_ack(struct client *c, const uint8_t *p) {
  uint32_t slot = (uint32_t)get_le(p + 2, 2);
  uint64_t seq = get_le(p + 8, 8);
  if (get_le(p + 4, 4) != (uint64_t)c->idx || !c->slots || slot >= c->w->r->cfg->window) {
    CTR_ADD(c->w->bad, 1);
    return;
  }
  struct slot *s = &c->slots[slot];
  if (s->sent_ns == 0 || s->seq != seq) { /* slot already given up on */
    CTR_ADD(c->w->late_acks, 1);
    return;
  }
  s->sent_ns = 0;
  c->free_slots[c->nfree++] = (uint16_t)slot;
  c->inflight--;
  if (p[1] & FLAG_MEASURED) CTR_ADD(c->w->acks, 1);
  mark_ready(c);
}

static void on_data(struct client *c, const uint8_t *p, uint32_t len, int64_t now) {
  struct worker *w = c->w;
  const struct bench_cfg *cfg = w->r->cfg;
  uint64_t from = get_le(p + 4, 4);
  if (len != cfg->size || from >= (uint64_t)cfg->clients) {
    CTR_ADD(w->bad, 1);
    return;
  }
  CTR_ADD(w->rx_all, 1);
  CTR_ADD(w->rx_bytes_all, len);
  int64_t sent = (int64_t)get_le(p + 16, 8);
  uint64_t lat = now > sent ? (uint64_t)(now - sent) : 0;
  if (cfg->report_every_ns) hist_add(&w->ilat, lat);
  if (p[1] & FLAG_MEASURED) {
    CTR_ADD(w->delivered, 1);
    CTR_ADD(w->delivered_bytes, len);
    hist_add(&w->lat, lat);
  }
  if (cfg->pps > 0) return; /* open loop: no acks */
  uint8_t h[PKT_HDR];
  memcpy(h, p, PKT_HDR);
  h[0] = PKT_ACK;
  if (out_packet(c, (int)from, h, cfg->ack_size) < 0)
    fail(w->r, "client %d: %s", c->idx, "ack backlog over its cap");
}

/* ---- route sync ---- */

static void on_probe(struct client *c, const uint8_t *p) {
  struct relay *r = c->w->r;
  uint64_t from = get_le(p + 4, 4);
  if (from >= (uint64_t)r->cfg->clients || !r->heard) {
    CTR_ADD(c->w->bad, 1);
    return;
  }
  atomic_fetch_or_explicit(&r->heard[c->idx], 1ull << r->server[from], memory_order_relaxed);
}

/* Every hub this thread owns probes the clients of other servers that have
 * not heard from its server yet (as far as its backlog allows). */
static void send_probes(struct worker *w, int64_t now) {
  struct relay *r = w->r;
  for (int i = 0; i < w->ncl; i++) {
    struct client *c = w->cl[i];
    int s = r->server[c->idx];
    if (r->hub[s] != c->idx) continue;
    uint8_t h[PKT_HDR] = {PKT_PROBE};
    put_le(h + 4, (uint32_t)c->idx, 4);
    put_le(h + 16, (uint64_t)now, 8);
    for (int t = 0; t < r->cfg->clients && c->olen - c->opos < OUT_HIGH; t++) {
      if (r->server[t] == s ||
          (atomic_load_explicit(&r->heard[t], memory_order_relaxed) & (1ull << s)))
        continue;
      if (out_packet(c, t, h, PKT_HDR) < 0) return;
    }
  }
}

/* Clients that have not yet heard from every other server with clients. */
static int unsynced(struct relay *r) {
  int n = 0;
  for (int t = 0; t < r->cfg->clients; t++) {
    uint64_t want = r->hubs & ~(1ull << r->server[t]);
    n += (atomic_load_explicit(&r->heard[t], memory_order_relaxed) & want) != want;
  }
  return n;
}

static void on_frame(struct client *c, const struct derp_frame *f, int64_t now) {
  switch (f->type) {
  case DERP_FRAME_RECV_PACKET: {
    if (f->len < DERP_KEY_LEN + PKT_HDR) {
      CTR_ADD(c->w->bad, 1);
      return;
    }
    const uint8_t *p = f->payload + DERP_KEY_LEN;
    if (p[0] == PKT_DATA) on_data(c, p, f->len - DERP_KEY_LEN, now);
    else if (p[0] == PKT_ACK) on_ack(c, p);
    else if (p[0] == PKT_PROBE) on_probe(c, p);
    else CTR_ADD(c->w->bad, 1);
    return;
  }
  case DERP_FRAME_PING: { /* answer like a real client would */
    uint8_t *pong = f->len >= 8 ? out_frame(c, WS_OP_BINARY, DERP_FRAME_HDR_LEN + 8) : NULL;
    if (pong) derp_enc_ping(pong, DERP_FRAME_HDR_LEN + 8, DERP_FRAME_PONG, f->payload);
    return;
  }
  case DERP_FRAME_PEER_GONE:
    CTR_ADD(c->w->peer_gone, 1);
    return;
  case DERP_FRAME_RESTARTING:
    fail(c->w->r, "client %d: %s", c->idx, "server sent Restarting");
    return;
  default: /* KeepAlive, Health, Pong, ... */
    return;
  }
}

/* ---- input ---- */

static void parse_derp(struct client *c, const uint8_t *in, size_t inlen, int64_t now) {
  for (;;) {
    struct derp_frame f;
    enum derp_read_status st = derp_frame_read(&c->rd, &in, &inlen, &f);
    if (st == DERP_READ_MORE) return;
    if (st != DERP_READ_FRAME) {
      fail(c->w->r, "client %d: %s", c->idx, "bad frame from server");
      return;
    }
    on_frame(c, &f, now);
  }
}

/* What the server sent: DERP frames, inside WebSocket messages over WebSocket.
 * in is writable (a read buffer): the decoder works in place. */
static void parse(struct client *c, uint8_t *in, size_t inlen, int64_t now) {
  if (!c->ws) {
    parse_derp(c, in, inlen, now);
    return;
  }
  for (;;) {
    struct ws_event ev;
    switch (ws_decode(&c->wsd, &in, &inlen, &ev)) {
    case WS_EV_MORE: return;
    case WS_EV_DATA: parse_derp(c, ev.data, ev.len, now); break;
    case WS_EV_PING: {
      uint8_t *p = out_frame(c, WS_OP_PONG, ev.len);
      if (p) memcpy(p, ev.data, ev.len);
      break;
    }
    case WS_EV_PONG: break;
    case WS_EV_CLOSE:
      fail(c->w->r, "client %d: %s", c->idx, "server sent a WebSocket close");
      return;
    default:
      fail(c->w->r, "client %d: bad WebSocket frame from server: %s", c->idx, ev.why);
      return;
    }
    if (atomic_load_explicit(&c->w->r->failed, memory_order_relaxed)) return;
  }
}

static void tls_readable(struct client *c) {
  for (int k = 0; k < TLS_READS_PER_EVENT; k++) {
    int r = SSL_read(c->ssl, c->w->rbuf, RBUF_CAP);
    if (r > 0) {
      parse(c, c->w->rbuf, (size_t)r, bench_now_ns());
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    int saved = errno;
    ERR_clear_error();
    fail(c->w->r, "client %d: server closed the connection (%s)", c->idx,
         e == SSL_ERROR_ZERO_RETURN ? "close_notify"
         : e == SSL_ERROR_SYSCALL   ? (saved ? strerror(saved) : "EOF")
                                    : "TLS error");
    return;
  }
  /* Level-triggered epoll stays right: BoringSSL reads no further than the
   * record it returns, so what is left is still in the socket. */
  if (c->write_wants_read) {
    c->write_wants_read = false;
    mark_dirty(c);
  }
}

static void on_readable(struct client *c) {
  if (c->ssl) {
    tls_readable(c);
    return;
  }
  for (int k = 0; k < READS_PER_EVENT; k++) {
    ssize_t n = recv(c->fd, c->w->rbuf, RBUF_CAP, MSG_DONTWAIT);
    if (n > 0) {
      parse(c, c->w->rbuf, (size_t)n, bench_now_ns());
      if ((size_t)n < RBUF_CAP) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    fail(c->w->r, "client %d: server closed the connection (%s)", c->idx,
         n == 0 ? "EOF" : strerror(errno));
    return;
  }
}

/* ---- the loop ---- */

static void gen_closed(struct worker *w, bool measured, int64_t now) {
  for (int i = 0; i < w->nready; i++) {
    w->ready[i]->ready = false;
    fill_window(w->ready[i], measured, now);
  }
  w->nready = 0;
}

static void gen_open(struct worker *w, bool measured, int64_t now) {
  if (w->nsenders == 0) return;
  if (w->pace_t0 == 0) w->pace_t0 = now;
  uint64_t due = (uint64_t)((double)(now - w->pace_t0) * w->rate / 1e9);
  if (due <= w->paced) return;
  uint64_t n = due - w->paced;
  /* Fell behind (this thread did not run): do not burst; count what we owe.
   * --max-burst bounds the catch-up by time, so that a generator stalled by
   * its machine does not turn its backlog into one burst the receivers'
   * queues would drop. */
  uint64_t max_n = OPEN_MAX_BURST;
  if (w->r->cfg->max_burst_ns) {
    uint64_t by_time = (uint64_t)(w->rate * (double)w->r->cfg->max_burst_ns / 1e9);
    if (by_time < max_n) max_n = by_time ? by_time : 1;
  }
  if (n > max_n) {
    CTR_ADD(w->skipped, n - max_n);
    n = max_n;
  }
  w->paced = due;
  for (uint64_t k = 0; k < n; k++) {
    struct client *c = w->senders[w->rr++ % w->nsenders];
    if (c->olen - c->opos >= OUT_HIGH) CTR_ADD(w->skipped, 1);
    else if (send_data(c, 0, measured, now) < 0) return;
  }
}

/* Closed loop: give up on slots unacked for --ack-timeout. */
static void scan_timeouts(struct worker *w, int64_t now) {
  int64_t limit = w->r->cfg->ack_timeout_ns;
  uint64_t inflight = 0;
  for (int i = 0; i < w->nsenders; i++) {
    struct client *c = w->senders[i];
    if (!c->slots) continue;
    for (uint32_t s = 0; s < w->r->cfg->window; s++) {
      if (c->slots[s].sent_ns == 0 || now - c->slots[s].sent_ns < limit) continue;
      c->slots[s].sent_ns = 0;
      c->free_slots[c->nfree++] = (uint16_t)s;
      c->inflight--;
      CTR_ADD(w->timeouts, 1);
      mark_ready(c);
    }
    inflight += c->inflight;
  }
  atomic_store(&w->drained_inflight, inflight == 0);
}

static void handle_events(struct worker *w, struct epoll_event *ev, int n) {
  for (int i = 0; i < n; i++) {
    struct client *c = ev[i].data.ptr;
    if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if ((ev[i].events & EPOLLOUT) && c->pollout) flush(c);
  }
}

/* How long epoll may wait: until the next open-loop packet is due. */
static int64_t wait_ns(struct worker *w, bool pacing, int64_t now) {
  if (!pacing || w->rate <= 0 || w->pace_t0 == 0) return IDLE_WAIT_NS;
  int64_t due = w->pace_t0 + (int64_t)((double)(w->paced + 1) * 1e9 / w->rate);
  int64_t d = due - now;
  /* --pace-quantum bounds the wake-ups: smoother pacing costs generator CPU,
   * and the generator shares the machine with the server. */
  int64_t q = w->r->cfg->pace_quantum_ns;
  return d < q ? q : d > IDLE_WAIT_NS ? IDLE_WAIT_NS : d;
}

/* epoll_pwait2 takes a nanosecond timeout (Linux 5.11); else milliseconds. */
static int wait_events(struct worker *w, struct epoll_event *ev, int64_t ns) {
  static atomic_bool no_pwait2;
  if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    int n = epoll_pwait2(w->ep, ev, MAX_EVENTS, &ts, NULL);
    if (n >= 0 || errno != ENOSYS) return n;
    atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
  }
  return epoll_wait(w->ep, ev, MAX_EVENTS, (int)((ns + 999999) / 1000000));
}

/* --report-every: hand this interval's histogram to the main thread once it
 * starts a new epoch (the main thread reads isnap only after snap_epoch says
 * so, and the worker touches isnap only at the next epoch). */
static void snap_interval(struct worker *w) {
  uint64_t e = atomic_load_explicit(&w->r->epoch, memory_order_acquire);
  if (e == w->seen_epoch) return;
  w->isnap = w->ilat;
  w->isnap_stall = w->istall;
  hist_init(&w->ilat);
  w->istall = 0;
  w->seen_epoch = e;
  atomic_store_explicit(&w->snap_epoch, e, memory_order_release);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct relay *r = w->r;
  bool open_loop = r->cfg->pps > 0;
  struct epoll_event ev[MAX_EVENTS];
  int64_t next_tick = 0, next_probe = 0, turn_end = 0; /* turn_end: when the last wait could have ended at the latest */
  for (uint64_t turn = 0; turn < UINT64_MAX; turn++) {
    int ph = atomic_load_explicit(&r->phase, memory_order_acquire);
    if (ph == PH_STOP) break;
    if (r->cfg->report_every_ns) snap_interval(w);
    int64_t now = bench_now_ns();
    /* A gap past that is time this thread did not run: its machine stalled it. */
    if (turn_end && now - turn_end > w->istall) w->istall = now - turn_end;
    bool gen = ph == PH_WARMUP || ph == PH_MEASURE;
    if (ph == PH_SYNC && now >= next_probe) {
      send_probes(w, now);
      next_probe = now + SYNC_EVERY_NS;
    }
    if (gen && open_loop) gen_open(w, ph == PH_MEASURE, now);
    else if (gen) gen_closed(w, ph == PH_MEASURE, now);
    flush_dirty(w);
    if (now >= next_tick) {
      if (!open_loop) scan_timeouts(w, now);
      next_tick = now + TICK_NS;
    }
    int64_t wait = wait_ns(w, open_loop && gen, now);
    turn_end = bench_now_ns() + wait;
    int n = wait_events(w, ev, wait);
    if (n < 0 && errno != EINTR) {
      fail(r, "worker %d: epoll_wait: %s", w->id, strerror(errno));
      break;
    }
    if (n > 0) handle_events(w, ev, n);
  }
  return NULL;
}

/* ---- set-up of the relay state ---- */

static int dest_of(const struct bench_cfg *cfg, int i) {
  switch (cfg->topo) {
  case TOPO_PAIRS: return (i % 2 == 0 && i + 1 < cfg->clients) ? i + 1 : -2;
  case TOPO_FANIN: return i == 0 ? -2 : 0;
  default: return -1;
  }
}

/* Pairs keep both ends on one thread, so threads are symmetric. */
static int owner_of(const struct bench_cfg *cfg, int i) {
  return cfg->topo == TOPO_PAIRS ? (i / 2) % cfg->threads : i % cfg->threads;
}

static int init_client(struct relay *r, int i) {
  const struct bench_cfg *cfg = r->cfg;
  struct client *c = &r->clients[i];
  struct worker *w = &r->w[owner_of(cfg, i)];
  c->fd = r->peers[i].fd;
  c->ssl = r->peers[i].ssl;
  if (c->ssl) SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  c->idx = i;
  c->w = w;
  derp_frame_reader_init(&c->rd, DERP_FROM_SERVER);
  c->ws = cfg->websocket;
  if (c->ws) ws_decoder_init(&c->wsd, false);
  int d = dest_of(cfg, i);
  c->sender = d != -2;
  c->dst = d;
  w->cl[w->ncl++] = c;
  if (c->sender) w->senders[w->nsenders++] = c;
  if (c->sender && cfg->pps <= 0) {
    c->slots = calloc(cfg->window, sizeof *c->slots);
    c->free_slots = malloc(cfg->window * sizeof *c->free_slots);
    if (!c->slots || !c->free_slots) return -1;
    for (uint32_t s = 0; s < cfg->window; s++)
      c->free_slots[c->nfree++] = (uint16_t)(cfg->window - 1 - s);
    mark_ready(c);
  }
  /* Frames that came with ServerInfo (TLS detach hands them over). */
  /* Over WebSocket these bytes are DERP already (the client unwrapped them),
   * and the server's message that carried ServerInfo ended with it. */
  if (r->peers[i].npending)
    parse_derp(c, r->peers[i].pending, r->peers[i].npending, bench_now_ns());
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  return epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Who is on which server, and each server's hub (route sync). */
static int init_servers(struct relay *r) {
  const struct bench_cfg *cfg = r->cfg;
  r->server = calloc((size_t)cfg->clients, sizeof *r->server);
  r->heard = calloc((size_t)cfg->clients, sizeof *r->heard);
  if (!r->server || !r->heard) return -1;
  for (int s = 0; s < BENCH_MAX_SERVERS; s++) r->hub[s] = -1;
  for (int i = 0; i < cfg->clients; i++) {
    int s = r->server[i] = bench_server_of(cfg, i);
    if (r->hub[s] < 0) r->hub[s] = i;
    r->hubs |= 1ull << s;
  }
  return 0;
}

static int init_workers(struct relay *r) {
  const struct bench_cfg *cfg = r->cfg;
  int n = cfg->clients;
  if (init_servers(r) < 0) return -1;
  for (int t = 0; t < r->nw; t++) {
    struct worker *w = &r->w[t];
    w->id = t;
    w->r = r;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->cl = calloc((size_t)n, sizeof *w->cl);
    w->senders = calloc((size_t)n, sizeof *w->senders);
    w->dirty = calloc((size_t)n, sizeof *w->dirty);
    w->ready = calloc((size_t)n, sizeof *w->ready);
    w->rbuf = malloc(RBUF_CAP);
    w->rng = cfg->seed * 0x9E3779B97F4A7C15ull + (uint64_t)t + 1;
    hist_init(&w->lat);
    hist_init(&w->ilat);
    hist_init(&w->isnap);
    if (w->ep < 0 || !w->cl || !w->senders || !w->dirty || !w->ready || !w->rbuf) return -1;
  }
  for (int i = 0; i < n; i++)
    if (init_client(r, i) < 0) return -1;
  int total_senders = 0;
  for (int t = 0; t < r->nw; t++) total_senders += r->w[t].nsenders;
  for (int t = 0; t < r->nw; t++)
    r->w[t].rate = total_senders ? cfg->pps * r->w[t].nsenders / total_senders : 0;
  return 0;
}

static void free_relay(struct relay *r) {
  for (int i = 0; r->clients && i < r->cfg->clients; i++) {
    derp_frame_reader_reset(&r->clients[i].rd);
    free(r->clients[i].out);
    free(r->clients[i].slots);
    free(r->clients[i].free_slots);
  }
  for (int t = 0; r->w && t < r->nw; t++) {
    struct worker *w = &r->w[t];
    if (w->ep > 0) close(w->ep);
    free(w->cl);
    free(w->senders);
    free(w->dirty);
    free(w->ready);
    free(w->rbuf);
  }
  free(r->w);
  free(r->clients);
  free(r->server);
  free(r->heard);
}

/* ---- the main thread: phases, progress, totals ---- */

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

#define SUM(r, field) sum_ctr(r, offsetof(struct worker, field))
static uint64_t sum_ctr(struct relay *r, size_t off) {
  uint64_t s = 0;
  for (int t = 0; t < r->nw; t++)
    s += atomic_load_explicit((_Atomic uint64_t *)((char *)&r->w[t] + off), memory_order_relaxed);
  return s;
}

static bool all_inflight_drained(struct relay *r) {
  for (int t = 0; t < r->nw; t++)
    if (!atomic_load(&r->w[t].drained_inflight)) return false;
  return true;
}

/* --report-every: when the next interval report is due, and what the last one saw. */
struct interval_clock {
  int64_t start, last, next;
  uint64_t last_rx;
  struct hist lat;
};

/* One interval report: a new epoch, then each worker's snapshot once it has
 * taken it (workers look at least every IDLE_WAIT_NS; a worker that does not
 * answer within 1 s is left out of this interval's histogram). */
static void report_interval(struct relay *r, struct interval_clock *ic, const char *phase) {
  uint64_t e = atomic_fetch_add(&r->epoch, 1) + 1;
  hist_init(&ic->lat);
  int64_t give_up = bench_now_ns() + 1000000000, stall = 0;
  for (int t = 0; t < r->nw; t++) {
    while (atomic_load_explicit(&r->w[t].snap_epoch, memory_order_acquire) != e &&
           bench_now_ns() < give_up && !atomic_load(&r->failed))
      bench_sleep_ns(1000000);
    if (atomic_load_explicit(&r->w[t].snap_epoch, memory_order_acquire) == e) {
      hist_merge(&ic->lat, &r->w[t].isnap);
      if (r->w[t].isnap_stall > stall) stall = r->w[t].isnap_stall;
    } else {
      stall = bench_now_ns() - ic->last; /* it did not answer at all */
    }
  }
  int64_t now = bench_now_ns();
  uint64_t rx = SUM(r, rx_all);
  struct relay_interval iv = {.phase = phase, .t_s = (double)(now - ic->start) / 1e9,
                              .interval_s = (double)(now - ic->last) / 1e9,
                              .rx = rx - ic->last_rx, .sent = SUM(r, sent),
                              .delivered = SUM(r, delivered), .skipped = SUM(r, skipped),
                              .timeouts = SUM(r, timeouts), .bad = SUM(r, bad),
                              .peer_gone = SUM(r, peer_gone), .lat = &ic->lat,
                              .stall_s = (double)stall / 1e9};
  relay_interval_report(r->cfg, &iv);
  ic->last = now;
  ic->last_rx = rx;
}

/* Sleep until `until`, printing a progress line each second (and an interval
 * report when one is due). false = stop early. */
static bool run_phase(struct relay *r, const char *name, int64_t start, int64_t until,
                      int64_t *next_print, uint64_t *last_rx, uint64_t *last_bytes,
                      struct interval_clock *ic) {
  while (bench_now_ns() < until) {
    if (atomic_load(&r->failed) || atomic_load(&bench_interrupted)) return false;
    bench_sleep_ns(until - bench_now_ns() < 20000000 ? until - bench_now_ns() : 20000000);
    int64_t now = bench_now_ns();
    if (r->cfg->report_every_ns && now >= ic->next) {
      report_interval(r, ic, name);
      ic->next += r->cfg->report_every_ns;
    }
    if (now < *next_print) continue;
    *next_print += 1000000000;
    uint64_t rx = SUM(r, rx_all), bytes = SUM(r, rx_bytes_all);
    uint64_t sent = SUM(r, sent), got = SUM(r, delivered);
    if (!r->cfg->quiet)
      relay_progress(r->cfg, name, (double)(now - start) / 1e9, rx - *last_rx, bytes - *last_bytes,
                     sent > got ? sent - got : 0, SUM(r, timeouts));
    *last_rx = rx;
    *last_bytes = bytes;
  }
  return true;
}

/* Drain: no new packets; wait until every measured packet is in (and, closed
 * loop, every window is empty) or the drain time is up. */
static void drain(struct relay *r) {
  int64_t end = bench_now_ns() + r->cfg->drain_ns;
  while (bench_now_ns() < end && !atomic_load(&r->failed) && !atomic_load(&bench_interrupted)) {
    bool all_in = SUM(r, delivered) >= SUM(r, sent);
    if (all_in && (r->cfg->pps > 0 || all_inflight_drained(r))) break;
    bench_sleep_ns(10000000);
  }
}

/* Route sync: until every client has heard from every other server with
 * clients; then warm-up. false = failed (timed out) or interrupted. */
static bool sync_routes(struct relay *r, struct relay_totals *t) {
  int64_t t0 = bench_now_ns(), next_print = t0 + 1000000000;
  t->sync_s = -1; /* not synced */
  for (int left; (left = unsynced(r)) > 0;) {
    if (atomic_load(&r->failed) || atomic_load(&bench_interrupted)) return false;
    int64_t now = bench_now_ns();
    if (now - t0 >= SYNC_TIMEOUT_NS) {
      fail(r, "route sync: %d clients %s", left,
           "still not reached from every other server after 10 s (are the servers meshed?)");
      return false;
    }
    if (now >= next_print) {
      next_print += 1000000000;
      if (!r->cfg->quiet)
        fprintf(stderr, "route sync: %d of %d clients reached from every other server\n",
                r->cfg->clients - left, r->cfg->clients);
    }
    bench_sleep_ns(2000000);
  }
  t->sync_s = (double)(bench_now_ns() - t0) / 1e9;
  atomic_store_explicit(&r->phase, PH_WARMUP, memory_order_release);
  return true;
}

static void clock_phases(struct relay *r, struct relay_totals *t) {
  const struct bench_cfg *cfg = r->cfg;
  if (atomic_load(&r->phase) == PH_SYNC && !sync_routes(r, t)) return;
  int64_t start = bench_now_ns(), next_print = start + 1000000000;
  uint64_t last_rx = 0, last_bytes = 0;
  /* Static: the histogram is 30 KiB, and there is one main thread. */
  static struct interval_clock ic;
  ic = (struct interval_clock){.start = start, .last = start, .next = start + cfg->report_every_ns};
  if (!run_phase(r, "warmup", start, start + cfg->warmup_ns, &next_print, &last_rx, &last_bytes,
                 &ic))
    return;
  servers_sample(cfg, &t->s0);
  double cpu0 = self_cpu_s();
  int64_t m0 = bench_now_ns();
  atomic_store_explicit(&r->phase, PH_MEASURE, memory_order_release);
  bool ok = run_phase(r, "measure", start, m0 + cfg->duration_ns, &next_print, &last_rx,
                      &last_bytes, &ic);
  /* The last partial interval of the measured window, so that a report
   * covers every second of it. */
  if (ok && cfg->report_every_ns && bench_now_ns() > ic.last + cfg->report_every_ns / 10)
    report_interval(r, &ic, "measure");
  int64_t m1 = bench_now_ns();
  servers_sample(cfg, &t->s1);
  t->bench_cpu_s = self_cpu_s() - cpu0;
  t->measure_s = (double)(m1 - m0) / 1e9;
  if (!ok) return;
  /* Only after the end sample: drain traffic is not the server's cost of the window. */
  atomic_store_explicit(&r->phase, PH_DRAIN, memory_order_release);
  drain(r);
}

static void collect(struct relay *r, struct relay_totals *t) {
  t->sent = SUM(r, sent);
  t->delivered = SUM(r, delivered);
  t->delivered_bytes = SUM(r, delivered_bytes);
  t->acks = SUM(r, acks);
  t->timeouts = SUM(r, timeouts);
  t->late_acks = SUM(r, late_acks);
  t->skipped = SUM(r, skipped);
  t->bad = SUM(r, bad);
  t->peer_gone = SUM(r, peer_gone);
  hist_init(&t->lat);
  for (int i = 0; i < r->nw; i++) hist_merge(&t->lat, &r->w[i].lat);
  if (r->error[0]) snprintf(t->error, sizeof t->error, "%s", r->error);
  else if (atomic_load(&bench_interrupted)) snprintf(t->error, sizeof t->error, "interrupted");
}

static int run_workers(struct relay *r, struct relay_totals *t) {
  int started = 0;
  for (; started < r->nw; started++)
    if (pthread_create(&r->w[started].th, NULL, worker_main, &r->w[started]) != 0) break;
  if (started < r->nw) fail(r, "worker %d: %s", started, "cannot start thread");
  else clock_phases(r, t);
  atomic_store(&r->phase, PH_STOP);
  for (int i = 0; i < started; i++) pthread_join(r->w[i].th, NULL);
  collect(r, t);
  return t->error[0] ? 1 : 0;
}

int bench_run_relay(const struct bench_cfg *cfg) {
  struct relay r = {.cfg = cfg, .nw = cfg->threads,
                    .phase = cfg->nservers > 1 ? PH_SYNC : PH_WARMUP};
  pthread_mutex_init(&r.err_mu, NULL);
  r.peers = calloc((size_t)cfg->clients, sizeof *r.peers);
  if (!r.peers || bench_connect_all(cfg, r.peers, cfg->clients) < 0) {
    free(r.peers);
    return 1;
  }
  struct relay_totals *t = calloc(1, sizeof *t);
  r.clients = calloc((size_t)cfg->clients, sizeof *r.clients);
  r.w = calloc((size_t)r.nw, sizeof *r.w);
  int rc = 2;
  if (!t || !r.clients || !r.w || init_workers(&r) < 0) {
    fprintf(stderr, "derp-bench: out of memory or epoll failure at set-up\n");
  } else {
    rc = run_workers(&r, t);
    relay_report(cfg, t);
    if (t->error[0]) fprintf(stderr, "derp-bench: error: %s\n", t->error);
  }
  free_relay(&r);
  bench_close_all(r.peers, cfg->clients);
  free(r.peers);
  free(t);
  pthread_mutex_destroy(&r.err_mu);
  return rc;
}
