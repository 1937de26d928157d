/* test_e2e_ws.c: DERP over WebSocket against a real derpd, over loopback.
 *
 * Owns the WebSocket contract as clients see it: the upgrade (derper's
 * routing, and the refusals of handshakes RFC 6455 forbids), relaying across shards between WebSocket and
 * plain clients and between two WebSocket clients (with writes split into tiny
 * fragments, so DERP frames and ClientInfo straddle WebSocket frames), ping ->
 * pong, close echoed and counted, a stop ending with close 1001, and
 * protocol errors (unmasked frame, text frame, oversize frame) answered with a close frame that ends only the
 * offending connection. Frames the library would not write are written raw
 * with derp_client_write_bytes after a normal WebSocket handshake. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derp/handshake.h"
#include "e2e_util.h"
#include "lib/wsframe.h"

static struct derpd_proc g_srv;

static void setup(void) { e2e_test_init(); }
static void teardown(void) { e2e_test_fini(&g_srv); }

#define E2E .init = setup, .fini = teardown, .timeout = 60

static void start(int shards) {
  cr_assert_eq(derpd_start(&g_srv, shards, NULL), 0, "derpd did not start");
}

/* One client frame with first byte b0, masked unless told otherwise. */
static size_t raw_frame(uint8_t *out, uint8_t b0, const void *p, size_t n, bool masked) {
  uint8_t key[4] = {(uint8_t)random(), (uint8_t)random(), (uint8_t)random(), (uint8_t)random()};
  size_t h = ws_put_header(out, 0, true, n, masked ? key : NULL);
  out[0] = b0;
  if (n) memcpy(out + h, p, n);
  if (masked) ws_mask(out + h, n, key, 0);
  return h + n;
}

/* Expect the server's close frame with `code` on c
 * and the end of the connection. */
static void expect_ws_close(struct derp_client *c, uint16_t code, const char *what) {
  uint8_t buf[256];
  bool closed = false;
  size_t n = raw_read_until_close(derp_client_fd(c), buf, sizeof buf, 3000, &closed);
  cr_assert(closed, "%s: connection not closed within 3 s", what);
  cr_assert_eq(n, 4, "%s: %zu bytes before the close, want one close frame", what, n);
  uint8_t want[4] = {0x88, 2, (uint8_t)(code >> 8), (uint8_t)code};
  cr_assert(memcmp(buf, want, 4) == 0, "%s: got %02x %02x %02x %02x", what, buf[0], buf[1], buf[2],
            buf[3]);
}

static long long closes(const char *reason) {
  char name[128];
  snprintf(name, sizeof name, "derpd_conn_closed{reason=\"%s\"}", reason);
  return derpd_varz(&g_srv, name);
}

/* Counters are summed from shards; a close is counted when it happens, a
 * moment after the client sees it. */
static void wait_closes(const char *reason, long long want) {
  long long got = -1;
  for (int i = 0; i < 100 && (got = closes(reason)) != want; i++) e2e_sleep_ms(20);
  cr_assert_eq(got, want, "closes{%s} = %lld, want %lld", reason, got, want);
}

/* Writes one raw frame on c, expects the server's close with code, and the
 * close counted under reason. */
static void frame_closes(struct derp_client *c, uint8_t b0, const void *p, size_t n, bool masked,
                         uint16_t code, const char *reason) {
  uint8_t f[64];
  cr_assert(n <= sizeof f - 14);
  size_t len = raw_frame(f, b0, p, n, masked);
  cr_assert_eq(derp_client_write_bytes(c, f, len), 0);
  expect_ws_close(c, code, reason);
  wait_closes(reason, 1);
}

/* ---- the upgrade ---- */

/* derper's routing: Upgrade: websocket is WebSocket only with "derp" in the
 * first Sec-WebSocket-Protocol value; without it the request is taken for a
 * DERP upgrade (very old clients sent Upgrade: WebSocket and spoke DERP). */
Test(e2e_ws, upgrade_routing_as_derper, E2E) {
  start(1);
  char resp[4096], v[128];
  int st = http_request(&g_srv, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 101, "websocket without subprotocol: %d", st);
  cr_assert(http_header(resp, "Upgrade", v, sizeof v) && strcmp(v, "DERP") == 0, "Upgrade: %s", v);
  st = http_request(&g_srv, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    resp, sizeof resp);
  cr_assert_eq(st, 101, "websocket with other subprotocols: %d", st);
  cr_assert(http_header(resp, "Upgrade", v, sizeof v) && strcmp(v, "DERP") == 0, "Upgrade: %s", v);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_upgrades"), 0);
}

