/* bench_relay.c: the relay mode's worker threads (bench_relay.h has the
 * design): one epoll loop each over the clients it owns; output buffers and
 * flushes, packet generation for both loops, the receiver side (latency,
 * acks), route-sync probes, and the frame reader. Nothing here runs on the
 * main thread but relay_mark_ready and relay_parse_derp during set-up,
 * before the workers start. */
#include "bench_relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

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
    relay_fail(c->w->r, "client %d: send: %s (server closed the connection?)", c->idx, strerror(errno));
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
    relay_fail(c->w->r, "client %d: SSL_write: %s (server closed the connection?)", c->idx,
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
    relay_fail(c->w->r, "client %d: %s", c->idx, "output buffer over its cap");
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

void relay_mark_ready(struct client *c) {
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
  relay_mark_ready(c);
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
    relay_fail(w->r, "client %d: %s", c->idx, "ack backlog over its cap");
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
    relay_fail(c->w->r, "client %d: %s", c->idx, "server sent Restarting");
    return;
  default: /* KeepAlive, Health, Pong, ... */
    return;
  }
}

/* ---- input ---- */

void relay_parse_derp(struct client *c, const uint8_t *in, size_t inlen, int64_t now) {
  for (;;) {
    struct derp_frame f;
    enum derp_read_status st = derp_frame_read(&c->rd, &in, &inlen, &f);
    if (st == DERP_READ_MORE) return;
    if (st != DERP_READ_FRAME) {
      relay_fail(c->w->r, "client %d: %s", c->idx, "bad frame from server");
      return;
    }
    on_frame(c, &f, now);
  }
}

/* What the server sent: DERP frames, inside WebSocket messages over WebSocket.
 * in is writable (a read buffer): the decoder works in place. */
static void parse(struct client *c, uint8_t *in, size_t inlen, int64_t now) {
  if (!c->ws) {
    relay_parse_derp(c, in, inlen, now);
    return;
  }
  for (;;) {
    struct ws_event ev;
    switch (ws_decode(&c->wsd, &in, &inlen, &ev)) {
    case WS_EV_MORE: return;
    case WS_EV_DATA: relay_parse_derp(c, ev.data, ev.len, now); break;
    case WS_EV_PING: {
      uint8_t *p = out_frame(c, WS_OP_PONG, ev.len);
      if (p) memcpy(p, ev.data, ev.len);
      break;
    }
    case WS_EV_PONG: break;
    case WS_EV_CLOSE:
      relay_fail(c->w->r, "client %d: %s", c->idx, "server sent a WebSocket close");
      return;
    default:
      relay_fail(c->w->r, "client %d: bad WebSocket frame from server: %s", c->idx, ev.why);
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
    relay_fail(c->w->r, "client %d: server closed the connection (%s)", c->idx,
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
    relay_fail(c->w->r, "client %d: server closed the connection (%s)", c->idx,
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
    if (measured) CTR_ADD(w->skipped, n - max_n); /* like sent: the measured window only */
    n = max_n;
  }
  w->paced = due;
  for (uint64_t k = 0; k < n; k++) {
    struct client *c = w->senders[w->rr];
    if (++w->rr == (unsigned)w->nsenders) w->rr = 0; /* no int overflow after 2^31 packets */
    if (c->olen - c->opos < OUT_HIGH) {
      if (send_data(c, 0, measured, now) < 0) return;
    } else if (measured) {
      CTR_ADD(w->skipped, 1);
    }
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
      relay_mark_ready(c);
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

void *relay_worker_main(void *arg) {
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
      relay_fail(r, "worker %d: epoll_wait: %s", w->id, strerror(errno));
      break;
    }
    if (n > 0) handle_events(w, ev, n);
  }
  return NULL;
}
