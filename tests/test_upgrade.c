/* test_upgrade.c: live upgrade end to end (SIGUSR2, operations/handover.c).
 *
 * Owns the promise an operator relies on: while derpd hands its listening
 * sockets to a new process, no connection attempt is refused or reset (two
 * threads connect, handshake and ping in a tight loop across the switch),
 * established clients are told to reconnect (Restarting), the old process
 * exits 0, and the new one serves with the same key; a new process that
 * cannot start leaves the old one serving; the metrics listener moves too. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_util.h"

static struct derpd_proc g_srv;
static pid_t g_new_pid;

static void setup(void) {
  e2e_test_init();
  prctl(PR_SET_CHILD_SUBREAPER, 1); /* the new derpd is orphaned to us when the old one exits */
}

static void teardown(void) {
  e2e_reap(&g_new_pid, &g_srv);
  e2e_test_fini(&g_srv);
}

#define E2E .init = setup, .fini = teardown, .timeout = 90

struct hammer {
  const struct derpd_proc *srv;
  _Atomic bool stop;
  _Atomic int ok, failed;
  char last_err[256];
};

/* Connect, handshake, ping, close; as fast as it goes. */
static void *hammer_main(void *arg) {
  struct hammer *h = arg;
  while (!atomic_load(&h->stop)) {
    derp_privkey priv;
    derp_key pub;
    derp_key_generate(&priv, &pub);
    char err[256] = "";
    struct derp_client *c = derpd_client(h->srv, &priv, false, err, sizeof err);
    bool good = c != NULL;
    if (c) {
      uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
      struct derp_client_msg m;
      good = derp_client_ping(c, data) == 0;
      int r = 0;
      /* Served by the old process in its last moments: Restarting is its
       * answer (come back at once), which is no refusal. */
      while (good && (r = derp_client_recv(c, &m, 3000)) == 1 && m.type != DERP_FRAME_PONG &&
             m.type != DERP_FRAME_RESTARTING) {}
      good = good && r == 1;
      if (!good) snprintf(err, sizeof err, "no pong: %s", strerror(errno));
      derp_client_close(c);
    }
    if (good) atomic_fetch_add(&h->ok, 1);
    else {
      atomic_fetch_add(&h->failed, 1);
      snprintf(h->last_err, sizeof h->last_err, "%s", err);
    }
  }
  return NULL;
}

Test(upgrade, no_connection_refused, E2E) {
  e2e_start(&g_srv, 2, NULL);
  pid_t old = g_srv.pid;
  derp_privkey ap;
  struct derp_client *a = e2e_client(&g_srv, &ap, false);
  e2e_assert_ping_pong(a);
  struct hammer h = {.srv = &g_srv};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, hammer_main, &h);
  e2e_sleep_ms(500);
  int before = atomic_load(&h.ok);
  cr_assert(before > 0, "no connection got through before the upgrade");
  cr_assert_eq(kill(old, SIGUSR2), 0);
  /* The old process exits 0 once its clients are told. */
  int status = -1;
  cr_assert_eq(derpd_wait(&g_srv, 15000, &status), 0, "the old process did not exit");
  cr_assert_eq(status, 0, "the old process exited with %d", status);
  e2e_sleep_ms(500);
  atomic_store(&h.stop, true);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  g_new_pid = derpd_new_pid(&g_srv, old);
  cr_assert(g_new_pid > 0, "no new process in the log");
  cr_assert_eq(kill(g_new_pid, 0), 0, "the new process is not running");
  cr_assert_eq(atomic_load(&h.failed), 0, "%d of %d connection attempts failed across the upgrade (last: %s)",
               atomic_load(&h.failed), atomic_load(&h.ok) + atomic_load(&h.failed), h.last_err);
  cr_assert(atomic_load(&h.ok) > before, "no connection got through after the upgrade");
  /* The established client was told to come back. */
  struct derp_client_msg m;
  bool restarting = false;
  int r;
  while (!restarting && (r = derp_client_recv(a, &m, 3000)) == 1) restarting = m.type == DERP_FRAME_RESTARTING;
  cr_assert(restarting, "the established client got no Restarting frame");
  /* The new process serves with the same key (e2e_client checks it). */
  g_srv.pid = g_new_pid; /* for the helpers below; teardown kills it */
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  struct derp_client *c = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(b, c);
  e2e_relay_check(b, c, 50);
  g_srv.pid = 0;
}

