/* derp-bench.c: a load generator for any DERP server (derpd or derper).
 *
 * Owns the command line (Go-like or GNU-like long flags: -flag value,
 * --flag value, --flag=value), its validation, the file descriptor budget,
 * signal handling, and the dispatch to the three modes. The modes live in
 * bench_relay.c and bench_relay_run.c (relay), bench_setup.c (idle, churn); reports in
 * bench_report.c. It speaks plain DERP over the HTTP upgrade, so it can drive
 * derpd and Tailscale's derper -dev identically, or the same over TLS
 * (--tls; BoringSSL through libderp_tls). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_tool.h"
#include "derp/hex.h"

atomic_bool bench_interrupted;

static const char usage[] =
    "usage: derp-bench --server HOST:PORT [flags]\n"
    "       derp-bench --servers HOST:PORT,HOST:PORT,... [flags]\n"
    "\n"
    "Load generator for DERP servers (HTTP upgrade, plain or TLS; derpd or derper).\n"
    "Flags take --flag value, --flag=value or Go's -flag value. Durations: 10s, 500ms,\n"
    "2m, 100us; a bare number is seconds.\n"
    "\n"
    "  --server HOST:PORT    server to load (this or --servers is required); [v6addr]:port\n"
    "                        for IPv6\n"
    "  --servers LIST        several servers, comma-separated (e.g. the nodes of a region;\n"
    "                        up to 64): relay with pairs puts pair k's sender on server\n"
    "                        k % n and its receiver on server (k+1) % n, so every packet\n"
    "                        crosses servers; other topologies and modes spread clients\n"
    "                        round robin (client i on server i % n). Before warm-up, relay\n"
    "                        mode waits (<= 10s) until a probe from every server reaches\n"
    "                        every client on the others (route sync). One entry is --server\n"
    "  --mode M              relay (default) | idle | churn\n"
    "  --threads T           worker threads (default 2): relay event loops, churn loops\n"
    "  --clients N           clients (default 2 in relay, 100 in idle)\n"
    "  --connect-parallel P  threads running handshakes at set-up (default 8)\n"
    "  --server-pid PID      sample the server's CPU (utime+stime), RSS and context switches\n"
    "                        (voluntary + nonvoluntary, summed over the threads in\n"
    "                        /proc/PID/task at each sample) from /proc; with --servers a\n"
    "                        comma list, one pid per server, in the same order: CPU, RSS and\n"
    "                        context switches are the sums over them\n"
    "  --json                print the final report as one JSON object on stdout\n"
    "                        (the text report then goes to stderr)\n"
    "  --quiet               no progress lines\n"
    "  --tls                 DERP over TLS (every mode); the server's TLS port\n"
    "  --sni NAME            TLS server name (default: the host if it is a name, else none)\n"
    "  --insecure            TLS: do not verify the server's certificate chain (verified\n"
    "                        by default against the system roots, or $SSL_CERT_FILE and\n"
    "                        the directories of $SSL_CERT_DIR, as Go and derpd's links)\n"
    "  --pin-sha256 HEX      TLS: accept only a leaf certificate with this SHA-256 (64 hex,\n"
    "                        \"sha256-raw:\" prefix allowed); replaces chain verification\n"
    "  --tls-version V       TLS: 1.2 or 1.3 only (default: either, 1.3 preferred)\n"
    "  --websocket           DERP inside WebSocket binary messages (GET /derp with Upgrade:\n"
    "                        websocket, subprotocol derp), as browsers speak it; with --tls\n"
    "                        that is wss. Every mode. Each frame the client sends is one\n"
    "                        masked binary message (mask key 0: the server unmasks it all the\n"
    "                        same, and the generator spends no CPU on masking)\n"
    "  --help                this text\n"
    "\n"
    "relay mode: clients send data packets through the server to each other.\n"
    "  --topology T          pairs (default: client 2i sends to 2i+1) | fanin (all send\n"
    "                        to client 0) | random (each packet to a random other client)\n"
    "  --size BYTES          payload of a data packet (default 1200, 24..65536); it carries\n"
    "                        type, sender index, sequence number and send time\n"
    "  --duration D          measured time (default 10s)\n"
    "  --warmup D            traffic before measuring, not counted (default 2s)\n"
    "  --window W            closed loop (default): each sender keeps at most W packets\n"
    "                        unacknowledged (default 32, max 65535); every receiver answers\n"
    "                        each data packet with an ack packet through the server\n"
    "  --ack-size BYTES      payload of an ack packet (default 24)\n"
    "  --ack-timeout D       closed loop: a packet unacked this long frees its window slot\n"
    "                        and counts as an ack timeout (default 1s)\n"
    "  --pps R               open loop instead: R data packets/s in total, paced evenly over\n"
    "                        the senders; no acks; loss = sent - received\n"
    "  --pace-quantum D      open loop: shortest sleep between pacing turns (default 50us);\n"
    "                        packets due meanwhile go out together\n"
    "  --max-burst D         open loop: a sender thread that fell behind its schedule (did not\n"
    "                        run) catches up at most D of it at once and counts the rest as not\n"
    "                        offered (default: up to 4096 packets)\n"
    "  --drain D             after measuring, wait up to D for packets in flight (default 2s)\n"
    "  --report-every D      also report every D of warm-up and measurement (soak runs):\n"
    "                        with --json one JSON line {\"kind\":\"interval\",...} on stdout per\n"
    "                        interval before the final report (its latency: every data packet\n"
    "                        received in that interval; counters: cumulative over the measured\n"
    "                        window; generator_stall_ms: the longest a worker thread did not\n"
    "                        run when it should have, which its latency then includes),\n"
    "                        else a text line on stderr\n"
    "  --seed N              random topology's seed (default: from the clock)\n"
    "  Reports delivered pps, payload Gbit/s, loss, one-way latency p50/p90/p99/p99.9\n"
    "  (sender and receiver share CLOCK_MONOTONIC), and with --server-pid the server's\n"
    "  CPU seconds per million delivered packets, its RSS, and its context switches over\n"
    "  the measured window, in all and per delivered packet (JSON: server_ctx_switches,\n"
    "  server_ctx_per_pkt; a thread that exits within the window takes its switches out\n"
    "  of the sum). Only packets sent during the measured window count.\n"
    "\n"
    "idle mode: open --clients handshaken connections, hold them for --hold (default 10s),\n"
    "  report server RSS before and after (needs --server-pid) and bytes per connection.\n"
    "\n"
    "churn mode: --threads loops of connect + handshake + close for --duration; reports\n"
    "  handshakes/s and handshake latency (and server CPU per handshake with --server-pid).\n"
    "\n"
    "Exit status: 0 = ran to the end; 1 = the server closed a connection, a connect\n"
    "failed, or interrupted; 2 = bad usage or local failure.\n";

/* ---- value parsers ---- */

