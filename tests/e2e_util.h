/* e2e_util.h: helpers for end-to-end tests against a real derpd process.
 *
 * Owns: starting derpd on a free 127.0.0.1 port in a fresh temp dir (key file
 * and log live there), stopping/killing it, reading its RSS and log, DERP
 * clients with fresh keys, route synchronisation between two clients, and raw
 * TCP / HTTP helpers for malformed-input tests.
 *
 * The binary is $DERPD_BIN (meson sets it), else ./build/src/derpd.
 * Helpers whose name starts with e2e_ assert (Criterion; or mini_test.h when
 * built with -DE2E_NO_CRITERION, for the TLS tests) on failure; the
 * others return an error code so tests can assert on failure cases. */
#ifndef E2E_UTIL_H
#define E2E_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "derp/client.h"
#include "derp/key.h"

struct derpd_proc {
  pid_t pid;            /* 0 when not running */
  uint16_t port;
  derp_key server_key;  /* read from <dir>/derper.key once the server made it */
  char dir[256];
  char log_path[300];
  char host[48];        /* where derpd listens (-a) and clients dial: "127.0.0.1" or "::1" */
};

/* Start derpd with --shards N and extra space-separated args (may be NULL).
 * Waits (<= 10 s) until it accepts TCP and its key file exists. Retries with
 * another port (3 tries) if it exits early. 0 on success, -1 (log dumped to
 * stderr) on failure. The child gets SIGKILL if the test process dies.
 * It listens on 127.0.0.1, with STUN on a free port (-stun-port=0) unless
 * extra_args say otherwise (a later flag wins). */
int derpd_start(struct derpd_proc *p, int shards, const char *extra_args);
/* derpd_start on another loopback address: host "127.0.0.1" or "::1". */
int derpd_start_on(struct derpd_proc *p, int shards, const char *host, const char *extra_args);
/* Nonzero: the open-file limit (soft and hard) the next derpd_start* gives
 * the server, set in its process only (the test's own stays as it is). */
extern unsigned long e2e_derpd_nofile;
/* derpd_start on a given port (one try): for nodes that must know each
 * other's ports before they start (regions). */
int derpd_start_port(struct derpd_proc *p, int shards, uint16_t port, const char *extra_args);
/* A port that was free on 127.0.0.1 a moment ago. 0 or -1. */
int e2e_pick_port(uint16_t *port);
/* Wait (no signal sent) up to timeout_ms for the process to exit. 0 = exited
 * (*exit_status as below), -1 = still running (left running). */
int derpd_wait(struct derpd_proc *p, int timeout_ms, int *exit_status);
/* Send SIGTERM, wait up to timeout_ms for exit. 0 = exited (*exit_status =
 * exit code, or 128 + signal); -1 = still running (then SIGKILLed and reaped). */
int derpd_stop_within(struct derpd_proc *p, int timeout_ms, int *exit_status);
/* derpd_stop_within with 5 s. */
int derpd_stop(struct derpd_proc *p, int *exit_status);
/* Restart: derpd_stop, then the same server again (same port, key file and
 * log file, which starts over), waiting until it accepts. 0, or -1 (log
 * dumped). *exit_status: the old process's, as derpd_stop_within says. */
int derpd_restart(struct derpd_proc *p, int shards, const char *extra_args, int *exit_status);
/* SIGKILL if still running, reap, remove the temp dir. Safe to call twice. */
void derpd_kill(struct derpd_proc *p);
/* True while the process has not exited (reaps it if it has). */
bool derpd_alive(struct derpd_proc *p);
/* Whether a derpd this test reaped had died of a crash (a sanitizer's
 * abort, SEGV, ..., TSan's exit 66: its log was printed then), and forget
 * it. For teardowns: e2e_test_fini checks it; derpd_kill all servers first. */
bool e2e_crash_seen(void);
/* VmRSS in KiB, -1 if unreadable. */
long derpd_rss_kb(const struct derpd_proc *p);
bool derpd_log_contains(const struct derpd_proc *p, const char *substr);
/* After a live upgrade (SIGUSR2): the pid of the last "derpd: pid N" line in
 * the log other than old's, or 0. */
pid_t derpd_new_pid(const struct derpd_proc *p, pid_t old);
/* SIGKILL and reap *pid if it is > 0 (a process a live upgrade started,
 * logging into log_of's file); *pid = 0. One that had died on its own is
 * judged as derpd_alive does (a crash fails the test at teardown). */
void e2e_reap(pid_t *pid, const struct derpd_proc *log_of);
/* $DERPD_BIN, else ./build/src/derpd. */
const char *e2e_derpd_bin(void);
/* Run the shell command cmd, its stdout (add 2>&1 for stderr too) into out
 * (NUL-terminated, cut at cap - 1); pclose's status. Asserts popen worked. */
int e2e_run_capture(const char *cmd, char *out, size_t cap);
/* Print the last `max` bytes of the log to stderr (diagnostics on failure). */
void derpd_dump_log(const struct derpd_proc *p, size_t max);

/* derpd_start, asserting success (names $DERPD_BIN in the failure). */
void e2e_start(struct derpd_proc *p, int shards, const char *extra_args);
/* A fresh random public key (its private half is thrown away). */
void e2e_random_key(derp_key *k);
/* Ping with random data and assert the matching Pong within 2 s. */
void e2e_assert_ping_pong(struct derp_client *c);

/* Monotonic milliseconds and a sleep, for bounded loops. */
int64_t e2e_now_ms(void);
void e2e_sleep_ms(int ms);

