/* derp-chaos.c: the misbehaving (and some well-behaved) clients of a soak run.
 *
 * Owns the load that derp-bench does not make: connection churn, idle
 * clients, duplicate keys, slow readers, packets to unknown keys and a
 * trickle of malformed input, each in one thread with blocking libderp
 * clients at a modest, fixed rate until --duration has passed. It counts
 * what happened and which of it harmed a client that behaved: a churn
 * handshake that failed, an idle or duplicate client the server dropped, a
 * slow reader the server did not cut, a malformed connection it kept open
 * or a well-formed one it closed. Those are failures (exit 1); the rest is
 * what the server is expected to absorb.
 *
 * Output: with --report-every, one JSON line {"kind":"interval",...} of
 * cumulative counters per interval on stdout, then {"kind":"final",...}.
 * Transport: plain DERP, --tls (libderp_tls, pinned or --insecure), and
 * WebSocket for a share of the clients (every third churn, idle and
 * duplicate connection) on either. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>

#include "bench_tool.h"
#include "derp/client.h"
#include "derp/client_tls.h"
#include "derp/frame.h"
#include "derp/hex.h"

#define OP_TIMEOUT_MS 10000 /* connect + handshake, as a client would wait */
#define REPLY_MS 5000       /* a Pong, or the close of a malformed connection */
#define SLOW_CUT_MS 30000   /* a receiver that never reads must be cut by then */
#define SLOW_RCVBUF 4096
#define MAX_IDLE 20000
#define MAX_SLOW 64
#define MAX_UNKNOWN 256

static const char usage[] =
    "usage: derp-chaos --server HOST:PORT --duration D [flags]\n"
    "\n"
    "Clients that churn, idle, share keys, read slowly, send to nobody and send\n"
    "malformed input, at modest fixed rates, for a soak run (bench/soak). Counts what\n"
    "the server did to each; exit 1 if it harmed a client that behaved.\n"
    "\n"
    "  --server HOST:PORT   the server (required)\n"
    "  --duration D         how long (required): 10s, 2m, ...\n"
    "  --tls                DERP over TLS; --sni NAME, --pin-sha256 HEX or --insecure\n"
    "  --churn R            connects per second: handshake, Ping/Pong, close (default 2);\n"
    "                       plain upgrade, fast start and WebSocket in turn\n"
    "  --idle N             clients connected at start and held, never sending; each must\n"
    "                       still answer a Ping at the end (default 50)\n"
    "  --dup-every D        every D a key connects twice at once; both must stay and answer\n"
    "                       Pings for D/2, then close (default 2s; 0 = off)\n"
    "  --slow-readers N     receivers that never read (4 KiB receive buffer), each fed\n"
    "                       --slow-pps packets of --slow-size bytes by a sender; the server\n"
    "                       must cut each within 30 s, then a new one comes (default 1,\n"
    "                       --slow-pps 200, --slow-size 8192: the server's socket takes a few\n"
    "                       MB before a write blocks). The packets look like disco, so the\n"
    "                       sender hears PeerGone(not here) once its receiver is gone\n"
    "  --garbage R          malformed inputs per second, kinds in turn: random bytes, a bad\n"
    "                       HTTP request, a frame longer than its type allows, a mesh frame\n"
    "                       from a non-mesh client, half a frame then EOF, a WebSocket text\n"
    "                       frame (each must be closed), an unknown frame type (must not be)\n"
    "                       (default 1)\n"
    "  --unknown-pps R      packets per second to random keys nobody holds (default 20),\n"
    "                       from --unknown-senders clients (default 1), R/N each\n"
    "  --report-every D     a JSON line of counters every D (default: only the final one)\n"
    "  --help\n"
    "\n"
    "Rates of 0 turn a kind off. Exit: 0 = nothing that behaved was harmed; 1 = something\n"
    "was (the final line says what first); 2 = usage.\n";

/* ---- configuration and counters ---- */

static struct {
  char host[256];
  uint16_t port;
  bool tls, insecure, have_pin;
  const char *sni;
  uint8_t pin[32];
  int64_t duration_ns, report_ns, dup_every_ns;
  double churn, garbage, unknown_pps, slow_pps, slow_size;
  int idle, slow, unknown_senders;
} cfg = {.churn = 2, .idle = 50, .dup_every_ns = 2000000000, .slow = 1, .slow_pps = 200, .slow_size = 8192,
         .garbage = 1, .unknown_pps = 20, .unknown_senders = 1};