/* RFC 6455 handshakes that coder/websocket refuses (derper's websocket.Accept),
 * and an Origin Go cannot parse: status, headers and text as derper v1.78.3
 * answered them. */
Test(e2e_ws, rfc6455_refusals, E2E) {
#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define HEAD11 "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
#define PROTO_V13 "Sec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 13\r\n\r\n"
  static const struct { const char *req; int status; const char *hdr, *val, *body; } t[] = {
      {"GET /derp HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" KEY PROTO_V13, 426, NULL,
       NULL, "WebSocket protocol violation: handshake request must be at least HTTP/1.1: \"HTTP/1.0\"\n"},
      {HEAD11 KEY PROTO_V13, 426, "Upgrade", "websocket",
       "WebSocket protocol violation: Connection header \"\" does not contain Upgrade\n"},
      {"POST /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" KEY PROTO_V13, 405,
       NULL, NULL, "WebSocket protocol violation: handshake request method is not GET but \"POST\"\n"},
      {HEAD11 "Connection: Upgrade\r\n" KEY "Sec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 12\r\n\r\n",
       400, "Sec-WebSocket-Version", "13", "unsupported WebSocket protocol version (only 13 is supported): \"12\"\n"},
      {HEAD11 "Connection: Upgrade\r\n" PROTO_V13, 400, NULL, NULL,
       "WebSocket protocol violation: missing Sec-WebSocket-Key\n"},
      {HEAD11 "Connection: Upgrade\r\n" KEY KEY PROTO_V13, 400, NULL, NULL,
       "WebSocket protocol violation: multiple Sec-WebSocket-Key headers\n"},
      {HEAD11 "Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n" PROTO_V13, 400, NULL, NULL,
       "WebSocket protocol violation: invalid Sec-WebSocket-Key \"AAAAAAAAAAAAAAAAAAAA\", must be a 16 byte "
       "base64 encoded string\n"},
      {HEAD11 "Connection: Upgrade\r\n" KEY "Origin: http://[::1\r\n" PROTO_V13, 403, NULL, NULL,
       "failed to parse Origin header \"http://[::1\": parse \"http://[::1\": missing ']' in host\n"},
  };
#undef KEY
#undef HEAD11
#undef PROTO_V13
  start(2);
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char resp[4096], v[128];
    int st = http_request(&g_srv, t[i].req, resp, sizeof resp);
    cr_assert_eq(st, t[i].status, "%zu: %d", i, st);
    cr_assert(http_header(resp, "X-Content-Type-Options", v, sizeof v) && strcmp(v, "nosniff") == 0, "%zu", i);
    if (t[i].hdr) cr_assert(http_header(resp, t[i].hdr, v, sizeof v) && strcmp(v, t[i].val) == 0, "%zu", i);
    const char *body = strstr(resp, "\r\n\r\n");
    cr_assert_not_null(body);
    cr_assert_str_eq(body + 4, t[i].body, "%zu", i);
  }
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_upgrades"), 0);
}

/* A subprotocol list that has "derp" only inside another token: derper
 * answers 101 without a subprotocol and closes at once with 1008. */
Test(e2e_ws, wrong_subprotocol_101_then_close, E2E) {
  start(1);
  int fd = raw_connect(&g_srv);
  cr_assert_geq(fd, 0);
  static const char req[] = "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: derpx\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n";
  cr_assert_eq(raw_write_all(fd, req, sizeof req - 1), 0);
  char resp[1024];
  bool closed = false;
  size_t n = raw_read_until_close(fd, resp, sizeof resp - 1, 3000, &closed);
  close(fd);
  cr_assert(closed);
  static const char want[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                             "\x88\x28\x03\xf0" "client must speak the derp subprotocol";
  cr_assert_eq(n, sizeof want - 1, "%zu bytes: %.*s", n, (int)n, resp);
  cr_assert(memcmp(resp, want, n) == 0);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_upgrades"), 0);
}

Test(e2e_ws, handshake_and_metrics, E2E) {
  start(2);
  struct derp_client *a = e2e_client_ws(&g_srv, NULL, 0);
  struct derp_client *b = e2e_client_ws(&g_srv, NULL, 1); /* ClientInfo in 1-byte frames */
  cr_assert(derp_key_equal(derp_client_server_key(a), &g_srv.server_key));
  cr_assert_eq(derp_client_server_info(b)->version, 2);
  e2e_sync_route(a, b);
  e2e_sync_route(b, a);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_upgrades"), 2);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_connections"), 2);
  e2e_close(a);
  long long cur = -1;
  for (int i = 0; i < 100 && (cur = derpd_varz(&g_srv, "derpd_websocket_connections")) != 1; i++)
    e2e_sleep_ms(20);
  cr_assert_eq(cur, 1, "websocket connections after one closed: %lld", cur);
}

