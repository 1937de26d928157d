/* test_e2e.c: end-to-end tests of derpd over loopback.
 *
 * Owns the behavioural contract of the whole server as clients see it: HTTP
 * endpoints, handshake (normal and fast start), relaying within and across
 * shards, PeerGone, Ping/Pong, duplicate keys and SIGTERM (bad and slow
 * clients: test_e2e_bounds.c). Each test starts its own derpd (e2e_util.c); tests that depend
 * on sharding run for 1, 2 and 4 shards. With random keys and N shards most
 * pairs cross shards, so tests use several pairs rather than guessing the
 * server's (secret) owner function. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "e2e_util.h"

static struct derpd_proc g_srv;

static void setup(void) { e2e_test_init(); }
static void teardown(void) { e2e_test_fini(&g_srv); }

#define E2E .init = setup, .fini = teardown, .timeout = 60

static void start(int shards, const char *extra) { e2e_start(&g_srv, shards, extra); }

/* Skip sync markers and other frames; fail if a data packet shows up. */
static void expect_no_data(struct derp_client *c, int ms) {
  int64_t deadline = e2e_now_ms() + ms;
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv_packet(c, &m, (int)(deadline - e2e_now_ms()))) == 1) {
    bool marker = m.packet_len >= E2E_SYNC_MAGIC_LEN &&
                  memcmp(m.packet, E2E_SYNC_MAGIC, E2E_SYNC_MAGIC_LEN) == 0;
    cr_assert(m.type != DERP_FRAME_RECV_PACKET || marker, "unexpected data packet");
    if (e2e_now_ms() >= deadline) break;
  }
  cr_assert_geq(r, 0, "connection closed unexpectedly: %s", strerror(errno));
}

/* ---- HTTP ---- */

