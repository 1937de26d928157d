/* test_bench_smoke.c: derp-bench runs end to end against a real derpd.
 *
 * Owns running the derp-bench binary ($DERP_BENCH_BIN, else
 * ./build/bench/derp-bench) as a child with a deadline, capturing its JSON
 * report, and checking the report's shape and the invariants that hold on
 * any machine: packets were delivered, a closed loop on pairs loses nothing,
 * churn completes handshakes, idle reports the server's RSS; the same over
 * TLS (derpd with a self-signed certificate; one run pins it, one skips
 * verification); --servers across two meshed derpd nodes (a region), where
 * every packet is forwarded. No timing thresholds: speed depends on the
 * machine, correctness does not. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "e2e_util.h"

#define BENCH_DEADLINE_MS 30000
#define MAX_ARGV 40

static struct derpd_proc g_srv;

static void setup(void) {
  e2e_test_init();
  cr_assert_eq(derpd_start(&g_srv, 2, NULL), 0, "derpd did not start");
}

/* Criterion ignores a failed assertion in .fini: a crash aborts instead. */
static void fail_if_crashed(void) {
  if (!e2e_crash_seen()) return;
  fprintf(stderr, "bench_smoke: derpd crashed during the test (its log is above)\n");
  abort();
}

static void teardown(void) {
  derpd_kill(&g_srv);
  fail_if_crashed();
}

/* ---- TLS: derpd with -certmode selfsigned, as test_tls_e2e.c starts it ---- */

static char g_certdir[64];

static void setup_tls(void) {
  e2e_test_init();
  snprintf(g_certdir, sizeof g_certdir, "/tmp/derpd-bench-certs-XXXXXX");
  cr_assert(mkdtemp(g_certdir), "mkdtemp: %s", strerror(errno));
  char args[200];
  snprintf(args, sizeof args,
           "-certmode selfsigned -certdir %s -hostname localhost -http-port -1", g_certdir);
  cr_assert_eq(derpd_start(&g_srv, 2, args), 0, "derpd (TLS) did not start");
}

static void teardown_tls(void) {
  derpd_kill(&g_srv);
  fail_if_crashed();
  e2e_rm_dir(g_certdir);
}

/* SHA-256 of the server's certificate (the first PEM block's DER), in hex. */
static void cert_sha256_hex(char hex[65]) {
  char path[128], pem[16384], b64[16384];
  snprintf(path, sizeof path, "%s/localhost.crt", g_certdir);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  size_t n = fread(pem, 1, sizeof pem - 1, f);
  fclose(f);
  pem[n] = 0;
  const char *begin = strstr(pem, "-----BEGIN CERTIFICATE-----");
  cr_assert_not_null(begin, "no certificate in %s", path);
  begin = strchr(begin, '\n');
  const char *end = begin ? strstr(begin, "-----END CERTIFICATE-----") : NULL;
  cr_assert(begin && end, "truncated certificate in %s", path);
  size_t bl = (size_t)(end - begin);
  memcpy(b64, begin, bl);
  uint8_t der[12288], sum[crypto_hash_sha256_BYTES];
  size_t dl = 0;
  cr_assert_eq(sodium_base642bin(der, sizeof der, b64, bl, "\r\n", &dl, NULL,
                                 sodium_base64_VARIANT_ORIGINAL),
               0, "bad base64 in %s", path);
  crypto_hash_sha256(sum, der, dl);
  sodium_bin2hex(hex, 65, sum, sizeof sum);
}

static const char *bench_bin(void) {
  const char *b = getenv("DERP_BENCH_BIN");
  return b && *b ? b : "./build/bench/derp-bench";
}

/* Split "extra" on spaces into argv after the common flags. */
static void build_argv(char **argv, char *server_flag, char *server, char *pid, char *extra) {
  int n = 0;
  argv[n++] = (char *)bench_bin();
  argv[n++] = server_flag;
  argv[n++] = server;
  argv[n++] = "--server-pid";
  argv[n++] = pid;
  argv[n++] = "--json";
  argv[n++] = "--quiet";
  for (char *tok = strtok(extra, " "); tok && n < MAX_ARGV - 1; tok = strtok(NULL, " "))
    argv[n++] = tok;
  argv[n] = NULL;
}