/* ---- relaying ---- */

ParameterizedTestParameters(e2e_ws, relay_mixed) {
  static int shards[] = {1, 2, 4};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

/* WebSocket <-> plain and WebSocket <-> WebSocket, both ways, several pairs so
 * most cross shards; some writers split every write into 3-byte fragments. */
ParameterizedTest(int *shards, e2e_ws, relay_mixed, E2E) {
  enum { PAIRS = 4 };
  start(*shards);
  for (int p = 0; p < PAIRS; p++) {
    struct derp_client *ws = e2e_client_ws(&g_srv, NULL, p & 1 ? 3 : 0);
    struct derp_client *plain = e2e_client(&g_srv, NULL, p & 2);
    struct derp_client *ws2 = e2e_client_ws(&g_srv, NULL, p & 1 ? 0 : 7);
    e2e_sync_route(ws, plain);
    e2e_sync_route(plain, ws);
    e2e_sync_route(ws, ws2);
    e2e_sync_route(ws2, ws);
    e2e_relay_check(ws, plain, 40);
    e2e_relay_check(plain, ws, 40);
    e2e_relay_check(ws, ws2, 40);
    e2e_relay_check(ws2, ws, 40);
  }
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_upgrades"), 2 * PAIRS);
}

ParameterizedTestParameters(e2e_ws, relay_64k_batches) {
  static int shards[] = {1, 2, 4};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

/* Full-size packets in windows: the server's batches exceed 64 KiB, so their
 * WebSocket headers take the 64-bit length form. */
ParameterizedTest(int *shards, e2e_ws, relay_64k_batches, E2E) {
  enum { PAIRS = 3, COUNT = 12, WINDOW = 6, LEN = DERP_MAX_PACKET };
  start(*shards);
  struct derp_client *tx[PAIRS], *rx[PAIRS];
  for (int p = 0; p < PAIRS; p++) {
    tx[p] = p == 0 ? e2e_client(&g_srv, NULL, false) : e2e_client_ws(&g_srv, NULL, p == 2 ? 1000 : 0);
    rx[p] = e2e_client_ws(&g_srv, NULL, 0);
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
        e2e_recv_data(rx[p], &m, 5000);
        cr_assert_eq(m.packet_len, LEN);
        for (size_t j = 0; j < LEN; j++) buf[j] = (uint8_t)(j * 7 + (j >> 8) + p + base + i);
        cr_assert(memcmp(m.packet, buf, LEN) == 0, "pair %d packet %d corrupt", p, base + i);
      }
  }
}

/* ---- control frames ---- */

Test(e2e_ws, ping_gets_pong, E2E) {
  start(2);
  struct derp_client *c = e2e_client_ws(&g_srv, NULL, 0);
  uint8_t f[64], resp[64];
  size_t n = raw_frame(f, 0x80 | WS_OP_PING, "hello", 5, true);
  cr_assert_eq(derp_client_write_bytes(c, f, n), 0);
  size_t got = raw_read_at_least(derp_client_fd(c), resp, sizeof resp, 7, 3000);
  cr_assert_eq(got, 7, "pong: %zu bytes", got);
  cr_assert(memcmp(resp, "\x8a\x05hello", 7) == 0, "pong frame: %02x %02x", resp[0], resp[1]);
  /* An empty ping, then a pong the server must ignore, then DERP still works. */
  n = raw_frame(f, 0x80 | WS_OP_PONG, "zz", 2, true);
  n += raw_frame(f + n, 0x80 | WS_OP_PING, "", 0, true);
  cr_assert_eq(derp_client_write_bytes(c, f, n), 0);
  got = raw_read_at_least(derp_client_fd(c), resp, sizeof resp, 2, 3000);
  cr_assert_eq(got, 2);
  cr_assert(memcmp(resp, "\x8a\x00", 2) == 0);
  struct derp_client *d = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(c, d);
  e2e_relay_check(d, c, 10);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_websocket_pings"), 2);
}

Test(e2e_ws, derp_ping_inside_websocket, E2E) {
  start(1);
  struct derp_client *c = e2e_client_ws(&g_srv, NULL, 2);
  uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  cr_assert_eq(derp_client_ping(c, data), 0);
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv(c, &m, 2000)) == 1 && m.type != DERP_FRAME_PONG) {}
  cr_assert_eq(r, 1, "no DERP pong: %s", r == 0 ? "timeout" : strerror(errno));
  cr_assert(memcmp(m.ping_data, data, 8) == 0);
}

