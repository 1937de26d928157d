/* service.c: systemd's notify protocol and a watchdog fed by every shard
 * (service.h).
 *
 * sd_notify comes from Debian's libsystemd (libsystemd0 links libcap,
 * libgcrypt and compressors, no OpenSSL, so it lives beside BoringSSL; see
 * docs/architecture.md, "Service manager"). Built without it (-Dsystemd=disabled),
 * every message is dropped and the watchdog is off.
 *
 * The watchdog: each shard stores a tick count on its own cache line every
 * loop tick (100 ms). The main thread, waiting for signals, wakes every
 * WATCHDOG_USEC / 2 and sends WATCHDOG=1 only if every count moved since its
 * last look. A shard stuck in a loop or blocked in a call stops its count,
 * the pings stop, and systemd kills and restarts derpd once WatchdogSec
 * passes without one. */
#include "server/operations/service.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef DERPD_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "server/log.h"
#include "server/operations/handover.h"
#include "server/server.h"

struct beat {
  alignas(64) _Atomic uint64_t n;
};

static struct {
  int nshards;
  struct beat *beats;     /* [nshards], written by the shards */
  uint64_t *seen;         /* [nshards], the counts at the last check (main thread) */
  uint64_t wd_usec;       /* 0: no watchdog */
  int64_t interval_ms;    /* between checks: WATCHDOG_USEC / 2 */
  int64_t next_check_ms;  /* 0 until READY=1 */
  int64_t last_ok_ms;     /* the last check that found every shard ticking */
  bool stalled;           /* a check found a shard that had not ticked */
  int64_t wedge_at_ms;    /* test hook: shard 0 stops here; 0 = never */
} svc;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts); /* the clock of the shards' now_ms */
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void notify(const char *msg) {
#ifdef DERPD_HAVE_LIBSYSTEMD
  int r = sd_notify(0, msg);
  if (r < 0) log_warn("service: sd_notify: %s", strerror(-r));
#else
  (void)msg;
#endif
}

int service_init(int nshards) {
  svc.nshards = nshards;
  svc.beats = aligned_alloc(64, (size_t)nshards * sizeof *svc.beats);
  svc.seen = calloc((size_t)nshards, sizeof *svc.seen);
  if (!svc.beats || !svc.seen) return -1;
  for (int i = 0; i < nshards; i++) atomic_init(&svc.beats[i].n, 0);
#ifdef DERPD_HAVE_LIBSYSTEMD
  /* After a live upgrade (handover.h) systemd's WATCHDOG_PID still names
   * the old process, our parent: the watchdog is ours now. */
  const char *wpid = getenv("WATCHDOG_PID");
  if (handover_active() && wpid && strtol(wpid, NULL, 10) == (long)getppid()) {
    char me[24];
    snprintf(me, sizeof me, "%ld", (long)getpid());
    setenv("WATCHDOG_PID", me, 1);
  }
  uint64_t usec = 0;
  /* > 0 only if WATCHDOG_USEC is set and WATCHDOG_PID, if set, is us. */
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    svc.wd_usec = usec;
    svc.interval_ms = usec / 2000 > 0 ? (int64_t)(usec / 2000) : 1;
    log_info("service: watchdog every %" PRIu64 " ms (WatchdogSec=%" PRIu64 " ms): "
             "WATCHDOG=1 while every shard ticks", usec / 2000, usec / 1000);
    if (usec < 1000000)
      log_warn("service: WatchdogSec below 1s: shards tick every 100 ms, so a busy "
               "machine may miss a ping");
  }
#endif
  const char *w = getenv("DERPD_TEST_WEDGE_SHARD_AFTER_MS");
  if (w && *w) {
    char *end;
    long long ms = strtoll(w, &end, 10);
    if (*end || ms < 0) {
      log_error("DERPD_TEST_WEDGE_SHARD_AFTER_MS=%s: not a number of milliseconds", w);
      return -1;
    }
    svc.wedge_at_ms = mono_ms() + ms + (ms == 0); /* 0 would mean never */
    log_warn("service: DERPD_TEST_WEDGE_SHARD_AFTER_MS=%lld: shard 0 stops in its loop "
             "after that long (tests only)", ms);
  }
  return 0;
}