/* A copy of derpd that a test may remove (an upgrade then cannot exec it)
 * and put back with `restore` (a shell command); DERPD_BIN names it. */
static void derpd_copy(const char *tag, char bin[300], char restore[700]) {
  snprintf(bin, 300, "/tmp/derpd-%s-%d", tag, (int)getpid());
  snprintf(restore, 700, "cp '%s' '%s'", getenv("DERPD_BIN") ? getenv("DERPD_BIN") : "build/src/derpd", bin);
  cr_assert_eq(system(restore), 0);
  setenv("DERPD_BIN", bin, 1);
}

Test(upgrade, failed_new_process_keeps_serving, E2E) {
  /* A binary path that cannot be executed: copy derpd, start it, remove it. */
  char bin[300], cmd[700];
  derpd_copy("upgrade", bin, cmd);
  e2e_start(&g_srv, 1, NULL);
  unlink(bin);
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  cr_assert_eq(kill(g_srv.pid, SIGUSR2), 0);
  e2e_sleep_ms(1000);
  cr_assert(derpd_alive(&g_srv), "the old process stopped though the new one never started");
  cr_assert(derpd_log_contains(&g_srv, "this process serves on"), "the failure was not logged");
  e2e_assert_ping_pong(a);
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  e2e_assert_ping_pong(b);
}

/* A failed upgrade, then another once the cause is fixed: the new process
 * gets each socket once (the environment of the first attempt does not
 * linger), uses them all, and accepts without error. */
Test(upgrade, retry_after_failed_upgrade, E2E) {
  char bin[300], cmd[700];
  derpd_copy("upgrade-retry", bin, cmd);
  e2e_start(&g_srv, 2, NULL);
  pid_t old = g_srv.pid;
  cr_assert_eq(derpd_varz(&g_srv, "derpd_started_by_upgrade"), 0);
  /* In its place, a program that starts and exits before listening: the
   * first attempt gets as far as the fork and the environment. */
  unlink(bin);
  FILE *f = fopen(bin, "w");
  cr_assert_not_null(f);
  fputs("#!/bin/sh\nexit 3\n", f);
  fclose(f);
  cr_assert_eq(chmod(bin, 0755), 0);
  cr_assert_eq(kill(old, SIGUSR2), 0);
  for (int i = 0; i < 100 && !derpd_log_contains(&g_srv, "this process serves on"); i++) e2e_sleep_ms(50);
  cr_assert(derpd_log_contains(&g_srv, "exited with status 3 before listening"), "the first attempt's end");
  unlink(bin);
  cr_assert_eq(system(cmd), 0); /* the binary is back */
  cr_assert_eq(kill(old, SIGUSR2), 0);
  int status = -1;
  int waited = derpd_wait(&g_srv, 15000, &status);
  unlink(bin); /* the new process runs on from the unlinked file */
  cr_assert_eq(waited, 0, "the old process did not exit");
  cr_assert_eq(status, 0);
  g_new_pid = derpd_new_pid(&g_srv, old);
  cr_assert(g_new_pid > 0, "no new process in the log");
  g_srv.pid = g_new_pid;
  for (int i = 0; i < 8; i++) e2e_assert_ping_pong(e2e_client(&g_srv, NULL, false));
  e2e_sleep_ms(500);
  cr_assert(derpd_log_contains(&g_srv, "listening sockets from the previous process"), "nothing inherited");
  cr_assert(!derpd_log_contains(&g_srv, "not used"), "an inherited socket was closed as unused");
  cr_assert(!derpd_log_contains(&g_srv, "listed twice"), "a socket was passed twice");
  cr_assert_eq(derpd_varz(&g_srv, "derpd_accept_errors"), 0, "the new process's accepts fail");
  cr_assert_eq(derpd_varz(&g_srv, "derpd_started_by_upgrade"), 1, "the alerts' mark of a planned start");
  g_srv.pid = 0;
}

