/* test_rate_limit.c: -rate-config end to end (derper v1.98's per-client
 * receive rate limit; src/server/core/recv_pause.c).
 *
 * Owns what a client over its rate sees: its packets all arrive, in order,
 * paced to the rate (its reads wait, nothing is dropped) while other clients
 * and mesh peers relay at full speed; SIGHUP applies a new file at once (a
 * paused client goes on) and keeps the limit when the file is bad; a bad file
 * at start stops derpd with the reason. Timing is asserted only with wide
 * margins (the paced transfer takes at least 9/10 of its theoretical time:
 * derpd relays the frame that runs the bucket into debt and then waits,
 * where derper waits first, so it ends one frame ahead, 1/40 here;
 * the unpaced ones take under a third of the paced one). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e_util.h"

static struct derpd_proc g_srv;
static char g_rate_path[64], g_mesh_path[64];
static const char g_mesh_key[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert(f, "%s", path);
  fputs(text, f);
  fclose(f);
}

static void setup(void) {
  e2e_test_init();
  snprintf(g_rate_path, sizeof g_rate_path, "/tmp/derpd-rate-%d.json", (int)getpid());
  snprintf(g_mesh_path, sizeof g_mesh_path, "/tmp/derpd-rate-mesh-%d.key", (int)getpid());
  write_file(g_mesh_path, g_mesh_key);
}

static void teardown(void) {
  e2e_test_fini(&g_srv);
  unlink(g_rate_path);
  unlink(g_mesh_path);
}

#define RL .init = setup, .fini = teardown, .timeout = 120

static void start(const char *rate_json) {
  write_file(g_rate_path, rate_json);
  char args[256];
  snprintf(args, sizeof args, "-rate-config %s -mesh-psk-file %s", g_rate_path, g_mesh_path);
  e2e_start(&g_srv, 2, args);
}

static void hup(void) { cr_assert_eq(kill(g_srv.pid, SIGHUP), 0); }

enum { NPKT = 40, PKT = 16000 };

struct sender {
  struct derp_client *from;
  const derp_key *to;
  int n;
  int err;
};

static void *send_all(void *arg) {
  struct sender *s = arg;
  uint8_t buf[PKT];
  for (int i = 0; i < s->n && !s->err; i++) {
    memset(buf, (uint8_t)i, sizeof buf);
    memcpy(buf, &i, sizeof i);
    if (derp_client_send(s->from, s->to, buf, sizeof buf) != 0) s->err = 1;
  }
  return NULL;
}

/* Receives packets [first, n) of send_all's stream from `from`, in order and whole. */
static void recv_stream(struct derp_client *to, struct derp_client *from, int first, int n) {
  for (int i = first; i < n; i++) {
    struct derp_client_msg m;
    e2e_recv_data(to, &m, 10000);
    cr_assert(derp_key_equal(&m.src, derp_client_public_key(from)), "packet %d: wrong source", i);
    cr_assert_eq(m.packet_len, PKT, "packet %d: length %u", i, m.packet_len);
    int seq;
    memcpy(&seq, m.packet, sizeof seq);
    cr_assert_eq(seq, i, "packet %d arrived as %d: lost or out of order", i, seq);
    cr_assert_eq(m.packet[PKT - 1], (uint8_t)i, "packet %d corrupt", i);
  }
}

/* The whole stream from `from` to `to`, in ms; `during` runs while it flows. */
static int64_t timed_stream_n(struct derp_client *from, struct derp_client *to, int n,
                              void (*during)(void *), void *arg) {
  struct sender s = {from, derp_client_public_key(to), n, 0};
  pthread_t t;
  int64_t t0 = e2e_now_ms();
  cr_assert_eq(pthread_create(&t, NULL, send_all, &s), 0);
  if (during) during(arg);
  recv_stream(to, from, 0, n);
  int64_t ms = e2e_now_ms() - t0;
  pthread_join(t, NULL);
  cr_assert_eq(s.err, 0, "a send failed");
  return ms;
}

static int64_t timed_stream(struct derp_client *from, struct derp_client *to, void (*during)(void *),
                            void *arg) {
  return timed_stream_n(from, to, NPKT, during, arg);
}

struct pair { struct derp_client *a, *b; int64_t ms; };
static void other_pair(void *arg) { /* while the paced client waits */
  struct pair *p = arg;
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_rate_limit_paused_connections", 1, 5000), 1);
  p->ms = e2e_relay_check(p->a, p->b, 32);
}

static struct derp_client *mesh_client(derp_privkey *priv) {
  struct derp_client_opts o = {.host = "127.0.0.1", .port = g_srv.port, .priv = priv,
                               .server_key = &g_srv.server_key, .mesh_key = g_mesh_key,
                               .timeout_ms = 5000};
  struct derp_client *c = NULL;
  char err[256];
  cr_assert_eq(derp_client_connect(&c, &o, err, sizeof err), 0, "mesh client: %s", err);
  return c;
}

