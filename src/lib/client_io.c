/* client_io.c: the blocking DERP client's bytes (client_internal.h): reads
 * into the receive buffer bounded by a deadline (poll on the socket, or the
 * wrapped stream's own wait), WebSocket frames unwrapped in place as they
 * arrive (pings answered, a close echoed), and whole writes: plain sendmsg
 * resumed after partial writes, gathered into records for a wrapped stream,
 * or one masked WebSocket message. No frames, no handshake: client.c. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <sodium.h>

#include "lib/client_internal.h"

/* ---- small utilities ---- */

int64_t cl_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before deadline (-1 deadline = forever, returns -1). */
int cl_ms_left(int64_t deadline) {
  if (deadline < 0) return -1;
  int64_t left = deadline - cl_now_ms();
  if (left < 0) return 0;
  return left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* Why a read returned r <= 0, for error messages. */
const char *cl_io_why(int r) {
  if (r == 0) return "timeout";
  return errno == EPIPE ? "connection closed by server" : strerror(errno);
}

void cl_seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Through a wrapped stream: gather small pieces so that one frame makes one
 * TLS record rather than one per piece. */
static int stream_writev(struct derp_client *c, struct iovec *iov, int cnt) {
  uint8_t buf[16384];
  size_t used = 0;
  for (int i = 0; i < cnt; i++) {
    const uint8_t *p = iov[i].iov_base;
    size_t n = iov[i].iov_len;
    while (n > 0) {
      size_t k = sizeof buf - used < n ? sizeof buf - used : n;
      memcpy(buf + used, p, k);
      used += k;
      p += k;
      n -= k;
      if (used == sizeof buf) {
        if (c->st.write(c->st.ctx, buf, used) < 0) return -1;
        used = 0;
      }
    }
  }
  return used ? c->st.write(c->st.ctx, buf, used) : 0;
}

/* Write all of iov, resuming after partial writes. */
int cl_writev_all(struct derp_client *c, struct iovec *iov, int cnt) {
  if (c->has_stream) return stream_writev(c, iov, cnt);
  int fd = c->fd;
  while (cnt > 0) {
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    size_t left = (size_t)n;
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

int cl_write_all(struct derp_client *c, const void *p, size_t n) {
  struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
  return cl_writev_all(c, &iov, 1);
}

/* WebSocket: unwrap the n raw bytes at rbuf[rend..) in place, leaving the
 * message bytes at rbuf[rend..) (rend advanced). Pings are answered; a close
 * is echoed and sets ws_closed. 0, or -1 (errno EPROTO: bad frame). */
int cl_ws_unwrap(struct derp_client *c, size_t n) {
  uint8_t *in = c->rbuf + c->rend;
  for (;;) {
    struct ws_event ev;
    switch (ws_decode(&c->wd, &in, &n, &ev)) {
    case WS_EV_MORE:
      return 0;
    case WS_EV_DATA:
      memmove(c->rbuf + c->rend, ev.data, ev.len);
      c->rend += ev.len;
      break;
    case WS_EV_PING:
      if (cl_ws_send_frame(c, WS_OP_PONG, ev.data, ev.len) < 0) return -1;
      break;
    case WS_EV_PONG:
      break;
    case WS_EV_CLOSE: {
      uint8_t code[2] = {(uint8_t)(ev.code >> 8), (uint8_t)ev.code};
      c->ws_closed = true;
      (void)cl_ws_send_frame(c, WS_OP_CLOSE, code, ev.code == WS_CLOSE_NO_STATUS ? 0 : 2);
      break;
    }
    case WS_EV_ERROR:
      c->ws_closed = true;
      errno = EPROTO;
      return -1;
    }
  }
}

/* Read more bytes into rbuf[rend..cap) waiting up to the deadline.
 * 1 = got bytes, 0 = timeout, -1 = EOF (errno EPIPE) or error. */
int cl_fill(struct derp_client *c, size_t cap, int64_t deadline) {
  if (c->rend >= cap) {
    errno = ENOBUFS;
    return -1;
  }
  for (;;) {
    if (c->ws_closed) {
      errno = EPIPE;
      return -1;
    }
    ssize_t n;
    if (c->has_stream) { /* TLS: the stream waits for the deadline itself */
      n = c->st.read(c->st.ctx, c->rbuf + c->rend, cap - c->rend, deadline);
      if (n == -2) return 0;
      if (n < 0) return -1;
    } else {
      struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
      int pr = poll(&pfd, 1, cl_ms_left(deadline));
      if (pr < 0 && errno == EINTR) continue;
      if (pr < 0) return -1;
      if (pr == 0) return 0;
      n = recv(c->fd, c->rbuf + c->rend, cap - c->rend, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) return -1;
    }
    if (n == 0) {
      errno = EPIPE;
      return -1;
    }
    if (c->ws) { /* WebSocket rides on either: unwrap in place */
      size_t before = c->rend;
      if (cl_ws_unwrap(c, (size_t)n) < 0) return -1;
      if (c->rend == before) { /* only framing so far (control frames, empty frames) */
        if (deadline >= 0 && cl_now_ms() >= deadline) return 0;
        continue;
      }
      return 1;
    }
    c->rend += (size_t)n;
    return 1;
  }
}

/* ---- writes ---- */

/* Room for n bytes in wbuf. */
static int wbuf_reserve(struct derp_client *c, size_t n) {
  if (n <= c->wcap) return 0;
  uint8_t *b = realloc(c->wbuf, n);
  if (!b) return -1;
  c->wbuf = b;
  c->wcap = n;
  return 0;
}

/* One WebSocket message holding iov[0..cnt): frames of at most ws_frame_max
 * bytes, each masked with a fresh random key, written at once. */
static int ws_writev(struct derp_client *c, const struct iovec *iov, int cnt) {
  size_t total = 0;
  for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
  size_t fmax = c->ws_frame_max ? c->ws_frame_max : (total ? total : 1);
  size_t nframes = total ? (total + fmax - 1) / fmax : 1;
  if (wbuf_reserve(c, total + nframes * WS_HDR_MAX) < 0) {
    errno = ENOMEM;
    return -1;
  }
  size_t o = 0, done = 0, ioff = 0;
  int i = 0;
  for (size_t f = 0; f < nframes; f++) {
    size_t len = total - done < fmax ? total - done : fmax;
    uint8_t key[4];
    randombytes_buf(key, sizeof key);
    o += ws_put_header(c->wbuf + o, f == 0 ? WS_OP_BINARY : WS_OP_CONT, f + 1 == nframes, len, key);
    size_t start = o;
    for (size_t want = len; want > 0;) {
      size_t k = iov[i].iov_len - ioff;
      if (k > want) k = want;
      memcpy(c->wbuf + o, (const uint8_t *)iov[i].iov_base + ioff, k);
      o += k;
      want -= k;
      ioff += k;
      if (ioff == iov[i].iov_len) {
        i++;
        ioff = 0;
      }
    }
    ws_mask(c->wbuf + start, len, key, 0);
    done += len;
  }
  return cl_write_all(c, c->wbuf, o);
}

int cl_ws_send_frame(struct derp_client *c, uint8_t op, const void *p, size_t n) {
  uint8_t f[WS_HDR_MAX + WS_CTRL_MAX], key[4];
  if (n > WS_CTRL_MAX) {
    errno = EMSGSIZE;
    return -1;
  }
  randombytes_buf(key, sizeof key);
  size_t h = ws_put_header(f, op, true, n, key);
  memcpy(f + h, p, n);
  ws_mask(f + h, n, key, 0);
  return cl_write_all(c, f, h + n);
}

/* The DERP stream's writes: as they are, or inside a WebSocket message. */
int cl_send_iov(struct derp_client *c, struct iovec *iov, int cnt) {
  return c->ws ? ws_writev(c, iov, cnt) : cl_writev_all(c, iov, cnt);
}
