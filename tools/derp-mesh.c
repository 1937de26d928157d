/* derp-mesh: the operator's tool for a DERP region's mesh (derpd or derper).
 *
 * Connects to one server as a mesh client (a fresh key, the region's mesh
 * pre-shared key as meshKey) over http:// or https://, and either watches the
 * server's clients come and go (WatchConns: PeerPresent / PeerGone, one line
 * each on stdout) or closes a client's connections there (ClosePeer, then a
 * Ping whose Pong says the server has read it). The output formats and
 * exit codes are in the help text below; docs/operations.md repeats them.
 * Built on libderp's blocking client (libderp_tls for https). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "derp/client.h"
#include "derp/client_tls.h"
#include "derp/frame.h"
#include "derp/key.h"
#include "derp/meshkey.h"
#include "server/config.h" /* config_parse_duration_ms: derpd's Go durations */

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

#define CONNECT_TIMEOUT_MS 10000
#define CLOSE_PEER_TIMEOUT_MS 10000
#define MESH_KEY_ENV "TAILSCALE_DERPER_MESH_KEY"
#define IDLE_MS 120000
#define LOSS_HINT "(a server closes the connection of a client whose mesh key it does not share; derpd also one past its limit of watchers)"

static const char help_text[] =
    "derp-mesh: the operator's tool for a DERP region's mesh (derpd or Tailscale's derper)\n"
    "\n"
    "Usage:\n"
    "  derp-mesh watch --server URL [--mesh-psk-file FILE] [--count N] [--timeout DUR]\n"
    "                  [--idle DUR] [--json] [--ca-file FILE] [--insecure]\n"
    "  derp-mesh close-peer --server URL [--mesh-psk-file FILE] [--timeout DUR]\n"
    "                  [--ca-file FILE] [--insecure] KEY...\n"
    "  derp-mesh help | -h | --help\n"
    "\n"
    "Both connect to one server as a mesh client: a fresh key, and the region's\n"
    "mesh pre-shared key sent as meshKey. A server that does not share the key\n"
    "closes the connection at the first mesh frame, which shows as a lost\n"
    "connection (exit 1).\n"
    "\n"
    "watch       Sends WatchConns and prints one line per PeerPresent and PeerGone\n"
    "            the server sends: first every client connected now, then each\n"
    "            arrival and departure. Runs until --count events were printed,\n"
    "            --timeout passed, or the connection is lost. Once subscribed it\n"
    "            says so on stderr: \"derp-mesh: watching URL (server nodekey:HEX)\".\n"
    "close-peer  Sends ClosePeer for each KEY (nodekey:<64 hex> or the bare 64 hex\n"
    "            digits): the server closes that client's connections to it (a key\n"
    "            not connected there is no error). Then sends a Ping and waits for\n"
    "            its Pong, so that the server has read every ClosePeer when\n"
    "            derp-mesh exits 0; the closing itself follows on the server's\n"
    "            own time (derper starts it in the background; derpd hands it to\n"
    "            the key's shard, within milliseconds). Prints nothing on success.\n"
    "\n"
    "Options:\n"
    "  --server URL          http://HOST:PORT (plain; port 80 if left out) or\n"
    "                        https://HOST[:PORT] (TLS; port 443 if left out); HOST may be\n"
    "                        a name, an IPv4 address or [IPv6]; a path, if any, must be\n"
    "                        /derp. TLS verifies the server's certificate against the\n"
    "                        system roots, or $SSL_CERT_FILE, or --ca-file (and the\n"
    "                        directories of $SSL_CERT_DIR), for the host name (sent as\n"
    "                        SNI) or, for an IP address, that address.\n"
    "  --mesh-psk-file FILE  the mesh key file, as derper's -mesh-psk-file: 64 to 512 hex\n"
    "                        digits (either case), white space around them ignored.\n"
    "                        Without it, $" MESH_KEY_ENV " holds the key\n"
    "                        (same rules); the file wins when both are given.\n"
    "  --count N             watch: exit 0 after N events (0, the default: no limit)\n"
    "  --timeout DUR         watch: exit 0 once DUR has passed since start (default: no\n"
    "                        limit); close-peer: give up (exit 1) if the Pong has not come\n"
    "                        DUR after start (default 10s). Go durations: 500ms, 10s,\n"
    "                        1m30s. Connecting gives up after 10s (or DUR if shorter).\n"
    "  --idle DUR            watch: a server that sends nothing for DUR (default 120s, as\n"
    "                        Go's DERP client; derper and derpd send a KeepAlive every\n"
    "                        60s) is lost (exit 1): a host gone without a word\n"
    "  --json                watch: one JSON object per line instead of text\n"
    "  --ca-file FILE        https: PEM roots to verify against instead of the system's\n"
    "  --insecure            https: do not verify the certificate (tests, self-signed)\n"
    "  -h, --help            this text\n"
    "\n"
    "watch output, one line per event, flushed as it comes; fields are separated by\n"
    "one space and never contain one:\n"
    "  present nodekey:HEX ADDR flags=FLAGS\n"
    "  gone nodekey:HEX reason=REASON\n"
    "  HEX     the client's public key, 64 lowercase hex digits\n"
    "  ADDR    the client's address as the server sees it: 1.2.3.4:5678 (IPv4),\n"
    "          [2001:db8::1]:5678 (IPv6), or - when the server sent none (old servers)\n"
    "  FLAGS   comma-separated, in this order: regular, mesh (a mesh peer's link),\n"
    "          prober, notideal, then bitN for any other bit N set; none when the\n"
    "          server sent the flags byte with no bit set; - when it sent no flags\n"
    "          (servers before derper v1.70)\n"
    "  REASON  disconnected (the client left), not_here (the client is not connected\n"
    "          here), or the reason byte in decimal for reasons this tool does not know\n"
    "With --json:\n"
    "  {\"event\":\"present\",\"key\":\"nodekey:HEX\",\"addr\":ADDR,\"ip\":IP,\"port\":PORT,\n"
    "   \"flags\":[FLAG...],\"flags_raw\":N}\n"
    "  {\"event\":\"gone\",\"key\":\"nodekey:HEX\",\"reason\":REASON,\"reason_code\":N}\n"
    "  with ADDR as above as a string, IP the address alone (\"1.2.3.4\", \"2001:db8::1\"),\n"
    "  PORT a number, FLAG the names above; addr, ip and port are null when the server\n"
    "  sent no address, flags and flags_raw null when it sent no flags byte.\n"
    "Other frames are not printed on stdout: a Health message or a Restarting notice\n"
    "from the server goes to stderr (\"derp-mesh: server health: TEXT\", with TEXT's\n"
    "backslashes and bytes other than printable ASCII as \\xNN; \"derp-mesh: server\n"
    "restarting: reconnect in N ms, keep trying for N ms\"); Pings are answered.\n"
    "\n"
    "Exit status:\n"
    "  0  watch: --count events printed or --timeout passed; close-peer: the Pong came\n"
    "  1  could not connect, TLS or DERP handshake failed, the connection was lost\n"
    "     (also what a mesh key the server does not share looks like), close-peer's\n"
    "     Pong did not come within --timeout, or stdout could not be written\n"
    "  2  usage: unknown command or option, bad value, bad URL, bad KEY, no mesh key,\n"
    "     or a mesh key file that is missing, unreadable or not a mesh key\n"
    "Messages go to stderr, each starting with \"derp-mesh: \".\n";