Test(rate_limit, paces_a_client_and_no_one_else, RL) {
  /* 400 kB/s; the burst is raised to 65568 (derper's minimum). */
  start("{\"PerClientRateLimitBytesPerSec\": 400000, \"PerClientRateBurstBytes\": 1}");
  cr_assert_eq(derpd_varz(&g_srv, "derp_rate_limit_per_client_bytes_per_second"), 400000);
  cr_assert_eq(derpd_varz(&g_srv, "derp_rate_limit_per_client_burst_bytes"), 65568);
  struct derp_client *a = e2e_client(&g_srv, NULL, false), *b = e2e_client(&g_srv, NULL, false);
  struct derp_client *c = e2e_client(&g_srv, NULL, false), *d = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(a, b);
  e2e_sync_route(c, d);

  struct pair cd = {c, d, 0};
  int64_t paced = timed_stream(a, b, other_pair, &cd);
  /* The last frame is read once the others' debt is paid (each frame may
   * leave the bucket in debt): (39 x 16032 - 65568) / 400000 = 1.40 s at the
   * least. */
  int64_t floor_ms = (int64_t)((NPKT - 1) * (PKT + 32) - 65568) * 1000 / 400000;
  cr_log_info("paced: %lld ms (rate floor %lld ms); another pair meanwhile: %lld ms",
              (long long)paced, (long long)floor_ms, (long long)cd.ms);
  cr_assert(paced >= floor_ms * 19 / 20, "paced in %lld ms, under the rate's %lld", (long long)paced,
            (long long)floor_ms);
  cr_assert(cd.ms * 3 < paced, "another pair took %lld ms while one client was paced (%lld ms)",
            (long long)cd.ms, (long long)paced);
  cr_assert(derpd_varz(&g_srv, "derp_rate_limit_per_client_waited") > 0);
  cr_assert(derpd_varz(&g_srv, "derpd_rate_limit_pauses") > 0);
  cr_assert_eq(derpd_varz_sum(&g_srv, "derp_packets_dropped"), 0, "pacing must not drop");
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_rate_limit_paused_connections", 0, 3000), 0);

  /* A mesh peer is exempt: the same stream at full speed. */
  derp_privkey mp;
  derp_key mpub;
  derp_key_generate(&mp, &mpub);
  struct derp_client *m = mesh_client(&mp);
  e2e_sync_route(m, b);
  int64_t mesh = timed_stream(m, b, NULL, NULL);
  cr_log_info("mesh peer: %lld ms", (long long)mesh);
  cr_assert(mesh * 3 < paced, "mesh peer took %lld ms, paced client %lld", (long long)mesh,
            (long long)paced);
  derp_client_close(m);
}

Test(rate_limit, sighup_applies_a_new_file_and_keeps_the_limit_on_a_bad_one, RL) {
  start("{\"PerClientRateLimitBytesPerSec\": 100000}");
  struct derp_client *a = e2e_client(&g_srv, NULL, false), *b = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(a, b);
  struct sender s = {a, derp_client_public_key(b), NPKT, 0};
  pthread_t t;
  int64_t t0 = e2e_now_ms();
  cr_assert_eq(pthread_create(&t, NULL, send_all, &s), 0);
  /* Past the burst (4 packets) the stream is paced at 6 packets a second. */
  recv_stream(b, a, 0, 6);
  cr_assert(derpd_varz(&g_srv, "derp_rate_limit_per_client_waited") > 0);

  write_file(g_rate_path, "{\"PerClientRateLimitBytesPerSec\": ");
  hup();
  for (int i = 0; i < 250 && !derpd_log_contains(&g_srv, "rate config reload failed"); i++)
    e2e_sleep_ms(20);
  cr_assert(derpd_log_contains(&g_srv, "rate config reload failed, keeping the limit in force"));
  cr_assert_eq(derpd_varz(&g_srv, "derp_rate_limit_per_client_bytes_per_second"), 100000);

  /* No limit: the paused client goes on at once (40 x 16 kB at 100 kB/s
   * would take 6 s). */
  write_file(g_rate_path, "{\"PerClientRateLimitBytesPerSec\": 0}");
  hup();
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_rate_limit_per_client_bytes_per_second", 0, 5000), 0);
  recv_stream(b, a, 6, NPKT);
  int64_t ms = e2e_now_ms() - t0;
  pthread_join(t, NULL);
  cr_assert_eq(s.err, 0);
  cr_log_info("stream with the limit lifted midway: %lld ms", (long long)ms);
  cr_assert(ms < 4000, "the rest waited for the old limit: %lld ms", (long long)ms);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_rate_limit_paused_connections"), 0);
  cr_assert(derpd_log_contains(&g_srv, "client-rate=0 bytes/sec"));
}

