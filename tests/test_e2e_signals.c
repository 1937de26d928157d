/* test_e2e_signals.c: how derpd takes signals. SIGINT, SIGTERM, SIGHUP and
 * SIGUSR2 go to the main thread's sigwait only: every thread derpd starts
 * blocks them, including those that start before the shards (bootstrap DNS,
 * admission workers), so a signal that comes while the main thread is busy
 * waits for it instead of killing the process through a thread that takes
 * the default action. SIGPIPE is ignored: never a reason to stop. Threads
 * are named (shard-N, bootstrap-dns, ...), which is how the test tells
 * derpd's threads from a sanitizer's runtime threads. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e_util.h"

static struct derpd_proc g_srv;

static void setup(void) { e2e_test_init(); }
static void teardown(void) { e2e_test_fini(&g_srv); }

#define E2E .init = setup, .fini = teardown, .timeout = 60

/* Threads that start before the shards: bootstrap DNS and admission workers
 * (no client connects, so neither does any lookup or check). */
#define EARLY_THREADS "-bootstrap-dns-names localhost -verify-client-url http://127.0.0.1:9/ -admission-workers 2"

static unsigned long long status_mask(const char *path, const char *field) {
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  char line[256];
  unsigned long long v = 0;
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, field, n) == 0) v = strtoull(line + n, NULL, 16);
  fclose(f);
  return v;
}

static unsigned long long bit(int sig) { return 1ULL << (sig - 1); }

/* Not the main thread: inside sigwait the kernel unblocks the signals it
 * waits for, so its SigBlk shows them clear. */
static bool ours(const char *comm) {
  static const char *const names[] = {"shard-", "bootstrap-dns", "admission", "mesh-dialler", "acme", "dns-lookup"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strncmp(comm, names[i], strlen(names[i])) == 0) return true;
  return false;
}

struct thread_scan {
  int checked, shards, dns, admission;
};

/* One pass over /proc/PID/task: every thread of ours must block the stop
 * signals; counts the threads by name. */
static struct thread_scan scan_threads(pid_t pid) {
  struct thread_scan t = {0};
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
  DIR *d = opendir(dir);
  cr_assert(d, "opendir %s", dir);
  const unsigned long long want = bit(SIGINT) | bit(SIGTERM) | bit(SIGHUP) | bit(SIGUSR2);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char path[600], comm[64] = "";
    snprintf(path, sizeof path, "%s/%s/comm", dir, de->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue; /* the thread ended */
    if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
    fclose(f);
    comm[strcspn(comm, "\n")] = 0;
    if (atoi(de->d_name) == (int)pid || !ours(comm)) continue;
    snprintf(path, sizeof path, "%s/%s/status", dir, de->d_name);
    unsigned long long blk = status_mask(path, "SigBlk:");
    cr_expect_eq(blk & want, want, "thread %s (%s) blocks %llx, not all of %llx", de->d_name, comm, blk, want);
    t.checked++;
    t.shards += strncmp(comm, "shard-", 6) == 0;
    t.dns += strcmp(comm, "bootstrap-dns") == 0;
    t.admission += strcmp(comm, "admission") == 0;
  }
  closedir(d);
  return t;
}

Test(e2e_signals, every_thread_blocks_the_stop_signals, E2E) {
  e2e_start(&g_srv, 2, EARLY_THREADS);
  /* A thread names itself once it runs, which may be after derpd answers
   * its first request: scan until all five have names (at most 5 s). */
  struct thread_scan t;
  for (int i = 0;; i++) {
    t = scan_threads(g_srv.pid);
    if ((t.shards == 2 && t.dns == 1 && t.admission == 2) || i == 250) break;
    e2e_sleep_ms(20);
  }
  cr_assert_eq(t.shards, 2, "%d threads named shard-N, not 2", t.shards);
  cr_assert_eq(t.dns, 1, "no bootstrap-dns thread");
  cr_assert_eq(t.admission, 2, "%d admission threads, not 2", t.admission);
  cr_assert_geq(t.checked, 5);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)g_srv.pid);
  cr_assert(status_mask(path, "SigIgn:") & bit(SIGPIPE), "SIGPIPE is not ignored");
}

