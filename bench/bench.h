/* bench.h: what the parts of derp-bench share.
 *
 * Owns the run configuration (filled from flags by derp-bench.c), the
 * log-bucketed latency histogram, server /proc sampling, the parallel client
 * set-up, and the entry points of the three modes (relay, idle, churn). Each
 * mode returns a process exit code and prints its own report.
 *
 * Transport: plain DERP over the HTTP upgrade, or with --tls the same over
 * TLS (BoringSSL, through libderp_tls): set-up runs libderp_tls's blocking
 * client, then takes its SSL object over (derp_client_tls_detach) and the
 * loops drive SSL_read/SSL_write on the non-blocking socket. */
#ifndef BENCH_H
#define BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "derp/key.h"

enum bench_mode { MODE_RELAY, MODE_IDLE, MODE_CHURN };
enum bench_topo { TOPO_PAIRS, TOPO_FANIN, TOPO_RANDOM };

#define BENCH_MIN_SIZE 24
#define BENCH_MAX_WINDOW 65535
#define BENCH_MAX_THREADS 256
#define BENCH_MAX_SERVERS 64 /* --servers entries (a bit each in route sync's masks) */

struct bench_server {
  char host[256];
  uint16_t port;
};

struct bench_cfg {
  /* --server (one) or --servers (several, e.g. the nodes of a region): where
   * each client connects is bench_server_of. */
  struct bench_server servers[BENCH_MAX_SERVERS];
  int nservers;
  enum bench_mode mode;
  enum bench_topo topo;
  int threads;          /* event-loop (relay) or worker (churn) threads */
  int clients;
  int connect_parallel; /* threads that run blocking handshakes at set-up */
  uint32_t size;        /* payload bytes of a data packet */
  uint32_t ack_size;    /* payload bytes of an ack packet */
  int64_t duration_ns, warmup_ns, hold_ns, ack_timeout_ns, drain_ns, pace_quantum_ns;
  int64_t report_every_ns; /* relay: an interval report this often (0 = none) */
  int64_t max_burst_ns;    /* open loop: catch up at most this much of the schedule at once (0 = 4096 packets) */
  uint32_t window;      /* closed loop: unacked packets per sender */
  double pps;           /* open loop when > 0: total offered packets/s */
  pid_t server_pids[BENCH_MAX_SERVERS]; /* --server-pid: one per server, summed */
  int npids;            /* 0 = unknown */
  bool json;
  bool quiet;           /* no progress line */
  bool fast_start;
  bool websocket;       /* DERP inside WebSocket binary messages (ws:// or, with --tls, wss://) */
  uint64_t seed;
  /* TLS (--tls): SNI (NULL = none unless the host is a name), no chain
   * verification, or a pin of the leaf's SHA-256; version 0 = 1.2 or 1.3
   * as negotiated, else 0x0303 or 0x0304 only. */
  bool tls;
  bool tls_insecure;
  bool tls_have_pin;
  uint16_t tls_version;
  const char *tls_sni;
  uint8_t tls_pin[32];
};

/* The TLS version the first handshake negotiated (0 = plain or none yet),
 * and the name the reports give the transport: "plain", "tls1.2", "tls1.3",
 * and over WebSocket "websocket", "websocket+tls1.3", ... */
extern _Atomic int bench_tls_negotiated;
const char *bench_transport(const struct bench_cfg *cfg);

/* ---- time ---- */
int64_t bench_now_ns(void);
void bench_sleep_ns(int64_t ns);

/* ---- histogram (bench_hist.c) ----
 * HDR-style: exact below 128, then 64 sub-buckets per power of two (<1.6%
 * error), up to 2^63. Fixed size, no allocation per sample. */
