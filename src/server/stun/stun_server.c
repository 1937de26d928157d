/* stun_server.c: owns the STUN sockets and their I/O on the shards (see
 * stun_server.h): opening them, the multishot recvmsg and its buffers, the
 * bounded pool of replies in flight, and the counters derper publishes
 * (stun_requests{disposition}, stun_addrfamily{family}) with derpd's reasons
 * beside them (derpd_stun_dropped{reason}).
 *
 * Work per datagram is bounded: one pass over at most STUN_BUF_SIZE bytes,
 * then at most one sendmsg. Work per loop turn is bounded by the buffer
 * group: the kernel fills at most STUN_NBUFS buffers before derpd has read
 * them, then ends the multishot receive (ENOBUFS), which is re-armed once
 * the turn's completions are handled; a flood waits in the socket's receive
 * queue, where the kernel drops what does not fit, and cannot starve TCP. */
#include "server/stun/stun_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derp/stun.h"
#include "server/core/listen.h"
#include "server/log.h"
#include "server/operations/handover.h"
#include "server/server.h"

enum { OP_RECV = 1, OP_SEND };

/* The first member of whatever a UD_STUN completion points at. */
struct stun_op {
  uint8_t kind;
};

struct stun_reply {
  alignas(16) struct stun_op op; /* OP_SEND; 16-aligned: user_data tags */
  uint16_t index;
  struct msghdr msg;
  struct iovec iov;
  struct sockaddr_in6 to; /* or a sockaddr_in, on an IPv4 socket */
  uint8_t buf[DERP_STUN_REPLY_MAX];
};

struct stun_shard {
  alignas(16) struct stun_op op; /* OP_RECV */
  int fd;
  bool generic;   /* --stun-generic */
  bool armed;     /* a multishot receive is in flight */
  bool ring_ok;   /* the buffer group is registered */
  struct msghdr tmpl; /* what each buffer holds besides the payload */
  struct io_uring_buf_ring *br;
  uint8_t *bufs;
  uint16_t nfree; /* free replies: free_idx[0..nfree) */
  uint16_t free_idx[STUN_REPLIES_MAX];
  struct stun_reply replies[STUN_REPLIES_MAX];
};

/* derpd_stun_dropped{reason}, by verdict; the labels are the verdicts' names. */
static const enum stat_scalar drop_stat[DERP_STUN_NVERDICTS] = {
    [DERP_STUN_SHORT] = STAT_stun_drop_short,
    [DERP_STUN_NOT_STUN] = STAT_stun_drop_not_stun,
    [DERP_STUN_NOT_BINDING] = STAT_stun_drop_not_binding,
    [DERP_STUN_BAD_ATTRS] = STAT_stun_drop_bad_attrs,
    [DERP_STUN_SOFTWARE_MISSING] = STAT_stun_drop_software,
    [DERP_STUN_NO_FINGERPRINT] = STAT_stun_drop_no_fingerprint,
    [DERP_STUN_BAD_FINGERPRINT] = STAT_stun_drop_bad_fingerprint,
    [DERP_STUN_UNKNOWN_ATTR] = STAT_stun_drop_unknown_attr,
    [DERP_STUN_OVERSIZED] = STAT_stun_drop_oversized,
};

_Static_assert(DERP_STUN_NVERDICTS == 10, "a new verdict needs its derpd_stun_dropped reason");

static void count(struct shard *sh, enum stat_scalar s) { stat_add_slot(&sh->stats.v[s], 1); }

/* ---- start-up (main thread) ------------------------------------------------ */

static void addr_str(const struct sockaddr_storage *ss, char *out, size_t cap) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
  }
}