Test(e2e_ws, close_frame_closes_cleanly, E2E) {
  start(2);
  struct derp_client *a = e2e_client_ws(&g_srv, NULL, 0);
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(a, b); /* a is registered; b will hear it is gone */
  frame_closes(a, 0x80 | WS_OP_CLOSE, "\x03\xe9", 2, true, 1001, "websocket_close"); /* going away */
  cr_assert_eq(closes("websocket_protocol"), 0);
  struct derp_client_msg m;
  int r = derp_client_recv_packet(b, &m, 3000);
  cr_assert_eq(r, 1, "no PeerGone for the closed websocket client");
  cr_assert_eq(m.type, DERP_FRAME_PEER_GONE);
  cr_assert(derp_key_equal(&m.src, derp_client_public_key(a)));
}

/* A stopping derpd ends a WebSocket conn in order: Restarting inside a
 * binary frame, then a close frame 1001 (going away), then the end; a
 * browser sees a clean close, not 1006. */
Test(e2e_ws, stop_sends_going_away, E2E) {
  start(2);
  struct derp_client *c = e2e_client_ws(&g_srv, NULL, 0);
  struct derp_client *d = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(d, c);
  cr_assert_eq(kill(g_srv.pid, SIGTERM), 0);
  uint8_t buf[256];
  bool closed = false;
  size_t n = raw_read_until_close(derp_client_fd(c), buf, sizeof buf, 5000, &closed);
  cr_assert(closed, "connection not closed within 5 s of SIGTERM");
  /* 0x82 13, then the Restarting frame (type, 4-byte length 8, two times), then the close. */
  cr_assert_eq(n, 2 + 13 + 4, "%zu bytes after SIGTERM, want Restarting and a close frame", n);
  cr_assert(buf[0] == 0x82 && buf[1] == 13 && buf[2] == DERP_FRAME_RESTARTING, "first frame %02x %02x %02x",
            buf[0], buf[1], buf[2]);
  uint8_t want[4] = {0x88, 2, 0x03, 0xe9};
  cr_assert(memcmp(buf + 15, want, 4) == 0, "close frame %02x %02x %02x %02x", buf[15], buf[16], buf[17],
            buf[18]);
  int st = -1;
  cr_assert_eq(derpd_wait(&g_srv, 5000, &st), 0, "derpd did not exit");
  cr_assert_eq(st, 0);
}

/* Our close frame is not lost behind a full control queue: a client that
 * stopped reading, asked for 100 pongs (64 fit in its queue) and then sent
 * its close still gets the echo of that close, last, when it reads again. */
Test(e2e_ws, close_frame_past_full_control_queue, E2E) {
  cr_assert_eq(derpd_start(&g_srv, 1, "-tcp-write-timeout 0"), 0, "derpd did not start");
  struct derp_client *tx = e2e_client(&g_srv, NULL, false);
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  struct derp_client *rx = e2e_client_ws(&g_srv, NULL, 0); /* stops reading */
  e2e_sync_route(tx, rx);
  e2e_sync_route(tx, b);
  e2e_fill_receiver(&g_srv, tx, rx, b);
  uint8_t frames[101 * 8];
  size_t n = 0;
  for (int i = 0; i < 100; i++) n += raw_frame(frames + n, 0x80 | WS_OP_PING, "", 0, true);
  n += raw_frame(frames + n, 0x80 | WS_OP_CLOSE, "\x03\xe8", 2, true);
  cr_assert_eq(derp_client_write_bytes(rx, frames, n), 0);
  const char *cd = "derpd_conn_control_frames_dropped";
  cr_assert_eq(derpd_varz_eventually(&g_srv, cd, 36, 3000), 36, "the pongs did not fill the control queue");
  static uint8_t all[16 << 20];
  bool closed = false;
  size_t got = raw_read_until_close(derp_client_fd(rx), all, sizeof all, 5000, &closed);
  cr_assert(closed, "connection not closed within 5 s");
  cr_assert(got >= 4 && got < sizeof all, "%zu bytes read", got);
  uint8_t want[4] = {0x88, 2, 0x03, 0xe8};
  cr_assert(memcmp(all + got - 4, want, 4) == 0, "last bytes %02x %02x %02x %02x, not the close frame 1000",
            all[got - 4], all[got - 3], all[got - 2], all[got - 1]);
  wait_closes("websocket_close", 1);
}