static int parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* HOST:PORT or [HOST]:PORT, of len bytes at s. */
static int parse_server(const char *s, size_t len, struct bench_server *out) {
  const char *colon = memrchr(s, ':', len);
  if (!colon || colon == s) return -1;
  const char *h = s;
  size_t hl = (size_t)(colon - s);
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  char port[8];
  size_t pl = (size_t)(s + len - (colon + 1));
  long l;
  if (hl == 0 || hl >= sizeof out->host || pl == 0 || pl >= sizeof port) return -1;
  memcpy(port, colon + 1, pl);
  port[pl] = 0;
  if (parse_long(port, 1, 65535, &l) < 0) return -1;
  memcpy(out->host, h, hl);
  out->host[hl] = 0;
  out->port = (uint16_t)l;
  return 0;
}

/* Calls one(item, len, i) for each item of a comma-separated list; the item
 * count, or -1 for an empty item, more than max items, or one() failing. */
static int each_item(const char *v, int max, void *ctx,
                     int (*one)(void *ctx, const char *item, size_t len, int i)) {
  int n = 0;
  for (const char *p = v;; n++) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (len == 0 || n >= max || one(ctx, p, len, n) < 0) return -1;
    if (!comma) return n + 1;
    p = comma + 1;
  }
}

static int one_server(void *ctx, const char *item, size_t len, int i) {
  return parse_server(item, len, &((struct bench_cfg *)ctx)->servers[i]);
}

