/* test_e2e_accept.c: end-to-end tests of how derpd treats accepted
 * connections: -accept-connection-limit / -accept-connection-burst (a
 * storm is accepted and closed at once, counted, and the server goes on),
 * and the TCP keepalive that -tcp-keepalive-time sets, read back from the
 * kernel's /proc/net/tcp. Each test starts its own derpd. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "e2e_util.h"

static struct derpd_proc g_srv;

static void setup(void) { e2e_test_init(); }
static void teardown(void) { e2e_test_fini(&g_srv); }

#define E2E .init = setup, .fini = teardown, .timeout = 60

#define STORM 40

/* /debug/varz is a connection too, and the limit may refuse it: try again
 * once the bucket has a token (5/s). */
static long long varz_limited(const char *name) {
  long long v = -1;
  for (int i = 0; i < 20 && (v = derpd_varz(&g_srv, name)) < 0; i++) e2e_sleep_ms(250);
  return v;
}

Test(e2e_accept, limit_closes_the_rest_at_once, E2E) {
  e2e_start(&g_srv, 2, "-accept-connection-limit 5 -accept-connection-burst 5");
  cr_assert(!derpd_log_contains(&g_srv, "limits nothing"));
  /* The readiness probe took a token; let the bucket fill again. */
  e2e_sleep_ms(1100);
  int fds[STORM];
  for (int i = 0; i < STORM; i++) {
    fds[i] = raw_connect(&g_srv);
    cr_assert_geq(fds[i], 0, "connect %d: %s", i, strerror(errno));
  }
  static const char req[] = "GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n";
  int served = 0, refused = 0;
  int64_t t0 = e2e_now_ms();
  for (int i = 0; i < STORM; i++) {
    raw_write_all(fds[i], req, sizeof req - 1); /* a refused one may reset: fine */
    char resp[512];
    bool closed = false;
    size_t n = raw_read_until_close(fds[i], resp, sizeof resp - 1, 3000, &closed);
    resp[n] = 0;
    cr_assert(closed, "connection %d neither served nor closed", i);
    if (n == 0) refused++;
    else if (strncmp(resp, "HTTP/1.1 204", 12) == 0) served++;
    else cr_assert_fail("connection %d: unexpected answer %.40s", i, resp);
    close(fds[i]);
  }
  int64_t took = e2e_now_ms() - t0;
  cr_assert(served >= 5 && served <= 10, "%d of %d served (burst 5, 5/s)", served, STORM);
  cr_assert_eq(served + refused, STORM);
  cr_assert_lt(took, 3000, "refused connections were not closed at once (%lld ms)", (long long)took);
  /* A second later the bucket has tokens again: a client gets in. */
  e2e_sleep_ms(1100);
  struct derp_client *c = e2e_client(&g_srv, NULL, false);
  e2e_assert_ping_pong(c);
  cr_assert(derpd_alive(&g_srv), "derpd exited (derper v1.78.3 does, at the first refusal)");
  /* At least the storm's refusals (a refused varz read adds one). */
  long long rejected = varz_limited("tls_listener_rejected_connections");
  cr_assert_geq(rejected, refused);
  cr_assert_geq(varz_limited("derpd_conn_closed{reason=\"accept_limit\"}"), rejected);
  long long admitted = varz_limited("tls_listener_accepted_connections");
  cr_assert_geq(admitted, served + 3, "admitted %lld: the probe, %d served, the client, this request",
                admitted, served);
}

/* STORM connections at once, each served. */
static void storm_all_served(void) {
  int fds[STORM];
  for (int i = 0; i < STORM; i++) cr_assert_geq(fds[i] = raw_connect(&g_srv), 0);
  for (int i = 0; i < STORM; i++) {
    char resp[64];
    static const char req[] = "GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(raw_write_all(fds[i], req, sizeof req - 1), 0);
    cr_assert_geq(raw_read_at_least(fds[i], resp, sizeof resp, 12, 3000), 12, "connection %d not served", i);
    close(fds[i]);
  }
  cr_assert_eq(derpd_varz(&g_srv, "tls_listener_rejected_connections"), 0);
}

/* Without the flags nothing is refused. */
Test(e2e_accept, no_limit_by_default, E2E) {
  e2e_start(&g_srv, 1, NULL);
  storm_all_served();
}

/* A limit without a burst limits nothing (derper's default burst is
 * MaxInt), and derpd says so at start. */
Test(e2e_accept, limit_without_burst_warns, E2E) {
  e2e_start(&g_srv, 1, "-accept-connection-limit 5");
  cr_assert(derpd_log_contains(&g_srv, "-accept-connection-limit 5 limits nothing without -accept-connection-burst"));
  storm_all_served();
}

/* The server's end of a connection, found by the client's local port in
 * /proc/net/tcp: its timer kind (2 = keepalive) and ticks (USER_HZ) left. */
static bool server_timer(uint16_t server_port, int fd, int *kind, long *ticks) {
  struct sockaddr_in sa;
  socklen_t l = sizeof sa;
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &l), 0);
  FILE *f = fopen("/proc/net/tcp", "r");
  cr_assert_not_null(f);
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    unsigned lport, rport, st, tr;
    unsigned long when;
    if (sscanf(line, " %*d: %*8x:%4x %*8x:%4x %2x %*8x:%*8x %2x:%8lx", &lport, &rport, &st, &tr, &when) != 5)
      continue;
    if (lport == server_port && rport == ntohs(sa.sin_port) && st == 1 /* established */) {
      *kind = (int)tr;
      *ticks = (long)when;
      found = true;
    }
  }
  fclose(f);
  return found;
}

/* The server's timer on fd's connection, once it is `want` (<= 2 s; the
 * last one seen otherwise). The upgrade first: derpd has then surely
 * accepted the connection and set its options. */
static int wait_server_timer(int fd, int want, long *ticks) {
  cr_assert_eq(raw_derp_upgrade(&g_srv, fd), 0, "DERP upgrade failed");
  int kind = -1;
  for (int64_t end = e2e_now_ms() + 2000; e2e_now_ms() < end; e2e_sleep_ms(20))
    if (server_timer(g_srv.port, fd, &kind, ticks) && kind == want) break;
  cr_assert_neq(kind, -1, "the server's socket is not in /proc/net/tcp");
  return kind;
}

/* derpd started with flag: the server's end of an idle connection has
 * timer `want` (2: keepalive, within max_ticks; 0: none). */
static void check_keepalive(const char *flag, int want, long max_ticks) {
  e2e_start(&g_srv, 1, flag);
  int fd = raw_connect(&g_srv);
  cr_assert_geq(fd, 0);
  long ticks = -1;
  int kind = wait_server_timer(fd, want, &ticks);
  cr_assert_eq(kind, want, "%s: timer kind %d, want %d", flag, kind, want);
  if (want == 2) cr_assert(ticks > 0 && ticks <= max_ticks, "%s: keepalive due in %ld ticks", flag, ticks);
  close(fd);
}

Test(e2e_accept, tcp_keepalive_time, E2E) { check_keepalive("-tcp-keepalive-time 7s", 2, 700); }

/* Negative: no TCP keepalive at all (Go's rule). */
Test(e2e_accept, tcp_keepalive_off, E2E) { check_keepalive("-tcp-keepalive-time=-1s", 0, 0); }

/* derper's default, 10 minutes (the kernel's own is 2 hours). */
Test(e2e_accept, tcp_keepalive_default, E2E) { check_keepalive("", 2, 60000); }