Test(e2e_ws, close_frame_without_code, E2E) {
  start(1);
  struct derp_client *a = e2e_client_ws(&g_srv, NULL, 0);
  frame_closes(a, 0x80 | WS_OP_CLOSE, "", 0, true, 1000, "websocket_close");
}

/* ---- protocol errors: only the offender goes ---- */

ParameterizedTestParameters(e2e_ws, unmasked_frame_closes_only_that_conn) {
  static int shards[] = {1, 2, 4};
  return cr_make_param_array(int, shards, sizeof shards / sizeof shards[0]);
}

ParameterizedTest(int *shards, e2e_ws, unmasked_frame_closes_only_that_conn, E2E) {
  start(*shards);
  struct derp_client *bad = e2e_client_ws(&g_srv, NULL, 0);
  struct derp_client *ws = e2e_client_ws(&g_srv, NULL, 0);
  struct derp_client *plain = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(ws, plain);
  /* a KeepAlive, unmasked */
  frame_closes(bad, 0x80 | WS_OP_BINARY, "\x06\0\0\0\0", 5, false, 1002, "websocket_protocol");
  e2e_relay_check(ws, plain, 20);
  e2e_relay_check(plain, ws, 20);
  cr_assert(derpd_alive(&g_srv));
}

Test(e2e_ws, text_frame_1003, E2E) {
  start(1);
  struct derp_client *c = e2e_client_ws(&g_srv, NULL, 0);
  frame_closes(c, 0x80 | WS_OP_TEXT, "hi", 2, true, 1003, "websocket_protocol");
}

/* A client that leaves right after its bad frame (EOF or reset while our
 * close frame is on its way) is still counted under the reason we closed it
 * for: the first reason stands. The soak's TLS node once counted these eof. */
Test(e2e_ws, error_then_peer_gone_keeps_reason, E2E) {
  start(2);
  enum { N = 40 };
  /* The baseline once the start's readiness probe is closed and counted
   * (eof): seen later, it was taken for one of these (1 run in 9, TSan). */
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_open_connections", 1, 3000), 1);
  long long gone0 = closes("eof") + closes("read_error") + closes("write_error");
  for (int i = 0; i < N; i++) {
    struct derp_client *c = e2e_client_ws(&g_srv, NULL, 0);
    uint8_t f[16];
    size_t n = raw_frame(f, 0x80 | WS_OP_TEXT, "hi", 2, true);
    cr_assert_eq(derp_client_write_bytes(c, f, n), 0);
    e2e_close(c);
  }
  wait_closes("websocket_protocol", N);
  long long gone = closes("eof") + closes("read_error") + closes("write_error");
  cr_assert_eq(gone, gone0, "eof, read_error, write_error: %lld, %lld before", gone, gone0);
}

Test(e2e_ws, oversize_frame_1009, E2E) {
  start(1);
  struct derp_client *c = e2e_client_ws(&g_srv, NULL, 0);
  uint8_t h[WS_HDR_MAX], key[4] = {1, 2, 3, 4};
  size_t n = ws_put_header(h, WS_OP_BINARY, true, (uint64_t)WS_DATA_FRAME_MAX + 1, key);
  cr_assert_eq(derp_client_write_bytes(c, h, n), 0);
  expect_ws_close(c, 1009, "16 MiB + 1");
  wait_closes("websocket_protocol", 1);
}

/* A WebSocket upgrade of /derp, as a raw request head. */
static const char ws_req[] = "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: derp\r\n"
                             "Sec-WebSocket-Version: 13\r\n\r\n";