void service_shard_tick(int shard, int64_t now) {
  if (!svc.beats) return;
  uint64_t n = atomic_load_explicit(&svc.beats[shard].n, memory_order_relaxed);
  atomic_store_explicit(&svc.beats[shard].n, n + 1, memory_order_relaxed);
  if (shard == 0 && svc.wedge_at_ms && now >= svc.wedge_at_ms) {
    log_warn("shard 0: wedged by DERPD_TEST_WEDGE_SHARD_AFTER_MS (tests only)");
    for (;;) sleep(3600); /* the shards block every signal: only a kill ends this */
  }
}

void service_ready(const struct server *s) {
  const char *h = s->cfg.listen_host;
  bool v6 = strchr(h, ':') != NULL;
  char msg[512], mainpid[32] = "";
  /* After a live upgrade this process is the service's main process now:
   * it says so before the old one exits (the unit's NotifyAccess=all lets
   * systemd take it from a process it did not start). */
  if (handover_active()) snprintf(mainpid, sizeof mainpid, "MAINPID=%ld\n", (long)getpid());
  /* And pings at once: systemd keeps the old process's watchdog clock, and
   * our first check is an interval away. */
  snprintf(msg, sizeof msg, "%s%sREADY=1\nSTATUS=listening on %s%s%s:%u (%s, %d shard%s)", mainpid,
           mainpid[0] && svc.wd_usec ? "WATCHDOG=1\n" : "", v6 ? "[" : "", h[0] ? h : "*", v6 ? "]" : "",
           s->port, s->tls ? "TLS" : "plain HTTP", s->nshards, s->nshards == 1 ? "" : "s");
  notify(msg);
  if (svc.wd_usec) {
    svc.last_ok_ms = mono_ms();
    svc.next_check_ms = svc.last_ok_ms + svc.interval_ms;
  }
}

void service_reloading(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char msg[96];
  /* MONOTONIC_USEC: systemd 253's Type=notify-reload wants it; older ones ignore it. */
  snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%lld",
           (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
  notify(msg);
}

void service_reloaded(void) { notify("READY=1"); }

void service_stopping(bool handed_over) {
  svc.next_check_ms = 0; /* no more pings: the shards are stopping */
  /* Handed over: the new process is the service now (it sent MAINPID=);
   * a STOPPING=1 from us would stop the unit. */
  if (!handed_over) notify("STOPPING=1");
}

/* WATCHDOG=1 if every shard ticked since the last check. */
static void watchdog_check(int64_t now) {
  int late = -1;
  for (int i = 0; i < svc.nshards; i++) {
    uint64_t n = atomic_load_explicit(&svc.beats[i].n, memory_order_relaxed);
    if (n == svc.seen[i] && late < 0) late = i;
    svc.seen[i] = n;
  }
  if (late >= 0) {
    if (!svc.stalled)
      log_error("service: shard %d has not ticked in %lld ms: no WATCHDOG=1 until it does "
                "(systemd restarts derpd once WatchdogSec passes without one)",
                late, (long long)(now - svc.last_ok_ms));
    svc.stalled = true;
    return;
  }
  if (svc.stalled) log_warn("service: every shard ticks again: WATCHDOG=1 resumes");
  svc.stalled = false;
  svc.last_ok_ms = now;
  notify("WATCHDOG=1");
}

void service_watchdog_due(void) {
  int64_t now = mono_ms();
  if (!svc.next_check_ms || now < svc.next_check_ms) return;
  watchdog_check(now);
  svc.next_check_ms = now + svc.interval_ms;
}

int service_sigwait(const sigset_t *set, int *sig) {
  for (;;) {
    if (!svc.next_check_ms) {
      int r = sigwait(set, sig);
      if (r == 0) return 0;
      continue;
    }
    int64_t now = mono_ms();
    if (now >= svc.next_check_ms) {
      watchdog_check(now);
      svc.next_check_ms = now + svc.interval_ms;
      continue;
    }
    int64_t wait = svc.next_check_ms - now;
    struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000};
    int r = sigtimedwait(set, NULL, &ts);
    if (r > 0) {
      *sig = r;
      return 0;
    }
    /* EAGAIN: time for the next check; EINTR: wait again. */
  }
}

void service_free(void) {
  free(svc.beats);
  free(svc.seen);
  svc.beats = NULL;
  svc.seen = NULL;
}
