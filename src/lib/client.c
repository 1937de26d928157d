/* client.c: the blocking DERP client of derp/client.h.
 *
 * Owns: TCP connect (with a deadline), the HTTP upgrade (normal, fast start
 * or WebSocket), the DERP handshake (ServerKey, ClientInfo, ServerInfo),
 * whole-frame writes, and frame reads through a derp_frame_reader over one
 * receive buffer. The bytes underneath (reads with deadlines, whole writes,
 * WebSocket framing) are client_io.c's.
 *
 * WebSocket: after the 101 (Sec-WebSocket-Accept checked) every write is one
 * masked binary message (optionally fragmented, ws_frame_max), and received
 * bytes are unwrapped in place in the receive buffer before the frame reader
 * sees them (server frames are unmasked, so payload only moves down over the
 * headers). Pings are answered; a close frame reads as EOF.
 *
 * Sockets stay blocking; poll() enforces deadlines on reads and on connect,
 * each deadline bounding the whole wait (bytes that make no frame for the
 * caller, skipped frames or WebSocket framing, do not extend it). Writes
 * block (a caller that needs a bound sets SO_SNDTIMEO on the fd, which the
 * TLS stream honours too: a timed-out write then fails with EAGAIN). Every write uses MSG_NOSIGNAL so a
 * closed peer is an EPIPE error, never a SIGPIPE.
 *
 * derp_client_recv_packet, exactly: it returns 1 when a RecvPacket *or a
 * PeerGone* frame arrives (m->type tells which; tests need to see PeerGone),
 * answers Ping with Pong, and silently skips every other frame (KeepAlive,
 * Health, Pong, PeerPresent, Restarting, ...). 0 = timeout, -1 = closed/error. */
#include "derp/client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "lib/wsaccept.h"
#include "lib/wsframe.h"

#include "lib/client_internal.h"

/* ---- connect ---- */

/* Non-blocking connect bounded by the deadline, then back to blocking. */
static int connect_deadline(int fd, const struct sockaddr *sa, socklen_t salen, int64_t deadline) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  int rc = connect(fd, sa, salen);
  if (rc < 0 && errno == EINPROGRESS) {
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int pr;
    do pr = poll(&pfd, 1, cl_ms_left(deadline));
    while (pr < 0 && errno == EINTR);
    if (pr == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    int soerr = 0;
    socklen_t l = sizeof soerr;
    if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) < 0) return -1;
    if (soerr) {
      errno = soerr;
      return -1;
    }
    rc = 0;
  }
  if (rc < 0) return -1;
  return fcntl(fd, F_SETFL, fl);
}

static int tcp_connect(const char *host, uint16_t port, int64_t deadline, char *err, size_t errlen) {
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%u", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int gai = getaddrinfo(host, portstr, &hints, &res);
  if (gai != 0) {
    cl_seterr(err, errlen, "resolve %s: %s", host, gai_strerror(gai));
    return -1;
  }
  int fd = -1, last_errno = 0, left = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) left++;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next, left--) {
    /* Each address gets its share of the time left, at least 2 s (Go's
     * partialDeadline): an address that drops SYNs (a dead IPv6 path,
     * sorted first) must not use up the others' time. None left (the
     * lookup or the addresses before used it up): a timeout, as Go's. */
    int64_t now = cl_now_ms(), until = -1;
    if (deadline >= 0) {
      if (now >= deadline) {
        last_errno = ETIMEDOUT;
        break;
      }
      int64_t share = (deadline - now) / left;
      until = now + (share >= 2000 ? share : deadline - now < 2000 ? deadline - now : 2000);
    }
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    if (connect_deadline(fd, ai->ai_addr, ai->ai_addrlen, until) == 0) break;
    last_errno = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    cl_seterr(err, errlen, "connect %s:%u: %s", host, port, strerror(last_errno));
    return -1;
  }
  int one = 1; /* frames are small and latency matters more than batching */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* The caller's dial: the socket as tcp_connect leaves its own. */