/* One writer each (its role's thread), read by the main thread. */
static struct {
  _Atomic uint64_t churn_ok, churn_failed, idle_held, idle_lost, dup_rounds, dup_failed,
      slow_sent, slow_cut, slow_not_cut, slow_sender_failed, garbage_sent, garbage_bad,
      unknown_sent, unknown_failed;
} ctr;

static atomic_bool g_stop;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_first_failure[300];
static derp_key g_server_key;  /* learned at the first handshake, for fast start */
static atomic_bool g_have_server_key;

static void failure(_Atomic uint64_t *c, const char *fmt, ...) {
  atomic_fetch_add(c, 1);
  pthread_mutex_lock(&g_mu);
  if (!g_first_failure[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_first_failure, sizeof g_first_failure, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&g_mu);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleep until t (or stop); false once stopping. */
static bool sleep_until(int64_t t) {
  for (;;) {
    if (atomic_load(&g_stop)) return false;
    int64_t d = t - now_ns();
    if (d <= 0) return true;
    if (d > 100000000) d = 100000000;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = d};
    nanosleep(&ts, NULL);
  }
}

/* ---- connections ---- */

enum cmode { CM_UPGRADE, CM_FAST, CM_WS };
static const char *const cmode_name[] = {"upgrade", "fast start", "websocket"};

static struct derp_client *dial(const derp_privkey *priv, enum cmode m, char *err, size_t errlen) {
  bool fast = m == CM_FAST && (cfg.tls || atomic_load(&g_have_server_key));
  struct derp_client_opts o = {.host = cfg.host, .port = cfg.port, .priv = priv,
                               .fast_start = fast, .websocket = m == CM_WS,
                               .server_key = fast && !cfg.tls ? &g_server_key : NULL,
                               .timeout_ms = OP_TIMEOUT_MS};
  struct derp_client *c = NULL;
  int rc;
  if (cfg.tls) {
    struct derp_tls_opts t = {.sni = cfg.sni, .insecure_skip_verify = cfg.insecure,
                              .pin_sha256 = cfg.have_pin ? cfg.pin : NULL,
                              .use_meta_cert = fast};
    rc = derp_client_connect_tls(&c, &o, &t, NULL, err, errlen);
  } else {
    rc = derp_client_connect(&c, &o, err, errlen);
  }
  if (rc < 0) return NULL;
  if (!atomic_load(&g_have_server_key)) {
    pthread_mutex_lock(&g_mu);
    g_server_key = *derp_client_server_key(c);
    atomic_store(&g_have_server_key, true);
    pthread_mutex_unlock(&g_mu);
  }
  return c;
}

static struct derp_client *dial_new(enum cmode m, char *err, size_t errlen) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  return dial(&priv, m, err, errlen);
}

/* Ping and wait for its Pong, answering and skipping anything else.
 * 0 = answered; -1 = closed or no answer in time (why says which). */
static int ping_ok(struct derp_client *c, const char **why) {
  uint8_t data[8];
  for (int i = 0; i < 8; i++) data[i] = (uint8_t)random();
  if (derp_client_ping(c, data) < 0) return *why = "ping write failed", -1;
  int64_t end = now_ns() + (int64_t)REPLY_MS * 1000000;
  for (;;) {
    int left = (int)((end - now_ns()) / 1000000);
    if (left <= 0) return *why = "no Pong in 5 s", -1;
    struct derp_client_msg m;
    int r = derp_client_recv(c, &m, left);
    if (r < 0) return *why = "closed by the server", -1;
    if (r == 0) continue;
    if (m.type == DERP_FRAME_PING) derp_client_pong(c, m.ping_data);
    if (m.type == DERP_FRAME_PONG && !memcmp(m.ping_data, data, 8)) return 0;
  }
}

/* Whether the server closes c within REPLY_MS (frames before that are skipped). */
static bool closed_soon(struct derp_client *c) {
  int64_t end = now_ns() + (int64_t)REPLY_MS * 1000000;
  for (;;) {
    int left = (int)((end - now_ns()) / 1000000);
    if (left <= 0) return false;
    struct derp_client_msg m;
    if (derp_client_recv(c, &m, left) < 0) return true;
  }
}

/* ---- churn ---- */