struct opts {
  const char *cmd;
  const char *server, *psk_file, *ca_file;
  bool insecure, json;
  long count;
  int64_t timeout_ms; /* -1: none given */
  int64_t idle_ms;    /* watch: a server silent this long is lost (Go's recvTimeout) */
  char **args;        /* positional arguments (close-peer's keys) */
  int nargs;
};

struct url {
  bool tls;
  char host[256];
  uint16_t port;
};

static const char *prog = "derp-mesh";

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((format(printf, 2, 3))) static int fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (code == EXIT_USAGE) fprintf(stderr, "%s: see derp-mesh --help\n", prog);
  return code;
}

/* ---- arguments ---- */

/* http://HOST[:PORT][/derp] or https://...; 0, or -1 with *why. */
static int parse_url(const char *s, struct url *u, const char **why) {
  memset(u, 0, sizeof *u);
  const char *p;
  if (strncasecmp(s, "http://", 7) == 0) {
    p = s + 7;
    u->port = 80;
  } else if (strncasecmp(s, "https://", 8) == 0) {
    p = s + 8;
    u->tls = true;
    u->port = 443;
  } else {
    return *why = "want http://HOST:PORT or https://HOST[:PORT]", -1;
  }
  const char *end = p + strcspn(p, "/?#");
  const char *hs = p, *he, *port = NULL;
  if (memchr(p, '@', (size_t)(end - p))) return *why = "no user name or password in the URL", -1;
  if (*p == '[') {
    hs = p + 1;
    he = memchr(hs, ']', (size_t)(end - hs));
    if (!he) return *why = "no ] after an IPv6 address", -1;
    if (he + 1 < end && he[1] != ':') return *why = "junk after ]", -1;
    if (he + 1 < end) port = he + 2;
  } else {
    he = memchr(p, ':', (size_t)(end - p));
    if (he) port = he + 1;
    else he = end;
  }
  if (he == hs) return *why = "no host", -1;
  if ((size_t)(he - hs) >= sizeof u->host) return *why = "host name too long", -1;
  memcpy(u->host, hs, (size_t)(he - hs));
  if (port) {
    long v = 0;
    if (port == end) return *why = "empty port", -1;
    for (const char *q = port; q < end; q++) {
      if (*q < '0' || *q > '9' || (v = v * 10 + (*q - '0')) > 65535)
        return *why = "port must be a number from 1 to 65535", -1;
    }
    if (v == 0) return *why = "port must be a number from 1 to 65535", -1;
    u->port = (uint16_t)v;
  }
  if (strcmp(end, "") != 0 && strcmp(end, "/") != 0 && strcmp(end, "/derp") != 0)
    return *why = "the path must be /derp or nothing (no query, no fragment)", -1;
  return 0;
}