/* Errors during the handshake (before ClientInfo) end the same way. */
Test(e2e_ws, error_before_client_info, E2E) {
  start(2);
  int fd = raw_connect(&g_srv);
  cr_assert_geq(fd, 0);
  uint8_t buf[4096];
  memcpy(buf, ws_req, sizeof ws_req - 1);
  /* Behind the request head: a masked ping, then an unmasked frame. */
  size_t n = sizeof ws_req - 1;
  n += raw_frame(buf + n, 0x80 | WS_OP_PING, "p", 1, true);
  n += raw_frame(buf + n, 0x82, "x", 1, false);
  cr_assert_eq(raw_write_all(fd, buf, n), 0);
  bool closed = false;
  char resp[4096];
  size_t got = raw_read_until_close(fd, resp, sizeof resp - 1, 3000, &closed);
  close(fd);
  cr_assert(closed);
  resp[got] = 0;
  cr_assert(strncmp(resp, "HTTP/1.1 101 ", 13) == 0, "no 101: %.40s", resp);
  cr_assert(strstr(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
  char *end = strstr(resp, "\r\n\r\n");
  cr_assert_not_null(end);
  uint8_t *f = (uint8_t *)end + 4;
  size_t left = got - (size_t)(f - (uint8_t *)resp);
  /* ServerKey in one binary frame, the pong, then close 1002. */
  cr_assert_geq(left, 2 + 5 + DERP_SERVER_KEY_PAYLOAD_LEN + 3 + 4, "only %zu bytes of frames", left);
  cr_assert_eq(f[0], 0x82);
  cr_assert_eq(f[1], 5 + DERP_SERVER_KEY_PAYLOAD_LEN);
  cr_assert_eq(f[2], DERP_FRAME_SERVER_KEY);
  f += 2 + 5 + DERP_SERVER_KEY_PAYLOAD_LEN;
  cr_assert(memcmp(f, "\x8a\x01p", 3) == 0, "pong: %02x %02x", f[0], f[1]);
  cr_assert(memcmp(f + 3, "\x88\x02\x03\xea", 4) == 0, "close: %02x %02x", f[3], f[4]);
  wait_closes("websocket_protocol", 1);
}

/* 64 pings in the read that finishes ClientInfo fill the control queue with
 * pongs: ServerInfo must still be queued (it was dropped to CONN_CTRL_MAX and
 * the conn was registered without it, hearing DERP frames before ServerInfo). */
Test(e2e_ws, server_info_past_pongs, E2E) {
  start(2);
  int fd = raw_connect(&g_srv);
  cr_assert_geq(fd, 0);
  cr_assert_eq(raw_write_all(fd, ws_req, sizeof ws_req - 1), 0);
  /* The 101 and ServerKey: the key is the server's own (g_srv.server_key). */
  static uint8_t buf[65536];
  size_t want = 0;
  size_t got = 0;
  for (int i = 0; i < 50; i++) {
    got += raw_read_at_least(fd, buf + got, sizeof buf - got, got + 1, 100);
    char *end = memmem(buf, got, "\r\n\r\n", 4);
    if (end && got >= (size_t)((uint8_t *)end + 4 - buf) + 2 + 5 + DERP_SERVER_KEY_PAYLOAD_LEN) {
      want = (size_t)((uint8_t *)end + 4 - buf) + 2 + 5 + DERP_SERVER_KEY_PAYLOAD_LEN;
      break;
    }
  }
  cr_assert(want, "no 101 and ServerKey");
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_info ci = {.version = 2};
  uint8_t cif[DERP_FRAME_HDR_LEN + 512];
  size_t cn = derp_client_info_seal(cif + DERP_FRAME_HDR_LEN, sizeof cif - DERP_FRAME_HDR_LEN, &priv,
                                    &g_srv.server_key, &ci);
  cr_assert(cn > 0);
  derp_frame_put_header(cif, DERP_FRAME_CLIENT_INFO, (uint32_t)cn);
  static uint8_t out[64 * 6 + sizeof cif + 14];
  size_t n = 0;
  for (int i = 0; i < 64; i++) n += raw_frame(out + n, 0x80 | WS_OP_PING, NULL, 0, true);
  n += raw_frame(out + n, 0x82, cif, DERP_FRAME_HDR_LEN + cn, true);
  cr_assert_eq(raw_write_all(fd, out, n), 0); /* one write: one read on the server */
  /* 64 pongs, then a binary frame that starts with ServerInfo. */
  got = raw_read_at_least(fd, buf, sizeof buf, 64 * 2 + 2 + 5, 3000);
  close(fd);
  size_t off = 0;
  int pongs = 0;
  while (off + 2 <= got && buf[off] == (0x80 | WS_OP_PONG)) { off += 2 + (buf[off + 1] & 0x7f); pongs++; }
  cr_assert_eq(pongs, 64, "pongs: %d", pongs);
  cr_assert(off + 3 <= got, "nothing after the pongs");
  cr_assert_eq(buf[off], 0x82);
  cr_assert_eq(buf[off + 2], DERP_FRAME_SERVER_INFO, "first DERP frame: %u, want ServerInfo", buf[off + 2]);
}

/* ---- short writes ---- */

/* A WebSocket receiver that stops reading while full-size packets pour in:
 * the server's 256 KiB batches meet a full socket and are written in pieces
 * (header iovec included), and the queue drops the oldest. Whatever arrives
 * must still parse as WebSocket frames holding whole, in-order packets. */
Test(e2e_ws, short_writes_keep_framing, E2E) {
  enum { COUNT = 300, LEN = DERP_MAX_PACKET };
  start(2);
  struct derp_client *tx = e2e_client(&g_srv, NULL, false);
  struct derp_client *rx = e2e_client_ws(&g_srv, NULL, 0);
  e2e_sync_route(tx, rx);
  static uint8_t buf[LEN];
  for (uint32_t i = 0; i < COUNT; i++) {
    memset(buf, (int)(i & 0xff), LEN);
    memcpy(buf, &i, 4);
    cr_assert_eq(derp_client_send(tx, derp_client_public_key(rx), buf, LEN), 0);
    /* Pauses let batches stall half-written while new packets reuse buffers. */
    if (i % 50 == 49) e2e_sleep_ms(50);
  }
  e2e_sleep_ms(200); /* in all, below the 2 s write timeout */
  int got = 0;
  int64_t last = -1;
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv_packet(rx, &m, 1000)) == 1) {
    if (m.type != DERP_FRAME_RECV_PACKET || m.packet_len < 4) continue;
    if (memcmp(m.packet, E2E_SYNC_MAGIC, E2E_SYNC_MAGIC_LEN) == 0) continue;
    uint32_t seq;
    memcpy(&seq, m.packet, 4);
    cr_assert_eq(m.packet_len, LEN);
    cr_assert_gt((int64_t)seq, last, "packet %u after %lld", seq, (long long)last);
    for (size_t j = 4; j < LEN; j += 997) cr_assert_eq(m.packet[j], (uint8_t)(seq & 0xff));
    last = seq;
    got++;
  }
  cr_assert_eq(r, 0, "receiver connection failed: %s", strerror(errno));
  cr_assert_gt(got, 0);
  cr_assert_eq(last, COUNT - 1, "the newest packet was lost");
  e2e_relay_check(tx, rx, 10);
}