/* Reloads back to back: most come while the main thread is still reloading
 * the last one. Before every thread blocked them, one of these reached the
 * bootstrap DNS thread and killed derpd (exit 129). */
Test(e2e_signals, sighup_storm_is_reloads, E2E) {
  e2e_start(&g_srv, 2, EARLY_THREADS);
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  for (int i = 0; i < 300; i++) {
    cr_assert_eq(kill(g_srv.pid, SIGHUP), 0);
    if (i % 10 == 0) usleep(1000);
  }
  e2e_sleep_ms(300);
  cr_assert(derpd_alive(&g_srv), "derpd died of SIGHUP");
  e2e_assert_ping_pong(a);
  int st = -1;
  cr_assert_eq(derpd_stop(&g_srv, &st), 0);
  cr_assert_eq(st, 0, "exit status %d after the SIGHUPs and SIGTERM", st);
}

/* A process frozen (SIGSTOP) for longer than the shards' 5 s stop budget
 * while it drains a client that does not read: the freeze is not charged to
 * the shards, and derpd exits 0 once it runs again (found by a chaos run,
 * which froze a node in the middle of its stop). */
Test(e2e_signals, frozen_during_stop_exits_0, E2E) {
  /* The freeze must land inside the stop's 1 s drain. A test thread not
   * scheduled for most of that second (a loaded CI machine) misses it: then,
   * and only then (measured), the attempt is made again, at most 3 times. */
  for (int attempt = 1;; attempt++) {
    e2e_start(&g_srv, 1, NULL);
    struct derp_client *a = e2e_client(&g_srv, NULL, false);
    struct derp_client *b = e2e_client(&g_srv, NULL, false); /* never reads */
    struct derp_client *s = e2e_client(&g_srv, NULL, false);
    /* b's write stuck: its Restarting cannot go out, so the stop drains. */
    e2e_fill_receiver(&g_srv, a, b, s);
    int64_t t0 = e2e_now_ms();
    cr_assert_eq(kill(g_srv.pid, SIGTERM), 0);
    e2e_sleep_ms(300); /* inside the drain: b's bytes are still queued */
    bool alive = derpd_alive(&g_srv);
    int64_t late = e2e_now_ms() - t0;
    if (alive) cr_assert_eq(kill(g_srv.pid, SIGSTOP), 0);
    if (!alive && late >= 800 && attempt < 3) {
      cr_log_warn("attempt %d: the test ran %lld ms after SIGTERM, past the drain; again", attempt,
                  (long long)late);
      e2e_close(a);
      e2e_close(b);
      e2e_close(s);
      derpd_kill(&g_srv);
      continue;
    }
    cr_assert(alive, "derpd stopped before the freeze (%lld ms after SIGTERM): nothing was left to drain",
              (long long)late);
    break;
  }
  e2e_sleep_ms(6000);
  cr_assert_eq(kill(g_srv.pid, SIGCONT), 0);
  int st = -1;
  cr_assert_eq(derpd_wait(&g_srv, 10000, &st), 0, "derpd did not exit after SIGCONT");
  cr_assert_eq(st, 0, "exit status %d after a freeze during the stop", st);
  cr_assert(!derpd_log_contains(&g_srv, "did not stop"), "the freeze was charged to the shards");
}

/* SIGPIPE (sent, or raised by a write to a closed pipe) stops nothing. */
Test(e2e_signals, sigpipe_is_ignored, E2E) {
  e2e_start(&g_srv, 1, NULL);
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  cr_assert_eq(kill(g_srv.pid, SIGPIPE), 0);
  e2e_sleep_ms(300);
  cr_assert(derpd_alive(&g_srv), "derpd stopped on SIGPIPE");
  cr_assert(!derpd_log_contains(&g_srv, "telling clients to reconnect"), "SIGPIPE started a shutdown");
  e2e_relay_check(a, b, 20);
  int st = -1;
  cr_assert_eq(derpd_stop(&g_srv, &st), 0);
  cr_assert_eq(st, 0);
}