/* Connect a client with a fresh key and assert success; priv_out, if not NULL,
 * receives the key. Both modes check the ServerKey against p->server_key. */
struct derp_client *e2e_client(const struct derpd_proc *p, derp_privkey *priv_out, bool fast_start);
struct derp_client *e2e_client_with_key(const struct derpd_proc *p, const derp_privkey *priv,
                                        bool fast_start);
/* Clients made by e2e_client* are tracked: e2e_close closes one early,
 * e2e_close_all (test teardown) closes the rest. Up to E2E_MAX_CLIENTS. */
#define E2E_MAX_CLIENTS 64
void e2e_close(struct derp_client *c);
void e2e_close_all(void);
/* A test's set-up: SIGPIPE ignored, libderp initialised, random seeded. */
void e2e_test_init(void);
/* A test's tear-down: the log with $E2E_LOG set, every tracked client
 * closed, derpd killed. */
void e2e_test_fini(struct derpd_proc *p);
/* Removes a directory and the files in it (a test's certificate dir). */
void e2e_rm_dir(const char *dir);
/* Non-asserting connect (not tracked; the caller closes): NULL with err filled on failure. */
struct derp_client *derpd_client(const struct derpd_proc *p, const derp_privkey *priv,
                                 bool fast_start, char *err, size_t errlen);
/* WebSocket clients (DERP in binary messages; frame_max: split each write into
 * frames of at most that many bytes, 0 = one frame per write). Tracked like
 * e2e_client; the derpd_ variant asserts nothing and is not tracked. */
struct derp_client *e2e_client_ws(const struct derpd_proc *p, derp_privkey *priv_out,
                                  uint32_t frame_max);
struct derp_client *derpd_client_ws(const struct derpd_proc *p, const derp_privkey *priv,
                                    uint32_t frame_max, char *err, size_t errlen);

/* Route sync: the server may register a new client's key asynchronously (as
 * Go's derper does, after ServerInfo), so before measuring relay behaviour a
 * test has `from` send marker packets to `to` until one arrives (<= 5 s).
 * Markers start with E2E_SYNC_MAGIC; e2e_recv_data skips them. */
#define E2E_SYNC_MAGIC "e2e-sync"
#define E2E_SYNC_MAGIC_LEN 8
void e2e_sync_route(struct derp_client *from, struct derp_client *to);
/* Receive the next RecvPacket that is not a sync marker, asserting it arrives
 * within timeout_ms. PeerGone frames are skipped too (use
 * derp_client_recv_packet to see them). */
void e2e_recv_data(struct derp_client *c, struct derp_client_msg *m, int timeout_ms);
/* Relay n packets from a to b (window of 16), asserting order, content and
 * source key; returns elapsed ms. */
int64_t e2e_relay_check(struct derp_client *a, struct derp_client *b, int n);
/* Flood rx (a client that does not read) from tx with 64 KiB packets until
 * its socket is full and derpd's write to it stays pending: packets for it
 * still drop (queue_head: a full queue behind a pending write) after a
 * pause long enough for any write the socket could take to complete. sync,
 * a reading client, tells when tx's packets are through (e2e_relay_check).
 * Asserts it got there within 40 rounds (slow builds need more than one). */
void e2e_fill_receiver(const struct derpd_proc *p, struct derp_client *tx, struct derp_client *rx,
                       struct derp_client *sync);
/* Wait until the connection reports closed (recv -1), skipping frames, within
 * timeout_ms. True if closed in time. */
bool e2e_wait_closed(struct derp_client *c, int timeout_ms);

/* Raw TCP to the server: fd (blocking, TCP_NODELAY) or -1. */
int raw_connect(const struct derpd_proc *p);
/* Write all bytes; 0 or -1 (errno; EPIPE/ECONNRESET mean the server closed). */
int raw_write_all(int fd, const void *buf, size_t n);
/* Read until EOF/reset or timeout. Returns bytes stored (extra bytes are read
 * and dropped once buf is full); *closed = the peer closed or reset. */
size_t raw_read_until_close(int fd, void *buf, size_t cap, int timeout_ms, bool *closed);
/* Read until buf holds at least `want` bytes, EOF or timeout; returns bytes. */
size_t raw_read_at_least(int fd, void *buf, size_t cap, size_t want, int timeout_ms);

/* One HTTP request on a fresh connection (req is sent as is). Reads the
 * response head and a Content-Length body (or to EOF, <= 2 s). Returns the
 * status code, -1 on failure; resp gets the NUL-terminated response. */
int http_request(const struct derpd_proc *p, const char *req, char *resp, size_t cap);
/* Value of a response header (case-insensitive name) copied into out; false if absent. */
bool http_header(const char *resp, const char *name, char *out, size_t cap);

/* Value of a /debug/varz line "name value" (name includes any {labels}), or -1. */
long long derpd_varz(const struct derpd_proc *p, const char *name);
/* The sum of every sample of a family (labelled or not); -1 if the page
 * failed or has none. */
long long derpd_varz_sum(const struct derpd_proc *p, const char *family);
/* Polls derpd_varz every 20 ms until it reads `want` or ms pass; the last value. */
long long derpd_varz_eventually(const struct derpd_proc *p, const char *name, long long want, int ms);

/* Raw DERP upgrade on fd: send GET /derp upgrade, read 101 + the ServerKey
 * frame. 0 on success (server key checked against p), -1 otherwise. */
int raw_derp_upgrade(const struct derpd_proc *p, int fd);

#endif