/* A plain sender and a WebSocket receiver, routed, the receiver's socket
 * drained of the route check, so what it reads next is raw server frames. */
static void plain_to_ws(struct derp_client **tx, struct derp_client **rx) {
  *tx = e2e_client(&g_srv, NULL, false);
  *rx = e2e_client_ws(&g_srv, NULL, 0);
  e2e_sync_route(*tx, *rx);
  e2e_sleep_ms(200);
  static uint8_t drain[1 << 20];
  raw_read_at_least(derp_client_fd(*rx), drain, sizeof drain, sizeof drain, 200);
}

/* A receiver that falls behind gets its queue in batches, each one binary
 * message: at most 32 KiB (coder/websocket's default read limit, which
 * Tailscale's clients keep), and still more than one DERP frame each. */
Test(e2e_ws, messages_within_default_read_limit, E2E) {
  start(1);
  struct derp_client *tx, *rx;
  plain_to_ws(&tx, &rx);
  static uint8_t buf[1300];
  memset(buf, 0x5a, sizeof buf);
  for (int i = 0; i < 3000; i++)
    cr_assert_eq(derp_client_send(tx, derp_client_public_key(rx), buf, sizeof buf), 0);
  e2e_sleep_ms(300);
  static uint8_t in[8 << 20];
  size_t n = raw_read_at_least(derp_client_fd(rx), in, sizeof in, sizeof in, 1500);
  size_t off = 0, messages = 0;
  uint64_t maxlen = 0;
  while (off + 2 <= n) { /* server frames: unmasked */
    uint8_t b1 = in[off + 1] & 0x7f;
    size_t h = 2;
    uint64_t len = b1;
    if (b1 == 126) {
      if (off + 4 > n) break;
      len = (uint64_t)in[off + 2] << 8 | in[off + 3];
      h = 4;
    } else if (b1 == 127) {
      if (off + 10 > n) break;
      len = 0;
      for (int i = 0; i < 8; i++) len = len << 8 | in[off + 2 + i];
      h = 10;
    }
    cr_assert_eq(in[off] & 0x0f, 2, "opcode %02x at %zu: not a binary message", in[off], off);
    messages++;
    if (len > maxlen) maxlen = len;
    off += h + len;
  }
  cr_assert_geq(messages, 2, "only %zu messages in %zu bytes", messages, n);
  cr_assert_leq(maxlen, 32768, "a message of %llu bytes", (unsigned long long)maxlen);
  cr_assert_gt(maxlen, 2 * (sizeof buf + 37), "no message held more than one frame (max %llu)",
               (unsigned long long)maxlen);
}