/* Read the child's stdout until EOF or the deadline; returns bytes read. */
static size_t read_all(int fd, char *out, size_t cap, int64_t deadline) {
  size_t n = 0;
  while (n + 1 < cap) {
    int left = (int)(deadline - e2e_now_ms());
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, left) <= 0) break;
    ssize_t r = read(fd, out + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  out[n] = 0;
  return n;
}

/* Reap the child by the deadline: 0 = reaped (*st set), -1 = still running. */
static int wait_child(pid_t child, int64_t deadline, int *st) {
  for (;;) {
    pid_t r = waitpid(child, st, WNOHANG);
    if (r == child) return 0;
    if (r < 0 || e2e_now_ms() >= deadline) return -1;
    e2e_sleep_ms(10);
  }
}

/* The interval lines (--report-every) of the last run_bench, in order. */
static json_t *g_intervals;

/* Run derp-bench on the given servers (n of them: --server, or --servers
 * with every one's pid) with the given extra flags; returns its parsed JSON
 * report (caller decrefs) and asserts it exited `want` within the deadline. */
static json_t *run_bench_want(const struct derpd_proc *const *srv, int n, const char *extra_flags, int want) {
  char server[256] = "", pid[128] = "", extra[512], *argv[MAX_ARGV];
  for (int i = 0; i < n; i++) {
    size_t sl = strlen(server), pl = strlen(pid);
    snprintf(server + sl, sizeof server - sl, "%s127.0.0.1:%u", i ? "," : "", srv[i]->port);
    snprintf(pid + pl, sizeof pid - pl, "%s%d", i ? "," : "", (int)srv[i]->pid);
  }
  snprintf(extra, sizeof extra, "%s", extra_flags);
  build_argv(argv, n > 1 ? "--servers" : "--server", server, pid, extra);
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t child = fork();
  cr_assert_geq(child, 0, "fork: %s", strerror(errno));
  if (child == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  static char out[64 * 1024];
  int64_t deadline = e2e_now_ms() + BENCH_DEADLINE_MS;
  read_all(fds[0], out, sizeof out, deadline);
  close(fds[0]);
  int st = 0;
  if (wait_child(child, deadline, &st) < 0) {
    kill(child, SIGKILL);
    waitpid(child, &st, 0);
    cr_assert_fail("derp-bench %s: did not finish in %d ms", extra_flags, BENCH_DEADLINE_MS);
  }
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == want, "derp-bench %s: exit status %d, want %d; stdout: %s",
            extra_flags, WIFEXITED(st) ? WEXITSTATUS(st) : -1, want, out);
  json_decref(g_intervals);
  g_intervals = json_array();
  json_t *j = NULL;
  for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    json_error_t jerr;
    if (j) json_array_append_new(g_intervals, j);
    j = json_loads(line, 0, &jerr);
    cr_assert_not_null(j, "derp-bench %s: JSON does not parse (%s): %s", extra_flags, jerr.text,
                       line);
  }
  cr_assert_not_null(j, "derp-bench %s: no output", extra_flags);
  cr_assert(json_is_object(j), "report is not an object");
  return j;
}

static json_t *run_bench_on(const struct derpd_proc *const *srv, int n, const char *extra_flags) {
  return run_bench_want(srv, n, extra_flags, 0);
}

static json_t *run_bench(const char *extra_flags) {
  const struct derpd_proc *srv = &g_srv;
  return run_bench_on(&srv, 1, extra_flags);
}

static json_int_t get_int(json_t *j, const char *key) {
  json_t *v = json_object_get(j, key);
  cr_assert(json_is_integer(v), "report field %s missing or not an integer", key);
  return json_integer_value(v);
}

static double get_num(json_t *j, const char *key) {
  json_t *v = json_object_get(j, key);
  cr_assert(json_is_number(v), "report field %s missing or not a number", key);
  return json_number_value(v);
}

#define SMOKE .init = setup, .fini = teardown, .timeout = 60
#define SMOKE_TLS .init = setup_tls, .fini = teardown_tls, .timeout = 60