/* A socket bound to ss; reuseport: one of the shards' group. -errno. */
static int bind_udp(const struct sockaddr_storage *ss, socklen_t len, bool dual, bool reuseport) {
  int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int one = 1, zero = 0;
  if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (dual) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  if (bind(fd, (const struct sockaddr *)ss, len) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static struct stun_shard *stun_shard_new(int fd, bool generic) {
  struct stun_shard *st = aligned_alloc(64, (sizeof *st + 63) & ~(size_t)63);
  if (!st) return NULL;
  memset(st, 0, sizeof *st);
  st->op.kind = OP_RECV;
  st->fd = fd;
  st->generic = generic;
  st->tmpl.msg_namelen = sizeof(struct sockaddr_in6);
  for (uint16_t i = 0; i < STUN_REPLIES_MAX; i++) {
    struct stun_reply *r = &st->replies[i];
    r->op.kind = OP_SEND;
    r->index = i;
    r->iov.iov_base = r->buf;
    r->msg.msg_name = &r->to;
    r->msg.msg_iov = &r->iov;
    r->msg.msg_iovlen = 1;
    st->free_idx[st->nfree++] = (uint16_t)(STUN_REPLIES_MAX - 1 - i);
  }
  return st;
}

int stun_open(struct server *s, char *err, size_t errlen) {
  const struct config *c = &s->cfg;
  if (!c->stun) {
    log_info("derpd: STUN off (-stun=false)");
    return 0;
  }
  struct sockaddr_storage ss;
  socklen_t len;
  bool dual;
  /* -a's host, as the TCP listeners take it (core/listen.c). */
  char why[200];
  if (listen_resolve(c->listen_host, (uint16_t)c->stun_port, SOCK_DGRAM, &ss, &len, &dual, why, sizeof why) != 0) {
    snprintf(err, errlen, "STUN: %s", why);
    return -1;
  }
  char where[INET6_ADDRSTRLEN + 16];
  addr_str(&ss, where, sizeof where);
  /* Alone first: a port another process holds (derper, a second derpd, with
   * SO_REUSEPORT or not) refuses this bind, where the shards' group would
   * quietly share it. Not after a live upgrade: the old process holds the
   * port on purpose, and its sockets come with it. */
  if (c->stun_port && !handover_active()) {
    int fd = bind_udp(&ss, len, dual, false);
    if (fd < 0) {
      snprintf(err, errlen, "-stun-port: cannot bind UDP %s: %s%s", where, strerror(-fd),
               fd == -EADDRINUSE ? " (another STUN server or derper?): pass another -stun-port, "
                                   "or -stun=false" : "");
      return -1;
    }
    close(fd);
  }
  for (int i = 0; i < s->nshards; i++) {
    int fd = handover_inherited("stun", i);
    if (fd < 0) fd = bind_udp(&ss, len, dual, true);
    if (fd < 0) {
      snprintf(err, errlen, "-stun-port: cannot bind UDP %s: %s", where, strerror(-fd));
      return -1;
    }
    s->shards[i].stun = stun_shard_new(fd, c->stun_generic);
    if (!s->shards[i].stun) {
      close(fd);
      snprintf(err, errlen, "STUN: out of memory");
      return -1;
    }
    if (i == 0) { /* port 0, or an inherited socket: its address, for all */
      socklen_t l = len;
      getsockname(fd, (struct sockaddr *)&ss, &l);
      addr_str(&ss, where, sizeof where);
    }
  }
  log_info("derpd: STUN on UDP %s%s (%d socket%s)%s", where, dual ? ", IPv4 and IPv6" : "", s->nshards,
           s->nshards == 1 ? "" : "s", c->stun_generic ? "; generic RFC 5389 requests too" : "");
  return 0;
}

/* ---- the shard's side ------------------------------------------------------- */

int stun_shard_ring_init(struct shard *sh) {
  struct stun_shard *st = sh->stun;
  if (!st) return 0;
  size_t ring_bytes = STUN_NBUFS * sizeof(struct io_uring_buf);
  void *mem = NULL;
  if (posix_memalign(&mem, 4096, ring_bytes) != 0) return -ENOMEM;
  memset(mem, 0, ring_bytes);
  st->br = mem;
  st->bufs = malloc((size_t)STUN_NBUFS * STUN_BUF_SIZE);
  if (!st->bufs) return -ENOMEM;
  struct io_uring_buf_reg reg = {
      .ring_addr = (uint64_t)(uintptr_t)st->br, .ring_entries = STUN_NBUFS, .bgid = STUN_BGID};
  int r = io_uring_register_buf_ring(&sh->ring, &reg, 0);
  if (r < 0) return r;
  io_uring_buf_ring_init(st->br);
  int mask = io_uring_buf_ring_mask(STUN_NBUFS);
  for (int i = 0; i < STUN_NBUFS; i++)
    io_uring_buf_ring_add(st->br, st->bufs + (size_t)i * STUN_BUF_SIZE, STUN_BUF_SIZE,
                          (unsigned short)i, mask, i);
  io_uring_buf_ring_advance(st->br, STUN_NBUFS);
  st->ring_ok = true;
  return 0;
}

int stun_shard_fd(const struct shard *sh) { return sh->stun ? sh->stun->fd : -1; }

void stun_shard_stop(struct shard *sh) {
  struct stun_shard *st = sh->stun;
  if (!st || !st->armed) return;
  struct io_uring_sqe *sqe = shard_sqe(sh);
  io_uring_prep_cancel64(sqe, ud_make(&st->op, UD_STUN), 0);
  io_uring_sqe_set_data64(sqe, ud_make(NULL, UD_NONE));
}

void stun_shard_poll(struct shard *sh) {
  struct stun_shard *st = sh->stun;
  if (!st || st->armed || !st->ring_ok || sh->stopping) return;
  struct io_uring_sqe *sqe = shard_sqe(sh);
  io_uring_prep_recvmsg_multishot(sqe, st->fd, &st->tmpl, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = STUN_BGID;
  io_uring_sqe_set_data64(sqe, ud_make(&st->op, UD_STUN));
  st->armed = true;
}

/* Hand a buffer back to the kernel at once: the datagram has been dealt with. */
static void recycle(struct stun_shard *st, unsigned bid) {
  io_uring_buf_ring_add(st->br, st->bufs + (size_t)bid * STUN_BUF_SIZE, STUN_BUF_SIZE,
                        (unsigned short)bid, io_uring_buf_ring_mask(STUN_NBUFS), 0);
  io_uring_buf_ring_advance(st->br, 1);
}

/* The client's address as the reply carries it: an IPv4-mapped source (a
 * dual-stack socket) as its 4 IPv4 bytes (see docs/architecture.md, STUN). */
static bool source_ip(const struct sockaddr *sa, socklen_t len, const uint8_t **ip, size_t *iplen,
                      uint16_t *port) {
  if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    *ip = (const uint8_t *)&a->sin_addr;
    *iplen = 4;
    *port = ntohs(a->sin_port);
    return true;
  }
  if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    bool mapped = IN6_IS_ADDR_V4MAPPED(&a->sin6_addr);
    *ip = a->sin6_addr.s6_addr + (mapped ? 12 : 0);
    *iplen = mapped ? 4 : 16;
    *port = ntohs(a->sin6_port);
    return true;
  }
  return false;
}

static void on_datagram(struct shard *sh, struct stun_shard *st, uint8_t *buf, int len) {
  struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, len, &st->tmpl);
  if (!o || o->namelen > st->tmpl.msg_namelen) {
    count(sh, STAT_stun_read_error);
    return;
  }
  const uint8_t *payload = io_uring_recvmsg_payload(o, &st->tmpl);
  size_t n = io_uring_recvmsg_payload_length(o, len, &st->tmpl);
  uint8_t txid[DERP_STUN_TXID_LEN];
  enum derp_stun_verdict v = (o->flags & MSG_TRUNC) ? DERP_STUN_OVERSIZED
                                                    : derp_stun_parse_request(payload, n, st->generic, txid);
  if (v != DERP_STUN_OK) {
    count(sh, STAT_stun_not_stun);
    count(sh, drop_stat[v]);
    return;
  }
  const struct sockaddr *from = io_uring_recvmsg_name(o);
  const uint8_t *ip;
  size_t iplen;
  uint16_t port;
  if (!source_ip(from, o->namelen, &ip, &iplen, &port)) {
    count(sh, STAT_stun_read_error);
    return;
  }
  count(sh, iplen == 4 ? STAT_stun_ipv4 : STAT_stun_ipv6); /* as derper: before the write */
  if (st->nfree == 0) {
    count(sh, STAT_stun_write_error);
    count(sh, STAT_stun_drop_busy);
    return;
  }
  struct stun_reply *r = &st->replies[st->free_idx[--st->nfree]];
  r->iov.iov_len = derp_stun_reply(r->buf, sizeof r->buf, txid, ip, iplen, port);
  memcpy(&r->to, from, o->namelen);
  r->msg.msg_namelen = o->namelen;
  struct io_uring_sqe *sqe = shard_sqe(sh);
  io_uring_prep_sendmsg(sqe, st->fd, &r->msg, 0);
  io_uring_sqe_set_data64(sqe, ud_make(&r->op, UD_STUN));
}