static int one_pid(void *ctx, const char *item, size_t len, int i) {
  char buf[16];
  long l;
  if (len >= sizeof buf) return -1;
  memcpy(buf, item, len);
  buf[len] = 0;
  if (parse_long(buf, 1, 1 << 30, &l) < 0) return -1;
  ((struct bench_cfg *)ctx)->server_pids[i] = (pid_t)l;
  return 0;
}

static int parse_servers(const char *v, struct bench_cfg *c) {
  int n = each_item(v, BENCH_MAX_SERVERS, c, one_server);
  return n < 0 ? -1 : (c->nservers = n, 0);
}

/* ---- flags ---- */

struct flag_ctx {
  struct bench_cfg *c;
  int have_server; /* how many of --server and --servers were given */
  bool have_clients, tls_opt; /* tls_opt: a TLS-only flag was given */
};

/* 64 hex digits, optionally after "sha256-raw:". */
static int parse_pin(const char *v, uint8_t out[32]) {
  if (!strncmp(v, "sha256-raw:", 11)) v += 11;
  if (strlen(v) != 64) return -1;
  return derp_hex_decode(v, 32, out);
}

#define FLAG_UNKNOWN 1

/* Apply one valued flag: 0 ok, -1 bad value, FLAG_UNKNOWN for a name that is
 * no valued flag. The one list of valued flags is this function. */