enum { O_SERVER = 256, O_PSK, O_COUNT, O_TIMEOUT, O_IDLE, O_JSON, O_CA, O_INSECURE };

static int parse_args(int argc, char **argv, struct opts *o) {
  static const struct option longs[] = {
      {"server", required_argument, NULL, O_SERVER},
      {"mesh-psk-file", required_argument, NULL, O_PSK},
      {"count", required_argument, NULL, O_COUNT},
      {"timeout", required_argument, NULL, O_TIMEOUT},
      {"idle", required_argument, NULL, O_IDLE},
      {"json", no_argument, NULL, O_JSON},
      {"ca-file", required_argument, NULL, O_CA},
      {"insecure", no_argument, NULL, O_INSECURE},
      {"help", no_argument, NULL, 'h'},
      {0, 0, 0, 0},
  };
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
    char *end;
    switch (ch) {
    case 'h': fputs(help_text, stdout); return -1;
    case O_SERVER: o->server = optarg; break;
    case O_PSK: o->psk_file = optarg; break;
    case O_JSON: o->json = true; break;
    case O_CA: o->ca_file = optarg; break;
    case O_INSECURE: o->insecure = true; break;
    case O_COUNT:
      errno = 0;
      o->count = strtol(optarg, &end, 10);
      if (errno || end == optarg || *end || o->count < 0)
        return fail(EXIT_USAGE, "--count: want a whole number, 0 or more, not \"%s\"", optarg);
      break;
    case O_TIMEOUT:
      o->timeout_ms = config_parse_duration_ms(optarg);
      if (o->timeout_ms <= 0)
        return fail(EXIT_USAGE, "--timeout: want a positive duration like 500ms, 10s or 1m30s, not \"%s\"",
                    optarg);
      break;
    case O_IDLE:
      o->idle_ms = config_parse_duration_ms(optarg);
      if (o->idle_ms <= 0)
        return fail(EXIT_USAGE, "--idle: want a positive duration like 30s or 2m, not \"%s\"", optarg);
      break;
    case ':': return fail(EXIT_USAGE, "%s needs a value", argv[optind - 1]);
    default: return fail(EXIT_USAGE, "unknown option %s", argv[optind - 1]);
    }
  }
  o->args = argv + optind;
  o->nargs = argc - optind;
  bool watch = strcmp(o->cmd, "watch") == 0;
  if (!watch && (o->count || o->json || o->idle_ms != IDLE_MS))
    return fail(EXIT_USAGE, "%s: --count, --idle and --json are for watch", o->cmd);
  if (watch && o->nargs > 0) return fail(EXIT_USAGE, "watch: unexpected argument \"%s\"", o->args[0]);
  if (!watch && o->nargs == 0) return fail(EXIT_USAGE, "close-peer: no KEY given");
  if (!o->server) return fail(EXIT_USAGE, "%s: --server URL is required", o->cmd);
  return 0;
}