/* A pids cgroup for the new process (v1's pids hierarchy, else v2's root):
 * with room for few threads its admission workers cannot start, which fails
 * it after its shards run, the late failure of a start. The path, or the
 * test fails saying why. */
static void pids_cgroup(char out[256], int max) {
  const char *roots[] = {"/sys/fs/cgroup/pids", "/sys/fs/cgroup"};
  for (int i = 0; i < 2; i++) {
    char probe[300];
    snprintf(probe, sizeof probe, "%s/cgroup.procs", roots[i]);
    if (access(probe, W_OK) != 0) continue;
    if (i == 1) { /* v2: pids must be enabled for children */
      FILE *f = fopen("/sys/fs/cgroup/cgroup.subtree_control", "w");
      if (f) { fputs("+pids", f); fclose(f); }
    }
    snprintf(out, 256, "%s/derpd-upgrade-%d", roots[i], (int)getpid());
    if (mkdir(out, 0755) != 0 && errno != EEXIST) continue;
    snprintf(probe, sizeof probe, "%s/pids.max", out);
    FILE *f = fopen(probe, "w");
    if (f && fprintf(f, "%d\n", max) > 0 && fclose(f) == 0) return;
    if (f) fclose(f);
    rmdir(out);
  }
  cr_assert_fail("no writable pids cgroup (v1 /sys/fs/cgroup/pids or v2 /sys/fs/cgroup): "
                 "this test needs root and cgroups");
}

/* The new process fails after its shards run (its admission workers cannot
 * start): the sockets it inherited are the old process's too, and they
 * must stay listening for it; a shutdown() of them in the failing process
 * would leave the old one serving nobody. */
Test(upgrade, late_failure_leaves_listeners, E2E) {
  char bin[300], cmd[700], real[320], cg[256];
  derpd_copy("upgrade-late", bin, cmd);
  e2e_start(&g_srv, 1, "-verify-client-url http://127.0.0.1:9/ -admission-workers 32");
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  pids_cgroup(cg, 4);
  snprintf(real, sizeof real, "%s.real", bin);
  cr_assert_eq(rename(bin, real), 0);
  FILE *f = fopen(bin, "w");
  cr_assert_not_null(f);
  fprintf(f, "#!/bin/sh\necho $$ > %s/cgroup.procs || exit 9\nexec %s \"$@\"\n", cg, real);
  fclose(f);
  cr_assert_eq(chmod(bin, 0755), 0);
  cr_assert_eq(kill(g_srv.pid, SIGUSR2), 0);
  for (int i = 0; i < 200 && !derpd_log_contains(&g_srv, "this process serves on"); i++) e2e_sleep_ms(50);
  unlink(bin);
  unlink(real);
  for (int i = 0; i < 50 && rmdir(cg) != 0; i++) e2e_sleep_ms(20); /* empty once the child is reaped */
  cr_assert(derpd_log_contains(&g_srv, "this process serves on"), "the new process did not fail");
  cr_assert(derpd_log_contains(&g_srv, "cannot start worker"), "it failed, but not late (admission workers)");
  cr_assert(derpd_alive(&g_srv));
  for (int i = 0; i < 5; i++) {
    char err[256] = "";
    derp_privkey priv;
    derp_key pub;
    derp_key_generate(&priv, &pub);
    struct derp_client *c = derpd_client(&g_srv, &priv, false, err, sizeof err);
    cr_assert_not_null(c, "connection %d after the failed upgrade: %s", i, err);
    e2e_assert_ping_pong(c);
    derp_client_close(c);
  }
  e2e_assert_ping_pong(a);
}

/* derpd started by a bare name from $PATH (as a shell or a service manager
 * may start it): the upgrade finds the binary in $PATH again, before its
 * fork, and the new process takes over. */