static void expect_closed_loop_ok(json_t *j) {
  cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "relay");
  cr_expect(json_is_null(json_object_get(j, "error")), "error reported");
  cr_expect_gt(get_int(j, "delivered"), 0, "nothing delivered");
  cr_expect_eq(get_int(j, "lost"), 0, "closed loop on pairs lost packets");
  cr_expect_eq(get_int(j, "sent"), get_int(j, "delivered"));
  cr_expect_eq(get_int(j, "malformed"), 0);
  cr_expect_gt(get_int(j, "server_rss_kb"), 0);
  get_num(j, "server_cpu_s_per_mpkt");
  /* Every shard sleeps in io_uring between batches: some switches, always. */
  cr_expect_gt(get_int(j, "server_ctx_switches"), 0);
  cr_expect_gt(get_num(j, "server_ctx_per_pkt"), 0);
  get_num(j, "payload_gbps");
}

Test(bench_smoke, relay_pairs_closed_loop, SMOKE) {
  json_t *j = run_bench("--mode relay --topology pairs --clients 4 --size 1200 --window 16 "
                        "--duration 2s --warmup 500ms");
  expect_closed_loop_ok(j);
  json_t *lat = json_object_get(j, "latency");
  cr_assert(json_is_object(lat), "no latency object");
  cr_expect_gt(get_num(lat, "p99_us"), 0);
  cr_expect_geq(get_num(lat, "p999_us"), get_num(lat, "p50_us"));
  cr_expect_str_eq(json_string_value(json_object_get(j, "transport")), "plain");
  json_decref(j);
}

/* A server that relays nothing in the measured window (frozen once the
 * route sync is through, early in a 2 s warm-up): the run is an error, exit 1, not a report of p99
 * 0 µs and 0 CPU s per packet that bench/compare would take for a result. */
static void *freeze_after_sync(void *arg) {
  (void)arg;
  for (int64_t end = e2e_now_ms() + 10000; e2e_now_ms() < end; e2e_sleep_ms(5))
    if (derpd_varz(&g_srv, "derp_packets_sent") >= 2) {
      kill(g_srv.pid, SIGSTOP);
      return NULL;
    }
  return NULL;
}

Test(bench_smoke, nothing_delivered_is_an_error, SMOKE) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, freeze_after_sync, NULL), 0);
  const struct derpd_proc *srv = &g_srv;
  json_t *j = run_bench_want(&srv, 1, "--mode relay --topology pairs --clients 2 --pps 200 --duration 1s "
                                      "--warmup 2s", 1);
  pthread_join(t, NULL);
  kill(g_srv.pid, SIGCONT);
  const char *err = json_string_value(json_object_get(j, "error"));
  cr_assert_not_null(err, "no error for a run that delivered nothing");
  cr_expect(strstr(err, "delivered") != NULL, "error: %s", err);
  cr_expect_eq(get_int(j, "delivered"), 0);
  json_decref(j);
}

/* Open loop over WebSocket with interval reports: every line before the
 * report is an interval, warm-up first, and the counters only grow. */
Test(bench_smoke, websocket_open_loop_intervals, SMOKE) {
  json_t *j = run_bench("--websocket --mode relay --topology pairs --clients 4 --pps 2000 "
                        "--duration 2s --warmup 500ms --report-every 500ms --threads 1");
  cr_expect(json_is_null(json_object_get(j, "error")), "error reported");
  cr_expect_str_eq(json_string_value(json_object_get(j, "transport")), "websocket");
  cr_expect_gt(get_int(j, "delivered"), 0, "nothing delivered");
  size_t n = json_array_size(g_intervals);
  cr_expect_geq(n, 4, "%zu interval lines for 2.5 s at 500 ms", n);
  json_int_t last_sent = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *iv = json_array_get(g_intervals, i);
    cr_expect_str_eq(json_string_value(json_object_get(iv, "kind")), "interval");
    cr_expect_str_eq(json_string_value(json_object_get(iv, "phase")), i == 0 ? "warmup" : "measure");
    cr_expect_geq(get_int(iv, "sent"), last_sent);
    last_sent = get_int(iv, "sent");
    json_t *lat = json_object_get(iv, "latency");
    cr_assert(json_is_object(lat), "interval %zu has no latency", i);
    cr_expect_gt(get_int(lat, "count"), 0, "interval %zu saw no packet", i);
  }
  cr_expect_leq(last_sent, get_int(j, "sent"));
  json_decref(j);
  cr_expect_gt(derpd_varz(&g_srv, "derpd_websocket_upgrades"), 3);
}