Test(rate_limit, paces_websocket_clients_too, RL) {
  /* Frames counted after the WebSocket layer: the same pacing. */
  start("{\"PerClientRateLimitBytesPerSec\": 400000}");
  struct derp_client *a = e2e_client_ws(&g_srv, NULL, 0), *b = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(a, b);
  int64_t paced = timed_stream_n(a, b, 20, NULL, NULL);
  int64_t floor_ms = (int64_t)(19 * (PKT + 32) - 65568) * 1000 / 400000;
  cr_log_info("WebSocket, paced: %lld ms (rate floor %lld ms)", (long long)paced, (long long)floor_ms);
  cr_assert(paced >= floor_ms * 19 / 20, "paced in %lld ms, under the rate's %lld", (long long)paced,
            (long long)floor_ms);
  cr_assert(derpd_varz(&g_srv, "derpd_rate_limit_pauses") > 0);
}

/* Ping, wait (up to wait_ms) for the Pong behind whatever was sent before
 * it; ms from t0 to the Pong. */
static int64_t pong_after(struct derp_client *a, int64_t t0, int wait_ms) {
  static const uint8_t ping[8] = "skipped!";
  cr_assert_eq(derp_client_ping(a, ping), 0);
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv(a, &m, wait_ms)) == 1 && m.type != DERP_FRAME_PONG) {}
  cr_assert_eq(r, 1, "no Pong");
  return e2e_now_ms() - t0;
}

/* Frames derpd skips (an unknown type here; a client's Pong or KeepAlive
 * too) cost tokens as every frame does in derper: 40 x 16 KiB of them, then
 * a Ping, whose Pong waits for the rate. */
Test(rate_limit, skipped_frames_cost_tokens, RL) {
  start("{\"PerClientRateLimitBytesPerSec\": 400000}");
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  static uint8_t junk[PKT + 32];
  memset(junk, 0x33, sizeof junk);
  int64_t t0 = e2e_now_ms();
  for (int i = 0; i < NPKT; i++) cr_assert_eq(derp_client_send_raw(a, 0x30, junk, sizeof junk), 0);
  int64_t ms = pong_after(a, t0, 10000);
  int64_t floor_ms = (int64_t)(NPKT * (PKT + 32) - 65568) * 1000 / 400000;
  cr_log_info("skipped frames, then a Ping: Pong after %lld ms (rate floor %lld ms)", (long long)ms,
              (long long)floor_ms);
  cr_assert(ms >= floor_ms * 19 / 20, "Pong after %lld ms: the skipped frames cost nothing (floor %lld)",
            (long long)ms, (long long)floor_ms);
  cr_assert_eq(derpd_varz(&g_srv, "derp_unknown_frames"), NPKT);
}

/* Skipped frames in the same read as a frame that pauses the conn are
 * charged too (they were forgiven: junk between packets went at 3x the rate). */
Test(rate_limit, skipped_frames_charged_while_paused, RL) {
  start("{\"PerClientRateLimitBytesPerSec\": 400000}");
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  static uint8_t junk[14000], pkt[2000];
  memset(junk, 0x33, sizeof junk);
  memset(pkt, 0x44, sizeof pkt);
  derp_key dst;
  memset(dst.b, 7, sizeof dst.b);
  int64_t t0 = e2e_now_ms();
  for (int i = 0; i < NPKT; i++) {
    cr_assert_eq(derp_client_send_raw(a, 0x30, junk, sizeof junk), 0);
    cr_assert_eq(derp_client_send(a, &dst, pkt, sizeof pkt), 0);
  }
  int64_t ms = pong_after(a, t0, 20000);
  int64_t floor_ms = (int64_t)(NPKT * (sizeof junk + sizeof pkt + 32) - 65568) * 1000 / 400000;
  cr_log_info("junk and packets, then a Ping: Pong after %lld ms (rate floor %lld ms)", (long long)ms,
              (long long)floor_ms);
  cr_assert(ms >= floor_ms * 19 / 20, "Pong after %lld ms: skipped frames went uncharged (floor %lld)",
            (long long)ms, (long long)floor_ms);
}

Test(rate_limit, bad_file_at_start_stops_derpd, RL) {
  char cmd[512], out[4096] = "";
  snprintf(cmd, sizeof cmd, "%s -dev -a 127.0.0.1:0 -stun=false -rate-config /nonexistent/rate.json 2>&1",
           e2e_derpd_bin());
  int st = e2e_run_capture(cmd, out, sizeof out);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d: %s", st, out);
  cr_assert(strstr(out, "loading rate config: error reading rate config"), "%s", out);
}