static int dialled(const struct derp_client_opts *o, int64_t deadline, char *err, size_t errlen) {
  int fd = o->dial(o->dial_arg, o->host, o->port, deadline, err, errlen);
  if (fd < 0) return -1;
  int fl = fcntl(fd, F_GETFL), one = 1;
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
    cl_seterr(err, errlen, "dial: fcntl: %s", strerror(errno));
    close(fd);
    return -1;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* ---- HTTP ---- */

static size_t build_request(char *out, size_t cap, const char *host, bool fast_start, const char *ideal) {
  int n = snprintf(out, cap,
                   "GET /derp HTTP/1.1\r\nHost: %s\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                   "User-Agent: derpd-client\r\n%s%s%s%s\r\n",
                   host, fast_start ? "Derp-Fast-Start: 1\r\n" : "", ideal ? "Ideal-Node: " : "",
                   ideal ? ideal : "", ideal ? "\r\n" : "");
  return (n < 0 || (size_t)n >= cap) ? 0 : (size_t)n;
}

/* RFC 6455 §4.1 opening handshake, asking for the derp subprotocol. */
static size_t build_ws_request(char *out, size_t cap, const char *host, const char *ws_key) {
  int n = snprintf(out, cap,
                   "GET /derp HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: derp\r\nUser-Agent: derpd-client\r\n\r\n",
                   host, ws_key);
  return (n < 0 || (size_t)n >= cap) ? 0 : (size_t)n;
}

/* Value of header `name` (case-insensitive) in the response head rbuf[0..rpos),
 * trimmed, into out; false if absent or too long. */
static bool response_header(const struct derp_client *c, const char *name, char *out, size_t cap) {
  const char *p = (const char *)c->rbuf, *end = p + c->rpos;
  size_t nl = strlen(name);
  while ((p = memmem(p, (size_t)(end - p), "\r\n", 2)) && p + 2 < end) {
    p += 2;
    if ((size_t)(end - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1, *e = memmem(v, (size_t)(end - v), "\r\n", 2);
      if (!e) return false;
      while (v < e && (*v == ' ' || *v == '\t')) v++;
      while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
      if ((size_t)(e - v) >= cap) return false;
      memcpy(out, v, (size_t)(e - v));
      out[e - v] = 0;
      return true;
    }
  }
  return false;
}

/* Read an HTTP response head starting at rbuf[0]; require 101. Bytes past the
 * head stay in rbuf as the start of the frame stream (rpos = end of head). */
static int read_http_101(struct derp_client *c, int64_t deadline, char *err, size_t errlen) {
  uint8_t *end = NULL;
  while (!(end = memmem(c->rbuf, c->rend, "\r\n\r\n", 4))) {
    if (c->rend >= HTTP_HEAD_MAX) {
      cl_seterr(err, errlen, "http: response head over %d bytes", HTTP_HEAD_MAX);
      return -1;
    }
    int r = cl_fill(c, HTTP_HEAD_MAX, deadline);
    if (r <= 0) {
      cl_seterr(err, errlen, "http: reading response: %s", cl_io_why(r));
      return -1;
    }
  }
  /* "HTTP/1.x NNN" then a space or the line's end, all within the head. */
  const uint8_t *h = c->rbuf;
  if (c->rend < 13 || memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' || !isdigit(h[9]) || !isdigit(h[10]) ||
      !isdigit(h[11]) || (h[12] != ' ' && h[12] != '\r')) {
    cl_seterr(err, errlen, "http: malformed status line");
    return -1;
  }
  int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
  c->http_status = status;
  if (status != 101) { /* with the body's first line where it came along: it often says why */
    char why[121];
    size_t n = 0;
    for (const uint8_t *b = end + 4; b < c->rbuf + c->rend && *b != '\n' && n < sizeof why - 1; b++)
      if (*b >= 0x20 && *b < 0x7f) why[n++] = (char)*b;
    why[n] = 0;
    cl_seterr(err, errlen, "http: expected 101, got %d%s%s", status, n ? ": " : "", why);
    return -1;
  }
  c->rpos = (size_t)(end + 4 - c->rbuf);
  return 0;
}

/* ---- frames ---- */

/* Next frame from the stream. 1 = frame, 0 = timeout, -1 = closed/protocol
 * error (errno EPIPE on EOF, EPROTO on a bad frame). */
static int next_frame(struct derp_client *c, struct derp_frame *f, int64_t deadline) {
  bool filled = false;
  for (;;) {
    const uint8_t *in = c->rbuf + c->rpos;
    size_t inlen = c->rend - c->rpos;
    enum derp_read_status st = derp_frame_read(&c->rd, &in, &inlen, f);
    c->rpos = (size_t)(in - c->rbuf);
    if (st == DERP_READ_FRAME) return 1;
    if (st == DERP_READ_ERROR) {
      errno = EPROTO;
      return -1;
    }
    if (st == DERP_READ_NOMEM) {
      errno = ENOMEM;
      return -1;
    }
    /* MORE: the reader consumed everything (partial frames live in its own
     * buffer), so rbuf can be reused from the start. This is what makes the
     * previous frame's payload invalid, as documented. */
    c->rpos = c->rend = 0;
    /* The deadline bounds the whole wait, not each read: a peer that keeps
     * bytes coming that make no frame for us (skipped frames, a frame
     * trickled in) must not hold the caller past it. One read is always
     * tried, so a timeout of 0 still takes what is already there. */
    if (filled && deadline >= 0 && cl_now_ms() >= deadline) return 0;
    int r = cl_fill(c, RBUF_CAP, deadline);
    if (r <= 0) return r;
    filled = true;
  }
}

static int read_server_key(struct derp_client *c, const derp_key *expect, int64_t deadline,
                           char *err, size_t errlen) {
  struct derp_frame f;
  int r = next_frame(c, &f, deadline);
  if (r <= 0) {
    cl_seterr(err, errlen, "handshake: reading ServerKey: %s", cl_io_why(r));
    return -1;
  }
  if (f.type != DERP_FRAME_SERVER_KEY) {
    cl_seterr(err, errlen, "handshake: expected ServerKey frame, got type 0x%02x", f.type);
    return -1;
  }
  if (derp_server_key_parse(f.payload, f.len, &c->server_key) != 0) {
    cl_seterr(err, errlen, "handshake: bad ServerKey (magic or length %u)", f.len);
    return -1;
  }
  if (expect && !derp_key_equal(expect, &c->server_key)) {
    cl_seterr(err, errlen, "handshake: server key differs from the expected one");
    return -1;
  }
  return 0;
}

/* Build the ClientInfo frame (header + sealed payload) into out. */
static size_t build_client_info(struct derp_client *c, const struct derp_client_opts *o,
                                uint8_t *out, size_t cap) {
  struct derp_client_info ci = {.version = DERP_PROTOCOL_VERSION,
                                .can_ack_pings = o->can_ack_pings,
                                .is_prober = o->is_prober};
  if (o->mesh_key) {
    ci.has_mesh_key = true;
    snprintf(ci.mesh_key, sizeof ci.mesh_key, "%s", o->mesh_key);
  }
  if (cap < DERP_FRAME_HDR_LEN) return 0;
  size_t n = derp_client_info_seal(out + DERP_FRAME_HDR_LEN, cap - DERP_FRAME_HDR_LEN, &c->priv,
                                   &c->server_key, &ci);
  if (n == 0) return 0;
  derp_frame_put_header(out, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
  return n + DERP_FRAME_HDR_LEN;
}

static int read_server_info(struct derp_client *c, int64_t deadline, char *err, size_t errlen) {
  struct derp_frame f;
  int r = next_frame(c, &f, deadline);
  if (r <= 0) {
    cl_seterr(err, errlen, "handshake: reading ServerInfo: %s", cl_io_why(r));
    return -1;
  }
  if (f.type != DERP_FRAME_SERVER_INFO) {
    cl_seterr(err, errlen, "handshake: expected ServerInfo frame, got type 0x%02x", f.type);
    return -1;
  }
  const char *why = "?";
  if (derp_server_info_open(f.payload, f.len, &c->priv, &c->server_key, &c->si, &why) != 0) {
    cl_seterr(err, errlen, "handshake: ServerInfo does not open: %s", why);
    return -1;
  }
  return 0;
}

/* ---- handshake ---- */

/* The 101 of a WebSocket upgrade is in: check it and switch to WebSocket
 * framing; bytes already read behind the head are frames. */
static int ws_enter(struct derp_client *c, const char *ws_key, char *err, size_t errlen) {
  char want[DERP_WS_ACCEPT_LEN + 1], got[64], proto[64];
  derp_ws_accept(ws_key, want);
  if (!response_header(c, "Sec-WebSocket-Accept", got, sizeof got) || strcmp(got, want) != 0) {
    cl_seterr(err, errlen, "websocket: missing or wrong Sec-WebSocket-Accept");
    return -1;
  }
  if (!response_header(c, "Sec-WebSocket-Protocol", proto, sizeof proto) ||
      strcasecmp(proto, "derp") != 0) {
    cl_seterr(err, errlen, "websocket: server did not select the derp subprotocol");
    return -1;
  }
  c->ws = true;
  ws_decoder_init(&c->wd, false);
  size_t n = c->rend - c->rpos;
  memmove(c->rbuf, c->rbuf + c->rpos, n);
  c->rpos = c->rend = 0;
  if (cl_ws_unwrap(c, n) < 0) {
    cl_seterr(err, errlen, "websocket: bad frame from server");
    return -1;
  }
  return 0;
}

static int handshake_normal(struct derp_client *c, const struct derp_client_opts *o,
                            int64_t deadline, char *err, size_t errlen) {
  char req[1024], ws_key[32];
  size_t rl;
  if (o->websocket) {
    uint8_t nonce[16];
    randombytes_buf(nonce, sizeof nonce);
    derp_base64(nonce, sizeof nonce, ws_key);
    rl = build_ws_request(req, sizeof req, o->host, ws_key);
  } else {
    rl = build_request(req, sizeof req, o->host, false, o->ideal_node);
  }
  if (rl == 0 || cl_write_all(c, req, rl) < 0) {
    cl_seterr(err, errlen, "http: writing request: %s", rl ? strerror(errno) : "host too long");
    return -1;
  }
  if (read_http_101(c, deadline, err, errlen) < 0) return -1;
  if (o->websocket && ws_enter(c, ws_key, err, errlen) < 0) return -1;
  if (read_server_key(c, o->server_key, deadline, err, errlen) < 0) return -1;
  uint8_t ci[DERP_FRAME_HDR_LEN + DERP_CLIENT_INFO_SEAL_MAX];
  size_t cl = build_client_info(c, o, ci, sizeof ci);
  if (cl == 0) {
    cl_seterr(err, errlen, "handshake: sealing ClientInfo failed");
    return -1;
  }
  struct iovec civ = {.iov_base = ci, .iov_len = cl};
  if (cl_send_iov(c, &civ, 1) < 0) {
    cl_seterr(err, errlen, "handshake: writing ClientInfo: %s", strerror(errno));
    return -1;
  }
  return read_server_info(c, deadline, err, errlen);
}

/* Fast start: request and ClientInfo in one write; no HTTP response expected.
 * A server that answers with HTTP anyway is tolerated if it says 101. */
static int handshake_fast(struct derp_client *c, const struct derp_client_opts *o,
                          const derp_key *server_key, int64_t deadline, char *err, size_t errlen) {
  if (!server_key) {
    cl_seterr(err, errlen, "fast start needs the server key");
    return -1;
  }
  c->server_key = *server_key;
  uint8_t buf[1024 + DERP_FRAME_HDR_LEN + DERP_CLIENT_INFO_SEAL_MAX];
  size_t rl = build_request((char *)buf, 1024, o->host, true, o->ideal_node);
  size_t cl = rl ? build_client_info(c, o, buf + rl, sizeof buf - rl) : 0;
  if (cl == 0) {
    cl_seterr(err, errlen, "handshake: building fast-start request failed");
    return -1;
  }
  if (cl_write_all(c, buf, rl + cl) < 0) {
    cl_seterr(err, errlen, "http: writing request: %s", strerror(errno));
    return -1;
  }
  while (c->rend < 5) { /* enough to tell "HTTP/" from a frame header */
    int r = cl_fill(c, HTTP_HEAD_MAX, deadline);
    if (r <= 0) {
      cl_seterr(err, errlen, "handshake: reading ServerKey: %s", cl_io_why(r));
      return -1;
    }
  }
  if (memcmp(c->rbuf, "HTTP/", 5) == 0 && read_http_101(c, deadline, err, errlen) < 0) return -1;
  if (read_server_key(c, server_key, deadline, err, errlen) < 0) return -1;
  return read_server_info(c, deadline, err, errlen);
}

/* ---- public API ---- */

int derp_client_connect(struct derp_client **out, const struct derp_client_opts *o,
                        char *err, size_t errlen) {
  *out = NULL;
  if (!o || !o->host || !o->priv) {
    cl_seterr(err, errlen, "client: host and priv are required");
    return -1;
  }
  struct derp_client *c = calloc(1, sizeof *c);
  if (c) c->rbuf = malloc(RBUF_CAP);
  if (!c || !c->rbuf) {
    free(c);
    cl_seterr(err, errlen, "client: out of memory");
    return -1;
  }
  const char *bad = o->websocket && o->fast_start ? "fast start does not apply to WebSocket"
                    : o->mesh_key && strlen(o->mesh_key) > DERP_MESH_KEY_MAX
                        ? "mesh key longer than DERP_MESH_KEY_MAX (512) characters"
                        : NULL;
  if (bad) {
    free(c->rbuf);
    free(c);
    cl_seterr(err, errlen, "client: %s", bad);
    return -1;
  }
  c->fd = -1;
  c->priv = *o->priv;
  c->ws_frame_max = o->ws_frame_max;
  derp_key_public(&c->priv, &c->pub);
  derp_frame_reader_init(&c->rd, DERP_FROM_SERVER);
  int64_t deadline = cl_now_ms() + (o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS);
  c->fd = o->dial ? dialled(o, deadline, err, errlen) : tcp_connect(o->host, o->port, deadline, err, errlen);
  /* A stream wrapper (TLS) may learn the server key on the way (the DERP
   * meta certificate): fast start then needs no key from the caller. */
  derp_key learned;
  bool have_learned = false;
  const derp_key *skey = o->server_key;
  if (c->fd >= 0 && o->wrap_stream) {
    if (o->wrap_stream(o->wrap_arg, c->fd, deadline, &c->st, &learned, &have_learned, err,
                       errlen) < 0) {
      derp_client_close(c);
      return -1;
    }
    c->has_stream = true;
    if (!skey && have_learned) skey = &learned;
  }
  int rc = c->fd < 0 ? -1
           : o->fast_start ? handshake_fast(c, o, skey, deadline, err, errlen)
                           : handshake_normal(c, o, deadline, err, errlen);
  if (rc < 0) {
    derp_client_close(c);
    return -1;
  }
  *out = c;
  return 0;
}

void derp_client_close(struct derp_client *c) {
  if (!c) return;
  if (c->has_stream && c->st.close) c->st.close(c->st.ctx);
  if (c->fd >= 0) close(c->fd);
  derp_frame_reader_reset(&c->rd);
  free(c->rbuf);
  free(c->wbuf);
  free(c);
}

int derp_client_detach(struct derp_client *c, int *fd, struct derp_client_stream *st,
                       bool *has_stream, uint8_t **buf, size_t *buflen) {
  size_t n = c->rend - c->rpos;
  uint8_t *copy = NULL;
  if (n > 0) {
    copy = malloc(n);
    if (!copy) {
      errno = ENOMEM;
      return -1;
    }
    memcpy(copy, c->rbuf + c->rpos, n);
  }
  *fd = c->fd;
  *has_stream = c->has_stream;
  if (c->has_stream) *st = c->st;
  else memset(st, 0, sizeof *st);
  *buf = copy;
  *buflen = n;
  c->fd = -1;
  c->has_stream = false;
  derp_client_close(c);
  return 0;
}

int derp_client_fd(const struct derp_client *c) { return c->fd; }
int derp_client_http_status(const struct derp_client *c) { return c->http_status; }
const derp_key *derp_client_server_key(const struct derp_client *c) { return &c->server_key; }
const derp_key *derp_client_public_key(const struct derp_client *c) { return &c->pub; }
const struct derp_server_info *derp_client_server_info(const struct derp_client *c) {
  return &c->si;
}

/* Header + up to two payload pieces in one sendmsg. */
static int send_frame(struct derp_client *c, uint8_t type, const void *a, size_t alen,
                      const void *b, size_t blen) {
  if (alen + blen > 0xffffffffu) {
    errno = EMSGSIZE;
    return -1;
  }
  uint8_t hdr[DERP_FRAME_HDR_LEN];
  derp_frame_put_header(hdr, type, (uint32_t)(alen + blen));
  struct iovec iov[3] = {{hdr, sizeof hdr}, {(void *)a, alen}, {(void *)b, blen}};
  return cl_send_iov(c, iov, 3);
}

int derp_client_send(struct derp_client *c, const derp_key *dst, const void *pkt, size_t len) {
  if (len > DERP_MAX_PACKET) {
    errno = EMSGSIZE;
    return -1;
  }
  return send_frame(c, DERP_FRAME_SEND_PACKET, dst->b, DERP_KEY_LEN, pkt, len);
}

int derp_client_ping(struct derp_client *c, const uint8_t data[8]) {
  return send_frame(c, DERP_FRAME_PING, data, 8, NULL, 0);
}

int derp_client_pong(struct derp_client *c, const uint8_t data[8]) {
  return send_frame(c, DERP_FRAME_PONG, data, 8, NULL, 0);
}

int derp_client_note_preferred(struct derp_client *c, bool preferred) {
  uint8_t b = preferred ? 1 : 0;
  return send_frame(c, DERP_FRAME_NOTE_PREFERRED, &b, 1, NULL, 0);
}

int derp_client_watch_conns(struct derp_client *c) {
  return send_frame(c, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0);
}

int derp_client_close_peer(struct derp_client *c, const derp_key *peer) {
  return send_frame(c, DERP_FRAME_CLOSE_PEER, peer->b, DERP_KEY_LEN, NULL, 0);
}

int derp_client_forward_packet(struct derp_client *c, const derp_key *src, const derp_key *dst,
                               const void *pkt, size_t len) {
  if (len > DERP_MAX_PACKET) {
    errno = EMSGSIZE;
    return -1;
  }
  uint8_t keys[2 * DERP_KEY_LEN];
  memcpy(keys, src->b, DERP_KEY_LEN);
  memcpy(keys + DERP_KEY_LEN, dst->b, DERP_KEY_LEN);
  return send_frame(c, DERP_FRAME_FORWARD_PACKET, keys, sizeof keys, pkt, len);
}

int derp_client_send_raw(struct derp_client *c, uint8_t type, const void *payload, uint32_t len) {
  return send_frame(c, type, payload, len, NULL, 0);
}

int derp_client_write_bytes(struct derp_client *c, const void *p, size_t n) {
  return cl_write_all(c, p, n);
}

/* Fill the typed fields of m from a frame; -1 (EPROTO) if too short for its type. */
static int decode(struct derp_client_msg *m, const struct derp_frame *f) {
  memset(m, 0, sizeof *m);
  m->type = f->type;
  m->payload = f->payload;
  m->len = f->len;
  switch (f->type) {
  case DERP_FRAME_RECV_PACKET:
    if (f->len < DERP_KEY_LEN) break;
    memcpy(m->src.b, f->payload, DERP_KEY_LEN);
    m->packet = f->payload + DERP_KEY_LEN;
    m->packet_len = f->len - DERP_KEY_LEN;
    return 0;
  case DERP_FRAME_PEER_GONE:
    if (f->len < DERP_KEY_LEN) break;
    memcpy(m->src.b, f->payload, DERP_KEY_LEN);
    /* Old servers send the key only: that meant "disconnected". */
    m->reason = f->len > DERP_KEY_LEN ? f->payload[DERP_KEY_LEN] : DERP_PEER_GONE_DISCONNECTED;
    return 0;
  case DERP_FRAME_PEER_PRESENT: {
    struct derp_peer_present pp;
    if (derp_peer_present_parse(f->payload, f->len, &pp) < 0) break;
    m->src = pp.key;
    m->has_addr = pp.has_addr;
    memcpy(m->ip, pp.ip, sizeof m->ip);
    m->port = pp.port;
    m->has_flags = pp.has_flags;
    m->flags = pp.flags;
    return 0;
  }
  case DERP_FRAME_PING:
  case DERP_FRAME_PONG:
    if (f->len < 8) break;
    memcpy(m->ping_data, f->payload, 8);
    return 0;
  case DERP_FRAME_RESTARTING:
    if (f->len < 8) break;
    m->reconnect_in_ms = derp_get_be32(f->payload);
    m->try_for_ms = derp_get_be32(f->payload + 4);
    return 0;
  default:
    return 0;
  }
  errno = EPROTO;
  return -1;
}

static int recv_deadline(struct derp_client *c, struct derp_client_msg *m, int64_t deadline) {
  struct derp_frame f;
  int r = next_frame(c, &f, deadline);
  if (r <= 0) return r;
  return decode(m, &f) < 0 ? -1 : 1;
}

int derp_client_recv(struct derp_client *c, struct derp_client_msg *m, int timeout_ms) {
  return recv_deadline(c, m, timeout_ms < 0 ? -1 : cl_now_ms() + timeout_ms);
}

/* See the file comment: returns on RecvPacket and on PeerGone. */
int derp_client_recv_packet(struct derp_client *c, struct derp_client_msg *m, int timeout_ms) {
  int64_t deadline = timeout_ms < 0 ? -1 : cl_now_ms() + timeout_ms;
  for (;;) {
    int r = recv_deadline(c, m, deadline);
    if (r <= 0) return r;
    if (m->type == DERP_FRAME_RECV_PACKET || m->type == DERP_FRAME_PEER_GONE) return 1;
    if (m->type == DERP_FRAME_PING && derp_client_pong(c, m->ping_data) < 0) return -1;
    /* Skipped frames do not extend the wait: past the deadline, with no
     * more bytes already read, it is a timeout. */
    if (deadline >= 0 && c->rpos == c->rend && cl_now_ms() >= deadline) return 0;
  }
}