Test(bench_smoke, churn, SMOKE) {
  json_t *j = run_bench("--mode churn --duration 1s --threads 2");
  cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "churn");
  cr_expect_gt(get_int(j, "handshakes"), 0);
  json_decref(j);
  cr_expect(derpd_alive(&g_srv), "derpd died during churn");
}

Test(bench_smoke, idle_50, SMOKE) {
  json_t *j = run_bench("--mode idle --clients 50 --hold 500ms");
  cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "idle");
  cr_expect_eq(get_int(j, "clients"), 50);
  cr_expect_eq(get_int(j, "closed_by_server"), 0);
  cr_expect_gt(get_int(j, "server_rss_after_kb"), 0);
  get_num(j, "server_bytes_per_conn");
  json_decref(j);
}

/* TLS 1.3, the certificate pinned (as Tailscale's sha256-raw: CertName). */
Test(bench_smoke, tls_relay_pairs_closed_loop, SMOKE_TLS) {
  char hex[65], flags[300];
  cert_sha256_hex(hex);
  snprintf(flags, sizeof flags,
           "--tls --sni localhost --pin-sha256 %s --mode relay --topology pairs --clients 4 "
           "--size 1200 --window 16 --duration 2s --warmup 500ms",
           hex);
  json_t *j = run_bench(flags);
  expect_closed_loop_ok(j);
  cr_expect_str_eq(json_string_value(json_object_get(j, "transport")), "tls1.3");
  json_decref(j);
}

/* TLS 1.2, no verification; frames bigger than a TLS record. */
Test(bench_smoke, tls12_relay_big_frames, SMOKE_TLS) {
  json_t *j = run_bench("--tls --sni localhost --insecure --tls-version 1.2 --mode relay "
                        "--clients 2 --size 40000 --window 8 --duration 1s --warmup 200ms");
  expect_closed_loop_ok(j);
  cr_expect_str_eq(json_string_value(json_object_get(j, "transport")), "tls1.2");
  json_decref(j);
}

/* Verified against SSL_CERT_FILE (the self-signed certificate as its own
 * root), as Go and derpd's links take a private CA. */
Test(bench_smoke, tls_idle_50, SMOKE_TLS) {
  char ca[128];
  snprintf(ca, sizeof ca, "%s/localhost.crt", g_certdir);
  cr_assert_eq(setenv("SSL_CERT_FILE", ca, 1), 0);
  json_t *j = run_bench("--tls --sni localhost --mode idle --clients 50 --hold 500ms");
  unsetenv("SSL_CERT_FILE");
  cr_expect_str_eq(json_string_value(json_object_get(j, "mode")), "idle");
  cr_expect_str_eq(json_string_value(json_object_get(j, "transport")), "tls1.3");
  cr_expect_eq(get_int(j, "clients"), 50);
  cr_expect_eq(get_int(j, "closed_by_server"), 0);
  cr_expect_gt(get_int(j, "server_rss_after_kb"), 0);
  get_num(j, "server_bytes_per_conn");
  json_decref(j);
}

/* ---- a region: two meshed nodes on loopback ---- */

static struct derpd_proc g_node2;
static char g_meshdir[64];

/* Both nodes with one -mesh-with list (each skips its own entry) and a
 * mesh key file of 64 hex digits; then until each is watched by the other
 * (a link dialled before its peer listened retries after 5 s). */
