/* test_tls_e2e_ktls.c: kTLS end to end (part of test_tls_e2e, tls_e2e.h):
 * --ktls auto / off / require against this kernel (the CI and development
 * kernels have no kTLS: the logic is proven with DERPD_TEST_ASSUME_KTLS, and
 * scripts/ktls-vm runs the same tests on Debian's stock kernel in a VM). */
#include "mini_test.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "derp/frame.h"
#include "derp/handshake.h"
#include "derp/key.h"
#include "e2e_util.h"
#include "server/transport/ktls.h"
#include "tls_e2e.h"

/* ---- kTLS ------------------------------------------------------------------ */

/* Whether this kernel takes TCP_ULP "tls" (as derpd's probe decides). */
bool kernel_has_ktls(void) { return ktls_probe() == 1; }

void wait_log(const char *what) {
  int64_t deadline = e2e_now_ms() + 5000;
  while (!derpd_log_contains(&srv, what)) {
    if (e2e_now_ms() >= deadline) derpd_dump_log(&srv, 4000);
    cr_assert(e2e_now_ms() < deadline, "not in derpd's log: %s", what);
    e2e_sleep_ms(20);
  }
}

/* TLS 1.2 and 1.3 clients relaying both ways, across shards. */
static void relay_mixed(int n) {
  struct derp_client *c[8];
  cr_assert(n <= 8);
  for (int i = 0; i < n; i++)
    c[i] = tls_client(&(struct tls_conn_opts){.version = i % 2 ? TLS1_2_VERSION : TLS1_3_VERSION},
                      NULL);
  for (int i = 0; i < n; i++) {
    e2e_sync_route(c[i], c[(i + 1) % n]);
    e2e_relay_check(c[i], c[(i + 1) % n], 32);
    e2e_relay_check(c[(i + 1) % n], c[i], 32);
  }
}

/* Stop derpd (clients first) and check the per-transport totals it logs. */
static void stop_and_check_totals(const char *want) {
  for (int i = 0; i < MAX_TLS_CLIENTS; i++) {
    derp_client_close(clients[i]);
    clients[i] = NULL;
  }
  int st = -1;
  cr_assert_eq(derpd_stop(&srv, &st), 0);
  cr_assert_eq(st, 0);
  if (!derpd_log_contains(&srv, want)) derpd_dump_log(&srv, 3000);
  cr_assert(derpd_log_contains(&srv, want), "no \"%s\" in the log", want);
}

/* --ktls=auto (the default) on this kernel: without kTLS every connection
 * stays in userspace TLS and says so; with it, every one switches. */
void ktls_auto(void) {
  start_tls(2, "--ktls=auto -v");
  enum { N = 6 };
  relay_mixed(N);
  if (kernel_has_ktls()) {
    wait_log("kTLS: available");
    cr_assert_geq(tls_varz("derpd_conns_mode{mode=\"ktls\"}"), N);
    cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"tls\"}"), 0);
    cr_assert_geq(tls_varz("derpd_ktls_installs"), N);
    wait_log("kTLS on");
    return;
  }
  wait_log("kTLS: not available (kernel has no TCP_ULP tls): userspace TLS");
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"tls\"}"), N);
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"ktls\"}"), 0);
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"plain\"}"), 0);
  cr_assert_eq(tls_varz("derpd_ktls_installs"), 0);
  cr_assert_eq(tls_varz("derpd_ktls_fallbacks"), 0, "no switch is even tried");
  stop_and_check_totals("clients by transport: plain 0, tls 6, ktls 0 (kTLS not in use)");
}

void ktls_off(void) {
  start_tls(1, "--ktls=off");
  relay_mixed(2);
  wait_log("kTLS: off (--ktls=off): userspace TLS");
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"tls\"}"), 2);
  cr_assert_eq(tls_varz("derpd_ktls_fallbacks"), 0);
}