/* The mesh key from --mesh-psk-file, else the environment. */
static int mesh_key(const struct opts *o, char *out, size_t cap) {
  char msg[512];
  if (o->psk_file) {
    if (derp_mesh_key_load(o->psk_file, out, cap, msg, sizeof msg) < 0)
      return fail(EXIT_USAGE, "mesh key file %s", msg);
    return 0;
  }
  const char *env = getenv(MESH_KEY_ENV), *why = NULL;
  if (!env)
    return fail(EXIT_USAGE, "no mesh key: give --mesh-psk-file FILE or set $" MESH_KEY_ENV);
  if (derp_mesh_key_parse(env, strlen(env), out, cap, &why) < 0)
    return fail(EXIT_USAGE, "mesh key in $" MESH_KEY_ENV ": %s", why);
  return 0;
}

/* ---- the connection ---- */

static struct derp_client *dial(const struct opts *o, const struct url *u, const char *key,
                                int64_t deadline, int *rc) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  int64_t left = deadline < 0 ? CONNECT_TIMEOUT_MS : deadline - now_ms();
  struct derp_client_opts co = {
      .host = u->host,
      .port = u->port,
      .priv = &priv,
      .mesh_key = key,
      .timeout_ms = (int)(left < CONNECT_TIMEOUT_MS ? (left > 0 ? left : 1) : CONNECT_TIMEOUT_MS),
  };
  const char *ssl_cert_file = getenv("SSL_CERT_FILE");
  struct derp_tls_opts to = {
      .insecure_skip_verify = o->insecure,
      .ca_file = o->ca_file ? o->ca_file : ssl_cert_file && *ssl_cert_file ? ssl_cert_file : NULL,
      .ca_dirs = getenv("SSL_CERT_DIR"), /* as derpd's links, and Go */
  };
  char err[512] = "";
  struct derp_client *c = NULL;
  int r = u->tls ? derp_client_connect_tls(&c, &co, &to, NULL, err, sizeof err)
                 : derp_client_connect(&c, &co, err, sizeof err);
  sodium_memzero(&priv, sizeof priv);
  if (r < 0) {
    *rc = fail(EXIT_FAIL, "%s: %s", o->server, err);
    return NULL;
  }
  return c;
}

/* The connection failed (errno); hint: it may be the mesh key. */
static int lost(const struct opts *o, const char *doing, bool hint) {
  const char *why = errno == EPIPE ? "connection closed by the server" : strerror(errno);
  return fail(EXIT_FAIL, "%s: connection lost %s: %s%s", o->server, doing, why,
              hint ? " " LOSS_HINT : "");
}

/* Frames neither command prints: answer Pings, report Health and Restarting
 * on stderr. 0, or -1 if a Pong could not be written. */
static int side_frame(struct derp_client *c, const struct derp_client_msg *m) {
  switch (m->type) {
  case DERP_FRAME_PING: return derp_client_pong(c, m->ping_data);
  case DERP_FRAME_HEALTH:
    if (m->len == 0) {
      fprintf(stderr, "%s: server health: ok again\n", prog);
      return 0;
    }
    /* The server's text, not ours: a newline would forge a line of this
     * tool's, an escape sequence would drive the terminal (as derpd logs it). */
    fprintf(stderr, "%s: server health: ", prog);
    for (uint32_t i = 0; i < m->len && i < 1024; i++) {
      uint8_t ch = m->payload[i];
      if (ch >= 0x20 && ch < 0x7f && ch != '\\') fputc(ch, stderr);
      else fprintf(stderr, "\\x%02x", ch);
    }
    fputc('\n', stderr);
    return 0;
  case DERP_FRAME_RESTARTING:
    fprintf(stderr, "%s: server restarting: reconnect in %u ms, keep trying for %u ms\n", prog,
            m->reconnect_in_ms, m->try_for_ms);
    return 0;
  default: return 0;
  }
}

/* ---- watch output ---- */

static const char *const flag_names[8] = {"regular", "mesh", "prober", "notideal",
                                          "bit4", "bit5", "bit6", "bit7"};

static const char *reason_name(uint8_t r) {
  switch (r) {
  case DERP_PEER_GONE_DISCONNECTED: return "disconnected";
  case DERP_PEER_GONE_NOT_HERE: return "not_here";
  default: return NULL;
  }
}