#define HIST_SUB 64
#define HIST_BUCKETS (2 * HIST_SUB + 57 * HIST_SUB)
struct hist {
  uint64_t n[HIST_BUCKETS];
  uint64_t count, min, max;
  double sum;
};
void hist_init(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
void hist_merge(struct hist *dst, const struct hist *src);
/* Value at quantile q in [0,1] (upper edge of its bucket); 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* ---- server process sampling (bench_report.c) ---- */
struct proc_sample {
  bool ok;
  double cpu_s;     /* utime + stime */
  long rss_kb, hwm_kb;
  /* voluntary + nonvoluntary context switches, summed over the threads that
   * /proc/PID/task lists at the moment of the sample (bench_report.c says
   * what that misses); ctx_ok: at least one thread of each pid was read. */
  bool ctx_ok;
  uint64_t ctx_switches;
};
void proc_sample(pid_t pid, struct proc_sample *s);
/* The sum over every --server-pid (ok only if each was read); not ok
 * without --server-pid. */
void servers_sample(const struct bench_cfg *cfg, struct proc_sample *s);

/* ---- relay results (gathered by bench_relay_run.c, printed by bench_report.c) ----
 * Counts cover packets sent during the measurement window only (a flag in
 * the packet says so), wherever they are received, so loss = sent - delivered
 * is exact and warm-up traffic never leaks into it. */
struct relay_totals {
  uint64_t sent, delivered, delivered_bytes;
  uint64_t acks;        /* closed loop: acks of measured packets received */
  uint64_t timeouts;    /* closed loop: window slots given up after --ack-timeout */
  uint64_t late_acks;   /* acks that came after their slot timed out */
  uint64_t skipped;     /* open loop: sends not offered (socket backed up) */
  uint64_t bad;         /* packets that failed validation */
  uint64_t peer_gone;   /* PeerGone frames (a benchmark client was dropped) */
  double measure_s;
  struct hist lat;      /* one-way latency, ns */
  struct proc_sample s0, s1;
  double bench_cpu_s;   /* this process's CPU over the measurement */
  double sync_s;        /* --servers: time until every cross-server route worked */
  char error[300];      /* empty = no fatal error */
};
void relay_report(const struct bench_cfg *cfg, const struct relay_totals *t);
/* One interval of a long run (--report-every): counters are cumulative over the
 * measured window (as in the final report), the latency histogram and rx are
 * this interval's only and count every data packet, warm-up included. */
struct relay_interval {
  const char *phase;
  double t_s, interval_s;
  uint64_t rx, sent, delivered, skipped, timeouts, bad, peer_gone;
  const struct hist *lat;
  double stall_s; /* the longest a worker thread did not run when it should have */
};
void relay_interval_report(const struct bench_cfg *cfg, const struct relay_interval *iv);
/* One progress line on stderr. */
void relay_progress(const struct bench_cfg *cfg, const char *phase, double secs, uint64_t pps,
                    uint64_t bytes, uint64_t gap, uint64_t timeouts);

/* ---- set-up (bench_setup.c) ---- */
/* Raise RLIMIT_NOFILE to its hard limit; -1 (message printed) if `need`
 * descriptors cannot fit. */
int bench_raise_nofile(size_t need);

struct ssl_st; /* BoringSSL's SSL */
struct bench_peer {
  int fd;            /* nonblocking, TCP_NODELAY; -1 when not connected */
  derp_key pub;
  struct ssl_st *ssl;  /* --tls: the connection's SSL object on fd; else NULL */
  uint8_t *pending;    /* --tls: plaintext read past ServerInfo, not yet parsed */
  size_t npending;
};
/* The server (index into cfg->servers) client i connects to. Relay with
 * pairs: pair k's sender (client 2k) on server k % n, its receiver on
 * (k + 1) % n, so with several servers every packet crosses servers; else
 * round robin, i % n. One server: always 0. */
int bench_server_of(const struct bench_cfg *cfg, int i);
/* Connect and handshake n clients with cfg->connect_parallel threads, each
 * with a fresh key; fds come back nonblocking, detached from libderp's
 * client. 0 on success; -1 (message printed, all fds closed) on failure. */
int bench_connect_all(const struct bench_cfg *cfg, struct bench_peer *peers, int n);
void bench_close_all(struct bench_peer *peers, int n);
/* One blocking connect + handshake to cfg->servers[server] into p (fd, pub,
 * and with --tls ssl and pending; the fd is still blocking when plain). 0,
 * or -1 with err. */
int bench_connect_one(const struct bench_cfg *cfg, int server, struct bench_peer *p, char *err,
                      size_t errlen);
/* Free p's SSL object and pending bytes and close its fd. */
void bench_close_peer(struct bench_peer *p);

/* ---- modes ---- */
int bench_run_relay(const struct bench_cfg *cfg);  /* bench_relay_run.c */
int bench_run_idle(const struct bench_cfg *cfg);   /* bench_setup.c */
int bench_run_churn(const struct bench_cfg *cfg);  /* bench_setup.c */

/* Set by SIGINT/SIGTERM: every loop checks it and winds down. */
extern atomic_bool bench_interrupted;

#endif