static int apply_valued(struct flag_ctx *x, const char *name, const char *v) {
  struct bench_cfg *c = x->c;
  long l;
  if (!strcmp(name, "server")) {
    x->have_server++;
    return parse_server(v, strlen(v), &c->servers[0]) ? -1 : (c->nservers = 1, 0);
  }
  if (!strcmp(name, "servers")) return x->have_server++, parse_servers(v, c);
  if (!strcmp(name, "mode")) {
    if (!strcmp(v, "relay")) c->mode = MODE_RELAY;
    else if (!strcmp(v, "idle")) c->mode = MODE_IDLE;
    else if (!strcmp(v, "churn")) c->mode = MODE_CHURN;
    else return -1;
    return 0;
  }
  if (!strcmp(name, "topology")) {
    if (!strcmp(v, "pairs")) c->topo = TOPO_PAIRS;
    else if (!strcmp(v, "fanin")) c->topo = TOPO_FANIN;
    else if (!strcmp(v, "random")) c->topo = TOPO_RANDOM;
    else return -1;
    return 0;
  }
  if (!strcmp(name, "threads"))
    return parse_long(v, 1, BENCH_MAX_THREADS, &l) ? -1 : (c->threads = (int)l, 0);
  if (!strcmp(name, "clients")) {
    x->have_clients = true;
    return parse_long(v, 1, 10000000, &l) ? -1 : (c->clients = (int)l, 0);
  }
  if (!strcmp(name, "connect-parallel"))
    return parse_long(v, 1, BENCH_MAX_THREADS, &l) ? -1 : (c->connect_parallel = (int)l, 0);
  if (!strcmp(name, "size"))
    return parse_long(v, BENCH_MIN_SIZE, 65536, &l) ? -1 : (c->size = (uint32_t)l, 0);
  if (!strcmp(name, "ack-size"))
    return parse_long(v, BENCH_MIN_SIZE, 65536, &l) ? -1 : (c->ack_size = (uint32_t)l, 0);
  if (!strcmp(name, "window"))
    return parse_long(v, 1, BENCH_MAX_WINDOW, &l) ? -1 : (c->window = (uint32_t)l, 0);
  if (!strcmp(name, "server-pid")) {
    int n = each_item(v, BENCH_MAX_SERVERS, c, one_pid);
    return n < 0 ? -1 : (c->npids = n, 0);
  }
  if (!strcmp(name, "seed"))
    return parse_long(v, 0, 0x7fffffffL, &l) ? -1 : (c->seed = (uint64_t)l, 0);
  if (!strcmp(name, "pps")) {
    char *end;
    c->pps = strtod(v, &end);
    return (end == v || *end || c->pps <= 0 || c->pps > 1e9) ? -1 : 0;
  }
  if (!strcmp(name, "sni")) return x->tls_opt = true, c->tls_sni = v, 0;
  if (!strcmp(name, "pin-sha256")) {
    x->tls_opt = true;
    c->tls_have_pin = true;
    return parse_pin(v, c->tls_pin);
  }
  if (!strcmp(name, "tls-version")) {
    x->tls_opt = true;
    if (!strcmp(v, "1.2")) c->tls_version = 0x0303;
    else if (!strcmp(v, "1.3")) c->tls_version = 0x0304;
    else return -1;
    return 0;
  }
  if (!strcmp(name, "duration")) return bench_parse_duration(v, &c->duration_ns);
  if (!strcmp(name, "warmup")) return bench_parse_duration(v, &c->warmup_ns);
  if (!strcmp(name, "hold")) return bench_parse_duration(v, &c->hold_ns);
  if (!strcmp(name, "ack-timeout")) return bench_parse_duration(v, &c->ack_timeout_ns);
  if (!strcmp(name, "drain")) return bench_parse_duration(v, &c->drain_ns);
  if (!strcmp(name, "pace-quantum")) return bench_parse_duration(v, &c->pace_quantum_ns);
  if (!strcmp(name, "report-every")) return bench_parse_duration(v, &c->report_every_ns);
  if (!strcmp(name, "max-burst")) return bench_parse_duration(v, &c->max_burst_ns);
  return FLAG_UNKNOWN;
}

static bool is_bool_flag(const char *name) {
  return !strcmp(name, "json") || !strcmp(name, "quiet") || !strcmp(name, "help") ||
         !strcmp(name, "h") || !strcmp(name, "tls") || !strcmp(name, "insecure") ||
         !strcmp(name, "websocket");
}

/* Whether apply_valued knows the name: asked of a scratch config, so that a
 * flag given without its value is told apart from an unknown one. */
static bool is_valued_flag(const char *name) {
  struct bench_cfg scratch = {0};
  struct flag_ctx sx = {.c = &scratch};
  return apply_valued(&sx, name, "1") != FLAG_UNKNOWN;
}

static int parse_args(int argc, char **argv, struct flag_ctx *x) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      fprintf(stderr, "derp-bench: unexpected argument %s (see --help)\n", a);
      return -1;
    }
    a += (a[1] == '-') ? 2 : 1;
    char name[64];
    const char *eq = strchr(a, '=');
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    if (nl == 0 || nl >= sizeof name) goto unknown;
    memcpy(name, a, nl);
    name[nl] = 0;
    if (is_bool_flag(name)) {
      if (!strcmp(name, "help") || !strcmp(name, "h")) {
        fputs(usage, stdout);
        exit(0);
      }
      bool on = !eq || !strcmp(eq + 1, "true") || !strcmp(eq + 1, "1");
      if (!strcmp(name, "json")) x->c->json = on;
      else if (!strcmp(name, "tls")) x->c->tls = on;
      else if (!strcmp(name, "websocket")) x->c->websocket = on;
      else if (!strcmp(name, "insecure")) x->tls_opt = true, x->c->tls_insecure = on;
      else x->c->quiet = on;
      continue;
    }
    if (!is_valued_flag(name)) goto unknown;
    const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!v) {
      fprintf(stderr, "derp-bench: flag --%s needs a value\n", name);
      return -1;
    }
    if (apply_valued(x, name, v) != 0) {
      fprintf(stderr, "derp-bench: bad value for --%s: %s\n", name, v);
      return -1;
    }
    continue;
  unknown:
    fprintf(stderr, "derp-bench: unknown flag %s (see --help)\n", argv[i]);
    return -1;
  }
  return 0;
}