static void *churn_main(void *arg) {
  (void)arg;
  int64_t t = now_ns(), period = (int64_t)(1e9 / cfg.churn);
  for (unsigned i = 0; sleep_until(t); i++, t += period) {
    enum cmode m = (enum cmode)(i % 3);
    char err[256] = "";
    const char *why = NULL;
    struct derp_client *c = dial_new(m, err, sizeof err);
    if (!c) {
      failure(&ctr.churn_failed, "churn (%s): connect: %s", cmode_name[m], err);
      continue;
    }
    if (ping_ok(c, &why) < 0) failure(&ctr.churn_failed, "churn (%s): %s", cmode_name[m], why);
    else atomic_fetch_add(&ctr.churn_ok, 1);
    derp_client_close(c);
  }
  return NULL;
}

/* ---- idle ---- */

static void *idle_main(void *arg) {
  (void)arg;
  int n = cfg.idle;
  struct derp_client **cl = calloc((size_t)n, sizeof *cl);
  struct pollfd *pf = calloc((size_t)n, sizeof *pf);
  if (!cl || !pf) abort();
  for (int i = 0; i < n && !atomic_load(&g_stop); i++) {
    char err[256] = "";
    enum cmode m = (enum cmode)(i % 3);
    cl[i] = dial_new(m, err, sizeof err);
    if (!cl[i]) failure(&ctr.idle_lost, "idle client %d (%s): connect: %s", i, cmode_name[m], err);
    else atomic_fetch_add(&ctr.idle_held, 1);
  }
  /* Hold: read whatever comes (KeepAlives), notice any close. */
  while (!atomic_load(&g_stop)) {
    for (int i = 0; i < n; i++) pf[i] = (struct pollfd){.fd = cl[i] ? derp_client_fd(cl[i]) : -1, .events = POLLIN};
    if (poll(pf, (nfds_t)n, 200) <= 0) continue;
    for (int i = 0; i < n; i++) {
      if (!cl[i] || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      struct derp_client_msg m;
      int r;
      while ((r = derp_client_recv(cl[i], &m, 0)) > 0)
        if (m.type == DERP_FRAME_PING) derp_client_pong(cl[i], m.ping_data);
      if (r < 0) {
        failure(&ctr.idle_lost, "idle client %d (%s): closed by the server", i, cmode_name[i % 3]);
        atomic_fetch_sub(&ctr.idle_held, 1);
        derp_client_close(cl[i]);
        cl[i] = NULL;
      }
    }
  }
  /* The end: every one still served. */
  for (int i = 0; i < n; i++) {
    const char *why = NULL;
    if (!cl[i]) continue;
    if (ping_ok(cl[i], &why) < 0) {
      failure(&ctr.idle_lost, "idle client %d (%s) at the end: %s", i, cmode_name[i % 3], why);
      atomic_fetch_sub(&ctr.idle_held, 1);
    }
    derp_client_close(cl[i]);
  }
  free(cl);
  free(pf);
  return NULL;
}

/* ---- duplicate keys ---- */

static void *dup_main(void *arg) {
  (void)arg;
  for (int64_t t = now_ns(); sleep_until(t); t += cfg.dup_every_ns) {
    derp_privkey priv;
    derp_key pub;
    derp_key_generate(&priv, &pub);
    char err[256] = "";
    const char *why = NULL;
    struct derp_client *c[2] = {dial(&priv, CM_UPGRADE, err, sizeof err), NULL};
    if (c[0]) c[1] = dial(&priv, atomic_load(&ctr.dup_rounds) % 2 ? CM_WS : CM_FAST, err, sizeof err);
    if (!c[0] || !c[1]) failure(&ctr.dup_failed, "duplicate key: connect: %s", err);
    /* Both stay registered (the newest is active): both answer, now and later. */
    for (int round = 0; round < 2 && c[0] && c[1]; round++) {
      if (round == 1 && !sleep_until(now_ns() + cfg.dup_every_ns / 2)) break;
      for (int k = 0; k < 2; k++)
        if (ping_ok(c[k], &why) < 0) {
          failure(&ctr.dup_failed, "duplicate key, connection %d: %s", k, why);
          round = 2;
          break;
        }
    }
    derp_client_close(c[0]);
    derp_client_close(c[1]);
    atomic_fetch_add(&ctr.dup_rounds, 1);
  }
  return NULL;
}

/* ---- slow readers ---- */

struct slow_pair {
  struct derp_client *snd, *rcv;
  int64_t since; /* when rcv connected */
};

static int slow_new_receiver(struct slow_pair *p, int i) {
  char err[256] = "";
  p->rcv = dial_new(CM_UPGRADE, err, sizeof err);
  if (!p->rcv) {
    failure(&ctr.slow_sender_failed, "slow reader %d: connect: %s", i, err);
    return -1;
  }
  int small = SLOW_RCVBUF;
  setsockopt(derp_client_fd(p->rcv), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  p->since = now_ns();
  return 0;
}

/* The sender's frames: PeerGone for its receiver means the server cut it
 * (not here: a disco packet to a key nobody holds; derper's rule). */
static bool slow_cut_seen(struct slow_pair *p, int i) {
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv(p->snd, &m, 0)) > 0) {
    if (m.type == DERP_FRAME_PING) derp_client_pong(p->snd, m.ping_data);
    if (m.type == DERP_FRAME_PEER_GONE && p->rcv &&
        derp_key_equal(&m.src, derp_client_public_key(p->rcv)))
      return true;
  }
  if (r < 0) {
    failure(&ctr.slow_sender_failed, "slow reader %d: its sender was closed by the server", i);
    derp_client_close(p->snd);
    p->snd = NULL;
  }
  return false;
}