/* ip alone ("1.2.3.4", "2001:db8::1") and ip:port ("1.2.3.4:5", "[2001:db8::1]:5"). */
static void format_addr(const struct derp_client_msg *m, char ip[INET6_ADDRSTRLEN],
                        char addr[INET6_ADDRSTRLEN + 8]) {
  static const uint8_t v4mapped[12] = {[10] = 0xff, [11] = 0xff};
  bool v4 = memcmp(m->ip, v4mapped, sizeof v4mapped) == 0;
  inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? m->ip + 12 : m->ip, ip, INET6_ADDRSTRLEN);
  snprintf(addr, INET6_ADDRSTRLEN + 8, v4 ? "%s:%u" : "[%s]:%u", ip, m->port);
}

static void print_text(const struct derp_client_msg *m, const char *key) {
  if (m->type == DERP_FRAME_PEER_GONE) {
    const char *r = reason_name(m->reason);
    if (r) printf("gone %s reason=%s\n", key, r);
    else printf("gone %s reason=%u\n", key, m->reason);
    return;
  }
  char ip[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN + 8] = "-", flags[64] = "-";
  if (m->has_addr) format_addr(m, ip, addr);
  if (m->has_flags) {
    size_t n = 0;
    flags[0] = '\0';
    for (int b = 0; b < 8; b++)
      if (m->flags & (1u << b))
        n += (size_t)snprintf(flags + n, sizeof flags - n, "%s%s", n ? "," : "", flag_names[b]);
    if (n == 0) strcpy(flags, "none");
  }
  printf("present %s %s flags=%s\n", key, addr, flags);
}

static void print_json(const struct derp_client_msg *m, const char *key) {
  json_t *o = json_object();
  if (m->type == DERP_FRAME_PEER_GONE) {
    const char *r = reason_name(m->reason);
    char num[4];
    snprintf(num, sizeof num, "%u", m->reason);
    json_object_set_new(o, "event", json_string("gone"));
    json_object_set_new(o, "key", json_string(key));
    json_object_set_new(o, "reason", json_string(r ? r : num));
    json_object_set_new(o, "reason_code", json_integer(m->reason));
  } else {
    char ip[INET6_ADDRSTRLEN], addr[INET6_ADDRSTRLEN + 8];
    json_object_set_new(o, "event", json_string("present"));
    json_object_set_new(o, "key", json_string(key));
    if (m->has_addr) format_addr(m, ip, addr);
    json_object_set_new(o, "addr", m->has_addr ? json_string(addr) : json_null());
    json_object_set_new(o, "ip", m->has_addr ? json_string(ip) : json_null());
    json_object_set_new(o, "port", m->has_addr ? json_integer(m->port) : json_null());
    json_t *fl = m->has_flags ? json_array() : json_null();
    for (int b = 0; m->has_flags && b < 8; b++)
      if (m->flags & (1u << b)) json_array_append_new(fl, json_string(flag_names[b]));
    json_object_set_new(o, "flags", fl);
    json_object_set_new(o, "flags_raw", m->has_flags ? json_integer(m->flags) : json_null());
  }
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  free(s);
  json_decref(o);
}

/* ---- commands ---- */

static int run_watch(const struct opts *o, struct derp_client *c, int64_t deadline) {
  if (derp_client_watch_conns(c) < 0) return lost(o, "sending WatchConns", true);
  char skey[DERP_KEY_STRLEN];
  derp_key_format(derp_client_server_key(c), skey);
  fprintf(stderr, "%s: watching %s (server %s)\n", prog, o->server, skey);
  long events = 0;
  int64_t idle_until = now_ms() + o->idle_ms;
  for (;;) {
    int64_t now = now_ms(), left = deadline < 0 ? -1 : deadline - now, wait = idle_until - now;
    if (deadline >= 0 && left <= 0) return EXIT_OK;
    if (wait <= 0) /* a server gone without a FIN or RST (host down, partition) */
      return fail(EXIT_FAIL, "%s: connection lost while watching: nothing from the server for %lld ms (--idle)",
                  o->server, (long long)o->idle_ms);
    if (left >= 0 && left < wait) wait = left;
    struct derp_client_msg m;
    int r = derp_client_recv(c, &m, wait > 0x7fffffff ? 0x7fffffff : (int)wait);
    if (r == 0) continue; /* the deadline or the idle bound, checked above */
    if (r < 0) return lost(o, "while watching", events == 0);
    idle_until = now_ms() + o->idle_ms;
    if (m.type != DERP_FRAME_PEER_PRESENT && m.type != DERP_FRAME_PEER_GONE) {
      if (side_frame(c, &m) < 0) return lost(o, "answering a Ping", events == 0);
      continue;
    }
    char key[DERP_KEY_STRLEN];
    derp_key_format(&m.src, key);
    if (o->json) print_json(&m, key);
    else print_text(&m, key);
    if (fflush(stdout) != 0 || ferror(stdout))
      return fail(EXIT_FAIL, "writing stdout: %s", strerror(errno));
    if (++events == o->count) return EXIT_OK;
  }
}