static int validate(const struct flag_ctx *x) {
  const struct bench_cfg *c = x->c;
  if (!x->have_server) {
    fprintf(stderr, "derp-bench: --server HOST:PORT (or --servers LIST) is required (see --help)\n");
    return -1;
  }
  if (x->have_server > 1) {
    fprintf(stderr, "derp-bench: give --server or --servers once, not both\n");
    return -1;
  }
  if (c->npids && c->npids != c->nservers) {
    fprintf(stderr, "derp-bench: --server-pid has %d pids for %d servers (one per server)\n",
            c->npids, c->nservers);
    return -1;
  }
  if (x->tls_opt && !c->tls) {
    fprintf(stderr, "derp-bench: --sni, --insecure, --pin-sha256 and --tls-version need --tls\n");
    return -1;
  }
  if (c->mode == MODE_RELAY && c->clients < 2) {
    fprintf(stderr, "derp-bench: relay mode needs at least 2 clients\n");
    return -1;
  }
  if (c->mode == MODE_RELAY && c->topo == TOPO_PAIRS && c->clients % 2) {
    fprintf(stderr, "derp-bench: pairs topology needs an even number of clients\n");
    return -1;
  }
  if (c->duration_ns <= 0 && c->mode != MODE_IDLE) {
    fprintf(stderr, "derp-bench: --duration must be positive\n");
    return -1;
  }
  if (c->mode == MODE_IDLE && !c->npids)
    fprintf(stderr, "derp-bench: warning: idle mode without --server-pid reports no memory\n");
  return 0;
}

static void on_signal(int sig) {
  (void)sig;
  atomic_store(&bench_interrupted, true);
}

static void install_signals(void) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

int main(int argc, char **argv) {
  struct bench_cfg cfg = {.mode = MODE_RELAY, .topo = TOPO_PAIRS, .threads = 2, .clients = 2,
                          .connect_parallel = 8, .size = 1200, .ack_size = BENCH_MIN_SIZE,
                          .duration_ns = 10000000000, .warmup_ns = 2000000000,
                          .hold_ns = 10000000000, .ack_timeout_ns = 1000000000,
                          .drain_ns = 2000000000, .pace_quantum_ns = 50000, .window = 32,
                          .seed = (uint64_t)time(NULL) ^ (uint64_t)getpid()};
  struct flag_ctx x = {.c = &cfg};
  if (parse_args(argc, argv, &x) < 0) return 2;
  if (cfg.mode == MODE_IDLE && !x.have_clients) cfg.clients = 100;
  if (validate(&x) < 0) return 2;
  if (derp_init() < 0) {
    fprintf(stderr, "derp-bench: libsodium failed to initialise\n");
    return 2;
  }
  /* Every client is one socket, plus a transient dup at set-up, epoll fds
   * and stdio; churn holds at most one socket per thread. */
  size_t fds = (cfg.mode == MODE_CHURN ? (size_t)cfg.threads * 2 : (size_t)cfg.clients) +
               (size_t)cfg.connect_parallel + (size_t)cfg.threads + 32;
  if (bench_raise_nofile(fds) < 0) return 2;
  install_signals();
  switch (cfg.mode) {
  case MODE_IDLE: return bench_run_idle(&cfg);
  case MODE_CHURN: return bench_run_churn(&cfg);
  default: return bench_run_relay(&cfg);
  }
}
