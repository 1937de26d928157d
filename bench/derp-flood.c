/* derp-flood.c: connection floods and handshake storms for bench/overload.
 *
 * Owns two loads that need many sockets and little CPU, driven by one epoll
 * loop over non-blocking sockets:
 *
 *   conns  open --count TCP connections as fast as the server takes them,
 *          send nothing, hold them --hold, close them; count how many the
 *          server closed meanwhile (past --max-conns) and how many connects
 *          failed.
 *   storm  --clients DERP clients: the server's key is learned once and every
 *          client's ClientInfo is sealed before anything is timed, so a
 *          handshake costs the generator a connect, two small writes and two
 *          reads. All connect and hold; when the server drops them (a
 *          restart: Restarting and EOF from derpd, EOF from derper) each
 *          reconnects at a random moment within --spread of the drop,
 *          retrying a refused connect every 100 ms, until every one has its
 *          ServerInfo again. Reports how long that took.
 *
 * One JSON line per phase on stdout; progress on stderr. A client sends
 * plain HTTP upgrades (not fast start), as a Go client over plain HTTP does.
 * Reusing each client's sealed ClientInfo for its reconnect is a replay the
 * server accepts (it keeps no nonce history), as it would a new one. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "bench_tool.h"
#include "derp/client.h"
#include "derp/frame.h"
#include "derp/handshake.h"

#define MAX_CLIENTS 1000000
#define IN_FLIGHT 1000        /* connects + handshakes at once while building up */
#define RETRY_NS 100000000    /* a refused connect is tried again after 100 ms */
#define RBUF 512

static const char usage[] =
    "usage: derp-flood conns --server HOST:PORT --count N [--hold D]\n"
    "       derp-flood storm --server HOST:PORT --clients N [--spread D] [--timeout D]\n"
    "\n"
    "conns: N TCP connections as fast as the server takes them, nothing sent, held for\n"
    "  --hold (default 10s), then closed. Reports connects made and failed, and how many\n"
    "  the server closed while held.\n"
    "storm: N DERP clients connect and hold (handshakes sealed in advance); when the server\n"
    "  drops them (restart it), each reconnects at a random moment within --spread (default\n"
    "  1s) of the drop, retrying refused connects every 100 ms, until all are served or\n"
    "  --timeout (default 60s) passes. Reports the time until every client was served.\n"
    "Output: one JSON line per phase on stdout. Exit 0 when all went as asked, 1 if not.\n";

enum st { S_IDLE, S_WAIT, S_CONNECTING, S_HTTP, S_INFO, S_UP, S_DONE };

struct conn {
  int fd;
  uint8_t st;
  bool dropped;        /* storm: the server closed it after it was served */
  uint16_t rn;
  int64_t at;          /* S_WAIT: when to connect; else when this attempt began */
  int64_t first_try;   /* storm: its first reconnect attempt */
  uint8_t *info;       /* sealed ClientInfo frame */
  uint16_t info_len;
  uint8_t rb[RBUF];
};

static struct {
  struct sockaddr_in addr;
  char host[64];
  int ep;
  struct conn *c;
  int n;
  int64_t hold_ns, spread_ns, timeout_ns;
  /* counts */
  int connecting, served, failed, closed_by_server, retries, dropped;
  char req[256];
  size_t req_len;
  derp_key server_key;
} g;

static atomic_bool g_stop;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void out_json(json_t *o) {
  json_dumpf(o, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  fflush(stdout);
  json_decref(o);
}

/* ---- sockets ---- */

static void conn_close(struct conn *c) {
  if (c->fd >= 0) {
    epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  c->fd = -1;
  c->rn = 0;
}

/* Non-blocking connect; 0 (in progress or done), -1 (errno). */
static int conn_start(struct conn *c, int64_t now) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&g.addr, sizeof g.addr) < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  c->fd = fd;
  c->st = S_CONNECTING;
  c->at = now;
  c->rn = 0;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev);
  g.connecting++;
  return 0;
}

static bool send_all(struct conn *c, const void *p, size_t n) {
  return send(c->fd, p, n, MSG_NOSIGNAL) == (ssize_t)n; /* tiny writes on a fresh socket */
}