/* Run derpd to its exit (it must not start); its output in out. */
static int run_derpd_to_exit(const char *extra, char *out, size_t cap) {
  snprintf(certdir, sizeof certdir, "/tmp/derpd-tls-certs-XXXXXX");
  cr_assert(mkdtemp(certdir));
  char keyp[128], args[512];
  snprintf(keyp, sizeof keyp, "%s/derper.key", certdir);
  snprintf(args, sizeof args, "-dev -a 127.0.0.1:0 -c %s -certmode selfsigned -certdir %s "
           "-hostname localhost -http-port -1 %s", keyp, certdir, extra);
  char *argv[32];
  int argc = 0;
  const char *bin = getenv("DERPD_BIN");
  argv[argc++] = (char *)(bin && *bin ? bin : "./build/src/derpd");
  for (char *save = NULL, *t = strtok_r(args, " ", &save); t && argc < 31; t = strtok_r(NULL, " ", &save))
    argv[argc++] = t;
  argv[argc] = NULL;
  int pfd[2];
  cr_assert_eq(pipe(pfd), 0);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    dup2(pfd[1], 1);
    dup2(pfd[1], 2);
    close(pfd[0]);
    close(pfd[1]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(pfd[1]);
  size_t n = 0;
  ssize_t r;
  int64_t deadline = e2e_now_ms() + 10000;
  while ((r = read(pfd[0], out + n, cap - 1 - n)) > 0 && n + 1 < cap) {
    n += (size_t)r;
    if (e2e_now_ms() > deadline) break;
  }
  out[n] = 0;
  close(pfd[0]);
  int st = 0;
  /* A derpd that started would hold the pipe open: never get here. */
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* --ktls=require on a kernel without kTLS: exit 1 at start, saying why. */
void ktls_require_needs_kernel(void) {
  if (kernel_has_ktls()) {
    fprintf(stderr, "  this kernel has kTLS: require starts; covered by ktls_assumed_require\n");
    return;
  }
  static char out[8192];
  int st = run_derpd_to_exit("--ktls=require", out, sizeof out);
  cr_assert_eq(st, 1, "exit status %d; output:\n%s", st, out);
  cr_assert(strstr(out, "--ktls=require, but this kernel has no kTLS"), "output:\n%s", out);
}

/* DERPD_TEST_ASSUME_KTLS=1 makes derpd skip the probe and try the switch on
 * every TLS connection: here the kernel refuses TCP_ULP "tls", and every
 * connection must go on in userspace TLS, counted as a fallback. */
void ktls_assumed_fallback(void) {
  setenv("DERPD_TEST_ASSUME_KTLS", "1", 1);
  start_tls(2, "-v");
  unsetenv("DERPD_TEST_ASSUME_KTLS");
  enum { N = 6 };
  relay_mixed(N);
  /* Fast start: data right behind the request, in the receive that also
   * carried the client's Finished, or just after. */
  struct derp_tls_info info;
  struct derp_client *a = tls_client(&(struct tls_conn_opts){.version = TLS1_3_VERSION,
                                                             .fast_start = true, .meta = true},
                                     &info);
  struct derp_client *b = tls_client(&(struct tls_conn_opts){.version = TLS1_2_VERSION}, NULL);
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 32);
  e2e_relay_check(b, a, 32);
  if (kernel_has_ktls()) {
    cr_assert_geq(tls_varz("derpd_conns_mode{mode=\"ktls\"}"), N + 2);
    return;
  }
  wait_log("DERPD_TEST_ASSUME_KTLS=1");
  wait_log("userspace TLS: TCP_ULP \"tls\" refused");
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"tls\"}"), N + 2);
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"ktls\"}"), 0);
  /* Every TLS handshake tried, the /debug/varz requests' own included. */
  cr_assert_geq(tls_varz("derpd_ktls_fallbacks"), N + 2);
  cr_assert_eq(tls_varz("derpd_ktls_failures"), 0);
  cr_assert_eq(tls_varz("derpd_ktls_installs"), 0);
  stop_and_check_totals("kTLS: 0 switched,");
}

/* The same with --ktls=require: a connection that cannot switch is closed,
 * with the reason in the log; derpd itself keeps serving. */
void ktls_assumed_require(void) {
  setenv("DERPD_TEST_ASSUME_KTLS", "1", 1);
  start_tls(2, "--ktls=require");
  unsetenv("DERPD_TEST_ASSUME_KTLS");
  if (kernel_has_ktls()) {
    relay_mixed(4);
    cr_assert_geq(tls_varz("derpd_conns_mode{mode=\"ktls\"}"), 4);
    return;
  }
  for (int v = 0; v < 2; v++) {
    char err[256] = "";
    struct derp_client *c = try_client(
        &(struct tls_conn_opts){.version = v ? TLS1_3_VERSION : TLS1_2_VERSION}, NULL, err, sizeof err);
    cr_assert_eq(c, NULL, "connected although kTLS cannot be installed");
  }
  wait_log("closed: ktls_error: --ktls=require, but TCP_ULP \"tls\" refused");
  cr_assert(derpd_alive(&srv));
  stop_and_check_totals("kTLS: 0 switched, 2 kept in userspace");
}

/* The kernel takes the ULP but refuses the RX key (faked on any kernel; for
 * real, Debian's 6.1 kernel does so with ENOENT when it cannot load the
 * suite's crypto module, see scripts/ktls-vm): the socket is left as it was,
 * so each connection goes on in userspace TLS, counted as a refusal and a
 * fallback; derpd serves on. */
void ktls_key_refused(void) {
  setenv("DERPD_TEST_ASSUME_KTLS", "refuse-keys", 1);
  start_tls(2, "-v");
  unsetenv("DERPD_TEST_ASSUME_KTLS");
  enum { N = 4 };
  relay_mixed(N);
  wait_log("userspace TLS: TLS_RX refused: Invalid argument");
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"tls\"}"), N);
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"ktls\"}"), 0);
  cr_assert_geq(tls_varz("derpd_ktls_failures"), N);
  cr_assert_geq(tls_varz("derpd_ktls_fallbacks"), N);
  cr_assert_eq(tls_varz("derpd_ktls_installs"), 0);
  stop_and_check_totals("kTLS: 0 switched,");
}