static void on_recv(struct shard *sh, struct stun_shard *st, struct io_uring_cqe *cqe) {
  if (!(cqe->flags & IORING_CQE_F_MORE)) st->armed = false;
  if (cqe->flags & IORING_CQE_F_BUFFER) {
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    if (bid < STUN_NBUFS) {
      if (cqe->res >= 0) on_datagram(sh, st, st->bufs + (size_t)bid * STUN_BUF_SIZE, cqe->res);
      recycle(st, bid);
    }
  }
  if (cqe->res >= 0 || cqe->res == -ENOBUFS) {
    /* Out of buffers: all are back in the ring by now (each is returned as
     * its datagram is handled), so re-arm at once. */
    if (!st->armed) stun_shard_poll(sh);
    return;
  }
  if (cqe->res == -ECANCELED) return;
  /* Anything else is re-armed at the next tick, not at once: an error that
   * repeats must not spin the loop. */
  count(sh, STAT_stun_read_error);
  if (shard_log_allowed(sh)) log_warn("shard %d: STUN receive: %s", sh->id, strerror(-cqe->res));
}

static void on_send(struct shard *sh, struct stun_shard *st, struct stun_reply *r, int res) {
  st->free_idx[st->nfree++] = r->index;
  if (res >= 0) {
    count(sh, STAT_stun_success);
    return;
  }
  count(sh, STAT_stun_write_error);
  log_debug("shard %d: STUN reply: %s", sh->id, strerror(-res));
}

void stun_on_cqe(struct shard *sh, struct io_uring_cqe *cqe) {
  struct stun_shard *st = sh->stun;
  struct stun_op *op = ud_ptr(io_uring_cqe_get_data64(cqe));
  if (!st) return;
  if (op->kind == OP_RECV) on_recv(sh, st, cqe);
  else on_send(sh, st, (struct stun_reply *)op, cqe->res);
}

void stun_shard_free(struct shard *sh) {
  struct stun_shard *st = sh->stun;
  if (!st) return;
  close(st->fd);
  free(st->bufs);
  free(st->br);
  free(st);
  sh->stun = NULL;
}