/* ---- conns mode ---- */

/* A held connection is readable: the server closed it (or sent something). */
static void conns_readable(struct conn *c) {
  char b[256];
  ssize_t r = recv(c->fd, b, sizeof b, MSG_DONTWAIT);
  if (r == 0 || (r < 0 && errno != EAGAIN)) {
    g.closed_by_server++;
    conn_close(c);
    c->st = S_DONE;
  }
}

static int run_conns(int count) {
  g.n = count;
  int64_t t0 = now_ns();
  int next = 0, open_now = 0;
  struct epoll_event ev[256];
  /* Build up: at most IN_FLIGHT connects pending at once. */
  while (!atomic_load(&g_stop) && (next < count || g.connecting > 0) && now_ns() - t0 < g.timeout_ns) {
    while (next < count && g.connecting < IN_FLIGHT) {
      struct conn *c = &g.c[next++];
      if (conn_start(c, now_ns()) < 0) {
        g.failed++;
        c->st = S_DONE;
      }
    }
    int k = epoll_wait(g.ep, ev, 256, 100);
    for (int i = 0; i < k; i++) {
      struct conn *c = ev[i].data.ptr;
      if (c->st == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        g.connecting--;
        if (err) {
          g.failed++;
          conn_close(c);
          c->st = S_DONE;
          continue;
        }
        c->st = S_UP;
        open_now++;
        struct epoll_event e2 = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &e2);
      } else if (c->st == S_UP && (ev[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        conns_readable(c);
      }
    }
  }
  double open_s = (double)(now_ns() - t0) / 1e9;
  fprintf(stderr, "derp-flood: %d connected, %d failed, %d closed by the server, in %.2f s; holding\n",
          open_now, g.failed, g.closed_by_server, open_s);
  int64_t until = now_ns() + g.hold_ns;
  while (!atomic_load(&g_stop) && now_ns() < until) {
    int k = epoll_wait(g.ep, ev, 256, 100);
    for (int i = 0; i < k; i++) conns_readable(ev[i].data.ptr);
  }
  int held = 0;
  for (int i = 0; i < count; i++)
    if (g.c[i].fd >= 0) {
      held++;
      conn_close(&g.c[i]);
    }
  out_json(json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:f}", "kind", "conns", "count", count, "connected",
                     open_now, "connect_failed", g.failed, "closed_by_server", g.closed_by_server,
                     "held_to_the_end", held, "open_s", open_s));
  return 0;
}

/* ---- storm mode ---- */

/* Frames in c->rb from `off`: returns the type of the first whole frame that
 * is ServerKey or ServerInfo (its bytes consumed with everything before it),
 * 0 when more bytes are needed, -1 on nonsense. */
static int next_frame(struct conn *c, size_t off, uint8_t want) {
  for (;;) {
    if (c->rn < off + DERP_FRAME_HDR_LEN) return 0;
    uint8_t type = c->rb[off];
    uint32_t len = (uint32_t)c->rb[off + 1] << 24 | (uint32_t)c->rb[off + 2] << 16 |
                   (uint32_t)c->rb[off + 3] << 8 | c->rb[off + 4];
    if (len > RBUF - DERP_FRAME_HDR_LEN) return -1;
    if (c->rn < off + DERP_FRAME_HDR_LEN + len) return 0;
    size_t end = off + DERP_FRAME_HDR_LEN + len;
    memmove(c->rb, c->rb + end, c->rn - end);
    c->rn = (uint16_t)(c->rn - end);
    if (type == want) return type;
    off = 0;
  }
}

static void served(struct conn *c) {
  c->st = S_UP;
  g.served++;
}

/* Whatever the socket has; false if the connection is over (EOF or error). */
static bool read_some(struct conn *c) {
  for (;;) {
    if (c->rn == RBUF) return false; /* a frame we cannot hold: no DERP server sends it here */
    ssize_t r = recv(c->fd, c->rb + c->rn, RBUF - c->rn, MSG_DONTWAIT);
    if (r > 0) {
      c->rn = (uint16_t)(c->rn + r);
      continue;
    }
    return r < 0 && (errno == EAGAIN || errno == EINTR);
  }
}