static int run_close_peer(const struct opts *o, struct derp_client *c, const derp_key *keys,
                          int64_t deadline) {
  for (int i = 0; i < o->nargs; i++)
    if (derp_client_close_peer(c, &keys[i]) < 0) return lost(o, "sending ClosePeer", true);
  uint8_t ping[8];
  randombytes_buf(ping, sizeof ping);
  if (derp_client_ping(c, ping) < 0) return lost(o, "sending Ping", true);
  for (;;) {
    int64_t left = deadline - now_ms();
    struct derp_client_msg m;
    int r = left <= 0 ? 0 : derp_client_recv(c, &m, left > 0x7fffffff ? 0x7fffffff : (int)left);
    if (r == 0)
      return fail(EXIT_FAIL, "%s: no Pong within --timeout: not confirmed that the server read ClosePeer",
                  o->server);
    if (r < 0) return lost(o, "before the server confirmed ClosePeer", true);
    if (m.type == DERP_FRAME_PONG && memcmp(m.ping_data, ping, sizeof ping) == 0) return EXIT_OK;
    if (side_frame(c, &m) < 0) return lost(o, "answering a Ping", true);
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a closed socket or stdout is an error return, not a signal */
  if (argc < 2) return fail(EXIT_USAGE, "no command: want watch or close-peer");
  const char *cmd = argv[1];
  if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
    fputs(help_text, stdout);
    return EXIT_OK;
  }
  if (strcmp(cmd, "watch") != 0 && strcmp(cmd, "close-peer") != 0)
    return fail(EXIT_USAGE, "unknown command \"%s\": want watch or close-peer", cmd);
  struct opts o = {.cmd = cmd, .timeout_ms = -1, .idle_ms = IDLE_MS};
  int rc = parse_args(argc - 1, argv + 1, &o);
  if (rc < 0) return EXIT_OK; /* help printed */
  if (rc > 0) return rc;
  int64_t start = now_ms();
  struct url u;
  const char *why = NULL;
  if (parse_url(o.server, &u, &why) < 0) return fail(EXIT_USAGE, "--server %s: %s", o.server, why);
  if (!u.tls && (o.ca_file || o.insecure))
    return fail(EXIT_USAGE, "--ca-file and --insecure are for https:// servers");
  derp_key *keys = calloc((size_t)o.nargs + 1, sizeof *keys);
  if (!keys) return fail(EXIT_FAIL, "out of memory");
  for (int i = 0; i < o.nargs; i++)
    if (derp_key_parse(o.args[i], &keys[i]) < 0) {
      free(keys);
      return fail(EXIT_USAGE, "close-peer: bad KEY \"%s\": want nodekey:<64 hex digits>", o.args[i]);
    }
  if (derp_init() < 0) {
    free(keys);
    return fail(EXIT_FAIL, "libsodium does not initialise");
  }
  char key[DERP_MESH_KEY_MAX + 1];
  if ((rc = mesh_key(&o, key, sizeof key)) != 0) {
    free(keys);
    return rc;
  }
  bool watch = strcmp(cmd, "watch") == 0;
  int64_t timeout = o.timeout_ms > 0 ? o.timeout_ms : watch ? -1 : CLOSE_PEER_TIMEOUT_MS;
  int64_t deadline = timeout < 0 ? -1 : start + timeout;
  struct derp_client *c = dial(&o, &u, key, deadline, &rc);
  sodium_memzero(key, sizeof key);
  if (c) {
    rc = watch ? run_watch(&o, c, deadline) : run_close_peer(&o, c, keys, deadline);
    derp_client_close(c);
  }
  free(keys);
  return rc;
}