static void setup_region(void) {
  e2e_test_init();
  snprintf(g_meshdir, sizeof g_meshdir, "/tmp/derpd-bench-mesh-XXXXXX");
  cr_assert(mkdtemp(g_meshdir), "mkdtemp: %s", strerror(errno));
  uint8_t key[32];
  char hex[65], path[128], args[400];
  randombytes_buf(key, sizeof key);
  sodium_bin2hex(hex, sizeof hex, key, sizeof key);
  snprintf(path, sizeof path, "%s/mesh.key", g_meshdir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  fprintf(f, "%s\n", hex);
  fclose(f);
  /* Each node's port is in both -mesh-with lists, so both are picked first;
   * another test may take one before the bind: then both anew, three tries. */
  for (int attempt = 0;; attempt++) {
    uint16_t p1, p2;
    cr_assert_eq(e2e_pick_port(&p1), 0);
    do cr_assert_eq(e2e_pick_port(&p2), 0);
    while (p2 == p1);
    snprintf(args, sizeof args, "-mesh-psk-file %s -mesh-with http://127.0.0.1:%u,http://127.0.0.1:%u",
             path, p1, p2);
    bool up1 = derpd_start_port(&g_srv, 1, p1, args) == 0;
    if (up1 && derpd_start_port(&g_node2, 1, p2, args) == 0) break;
    derpd_kill(&g_srv);
    derpd_kill(&g_node2);
    cr_assert(attempt < 2, "node %d did not start, on three pairs of ports", up1 ? 2 : 1);
  }
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derp_watchers", 1, 15000), 1, "node 1 not watched");
  cr_assert_eq(derpd_varz_eventually(&g_node2, "derp_watchers", 1, 15000), 1, "node 2 not watched");
}

static void teardown_region(void) {
  derpd_kill(&g_node2);
  derpd_kill(&g_srv);
  fail_if_crashed();
  e2e_rm_dir(g_meshdir);
}

/* Pairs across the two nodes: every data packet and ack is forwarded, none
 * is lost (route sync waited for the mesh), and the CPU is both nodes'. */
Test(bench_smoke, region_pairs_across_servers, .init = setup_region, .fini = teardown_region,
     .timeout = 90) {
  const struct derpd_proc *nodes[2] = {&g_srv, &g_node2};
  long long fwd0[2];
  for (int i = 0; i < 2; i++) fwd0[i] = derpd_varz(nodes[i], "derp_packets_forwarded_out");
  json_t *j = run_bench_on(nodes, 2, "--mode relay --topology pairs --clients 4 --size 1200 "
                                     "--window 16 --duration 2s --warmup 500ms");
  expect_closed_loop_ok(j);
  cr_expect_eq(get_int(j, "servers"), 2);
  cr_expect_geq(get_num(j, "route_sync_s"), 0);
  cr_expect_eq(get_int(j, "peer_gone"), 0);
  /* Each node forwarded its senders' data and its receivers' acks. */
  for (int i = 0; i < 2; i++) {
    long long fwd = derpd_varz(nodes[i], "derp_packets_forwarded_out");
    cr_expect_geq(fwd - fwd0[i], get_int(j, "delivered"), "node %d forwarded %lld", i + 1,
                  fwd - fwd0[i]);
  }
  json_decref(j);
}

/* Bad flags exit 2 with a message that says which kind of mistake it is;
 * no server is needed (flags are checked before any connection). */
static void expect_usage_error(const char *args, const char *want) {
  char cmd[512], out[1024] = "";
  snprintf(cmd, sizeof cmd, "%s --server 127.0.0.1:9 %s 2>&1", bench_bin(), args);
  int st = e2e_run_capture(cmd, out, sizeof out);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: exit %d, want 2: %s", args,
            WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
  cr_assert(strstr(out, want), "%s: no \"%s\" in: %s", args, want, out);
}

Test(bench_smoke, usage_errors) {
  expect_usage_error("--bogus 1", "unknown flag --bogus");
  expect_usage_error("--size", "flag --size needs a value");
  expect_usage_error("--pace-quantum", "flag --pace-quantum needs a value");
  expect_usage_error("--size=7", "bad value for --size: 7");
  expect_usage_error("--pace-quantum zz", "bad value for --pace-quantum: zz");
  expect_usage_error("--tls --pin-sha256 abc", "bad value for --pin-sha256: abc");
  expect_usage_error("--sni x", "need --tls");
  expect_usage_error("--servers 127.0.0.1:8", "not both");
  expect_usage_error("--server-pid 1,2", "2 pids for 1 servers");
  expect_usage_error("--server-pid 1,,2", "bad value for --server-pid");
}