/* A frame larger than a message (a 64 KiB packet) goes as several binary
 * messages of at most 32768 bytes, the read limit Tailscale's Go clients
 * keep (a bigger message ends their connection); the bytes across them are
 * the DERP stream, whole and in order, and a small packet after it follows. */
Test(e2e_ws, big_frame_split_within_read_limit, E2E) {
  start(1);
  struct derp_client *tx, *rx;
  plain_to_ws(&tx, &rx);
  static uint8_t big[DERP_MAX_PACKET];
  for (int k = 0; k < 3; k++) {
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 13 + k);
    cr_assert_eq(derp_client_send(tx, derp_client_public_key(rx), big, sizeof big), 0);
  }
  cr_assert_eq(derp_client_send(tx, derp_client_public_key(rx), "tail", 4), 0);
  const size_t want = 3 * (5 + 32 + sizeof big) + 5 + 32 + 4;
  static uint8_t in[1 << 20], stream[1 << 20];
  size_t n = 0, got = 0, messages = 0, off = 0;
  int64_t deadline = e2e_now_ms() + 5000;
  while (got < want && e2e_now_ms() < deadline) {
    n += raw_read_at_least(derp_client_fd(rx), in + n, sizeof in - n, 1, 200);
    while (off + 4 <= n) { /* server frames: unmasked, FIN binary, 16-bit lengths at most */
      cr_assert_eq(in[off], 0x82, "frame byte %02x at %zu: not a whole binary message", in[off], off);
      uint64_t len = in[off + 1] & 0x7f;
      size_t h = 2;
      cr_assert_neq(len, 127, "a message over 64 KiB at %zu", off);
      if (len == 126) len = (uint64_t)in[off + 2] << 8 | in[off + 3], h = 4;
      cr_assert_leq(len, 32768, "a message of %llu bytes", (unsigned long long)len);
      if (off + h + len > n) break;
      memcpy(stream + got, in + off + h, len);
      got += len;
      off += h + len;
      messages++;
    }
  }
  cr_assert_eq(got, want, "%zu of %zu stream bytes in %zu messages", got, want, messages);
  cr_assert_geq(messages, 7, "%zu messages: the big frames were not split", messages);
  size_t at = 0;
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(stream[at], DERP_FRAME_RECV_PACKET, "frame %d type %02x", k, stream[at]);
    uint32_t flen = (uint32_t)stream[at + 1] << 24 | (uint32_t)stream[at + 2] << 16 | (uint32_t)stream[at + 3] << 8 | stream[at + 4];
    cr_assert_eq(flen, 32 + sizeof big, "frame %d length %u", k, flen);
    for (size_t i = 0; i < sizeof big; i++)
      if (stream[at + 37 + i] != (uint8_t)(i * 13 + k)) cr_assert_fail("packet %d corrupt at byte %zu", k, i);
    at += 5 + flen;
  }
  cr_assert(stream[at] == DERP_FRAME_RECV_PACKET && memcmp(stream + at + 37, "tail", 4) == 0, "the small packet after");
}