/* A kernel that cannot load a suite's crypto refuses its key with ENOENT,
 * after running modprobe inside the setsockopt (on a shard). derpd asks once
 * per TLS version and suite: later conns of a refused one stay in userspace
 * without asking (faked on any kernel). */
void ktls_suite_remembered(void) {
  setenv("DERPD_TEST_ASSUME_KTLS", "refuse-suites", 1);
  start_tls(2, "-v");
  unsetenv("DERPD_TEST_ASSUME_KTLS");
  enum { N = 6 };
  relay_mixed(N); /* TLS 1.3 and 1.2, each with one AES-GCM suite */
  wait_log("userspace TLS: TLS_RX refused: No such file or directory");
  wait_log("userspace TLS: the kernel refused this suite's key before");
  cr_assert_eq(tls_varz("derpd_ktls_failures"), 2, "one refusal per version and suite");
  cr_assert_geq(tls_varz("derpd_ktls_fallbacks"), N);
  cr_assert_eq(tls_varz("derpd_conns_mode{mode=\"tls\"}"), N);
  cr_assert_eq(tls_varz("derpd_ktls_installs"), 0);
  stop_and_check_totals("kTLS: 0 switched,");
}

/* The same under --ktls=require: the connection is closed, with the reason. */
void ktls_key_refused_require(void) {
  setenv("DERPD_TEST_ASSUME_KTLS", "refuse-keys", 1);
  start_tls(2, "--ktls=require");
  unsetenv("DERPD_TEST_ASSUME_KTLS");
  for (int v = 0; v < 2; v++) {
    char err[256] = "";
    struct derp_client *c = try_client(
        &(struct tls_conn_opts){.version = v ? TLS1_3_VERSION : TLS1_2_VERSION}, NULL, err, sizeof err);
    cr_assert_eq(c, NULL, "connected although the kernel refused the keys");
  }
  wait_log("closed: ktls_error: --ktls=require, but TLS_RX refused: Invalid argument");
  cr_assert(derpd_alive(&srv));
  stop_and_check_totals("kTLS: 0 switched, 2 kept in userspace, 2 refused by the kernel");
}

/* The kernel takes the RX key and then refuses TX (short of memory, or a
 * bug; faked with refuse-tx): the records it reads are no longer in
 * userspace's view, so the conn is closed, and only it. Reached here at its
 * worst: TLS 1.2 with False Start, the client's Finished, a fast-start
 * request and ClientInfo in one segment, so the conn is established with a
 * recv armed when its first batch meets the refusal, between the batch
 * being built and its send being submitted (a close there had aborted
 * derpd on an assertion about the requests in flight). */
void ktls_tx_refused_after_rx(void) {
  /* The counters on a plain listener: every TLS conn meets the refusal. */
  uint16_t mport;
  cr_assert_eq(e2e_pick_port(&mport), 0);
  char more[64];
  snprintf(more, sizeof more, "-v --metrics-listen 127.0.0.1:%u", mport);
  setenv("DERPD_TEST_ASSUME_KTLS", "refuse-tx", 1);
  start_tls(1, more);
  unsetenv("DERPD_TEST_ASSUME_KTLS");
  struct derpd_proc metrics = srv;
  metrics.port = mport;
  int fd = raw_connect(&srv);
  cr_assert(fd >= 0);
  int on = 1, off = 0;
  setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on); /* Finished and what follows: one segment */
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_FALSE_START);
  static const uint8_t alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  cr_assert_eq(SSL_connect(ssl), 1, "TLS handshake");
  uint8_t buf[2048];
  int rl = snprintf((char *)buf, 512, "GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\n"
                                      "Connection: Upgrade\r\nDerp-Fast-Start: 1\r\n\r\n");
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_info ci = {.version = 2};
  size_t n = derp_client_info_seal(buf + rl + DERP_FRAME_HDR_LEN, sizeof buf - rl - DERP_FRAME_HDR_LEN, &priv,
                                   &srv.server_key, &ci);
  cr_assert(n > 0);
  derp_frame_put_header(buf + rl, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
  int len = (int)(rl + DERP_FRAME_HDR_LEN + n);
  cr_assert_eq(SSL_write(ssl, buf, len), len);
  setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
  wait_log("closed: ktls_error: TLS_TX");
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  cr_assert(derpd_alive(&srv), "derpd died of the refused TX key");
  cr_assert_eq(derpd_varz(&metrics, "derpd_conn_closed{reason=\"ktls_error\"}"), 1);
  cr_assert_eq(derpd_varz(&metrics, "derpd_ktls_failures"), 1);
  cr_assert_eq(derpd_varz_eventually(&metrics, "derpd_open_connections", 1, 3000), 1, "the closed conn was not reaped");
  int st = -1;
  cr_assert_eq(derpd_stop(&srv, &st), 0);
  cr_assert_eq(st, 0);
}