static void attempt_failed(struct conn *c, int64_t now, bool retry) {
  conn_close(c);
  if (retry) {
    c->st = S_WAIT;
    c->at = now + RETRY_NS;
    g.retries++;
  } else {
    c->st = S_DONE;
    g.failed++;
  }
}

/* One event on a storm client. retry: reconnect after a failed attempt. */
static void storm_event(struct conn *c, uint32_t events, int64_t now, bool retry) {
  if (c->st == S_CONNECTING) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    g.connecting--;
    if (err || !send_all(c, g.req, g.req_len)) return attempt_failed(c, now, retry);
    c->st = S_HTTP;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
    return;
  }
  if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
  bool open = read_some(c);
  if (c->st == S_HTTP) {
    uint8_t *e = memmem(c->rb, c->rn, "\r\n\r\n", 4);
    if (e) {
      if (c->rn < 12 || memcmp(c->rb, "HTTP/1.1 101", 12) != 0) return attempt_failed(c, now, retry);
      int t = next_frame(c, (size_t)(e + 4 - c->rb), DERP_FRAME_SERVER_KEY);
      if (t < 0) return attempt_failed(c, now, retry);
      if (t == DERP_FRAME_SERVER_KEY) {
        if (!send_all(c, c->info, c->info_len)) return attempt_failed(c, now, retry);
        c->st = S_INFO;
      }
    }
  }
  if (c->st == S_INFO) {
    int t = next_frame(c, 0, DERP_FRAME_SERVER_INFO);
    if (t < 0) return attempt_failed(c, now, retry);
    if (t == DERP_FRAME_SERVER_INFO) served(c);
  }
  if (c->st == S_UP) c->rn = 0; /* KeepAlive, Restarting, ...: not needed */
  if (!open) {
    if (c->st == S_UP) { /* the server dropped a served client */
      conn_close(c);
      c->st = S_IDLE;
      c->dropped = true;
      g.served--;
      g.dropped++;
    } else {
      attempt_failed(c, now, retry);
    }
  }
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Learn the server's key with libderp's client, then seal every ClientInfo. */
static int storm_prepare(void) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = g.host, .port = ntohs(g.addr.sin_port), .priv = &priv};
  struct derp_client *cl = NULL;
  char err[256];
  if (derp_client_connect(&cl, &o, err, sizeof err) < 0) {
    fprintf(stderr, "derp-flood: cannot learn the server key: %s\n", err);
    return -1;
  }
  g.server_key = *derp_client_server_key(cl);
  derp_client_close(cl);
  struct derp_client_info ci = {.version = 2};
  uint8_t buf[DERP_FRAME_HDR_LEN + DERP_CLIENT_INFO_SEAL_MAX];
  for (int i = 0; i < g.n; i++) {
    derp_key_generate(&priv, &pub);
    size_t n = derp_client_info_seal(buf + DERP_FRAME_HDR_LEN, sizeof buf - DERP_FRAME_HDR_LEN, &priv,
                                     &g.server_key, &ci);
    if (!n) return -1;
    derp_frame_put_header(buf, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
    g.c[i].info = malloc(DERP_FRAME_HDR_LEN + n);
    if (!g.c[i].info) return -1;
    memcpy(g.c[i].info, buf, DERP_FRAME_HDR_LEN + n);
    g.c[i].info_len = (uint16_t)(DERP_FRAME_HDR_LEN + n);
  }
  g.req_len = (size_t)snprintf(g.req, sizeof g.req,
                               "GET /derp HTTP/1.1\r\nHost: %s:%u\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n",
                               g.host, ntohs(g.addr.sin_port));
  return 0;
}

