/* service.h: derpd under a service manager (systemd's notify protocol).
 *
 * READY=1 once every shard listens, RELOADING=1 / READY=1 around a SIGHUP
 * reload, STOPPING=1 at shutdown, MAINPID= from the new process of a live
 * upgrade (SIGUSR2, handover.h), and WATCHDOG=1 keep-alives while
 * WatchdogSec= is set (WATCHDOG_USEC, WATCHDOG_PID), sent by the main
 * thread only if every shard's loop has ticked since the last check: a dead
 * or wedged shard stops them and systemd restarts derpd. Without
 * $NOTIFY_SOCKET every call here is a no-op.
 *
 * Threads: service_shard_tick is called by shard threads (each writes only
 * its own heartbeat); everything else by the main thread. */
#ifndef DERPD_SERVICE_H
#define DERPD_SERVICE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/* Once, before the shards start: reads the environment (WATCHDOG_USEC,
 * WATCHDOG_PID, the test hook DERPD_TEST_WEDGE_SHARD_AFTER_MS) and sizes
 * the heartbeats. 0, or -1 (out of memory). */
int service_init(int nshards);
/* Every shard, every tick (100 ms): one relaxed store to its own cache line. */
void service_shard_tick(int shard, int64_t now_ms);
/* "READY=1" with a STATUS line (the listening address, shards): every
 * shard's listener is bound and listening, so a connect succeeds from now. */
struct server;
void service_ready(const struct server *s);
/* Around a SIGHUP reload: RELOADING=1, then READY=1 when done (failed or not). */
void service_reloading(void);
void service_reloaded(void);
/* Shutdown: STOPPING=1; after a live upgrade (handed_over), nothing, and no
 * more WATCHDOG=1: the new process is the service. */
void service_stopping(bool handed_over);
/* sigwait(2), feeding the watchdog while it waits: returns 0 with *sig set
 * once a signal in set is pending. */
int service_sigwait(const sigset_t *set, int *sig);
/* The main thread, busy elsewhere (a live upgrade waiting up to 30 s for its
 * new process): WATCHDOG=1 if a check is due and every shard ticks. */
void service_watchdog_due(void);
void service_free(void);

#endif