Test(e2e, http_endpoints, E2E) {
  start(2, NULL);
  char resp[8192], v[256];
  int st = http_request(&g_srv, "GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 200, "/derp/probe: %d", st);
  cr_assert(http_header(resp, "Access-Control-Allow-Origin", v, sizeof v) && strcmp(v, "*") == 0,
            "/derp/probe lacks Access-Control-Allow-Origin: *");
  st = http_request(&g_srv, "HEAD /derp/latency-check HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 200, "HEAD /derp/latency-check: %d", st);
  st = http_request(&g_srv, "POST /derp/probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                    resp, sizeof resp);
  cr_assert_eq(st, 405, "POST /derp/probe: %d", st);

  st = http_request(&g_srv, "GET /generate_204 HTTP/1.1\r\nHost: x\r\n"
                    "X-Tailscale-Challenge: abc-12.3_x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 204, "/generate_204: %d", st);
  cr_assert(http_header(resp, "X-Tailscale-Response", v, sizeof v), "no X-Tailscale-Response");
  cr_assert_str_eq(v, "response abc-12.3_x");

  st = http_request(&g_srv, "GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 200, "/robots.txt: %d", st);
  cr_assert(strstr(resp, "User-agent: *") && strstr(resp, "Disallow: /"), "robots body: %s", resp);
  st = http_request(&g_srv, "GET /bootstrap-dns?q=example.com HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 200, "/bootstrap-dns: %d", st);
  cr_assert_str_eq(strstr(resp, "\r\n\r\n"), "\r\n\r\n", "no names: an empty body, as derper");
  cr_assert(http_header(resp, "Content-Type", v, sizeof v) && strcmp(v, "application/json") == 0,
            "/bootstrap-dns Content-Type: %s", v);

  st = http_request(&g_srv, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 426, "/derp without upgrade: %d", st);
  cr_assert(strstr(resp, "DERP requires connection upgrade"), "426 body: %s", resp);

  st = http_request(&g_srv, "GET /debug/no/such/page HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 404, "unknown /debug/ page: %d", st);
}

/* The exact bytes derpd writes for req and then the close (Go's server
 * writes its own errors without a length and closes). */
static void expect_raw_reply(const char *req, const char *want) {
  int fd = raw_connect(&g_srv);
  cr_assert_geq(fd, 0);
  cr_assert_eq(raw_write_all(fd, req, strlen(req)), 0);
  char resp[4096];
  bool closed = false;
  size_t n = raw_read_until_close(fd, resp, sizeof resp - 1, 3000, &closed);
  close(fd);
  resp[n] = 0;
  cr_assert(closed, "%s: not closed", req);
  cr_assert_str_eq(resp, want, "%s", req);
}

/* Go's net/http rules for Host (derper's server), before any route: the
 * same bytes derper v1.78.3 answered (docs/operations.md). */
Test(e2e, http_host_rules, E2E) {
  start(2, NULL);
  static const char missing[] = "HTTP/1.1 400 Bad Request: missing required Host header\r\nContent-Type: "
                                "text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: missing "
                                "required Host header";
  static const char malformed[] = "HTTP/1.1 400 Bad Request: malformed Host header\r\nContent-Type: "
                                  "text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: "
                                  "malformed Host header";
  static const char plain[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                              "Connection: close\r\n\r\n400 Bad Request";
  /* None of these is upgraded, whatever it asks for. */
  expect_raw_reply("GET /derp HTTP/1.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", missing);
  expect_raw_reply("GET /derp HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", plain);
  expect_raw_reply("GET /derp HTTP/1.1\r\nHost: a b\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", malformed);
  expect_raw_reply("GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: derp\r\n"
                   "Sec-WebSocket-Version: 13\r\nHost: y\r\n\r\n", plain);
  expect_raw_reply("GET /robots.txt HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n",
                   "HTTP/1.1 400 Bad Request: invalid header name\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Connection: close\r\n\r\n400 Bad Request: invalid header name");
  expect_raw_reply("GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                   "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version\r\nContent-Type: "
                   "text/plain; charset=utf-8\r\nConnection: close\r\n\r\n505 HTTP Version Not Supported: "
                   "unsupported protocol version");
  cr_assert_eq(derpd_varz(&g_srv, "derpd_conn_closed{reason=\"http_bad\"}"), 6);
  /* HTTP/1.0 needs no Host, and gets its upgrade. */
  int fd = raw_connect(&g_srv);
  cr_assert_geq(fd, 0);
  static const char req10[] = "GET /derp HTTP/1.0\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
  cr_assert_eq(raw_write_all(fd, req10, sizeof req10 - 1), 0);
  char resp[512];
  size_t n = raw_read_at_least(fd, resp, sizeof resp - 1, 12, 3000);
  close(fd);
  resp[n] = 0;
  cr_assert(strncmp(resp, "HTTP/1.1 101 ", 13) == 0, "HTTP/1.0 upgrade: %s", resp);
  /* The handshake still works for a real client (it sends Host). */
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  e2e_assert_ping_pong(a);
}

/* derper serves its home page on every path without a route of its own. */
Test(e2e, http_home_catch_all, E2E) {
  start(1, NULL);
  char home[4096], resp[4096], v[256];
  cr_assert_eq(http_request(&g_srv, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", home, sizeof home), 200);
  cr_assert(strstr(home, "<h1>DERP</h1>"));
  cr_assert(http_header(home, "X-Frame-Options", v, sizeof v) && strcmp(v, "DENY") == 0);
  cr_assert(strstr(home, "<a href='/debug/'>"), "loopback may see /debug/: the page links it");
  cr_assert_eq(http_request(&g_srv, "GET /derp/ HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
  cr_assert_str_eq(strstr(resp, "\r\n\r\n"), strstr(home, "\r\n\r\n"));
  cr_assert_eq(http_request(&g_srv, "GET /debug HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 301);
  cr_assert(http_header(resp, "Location", v, sizeof v) && strcmp(v, "/debug/") == 0);
}

/* -derp=false (derper: decommissioning): /derp answers 404 and no client
 * gets in; the probes and the home page ("disabled") are still served. */
Test(e2e, derp_disabled, E2E) {
  start(2, "-derp=false");
  char resp[4096];
  int st = http_request(&g_srv, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n",
                        resp, sizeof resp);
  cr_assert_eq(st, 404, "/derp: %d", st);
  cr_assert(strstr(resp, "\r\n\r\nderp server disabled\n"), "%s", resp);
  char err[256];
  struct derp_client *c = derpd_client(&g_srv, NULL, false, err, sizeof err);
  cr_assert_null(c, "a client connected to a server with -derp=false");
  cr_assert_eq(http_request(&g_srv, "GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
  cr_assert_eq(http_request(&g_srv, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
  cr_assert(strstr(resp, "disabled"), "%s", resp);
  cr_assert(derpd_log_contains(&g_srv, "-derp=false"));
}

/* -home: a redirect on / and every path without a route of its own. */
Test(e2e, home_redirect, E2E) {
  start(1, "-home https://example.com/derp-info");
  char resp[4096], v[256];
  int st = http_request(&g_srv, "GET /no/such HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 302, "%d", st);
  cr_assert(http_header(resp, "Location", v, sizeof v) && strcmp(v, "https://example.com/derp-info") == 0, "%s", v);
  struct derp_client *a = e2e_client(&g_srv, NULL, true); /* DERP is untouched */
  e2e_assert_ping_pong(a);
}

Test(e2e, version_flag, E2E) {
  char cmd[1024], out[256] = "";
  snprintf(cmd, sizeof cmd, "'%s' -version", e2e_derpd_bin());
  int rc = e2e_run_capture(cmd, out, sizeof out);
  cr_assert_eq(rc, 0, "derpd -version: status %d", rc);
  cr_assert_str_eq(out, DERPD_VERSION "\n");
}

/* -bootstrap-dns-names / -unpublished-bootstrap-dns-names with names that
 * resolve offline: derper's body shapes and counters. */
Test(e2e, bootstrap_dns, E2E) {
  start(2, "-bootstrap-dns-names localhost,does-not-exist.invalid -unpublished-bootstrap-dns-names 127.0.0.2");
  char resp[8192], v[256];
  const char *body = "";
  for (int64_t end = e2e_now_ms() + 5000; e2e_now_ms() < end; e2e_sleep_ms(20)) { /* resolved at start */
    cr_assert_eq(http_request(&g_srv, "GET /bootstrap-dns HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
    body = strstr(resp, "\r\n\r\n") + 4;
    if (*body) break;
  }
  cr_assert(http_header(resp, "Content-Type", v, sizeof v) && strcmp(v, "application/json") == 0);
  cr_assert(http_header(resp, "X-Frame-Options", v, sizeof v) && strcmp(v, "DENY") == 0);
  /* {"localhost": [...]} indented with tabs; 127.0.0.1 among the addresses. */
  cr_assert(strncmp(body, "{\n\t\"localhost\": [\n\t\t\"", 20) == 0, "body: %s", body);
  cr_assert(strstr(body, "\"127.0.0.1\""), "body: %s", body);
  size_t bl = strlen(body);
  cr_assert(bl > 6 && strcmp(body + bl - 5, "\n\t]\n}") == 0, "body: %s", body);
  cr_assert(!strstr(body, "127.0.0.2") && !strstr(body, "invalid"), "unpublished or failed names listed");
  char list[4096];
  snprintf(list, sizeof list, "%s", body);
  /* The unpublished name, to a request naming it (loopback, 100%: always). */
  cr_assert_eq(http_request(&g_srv, "GET /bootstrap-dns?q=127.0.0.2 HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp),
               200);
  cr_assert_str_eq(strstr(resp, "\r\n\r\n") + 4, "{\n\t\"127.0.0.2\": [\n\t\t\"127.0.0.2\"\n\t]\n}");
  cr_assert_eq(http_request(&g_srv, "GET /bootstrap-dns?q=localhost HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp),
               200);
  cr_assert_str_eq(strstr(resp, "\r\n\r\n") + 4, list);
  cr_assert_eq(http_request(&g_srv, "HEAD /bootstrap-dns HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
  cr_assert_str_eq(strstr(resp, "\r\n\r\n") + 4, "");
  cr_assert_eq(derpd_varz(&g_srv, "bootstrap_dns_unpublished_hits"), 1);
  cr_assert_eq(derpd_varz(&g_srv, "bootstrap_dns_published_hits"), 1);
  cr_assert_eq(derpd_varz(&g_srv, "bootstrap_dns_queried_domains"), 2);
  cr_assert(derpd_log_contains(&g_srv, "bootstrap DNS: lookup \"does-not-exist.invalid\""));
}

Test(e2e, http_upgrade_headers, E2E) {
  start(1, NULL);
  char resp[8192], v[256], hex[DERP_KEY_HEXLEN + 1];
  int st = http_request(&g_srv, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: derp\r\n"
                        "Connection: Upgrade\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 101, "upgrade (lowercase 'derp'): %d", st);
  cr_assert(http_header(resp, "Derp-Version", v, sizeof v) && strcmp(v, "2") == 0,
            "Derp-Version: %s", v);
  derp_key_hex(&g_srv.server_key, hex);
  cr_assert(http_header(resp, "Derp-Public-Key", v, sizeof v), "no Derp-Public-Key");
  cr_assert_str_eq(v, hex, "Derp-Public-Key differs from the key file");
}

/* --shards 0 means one shard per CPU derpd may run on: under a one-CPU
 * affinity mask (as taskset or a cpuset gives) that is one, not nproc. */
Test(e2e, default_shards_follow_affinity, E2E) {
  cpu_set_t all, one;
  cr_assert_eq(sched_getaffinity(0, sizeof all, &all), 0);
  int cpu = 0;
  while (!CPU_ISSET(cpu, &all)) cpu++;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
  int r = derpd_start(&g_srv, 0, NULL); /* the child inherits the mask */
  cr_assert_eq(sched_setaffinity(0, sizeof all, &all), 0);
  cr_assert_eq(r, 0, "derpd did not start");
  /* The line follows readiness by a moment: the shards accept before main logs. */
  const char *line = "(plain HTTP, 1 shard, ";
  for (int64_t end = e2e_now_ms() + 2000; !derpd_log_contains(&g_srv, line) && e2e_now_ms() < end;)
    e2e_sleep_ms(20);
  cr_assert(derpd_log_contains(&g_srv, line), "not one shard under a one-CPU mask");
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 100);
}

/* ---- handshake ---- */

Test(e2e, handshake_normal_and_fast, E2E) {
  start(2, NULL);
  struct derp_client *cs[16];
  for (int i = 0; i < 16; i++) {
    cs[i] = e2e_client(&g_srv, NULL, i % 2 == 1);
    cr_assert(derp_key_equal(derp_client_server_key(cs[i]), &g_srv.server_key),
              "ServerKey differs from the key file");
    cr_assert_eq(derp_client_server_info(cs[i])->version, 2, "ServerInfo version %d",
                 derp_client_server_info(cs[i])->version);
  }
  /* The frame stream is aligned after either upgrade: ping/pong works. */
  for (int i = 0; i < 16; i++) e2e_assert_ping_pong(cs[i]);
  for (int i = 0; i < 16; i++) e2e_close(cs[i]);

  /* Fast start with a wrong server key must not produce a connected client. */
  derp_privkey priv;
  derp_key bogus;
  derp_key_generate(&priv, &bogus);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = g_srv.port, .priv = &priv,
                               .fast_start = true, .server_key = &bogus, .timeout_ms = 3000};
  struct derp_client *c = NULL;
  char err[256];
  cr_assert_eq(derp_client_connect(&c, &o, err, sizeof err), -1, "fast start with wrong key");
  cr_assert(derpd_alive(&g_srv));
}

/* ---- relay ---- */

/* 32 shards: more than this machine has cores, and past the 16 where the
 * inter-shard rings start to shrink (config_ring_depths). */
ParameterizedTestParameters(e2e, relay_pairs) {
  static int shards[] = {1, 2, 4, 32};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

static size_t seq_packet(uint8_t *buf, int pair, uint32_t seq) {
  size_t len = 16 + (seq * 7) % 1200; /* varying sizes */
  memcpy(buf, &pair, 4);
  memcpy(buf + 4, &seq, 4);
  for (size_t i = 8; i < len; i++) buf[i] = (uint8_t)(pair * 13 + seq + i);
  return len;
}

static void relay_pairs_run(int nshards, const char *args);

ParameterizedTest(int *shards, e2e, relay_pairs, E2E) { relay_pairs_run(*shards, NULL); }

/* Two receive buffers per shard: receives keep running out (ENOBUFS) and
 * re-arm, the ring target cannot grow past 2, and still nothing is lost or
 * reordered. */
Test(e2e, relay_two_recv_buffers, E2E) {
  relay_pairs_run(2, "--recv-bufs 2");
  long long nobufs = derpd_varz(&g_srv, "derpd_recv_no_buffers");
  cr_log_info("ENOBUFS: %lld", nobufs);
  cr_assert_gt(nobufs, 0, "24 pairs sending windows of 32 through 2 buffers never ran out");
}

static void relay_pairs_run(int nshards, const char *args) {
  enum { PAIRS = 24, COUNT = 200, WINDOW = 32 };
  const int *shards = &nshards;
  start(*shards, args);
  struct derp_client *tx[PAIRS], *rx[PAIRS];
  for (int p = 0; p < PAIRS; p++) {
    tx[p] = e2e_client(&g_srv, NULL, p % 2);
    rx[p] = e2e_client(&g_srv, NULL, false);
  }
  for (int p = 0; p < PAIRS; p++) e2e_sync_route(tx[p], rx[p]);
  uint8_t buf[1300];
  for (uint32_t base = 0; base < COUNT; base += WINDOW) {
    uint32_t w = COUNT - base < WINDOW ? COUNT - base : WINDOW;
    for (int p = 0; p < PAIRS; p++)
      for (uint32_t i = 0; i < w; i++) {
        size_t len = seq_packet(buf, p, base + i);
        cr_assert_eq(derp_client_send(tx[p], derp_client_public_key(rx[p]), buf, len), 0);
      }
    for (int p = 0; p < PAIRS; p++)
      for (uint32_t i = 0; i < w; i++) {
        struct derp_client_msg m;
        e2e_recv_data(rx[p], &m, 3000);
        size_t len = seq_packet(buf, p, base + i);
        cr_assert(derp_key_equal(&m.src, derp_client_public_key(tx[p])), "pair %d: wrong src", p);
        uint32_t got = 0;
        if (m.packet_len >= 8) memcpy(&got, m.packet + 4, 4);
        cr_assert_eq(m.packet_len, len, "pair %d seq %u: len %u (got seq %u)", p, base + i,
                     m.packet_len, got);
        cr_assert(memcmp(m.packet, buf, len) == 0, "pair %d: expected seq %u, got %u", p,
                  base + i, got);
      }
  }
  /* Closed loop: nothing may be dropped. With several shards, some of the 24
   * pairs must have crossed shards (none does with p = N^-24: with 8 pairs the
   * 2-shard run failed 1 in 256), and every client whose key another shard
   * owns was handed over after its handshake. */
  cr_assert_eq(derpd_varz_sum(&g_srv, "derp_packets_dropped"), 0);
  cr_assert_geq(derpd_varz(&g_srv, "derp_packets_sent"), PAIRS * COUNT);
  if (*shards == 32)
    cr_assert(derpd_log_contains(&g_srv, "rings per shard pair: data 2048, control 512, handoff 512"),
              "ring depths for 32 shards not in the log");
  if (*shards > 1) {
    cr_assert_gt(derpd_varz(&g_srv, "derpd_cross_shard_packets"), 0, "no pair crossed shards");
    cr_assert_gt(derpd_varz(&g_srv, "derpd_handoffs"), 0, "no connection moved shards");
  } else {
    cr_assert_eq(derpd_varz(&g_srv, "derpd_cross_shard_packets"), 0);
  }
  for (int p = 0; p < PAIRS; p++) {
    e2e_close(tx[p]);
    e2e_close(rx[p]);
  }
}

ParameterizedTestParameters(e2e, relay_64k) {
  static int shards[] = {1, 2, 4};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

ParameterizedTest(int *shards, e2e, relay_64k, E2E) {
  enum { PAIRS = 4, COUNT = 8, WINDOW = 4, LEN = DERP_MAX_PACKET };
  start(*shards, NULL);
  struct derp_client *tx[PAIRS], *rx[PAIRS];
  for (int p = 0; p < PAIRS; p++) {
    tx[p] = e2e_client(&g_srv, NULL, false);
    rx[p] = e2e_client(&g_srv, NULL, true);
    e2e_sync_route(tx[p], rx[p]);
  }
  static uint8_t buf[LEN];
  for (int base = 0; base < COUNT; base += WINDOW) {
    for (int p = 0; p < PAIRS; p++)
      for (int i = 0; i < WINDOW; i++) {
        for (size_t j = 0; j < LEN; j++) buf[j] = (uint8_t)(j * 7 + (j >> 8) + p + base + i);
        cr_assert_eq(derp_client_send(tx[p], derp_client_public_key(rx[p]), buf, LEN), 0);
      }
    for (int p = 0; p < PAIRS; p++)
      for (int i = 0; i < WINDOW; i++) {
        struct derp_client_msg m;
        e2e_recv_data(rx[p], &m, 3000);
        for (size_t j = 0; j < LEN; j++) buf[j] = (uint8_t)(j * 7 + (j >> 8) + p + base + i);
        cr_assert_eq(m.packet_len, LEN, "pair %d: 64 KiB packet arrived as %u bytes", p,
                     m.packet_len);
        cr_assert(memcmp(m.packet, buf, LEN) == 0, "pair %d packet %d corrupted", p, base + i);
        cr_assert(derp_key_equal(&m.src, derp_client_public_key(tx[p])));
      }
  }
}

/* ---- PeerGone ---- */

ParameterizedTestParameters(e2e, peer_gone_disconnected) {
  static int shards[] = {1, 2, 4};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

ParameterizedTest(int *shards, e2e, peer_gone_disconnected, E2E) {
  enum { PAIRS = 4 };
  start(*shards, NULL);
  struct derp_client *a[PAIRS], *b[PAIRS];
  derp_key akey[PAIRS];
  for (int p = 0; p < PAIRS; p++) {
    a[p] = e2e_client(&g_srv, NULL, false);
    b[p] = e2e_client(&g_srv, NULL, false);
    akey[p] = *derp_client_public_key(a[p]);
    e2e_sync_route(a[p], b[p]); /* A has now sent to B */
  }
  for (int p = 0; p < PAIRS; p++) e2e_close(a[p]);
  for (int p = 0; p < PAIRS; p++) {
    int64_t deadline = e2e_now_ms() + 2000;
    struct derp_client_msg m;
    int r;
    do r = derp_client_recv_packet(b[p], &m, (int)(deadline - e2e_now_ms()));
    while (r == 1 && m.type != DERP_FRAME_PEER_GONE);
    cr_assert_eq(r, 1, "pair %d: no PeerGone within 2 s (%s)", p, r == 0 ? "timeout" : "closed");
    cr_assert(derp_key_equal(&m.src, &akey[p]), "pair %d: PeerGone for another key", p);
    cr_assert_eq(m.reason, DERP_PEER_GONE_DISCONNECTED, "pair %d: reason %u", p, m.reason);
  }
}

/* PeerGone(K) for the next packet. */
static void expect_gone(struct derp_client *c, const derp_key *k, const char *what) {
  int64_t deadline = e2e_now_ms() + 2000;
  struct derp_client_msg m;
  int r;
  do r = derp_client_recv_packet(c, &m, (int)(deadline - e2e_now_ms()));
  while (r == 1 && !(m.type == DERP_FRAME_PEER_GONE && derp_key_equal(&m.src, k)));
  cr_assert_eq(r, 1, "%s: no PeerGone within 2 s (%s)", what, r == 0 ? "timeout" : "closed");
  cr_assert_eq(m.reason, DERP_PEER_GONE_DISCONNECTED, "%s: reason %u", what, m.reason);
}

ParameterizedTestParameters(e2e, peer_gone_every_time) {
  static int shards[] = {1, 2};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

/* The same key comes back and sends to the same receivers: each time it
 * leaves they hear it again. (The shard's cache of reported (sender,
 * receiver) pairs once kept the second visit from being noted.) */
ParameterizedTest(int *shards, e2e, peer_gone_every_time, E2E) {
  enum { PAIRS = 4, ROUNDS = 3 };
  start(*shards, NULL);
  struct derp_client *b[PAIRS];
  derp_privkey apriv[PAIRS];
  derp_key akey[PAIRS];
  for (int p = 0; p < PAIRS; p++) {
    b[p] = e2e_client(&g_srv, NULL, false);
  }
  for (int round = 0; round < ROUNDS; round++) {
    struct derp_client *a[PAIRS];
    for (int p = 0; p < PAIRS; p++) {
      a[p] = round == 0 ? e2e_client(&g_srv, &apriv[p], false) : e2e_client_with_key(&g_srv, &apriv[p], false);
      akey[p] = *derp_client_public_key(a[p]);
      e2e_sync_route(a[p], b[p]);
    }
    for (int p = 0; p < PAIRS; p++) e2e_close(a[p]);
    for (int p = 0; p < PAIRS; p++) {
      char what[64];
      snprintf(what, sizeof what, "round %d, pair %d", round + 1, p);
      expect_gone(b[p], &akey[p], what);
    }
  }
}

Test(e2e, peer_gone_not_here, E2E) {
  start(2, NULL);
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  derp_key unknown;
  e2e_random_key(&unknown);
  /* A non-disco packet to an unknown key is dropped silently. */
  const char data[] = "plain data, not disco";
  cr_assert_eq(derp_client_send(a, &unknown, data, sizeof data), 0);
  struct derp_client_msg m;
  cr_assert_eq(derp_client_recv_packet(a, &m, 500), 0, "non-disco to unknown key got an answer");
  uint8_t disco[64] = DERP_DISCO_MAGIC;
  cr_assert_eq(derp_client_send(a, &unknown, disco, sizeof disco), 0);
  int r = derp_client_recv_packet(a, &m, 2000);
  cr_assert_eq(r, 1, "no PeerGone(not here) within 2 s");
  cr_assert_eq(m.type, DERP_FRAME_PEER_GONE, "got frame type 0x%02x", m.type);
  cr_assert(derp_key_equal(&m.src, &unknown), "PeerGone names another key");
  cr_assert_eq(m.reason, DERP_PEER_GONE_NOT_HERE, "reason %u", m.reason);
}

/* Each sender has its own PeerGone(not here) budget (derper's per
 * connection): 60 senders at once, one shard, 3 disco packets each, and
 * each hears 3 PeerGone. Senders whose keys fell in one of the shard's 256
 * slots shared its tokens (70 of 200 heard nothing in a helper's run). */
Test(e2e, peer_gone_not_here_every_sender, E2E) {
  enum { N = 60 };
  start(1, NULL);
  struct derp_client *c[N];
  for (int i = 0; i < N; i++) c[i] = e2e_client(&g_srv, NULL, false);
  derp_key unknown;
  e2e_random_key(&unknown);
  uint8_t disco[64] = DERP_DISCO_MAGIC;
  for (int k = 0; k < 3; k++) /* derper's burst: 3 answered at once */
    for (int i = 0; i < N; i++) cr_assert_eq(derp_client_send(c[i], &unknown, disco, sizeof disco), 0);
  int short_of = 0, first = -1;
  for (int i = 0; i < N; i++) {
    int heard = 0;
    struct derp_client_msg m;
    while (heard < 3 && derp_client_recv_packet(c[i], &m, 2000) == 1)
      if (m.type == DERP_FRAME_PEER_GONE && m.reason == DERP_PEER_GONE_NOT_HERE && derp_key_equal(&m.src, &unknown))
        heard++;
    if (heard < 3 && short_of++ == 0) first = i;
  }
  cr_assert_eq(short_of, 0, "%d of %d senders heard fewer than 3 PeerGone(not here) (the first: %d)", short_of, N,
               first);
}

/* ---- Batched sleeps (core/shard.c, wait_events) ---- */

enum { BATCH_CLIENTS = 16 };

/* Each client sends to the next one every 500 ms for `ms`, the clients
 * spread evenly over the period (a steady load of 32 packets/s, and a thin
 * stream per client: less than one packet per 200 ms window), in one
 * thread; every packet carries its send time. Latencies (ms) of data
 * packets land in lat[] (at most cap); returns how many arrived. */
static int ring_traffic(struct derp_client **c, int ms, int64_t *lat, int cap, int *sent) {
  int got = 0;
  *sent = 0;
  int64_t start = e2e_now_ms(), end = start + ms, next[BATCH_CLIENTS];
  for (int i = 0; i < BATCH_CLIENTS; i++) next[i] = start + i * 500 / BATCH_CLIENTS;
  while (e2e_now_ms() < end + 1500 && (e2e_now_ms() < end || got < *sent)) {
    for (int i = 0; i < BATCH_CLIENTS; i++) {
      int64_t t = e2e_now_ms();
      if (t < next[i] || t >= end) continue;
      uint8_t pkt[64] = {0};
      memcpy(pkt + 8, &t, sizeof t);
      cr_assert_eq(derp_client_send(c[i], derp_client_public_key(c[(i + 1) % BATCH_CLIENTS]), pkt, sizeof pkt), 0);
      (*sent)++;
      next[i] += 500;
    }
    for (int i = 0; i < BATCH_CLIENTS; i++) {
      struct derp_client_msg m;
      while (derp_client_recv_packet(c[i], &m, 0) == 1) {
        if (m.type != DERP_FRAME_RECV_PACKET || m.packet_len != 64) continue; /* sync markers */
        int64_t t;
        memcpy(&t, m.packet + 8, sizeof t);
        if (got < cap) lat[got] = e2e_now_ms() - t;
        got++;
      }
    }
    e2e_sleep_ms(1);
  }
  return got;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

#define WAITS_BATCH "derpd_shard_waits{mode=\"batch\"}"

/* Under steady load a shard sleeps --batch-wait at a time (200 ms here, so
 * that the effect is plain) and nobody wakes it, across shards too: packets
 * wait, but at most a window at each shard on their way and none is lost.
 * Once the load stops, the shard sleeps idle again: a lone packet is
 * relayed at once, not a window later. */
Test(e2e, batched_sleeps_bounded_then_idle, E2E) {
  start(2, "--batch-wait=200ms --batch-events=4096");
  struct derp_client *c[BATCH_CLIENTS];
  for (int i = 0; i < BATCH_CLIENTS; i++) c[i] = e2e_client(&g_srv, NULL, false);
  for (int i = 0; i < BATCH_CLIENTS; i++) e2e_sync_route(c[i], c[(i + 1) % BATCH_CLIENTS]);
  long long batch0 = derpd_varz(&g_srv, WAITS_BATCH), x0 = derpd_varz(&g_srv, "derpd_cross_shard_packets");
  static int64_t lat[4096];
  int sent;
  int got = ring_traffic(c, 3000, lat, 4096, &sent);
  cr_assert_eq(got, sent, "lost %d of %d packets", sent - got, sent);
  qsort(lat, (size_t)got, sizeof lat[0], cmp_i64);
  int64_t p50 = lat[got / 2], p95 = lat[got * 95 / 100], max = lat[got - 1];
  long long batched = derpd_varz(&g_srv, WAITS_BATCH) - batch0;
  long long crossed = derpd_varz(&g_srv, "derpd_cross_shard_packets") - x0;
  cr_log_info("steady: %d packets, %lld crossed shards; latency p50 %lld p95 %lld max %lld ms; %lld batched sleeps",
              got, crossed, (long long)p50, (long long)p95, (long long)max, batched);
  cr_assert_gt(batched, 0, "no batched sleep under steady load");
  /* Batching is on: packets wait for the window (about half of it at the
   * median), not for the next event. */
  cr_assert_geq(p50, 30, "median latency %lld ms: the 200 ms windows did not hold packets", (long long)p50);
  /* Bounded: a window at the sender's shard, one at the receiver's, and
   * slack for a loaded machine. */
  cr_assert_leq(p95, 1000, "p95 latency %lld ms", (long long)p95);
  /* Idle again within a window or two of the load stopping. */
  e2e_sleep_ms(1000);
  int64_t worst = 0, dts[4] = {0};
  int nd = 0;
  for (int i = 0; i < BATCH_CLIENTS; i++) {
    uint8_t pkt[64] = {0};
    int64_t t0 = e2e_now_ms();
    cr_assert_eq(derp_client_send(c[i], derp_client_public_key(c[(i + 1) % BATCH_CLIENTS]), pkt, sizeof pkt), 0);
    struct derp_client_msg m;
    e2e_recv_data(c[(i + 1) % BATCH_CLIENTS], &m, 2000);
    int64_t dt = e2e_now_ms() - t0;
    if (dt > worst) worst = dt;
    dts[nd++] = dt;
    /* Each probe alone: a probe makes two or three arrivals per shard
     * (the packet, the ring item, the receiver's MSG_SAW back), well under
     * the two per 200 ms window that turn batching on. */
    e2e_sleep_ms(500);
    if (i == 3) break;
  }
  /* The second worst of the four: a still-batching shard holds every probe
   * about a window (200 ms); one probe late by a stall of the test's own
   * (a sanitizer run) is not that. */
  for (int a = 0; a < nd; a++)
    for (int b = a + 1; b < nd; b++)
      if (dts[b] < dts[a]) { int64_t t = dts[a]; dts[a] = dts[b]; dts[b] = t; }
  cr_log_info("idle: lone-packet latency worst %lld ms, second worst %lld ms", (long long)worst,
              (long long)dts[nd - 2]);
  cr_assert_lt(dts[nd - 2], 100, "lone packets after the load waited %lld ms: still batching",
               (long long)dts[nd - 2]);
}

/* --batch-wait 0: every sleep ends at the first event, as before batching. */
Test(e2e, batch_wait_zero_never_batches, E2E) {
  start(2, "--batch-wait=0");
  struct derp_client *c[BATCH_CLIENTS];
  for (int i = 0; i < BATCH_CLIENTS; i++) c[i] = e2e_client(&g_srv, NULL, false);
  for (int i = 0; i < BATCH_CLIENTS; i++) e2e_sync_route(c[i], c[(i + 1) % BATCH_CLIENTS]);
  static int64_t lat[4096];
  int sent;
  int got = ring_traffic(c, 500, lat, 4096, &sent);
  cr_assert_eq(got, sent);
  cr_assert_eq(derpd_varz(&g_srv, WAITS_BATCH), 0);
  cr_assert_gt(derpd_varz(&g_srv, "derpd_shard_waits{mode=\"idle\"}"), 0);
}

/* ---- Ping ---- */

Test(e2e, ping_pong_and_short_ping, E2E) {
  start(2, NULL);
  struct derp_client *c = e2e_client(&g_srv, NULL, false);
  e2e_assert_ping_pong(c);
  e2e_assert_ping_pong(c);
  uint8_t four[4] = {1, 2, 3, 4};
  cr_assert_eq(derp_client_send_raw(c, DERP_FRAME_PING, four, 4), 0);
  cr_assert(e2e_wait_closed(c, 2000), "4-byte ping did not close the connection in 2 s");
  cr_assert(derpd_alive(&g_srv));
}

/* ---- duplicate keys ---- */

ParameterizedTestParameters(e2e, duplicate_keys) {
  static int shards[] = {1, 4};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

/* Send n tagged packets from s to dst, all must reach `on`, none `off`. */
static void check_delivery(struct derp_client *s, struct derp_client *on, struct derp_client *off,
                           const char *what) {
  enum { N = 10 };
  uint32_t tag = (uint32_t)random();
  for (uint32_t i = 0; i < N; i++) {
    uint32_t pkt[2] = {tag, i};
    cr_assert_eq(derp_client_send(s, derp_client_public_key(on), pkt, sizeof pkt), 0);
  }
  for (uint32_t i = 0; i < N; i++) {
    struct derp_client_msg m;
    e2e_recv_data(on, &m, 2000);
    uint32_t want[2] = {tag, i};
    cr_assert(m.packet_len == sizeof want && memcmp(m.packet, want, sizeof want) == 0,
              "%s: packet %u wrong or out of order", what, i);
  }
  expect_no_data(off, 300);
}

ParameterizedTest(int *shards, e2e, duplicate_keys, E2E) {
  start(*shards, NULL);
  struct derp_client *s = e2e_client(&g_srv, NULL, false);
  derp_privkey k;
  struct derp_client *first = e2e_client(&g_srv, &k, false);
  e2e_sync_route(s, first);
  struct derp_client *second = e2e_client_with_key(&g_srv, &k, true);
  /* The newest connection becomes active (maybe after a moment). */
  e2e_sync_route(s, second);
  check_delivery(s, second, first, "newest connection");
  /* The first one speaks: it becomes the active one. */
  cr_assert_eq(derp_client_note_preferred(first, true), 0);
  e2e_sync_route(s, first);
  check_delivery(s, first, second, "after NotePreferred on the first");
}

/* Many connections of one key, closed in any order (middle, active, oldest):
 * each unlinks on its own and the newest remaining one takes over when the
 * active one goes. */
Test(e2e, duplicate_keys_close_any_order, E2E) {
  start(2, NULL);
  enum { N = 6 };
  const char *dups = "derp_current_dup_client_conns";
  struct derp_client *s = e2e_client(&g_srv, NULL, false);
  derp_privkey k;
  struct derp_client *d[N];
  d[0] = e2e_client(&g_srv, &k, false);
  for (int i = 1; i < N; i++) d[i] = e2e_client_with_key(&g_srv, &k, false);
  cr_assert_eq(derpd_varz_eventually(&g_srv, dups, N, 2000), N);
  e2e_sync_route(s, d[N - 1]);
  check_delivery(s, d[N - 1], d[0], "newest of six");
  e2e_close(d[2]);
  e2e_close(d[N - 1]);
  cr_assert_eq(derpd_varz_eventually(&g_srv, dups, N - 2, 2000), N - 2);
  e2e_sync_route(s, d[4]);
  check_delivery(s, d[4], d[3], "newest remaining after the active one closed");
  e2e_close(d[0]);
  e2e_close(d[4]);
  cr_assert_eq(derpd_varz_eventually(&g_srv, dups, 2, 2000), 2);
  e2e_sync_route(s, d[3]);
  check_delivery(s, d[3], d[1], "two left");
  e2e_close(d[1]);
  cr_assert_eq(derpd_varz_eventually(&g_srv, dups, 0, 2000), 0);
  cr_assert_eq(derpd_varz(&g_srv, "derp_current_dup_client_keys"), 0);
  check_delivery(s, d[3], s, "last one");
  e2e_close(d[3]);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_clients_local", 1, 2000), 1);
}

/* derper's pick when the active duplicate goes is the last of its send
 * history still connected, not the newest: the history starts with the
 * set's first conn, takes every conn from the third on as it comes, and
 * every conn that sends a frame. A, B, C of one key: C goes -> A, not B.
 * B speaks -> B; D comes -> D; D goes -> B; B goes -> A. */
/* Closes `gone`, waits until the server counts `dups` duplicate conns, then
 * checks that s's packets reach `on` and not `off`. */
static void dup_close_then(struct derp_client *s, struct derp_client *gone, long long dups,
                           struct derp_client *on, struct derp_client *off, const char *what) {
  const char *name = "derp_current_dup_client_conns";
  e2e_close(gone);
  cr_assert_eq(derpd_varz_eventually(&g_srv, name, dups, 2000), dups, "%s: duplicate conns", what);
  check_delivery(s, on, off, what);
}

Test(e2e, duplicate_keys_derper_pick, E2E) {
  start(2, NULL);
  const char *dups = "derp_current_dup_client_conns";
  struct derp_client *s = e2e_client(&g_srv, NULL, false);
  derp_privkey k;
  struct derp_client *a = e2e_client(&g_srv, &k, false);
  struct derp_client *b = e2e_client_with_key(&g_srv, &k, false);
  struct derp_client *c = e2e_client_with_key(&g_srv, &k, false);
  cr_assert_eq(derpd_varz_eventually(&g_srv, dups, 3, 2000), 3);
  e2e_sync_route(s, c);
  check_delivery(s, c, b, "the newest of three");
  dup_close_then(s, c, 2, a, b, "the first, once the third went (the second never spoke)");
  cr_assert_eq(derp_client_note_preferred(b, true), 0);
  e2e_sync_route(s, b);
  check_delivery(s, b, a, "the second, once it spoke");
  struct derp_client *d = e2e_client_with_key(&g_srv, &k, false);
  cr_assert_eq(derpd_varz_eventually(&g_srv, dups, 3, 2000), 3);
  e2e_sync_route(s, d);
  check_delivery(s, d, b, "a fourth");
  dup_close_then(s, d, 2, b, a, "the last that spoke, once the fourth went");
  dup_close_then(s, b, 0, a, s, "the one left");
}

/* derper's derp_home_moves_in/out: the NotePreferred a client sends as it
 * connects is no move (derper skips the first 5 s); one later is. Pings
 * answered count in derp_sent_pong. */
Test(e2e, home_moves_as_derper, E2E) {
  start(1, NULL);
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  cr_assert_eq(derp_client_note_preferred(a, true), 0);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_current_home_connections", 1, 2000), 1);
  cr_assert_eq(derpd_varz(&g_srv, "derp_home_moves_in"), 0, "the connect's NotePreferred counted as a move");
  e2e_sleep_ms(5200);
  cr_assert_eq(derp_client_note_preferred(a, false), 0);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_current_home_connections", 0, 2000), 0);
  cr_assert_eq(derpd_varz(&g_srv, "derp_home_moves_out"), 1);
  cr_assert_eq(derp_client_note_preferred(a, true), 0);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_home_moves_in", 1, 2000), 1);
  e2e_assert_ping_pong(a);
  cr_assert_eq(derpd_varz(&g_srv, "derp_sent_pong"), 1);
}

/* ---- shutdown ---- */

/* Every client hears Restarting, then the end; none hears PeerGone about
 * another client whose conn happened to close first (derper, stopping,
 * says nothing of the kind; a Tailscale client would drop its route). */
Test(e2e, sigterm_restarting_and_exit, E2E) {
  enum { N = 16 };
  start(2, NULL);
  struct derp_client *c[N];
  for (int i = 0; i < N; i++) c[i] = e2e_client(&g_srv, NULL, i % 2);
  for (int i = 0; i < N; i += 2) {
    e2e_sync_route(c[i], c[i + 1]);
    e2e_sync_route(c[i + 1], c[i]);
  }
  int64_t t0 = e2e_now_ms();
  cr_assert_eq(kill(g_srv.pid, SIGTERM), 0);
  int restarting = 0, gone = 0;
  for (int i = 0; i < N; i++) {
    struct derp_client_msg m;
    int r;
    int64_t deadline = t0 + 3000;
    while ((r = derp_client_recv(c[i], &m, (int)(deadline - e2e_now_ms()))) == 1) {
      if (m.type == DERP_FRAME_RESTARTING) restarting++;
      if (m.type == DERP_FRAME_PEER_GONE) gone++;
    }
    cr_assert_eq(r, -1, "client %d: connection still open 3 s after SIGTERM", i);
  }
  cr_assert_eq(gone, 0, "%d PeerGone frames during the stop", gone);
  cr_assert_eq(restarting, N, "Restarting reached %d of %d clients", restarting, N);
  int status = -1;
  int64_t left = t0 + 3000 - e2e_now_ms();
  cr_assert_eq(derpd_wait(&g_srv, left > 0 ? (int)left : 0, &status), 0,
               "derpd still running 3 s after SIGTERM");
  cr_assert_eq(status, 0, "derpd exit status %d", status);
}

/* derp_accepts and derp_current_connections count what derper counts: DERP
 * upgrades, and client conns registered (a duplicate key's included); probes,
 * scrapes and handshakes in progress are only in derpd_tcp_accepts and
 * derpd_open_connections. */
Test(e2e, connection_counts_as_derper, E2E) {
  start(2, NULL);
  char resp[4096];
  cr_assert_eq(http_request(&g_srv, "GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
  cr_assert_eq(http_request(&g_srv, "GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 204);
  derp_privkey k;
  struct derp_client *a = e2e_client(&g_srv, &k, false);
  struct derp_client *a2 = e2e_client_with_key(&g_srv, &k, false); /* a duplicate */
  struct derp_client *b = e2e_client_ws(&g_srv, NULL, 0);
  int half = raw_connect(&g_srv); /* TCP only: no request yet */
  cr_assert_geq(half, 0);
  e2e_sync_route(b, a2);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_current_connections", 3, 3000), 3);
  cr_assert_eq(derpd_varz(&g_srv, "derp_accepts"), 3, "three DERP upgrades (plain, plain, WebSocket)");
  /* Each scrape is a TCP accept and an open conn of its own. */
  long long tcp = derpd_varz(&g_srv, "derpd_tcp_accepts");
  cr_assert_geq(tcp, 2 + 3 + 1 + 1, "probes, clients, the half-open conn, a scrape: %lld", tcp);
  long long open = derpd_varz(&g_srv, "derpd_open_connections");
  cr_assert_geq(open, 3 + 1 + 1, "clients, the half-open conn, this scrape: %lld", open);
  close(half);
  e2e_close(a);
  e2e_close(b);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_current_connections", 1, 3000), 1, "a2 left");
  cr_assert_eq(derpd_varz(&g_srv, "derp_accepts"), 3);
}

/* derper's derp_tcp_rtt: every TCP client sampled once per lap (10 s; 200 ms
 * here through the test-only variable), WebSocket clients counted once as
 * non-tcp. Loopback round trips are far under 10 ms. */
Test(e2e, tcp_rtt_sampled, E2E) {
  setenv("DERPD_TEST_RTT_LAP_MS", "200", 1);
  start(2, NULL);
  unsetenv("DERPD_TEST_RTT_LAP_MS");
  const char *le10 = "derp_tcp_rtt{le=\"10ms\"}";
  cr_assert_eq(derpd_varz(&g_srv, le10), 0);
  for (int i = 0; i < 4; i++) e2e_client(&g_srv, NULL, false);
  e2e_client_ws(&g_srv, NULL, 0);
  /* Four TCP clients, a lap every 200 ms: at least 8 samples within 2 s. */
  int64_t deadline = e2e_now_ms() + 5000;
  while (derpd_varz(&g_srv, le10) < 8 && e2e_now_ms() < deadline) e2e_sleep_ms(50);
  cr_assert_geq(derpd_varz(&g_srv, le10), 8, "loopback RTT samples in the 10ms bucket");
  cr_assert_eq(derpd_varz(&g_srv, "derp_tcp_rtt{le=\"non-tcp\"}"), 1, "the WebSocket client");
  cr_assert_eq(derpd_varz(&g_srv, "derp_tcp_rtt{le=\"error\"}"), 0);
  cr_assert_eq(derpd_varz(&g_srv, "derp_tcp_rtt{le=\"inf\"}"), 0);
}

/* Once per lap, however few clients a shard has: with a lap of 1 s, four
 * clients give about 4 samples a second. A shard with a handful of conns
 * sampled one every 100 ms tick (a new lap at once), up to 10 a second
 * each: about 20 a second here (derper: one per client per 10 s). */
Test(e2e, tcp_rtt_once_per_lap, E2E) {
  setenv("DERPD_TEST_RTT_LAP_MS", "1000", 1);
  start(2, NULL);
  unsetenv("DERPD_TEST_RTT_LAP_MS");
  const char *le10 = "derp_tcp_rtt{le=\"10ms\"}";
  for (int i = 0; i < 4; i++) e2e_client(&g_srv, NULL, false);
  cr_assert_geq(derpd_varz_eventually(&g_srv, le10, 4, 3000), 4, "the first lap");
  long long v0 = derpd_varz(&g_srv, le10);
  int64_t t0 = e2e_now_ms();
  e2e_sleep_ms(2000);
  long long v1 = derpd_varz(&g_srv, le10);
  int64_t ms = e2e_now_ms() - t0;
  /* At most one lap start per second on each shard, plus the one under way. */
  long long most = 4 * (ms / 1000 + 2);
  cr_assert_leq(v1 - v0, most, "%lld samples of 4 clients in %lld ms (a 1 s lap)", v1 - v0, (long long)ms);
  cr_assert_geq(v1 - v0, 4, "%lld samples of 4 clients in %lld ms", v1 - v0, (long long)ms);
}