static int run_storm(int n) {
  g.n = n;
  int64_t tp = now_ns();
  if (storm_prepare() < 0) return 1;
  fprintf(stderr, "derp-flood: %d ClientInfos sealed in %.2f s; connecting\n", n, (double)(now_ns() - tp) / 1e9);
  struct epoll_event ev[512];
  /* Phase 1: everyone connects (IN_FLIGHT at a time) and is served. */
  int64_t t0 = now_ns(), last_print = t0;
  int next = 0;
  while (!atomic_load(&g_stop) && g.served + g.failed < n && now_ns() - t0 < g.timeout_ns) {
    while (next < n && g.connecting + (next - g.served - g.failed) < IN_FLIGHT) {
      struct conn *c = &g.c[next++];
      if (conn_start(c, now_ns()) < 0) attempt_failed(c, now_ns(), false);
    }
    int k = epoll_wait(g.ep, ev, 512, 100);
    int64_t now = now_ns();
    for (int i = 0; i < k; i++) storm_event(ev[i].data.ptr, ev[i].events, now, false);
    if (now - last_print > 1000000000) {
      last_print = now;
      fprintf(stderr, "derp-flood: %d/%d served\n", g.served, n);
    }
  }
  double connect_s = (double)(now_ns() - t0) / 1e9;
  out_json(json_pack("{s:s, s:i, s:i, s:i, s:f}", "kind", "connected", "clients", n, "served", g.served,
                     "failed", g.failed, "connect_s", connect_s));
  if (g.served < n) return 1;
  fprintf(stderr, "derp-flood: all %d served in %.2f s; waiting for the server to drop them\n", n, connect_s);

  /* Phase 2: wait for the drop. */
  int64_t t_drop = 0;
  while (!atomic_load(&g_stop) && !t_drop) {
    int k = epoll_wait(g.ep, ev, 512, 100);
    int64_t now = now_ns();
    for (int i = 0; i < k; i++) storm_event(ev[i].data.ptr, ev[i].events, now, false);
    if (g.dropped) t_drop = now;
  }
  if (!t_drop) return 1;
  /* Each client's moment within the spread, counted from the first drop
   * (clients are alike, so client i takes the i-th earliest); one still
   * connected then is closed by us at its moment, as a client that heard
   * Restarting would. Refused attempts wait in a FIFO for their retry. */
  int64_t *at = malloc((size_t)n * sizeof *at);
  int *fifo = malloc((size_t)n * sizeof *fifo);
  int64_t *lat = malloc((size_t)n * sizeof *lat);
  if (!at || !fifo || !lat) return 1;
  for (int i = 0; i < n; i++) at[i] = t_drop + (int64_t)((double)random() / RAND_MAX * (double)g.spread_ns);
  qsort(at, (size_t)n, sizeof *at, cmp_i64);
  int due = 0, fhead = 0, fn = 0, nlat = 0, reserved = 0;
  int64_t first_try = 0, all_served = 0;
  g.failed = 0;
  while (!atomic_load(&g_stop) && reserved + g.failed < n && now_ns() - t_drop < g.timeout_ns) {
    int64_t now = now_ns();
    for (; due < n && at[due] <= now; due++) {
      struct conn *c = &g.c[due];
      if (c->fd >= 0) conn_close(c);
      if (c->st == S_UP) g.served--;
      c->first_try = now;
      if (!first_try) first_try = now;
      if (conn_start(c, now) < 0) {
        attempt_failed(c, now, true);
        fifo[(fhead + fn++) % n] = due;
      }
    }
    while (fn > 0 && g.c[fifo[fhead]].at <= now) { /* retries, in the order they failed */
      struct conn *c = &g.c[fifo[fhead]];
      int idx = fifo[fhead];
      fhead = (fhead + 1) % n;
      fn--;
      if (conn_start(c, now) < 0) {
        attempt_failed(c, now, true);
        fifo[(fhead + fn++) % n] = idx;
      }
    }
    int k = epoll_wait(g.ep, ev, 512, 1);
    now = now_ns();
    for (int i = 0; i < k; i++) {
      struct conn *c = ev[i].data.ptr;
      bool was_up = c->st == S_UP;
      storm_event(c, ev[i].events, now, true);
      if (c->st == S_WAIT) fifo[(fhead + fn++) % n] = (int)(c - g.c); /* failed: retry */
      if (!was_up && c->st == S_UP) {
        reserved++;
        lat[nlat++] = now - c->first_try;
        if (reserved == n) all_served = now; /* stays 0 (reported -1) unless every one was */
      }
    }
  }
  qsort(lat, (size_t)nlat, sizeof *lat, cmp_i64);
  /* Nearest rank: the smallest value with at least pct% of them at or below it. */
#define RANK(pct) ((double)lat[((int64_t)nlat * (pct) + 99) / 100 - 1] / 1e6)
  double p50 = nlat ? RANK(50) : 0, p99 = nlat ? RANK(99) : 0, mx = nlat ? RANK(100) : 0;
#undef RANK
  json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "kind", "storm", "clients", n,
                        "served", reserved, "not_served", n - reserved, "retries", g.retries,
                        "spread_s", (double)g.spread_ns / 1e9,
                        "drop_to_all_served_s", all_served ? (double)(all_served - t_drop) / 1e9 : -1.0,
                        "first_try_to_all_served_s", all_served ? (double)(all_served - first_try) / 1e9 : -1.0,
                        "client_p50_ms", p50, "client_p99_ms", p99, "client_max_ms", mx);
  /* CLOCK_MONOTONIC, as the orchestrator's: it knows when the new server listened. */
  json_object_set_new(o, "t_drop_ns", json_integer(t_drop));
  json_object_set_new(o, "t_all_served_ns", json_integer(all_served));
  out_json(o);
  fprintf(stderr, "derp-flood: storm: %d/%d served again, %.2f s from the drop (%d retries)\n", reserved, n,
          all_served ? (double)(all_served - t_drop) / 1e9 : -1.0, g.retries);
  free(at);
  free(fifo);
  free(lat);
  return reserved == n ? 0 : 1;
}