static void *slow_main(void *arg) {
  (void)arg;
  struct slow_pair pr[MAX_SLOW] = {{0}};
  int n = cfg.slow;
  for (int i = 0; i < n; i++) {
    char err[256] = "";
    pr[i].snd = dial_new(CM_UPGRADE, err, sizeof err);
    if (!pr[i].snd) failure(&ctr.slow_sender_failed, "slow reader %d: sender: connect: %s", i, err);
    else if (slow_new_receiver(&pr[i], i) == 0) {
      struct timeval tv = {.tv_sec = 5}; /* the server never stops reading a sender */
      setsockopt(derp_client_fd(pr[i].snd), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
  }
  static uint8_t pkt[DERP_MAX_PACKET];
  size_t plen = (size_t)cfg.slow_size;
  memset(pkt, 0x5a, plen);
  if (plen >= DERP_DISCO_MIN_LEN) memcpy(pkt, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN);
  int64_t tick = 10000000, t = now_ns();
  double owed = 0;
  while (sleep_until(t += tick)) {
    owed += cfg.slow_pps * (double)tick / 1e9;
    int burst = (int)owed;
    owed -= burst;
    for (int i = 0; i < n; i++) {
      struct slow_pair *p = &pr[i];
      if (!p->snd || !p->rcv) continue;
      for (int k = 0; k < burst; k++) {
        if (derp_client_send(p->snd, derp_client_public_key(p->rcv), pkt, plen) < 0) {
          failure(&ctr.slow_sender_failed, "slow reader %d: sender's write failed: %s", i,
                  strerror(errno));
          derp_client_close(p->snd);
          p->snd = NULL;
          break;
        }
        atomic_fetch_add(&ctr.slow_sent, 1);
      }
      if (!p->snd) continue;
      bool cut = slow_cut_seen(p, i);
      bool late = now_ns() - p->since > (int64_t)SLOW_CUT_MS * 1000000;
      if (!cut && !late) continue;
      if (cut) atomic_fetch_add(&ctr.slow_cut, 1);
      else failure(&ctr.slow_not_cut, "slow reader %d: not cut by the server in %d s", i, SLOW_CUT_MS / 1000);
      derp_client_close(p->rcv);
      p->rcv = NULL;
      slow_new_receiver(p, i);
    }
  }
  for (int i = 0; i < n; i++) {
    derp_client_close(pr[i].snd);
    derp_client_close(pr[i].rcv);
  }
  return NULL;
}

/* ---- malformed input ---- */

static int raw_tcp(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cfg.port)};
  if (fd < 0 || inet_pton(AF_INET, cfg.host, &sa.sin_addr) != 1 ||
      connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  struct timeval tv = {.tv_sec = REPLY_MS / 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

/* Write bytes on a fresh TCP connection; true if the server then closes it
 * (EOF or reset) within REPLY_MS, whatever it answers first. */
static bool raw_closed_after(const void *b, size_t n) {
  int fd = raw_tcp();
  if (fd < 0) return false;
  (void)!send(fd, b, n, MSG_NOSIGNAL);
  char buf[4096];
  int64_t end = now_ns() + (int64_t)REPLY_MS * 1000000;
  bool closed = false;
  while (!closed && now_ns() < end) {
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) closed = true;
    else if (r < 0 && errno == EAGAIN) break;
  }
  close(fd);
  return closed;
}

enum { G_RANDOM, G_HTTP, G_LENGTH, G_MESH, G_HALF, G_WS_TEXT, G_UNKNOWN_TYPE, G_KINDS };
static const char *const gname[] = {"random bytes", "bad HTTP request", "frame over its length",
                                    "mesh frame from a non-mesh client", "half a frame then EOF",
                                    "WebSocket text frame", "unknown frame type"};

/* One malformed input of kind k; true if the server did what it must. */
static bool garbage_one(int k, char *err, size_t errlen) {
  if (k == G_RANDOM || k == G_HTTP) {
    uint8_t b[512];
    size_t n;
    if (k == G_RANDOM) {
      n = 64 + (size_t)(random() % 448);
      for (size_t i = 0; i < n; i++) b[i] = (uint8_t)random();
      /* Not a TLS record header (second byte 3: major version 3): with a
       * handshake or alert type that is a slow handshake, not garbage, and a
       * TLS node rightly waits for the record it declares until its
       * handshake timeout (10 s); with any other type derpd closes at once. */
      if (b[1] == 3) b[1] = 4;
    } else {
      static const char *const reqs[] = {"BREW /derp HTCPCP/1.0\r\n\r\n",
                                         "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nBad header\r\n\r\n",
                                         "GET / HTTP/7.0\r\n\r\n", "GET /\x01\x02 HTTP/1.1\r\n\r\n"};
      const char *r = reqs[random() % 4];
      n = strlen(r);
      memcpy(b, r, n);
    }
    if (raw_closed_after(b, n)) return true;
    snprintf(err, errlen, "not closed by the server in %d s", REPLY_MS / 1000);
    return false;
  }
  struct derp_client *c = dial_new(k == G_WS_TEXT ? CM_WS : CM_UPGRADE, err, errlen);
  if (!c) return false;
  bool ok = false;
  uint8_t hdr[DERP_FRAME_HDR_LEN + 16] = {0};
  const char *why = NULL;
  switch (k) {
  case G_LENGTH: /* SendPacket declaring 1 MiB: refused at the header */
    derp_frame_put_header(hdr, DERP_FRAME_SEND_PACKET, 1u << 20);
    ok = derp_client_write_bytes(c, hdr, DERP_FRAME_HDR_LEN) == 0 && closed_soon(c);
    break;
  case G_MESH:
    ok = derp_client_watch_conns(c) == 0 && closed_soon(c);
    break;
  case G_HALF: /* then EOF: the server must free the frame's assembly buffer */
    derp_frame_put_header(hdr, DERP_FRAME_SEND_PACKET, 1000);
    ok = derp_client_write_bytes(c, hdr, sizeof hdr) == 0;
    break;
  case G_WS_TEXT: { /* masked text frame "derp": DERP is binary, close 1003 */
    uint8_t f[10] = {0x81, 0x84, 1, 2, 3, 4, 'd' ^ 1, 'e' ^ 2, 'r' ^ 3, 'p' ^ 4};
    ok = derp_client_write_bytes(c, f, sizeof f) == 0 && closed_soon(c);
    break;
  }
  case G_UNKNOWN_TYPE: /* skipped, not closed: the client still answers */
    derp_frame_put_header(hdr, 0x7e, 16);
    ok = derp_client_write_bytes(c, hdr, sizeof hdr) == 0 && ping_ok(c, &why) == 0;
    break;
  }
  derp_client_close(c);
  if (!ok && !err[0]) snprintf(err, errlen, "%s", why ? why : "not closed by the server");
  return ok;
}

static void *garbage_main(void *arg) {
  (void)arg;
  int64_t t = now_ns(), period = (int64_t)(1e9 / cfg.garbage);
  for (unsigned i = 0; sleep_until(t); i++, t += period) {
    int k = (int)(i % G_KINDS);
    char err[256] = "";
    if (!garbage_one(k, err, sizeof err)) failure(&ctr.garbage_bad, "malformed input (%s): %s", gname[k], err);
    atomic_fetch_add(&ctr.garbage_sent, 1);
  }
  return NULL;
}

/* ---- unknown destinations ---- */

static void *unknown_main(void *arg) {
  (void)arg;
  double pps = cfg.unknown_pps / cfg.unknown_senders;
  char err[256] = "";
  struct derp_client *c = dial_new(CM_UPGRADE, err, sizeof err);
  if (!c) {
    failure(&ctr.unknown_failed, "unknown-key sender: connect: %s", err);
    return NULL;
  }
  uint8_t pkt[100];
  memset(pkt, 0x33, sizeof pkt);
  int64_t tick = 20000000, t = now_ns();
  double owed = 0;
  while (c && sleep_until(t += tick)) {
    owed += pps * (double)tick / 1e9;
    for (; owed >= 1; owed--) {
      derp_key k;
      randombytes_buf(k.b, sizeof k.b);
      if (derp_client_send(c, &k, pkt, sizeof pkt) < 0) {
        failure(&ctr.unknown_failed, "unknown-key sender: write failed: %s", strerror(errno));
        derp_client_close(c);
        c = NULL;
        break;
      }
      atomic_fetch_add(&ctr.unknown_sent, 1);
    }
    struct derp_client_msg m;
    int r;
    while (c && (r = derp_client_recv(c, &m, 0)) != 0) {
      if (r < 0) {
        failure(&ctr.unknown_failed, "unknown-key sender: closed by the server");
        derp_client_close(c);
        c = NULL;
      } else if (m.type == DERP_FRAME_PING) {
        derp_client_pong(c, m.ping_data);
      }
    }
  }
  derp_client_close(c);
  return NULL;
}

/* ---- report ---- */

#define CTR(name) #name, (json_int_t)atomic_load(&ctr.name)

static uint64_t failures(void) {
  return atomic_load(&ctr.churn_failed) + atomic_load(&ctr.idle_lost) +
         atomic_load(&ctr.dup_failed) + atomic_load(&ctr.slow_not_cut) +
         atomic_load(&ctr.slow_sender_failed) + atomic_load(&ctr.garbage_bad) +
         atomic_load(&ctr.unknown_failed);
}

static void report(const char *kind, double t_s) {
  json_t *o = json_pack("{s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                        "s:I, s:I, s:I}",
                        "kind", kind, "t_s", t_s, CTR(churn_ok), CTR(churn_failed), CTR(idle_held),
                        CTR(idle_lost), CTR(dup_rounds), CTR(dup_failed), CTR(slow_sent),
                        CTR(slow_cut), CTR(slow_not_cut), CTR(slow_sender_failed),
                        CTR(garbage_sent), CTR(garbage_bad), CTR(unknown_sent),
                        CTR(unknown_failed), "failures", (json_int_t)failures());
  if (!o) {
    fprintf(stderr, "derp-chaos: building the JSON report failed\n");
    return;
  }
  pthread_mutex_lock(&g_mu);
  json_object_set_new(o, "first_failure", g_first_failure[0] ? json_string(g_first_failure) : json_null());
  pthread_mutex_unlock(&g_mu);
  json_dumpf(o, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  fflush(stdout);
  json_decref(o);
}

/* ---- flags ---- */

static int parse_num(const char *s, double lo, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_server(const char *s) {
  const char *colon = strrchr(s, ':');
  double port;
  if (!colon || colon == s || (size_t)(colon - s) >= sizeof cfg.host ||
      parse_num(colon + 1, 1, 65535, &port) < 0)
    return -1;
  memcpy(cfg.host, s, (size_t)(colon - s));
  cfg.host[colon - s] = 0;
  cfg.port = (uint16_t)port;
  return 0;
}

static int parse_flag(const char *name, const char *v) {
  double d;
  if (!strcmp(name, "server")) return parse_server(v);
  if (!strcmp(name, "duration")) return bench_parse_duration(v, &cfg.duration_ns);
  if (!strcmp(name, "report-every")) return bench_parse_duration(v, &cfg.report_ns);
  if (!strcmp(name, "dup-every")) return bench_parse_duration(v, &cfg.dup_every_ns);
  if (!strcmp(name, "sni")) return cfg.sni = v, 0;
  if (!strcmp(name, "pin-sha256")) {
    if (!strncmp(v, "sha256-raw:", 11)) v += 11;
    return cfg.have_pin = true, strlen(v) == 64 ? derp_hex_decode(v, 32, cfg.pin) : -1;
  }
  if (!strcmp(name, "churn")) return parse_num(v, 0, 1000, &cfg.churn);
  if (!strcmp(name, "garbage")) return parse_num(v, 0, 1000, &cfg.garbage);
  if (!strcmp(name, "unknown-pps")) return parse_num(v, 0, 1e6, &cfg.unknown_pps);
  if (!strcmp(name, "slow-pps")) return parse_num(v, 1, 1e5, &cfg.slow_pps);
  if (!strcmp(name, "slow-size")) return parse_num(v, DERP_DISCO_MIN_LEN, DERP_MAX_PACKET, &cfg.slow_size);
  if (!strcmp(name, "idle")) return parse_num(v, 0, MAX_IDLE, &d) ? -1 : (cfg.idle = (int)d, 0);
  if (!strcmp(name, "slow-readers")) return parse_num(v, 0, MAX_SLOW, &d) ? -1 : (cfg.slow = (int)d, 0);
  if (!strcmp(name, "unknown-senders"))
    return parse_num(v, 1, MAX_UNKNOWN, &d) ? -1 : (cfg.unknown_senders = (int)d, 0);
  return 1;
}

static int parse_args(int argc, char **argv) {
  bool have_server = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      fprintf(stderr, "derp-chaos: unexpected argument %s (see --help)\n", a);
      return -1;
    }
    a += a[1] == '-' ? 2 : 1;
    if (!strcmp(a, "help") || !strcmp(a, "h")) {
      fputs(usage, stdout);
      exit(0);
    }
    if (!strcmp(a, "tls")) { cfg.tls = true; continue; }
    if (!strcmp(a, "insecure")) { cfg.insecure = true; continue; }
    char name[64];
    const char *eq = strchr(a, '=');
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    if (nl >= sizeof name) nl = sizeof name - 1;
    memcpy(name, a, nl);
    name[nl] = 0;
    const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
    int r = v ? parse_flag(name, v) : 1;
    if (r == 1) {
      fprintf(stderr, "derp-chaos: unknown flag or missing value: --%s (see --help)\n", name);
      return -1;
    }
    if (r < 0) {
      fprintf(stderr, "derp-chaos: bad value for --%s: %s\n", name, v);
      return -1;
    }
    if (!strcmp(name, "server")) have_server = true;
  }
  if (!have_server || cfg.duration_ns <= 0) {
    fprintf(stderr, "derp-chaos: --server and --duration are required (see --help)\n");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (parse_args(argc, argv) < 0) return 2;
  if (bench_tool_init(&g_stop) < 0) return 2;
  srandom((unsigned)now_ns());
  struct {
    void *(*fn)(void *);
    bool on;
  } roles[] = {{churn_main, cfg.churn > 0}, {idle_main, cfg.idle > 0},
               {dup_main, cfg.dup_every_ns > 0}, {slow_main, cfg.slow > 0},
               {garbage_main, cfg.garbage > 0}, {unknown_main, cfg.unknown_pps > 0}};
  /* One thread per role; the unknown-key role has one per sender. */
  pthread_t th[5 + MAX_UNKNOWN];
  int nth = 0;
  int64_t t0 = now_ns(), end = t0 + cfg.duration_ns;
  for (int i = 0; i < 6; i++)
    for (int k = 0; roles[i].on && k < (roles[i].fn == unknown_main ? cfg.unknown_senders : 1); k++)
      if (pthread_create(&th[nth], NULL, roles[i].fn, NULL) == 0) nth++;
  int64_t next = cfg.report_ns ? t0 + cfg.report_ns : INT64_MAX;
  while (!atomic_load(&g_stop) && now_ns() < end) {
    int64_t wake = next < end ? next : end;
    struct timespec ts = {.tv_nsec = 50000000};
    if (wake - now_ns() < ts.tv_nsec) ts.tv_nsec = wake - now_ns() > 0 ? wake - now_ns() : 0;
    nanosleep(&ts, NULL);
    if (now_ns() >= next) {
      report("interval", (double)(now_ns() - t0) / 1e9);
      next += cfg.report_ns;
    }
  }
  atomic_store(&g_stop, true);
  for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
  report("final", (double)(now_ns() - t0) / 1e9);
  return failures() ? 1 : 0;
}