Test(upgrade, bare_name_found_in_path, E2E) {
  char dir[128], bin[300], cmd[700], path[4096];
  snprintf(dir, sizeof dir, "/tmp/derpd-path-%d", (int)getpid());
  cr_assert(mkdir(dir, 0755) == 0 || errno == EEXIST);
  snprintf(bin, sizeof bin, "%s/derpd-bare", dir);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", e2e_derpd_bin(), bin);
  cr_assert_eq(system(cmd), 0);
  const char *old_path = getenv("PATH");
  snprintf(path, sizeof path, "/nonexistent-dir::%s:%s", dir, old_path ? old_path : "/usr/bin:/bin");
  setenv("PATH", path, 1);
  setenv("DERPD_BIN", "derpd-bare", 1);
  e2e_start(&g_srv, 1, NULL);
  pid_t old = g_srv.pid;
  cr_assert_eq(kill(old, SIGUSR2), 0);
  int status = -1;
  int waited = derpd_wait(&g_srv, 15000, &status);
  unlink(bin);
  rmdir(dir);
  cr_assert_eq(waited, 0, "the old process did not exit: %s",
               derpd_log_contains(&g_srv, "no such executable") ? "binary not found" : "?");
  cr_assert_eq(status, 0);
  cr_assert(derpd_log_contains(&g_srv, bin), "the upgrade did not start the file found in PATH");
  g_new_pid = derpd_new_pid(&g_srv, old);
  cr_assert(g_new_pid > 0, "no new process in the log");
  g_srv.pid = g_new_pid;
  e2e_assert_ping_pong(e2e_client(&g_srv, NULL, false));
  g_srv.pid = 0;
}

/* --metrics-listen's sockets go to the new process too ("metrics" in
 * DERPD_HANDOVER): /debug/varz answers there before and after, and the new
 * process counts its own traffic. */
Test(upgrade, metrics_listener_handed_over, E2E) {
  uint16_t mport;
  cr_assert_eq(e2e_pick_port(&mport), 0);
  char args[64];
  snprintf(args, sizeof args, "--metrics-listen 127.0.0.1:%u", mport);
  e2e_start(&g_srv, 2, args);
  pid_t old = g_srv.pid;
  struct derpd_proc metrics = g_srv; /* the helpers' port: the metrics listener */
  metrics.port = mport;
  char resp[64 * 1024];
  cr_assert_eq(http_request(&metrics, "GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 200);
  cr_assert_eq(http_request(&metrics, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 404);
  cr_assert_eq(kill(old, SIGUSR2), 0);
  int status = -1;
  cr_assert_eq(derpd_wait(&g_srv, 15000, &status), 0, "the old process did not exit");
  cr_assert_eq(status, 0, "the old process exited with %d", status);
  g_new_pid = derpd_new_pid(&g_srv, old);
  cr_assert(g_new_pid > 0, "no new process in the log");
  cr_assert(derpd_log_contains(&g_srv, "metrics listener on 127.0.0.1"), "no metrics listener line");
  g_srv.pid = g_new_pid;
  metrics.pid = g_new_pid;
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  struct derp_client *c = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(b, c);
  e2e_relay_check(b, c, 20);
  long long got = derpd_varz_eventually(&metrics, "derp_packets_received", 0, 0);
  cr_assert_geq(got, 20, "the metrics listener after the upgrade: derp_packets_received %lld", got);
  cr_assert_eq(http_request(&metrics, "GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp), 404,
               "the new process's metrics listener serves /debug/ only");
  g_srv.pid = 0;
}

/* SO_REUSEPORT would let a second derpd share the port; like derper's second
 * instance, it must fail instead (a live upgrade is the one way to share). */
Test(upgrade, second_instance_refused, E2E) {
  e2e_start(&g_srv, 2, NULL);
  struct derpd_proc second;
  cr_assert_eq(derpd_start_port(&second, 1, g_srv.port, NULL), -1, "a second derpd started on a busy port");
  cr_assert(derpd_log_contains(&second, "address already in use"), "no clear reason logged");
  derpd_kill(&second);
  struct derp_client *c = e2e_client(&g_srv, NULL, false);
  e2e_assert_ping_pong(c);
}