/* ---- flags ---- */

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *mode = argv[1];
  long count = 0;
  g.hold_ns = 10000000000;
  g.spread_ns = 1000000000;
  g.timeout_ns = 60000000000;
  bool have_server = false;
  for (int i = 2; i < argc; i += 2) { /* every flag takes a value */
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    while (*a == '-') a++;
    int bad = !v;
    if (!bad && !strcmp(a, "server")) {
      const char *colon = strrchr(v, ':');
      bad = !colon || (size_t)(colon - v) >= sizeof g.host;
      if (!bad) {
        memcpy(g.host, v, (size_t)(colon - v));
        g.host[colon - v] = 0;
        g.addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
        bad = inet_pton(AF_INET, g.host, &g.addr.sin_addr) != 1;
        have_server = !bad;
      }
    } else if (!bad && (!strcmp(a, "count") || !strcmp(a, "clients"))) {
      count = strtol(v, NULL, 10);
      bad = count < 1 || count > MAX_CLIENTS;
    } else if (!bad && !strcmp(a, "hold")) {
      bad = bench_parse_duration(v, &g.hold_ns);
    } else if (!bad && !strcmp(a, "spread")) {
      bad = bench_parse_duration(v, &g.spread_ns);
    } else if (!bad && !strcmp(a, "timeout")) {
      bad = bench_parse_duration(v, &g.timeout_ns);
    } else {
      bad = 1;
    }
    if (bad) {
      fprintf(stderr, "derp-flood: bad flag or value: %s %s (see --help)\n", argv[i], v ? v : "");
      return 2;
    }
  }
  bool storm = !strcmp(mode, "storm");
  if ((!storm && strcmp(mode, "conns")) || !have_server || !count) {
    fputs(usage, stderr);
    return 2;
  }
  long nofile = bench_tool_init(&g_stop);
  if (nofile < 0) return 2;
  if (count + 64 > nofile) {
    fprintf(stderr, "derp-flood: %ld sockets need more than the open-file limit %ld: split over processes\n",
            count, nofile);
    return 2;
  }
  srandom((unsigned)now_ns());
  g.ep = epoll_create1(EPOLL_CLOEXEC);
  g.c = calloc((size_t)count, sizeof *g.c);
  if (g.ep < 0 || !g.c) return 2;
  for (long i = 0; i < count; i++) g.c[i].fd = -1;
  return storm ? run_storm((int)count) : run_conns((int)count);
}
