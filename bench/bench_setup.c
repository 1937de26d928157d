/* bench_setup.c: connecting clients, and the idle and churn modes.
 *
 * Owns RLIMIT_NOFILE, the blocking connect + handshake of one client through
 * libderp (derp_client_connect), the parallel set-up of many clients, and the
 * two modes that are only about connections: idle (server memory per held
 * connection) and churn (handshakes per second).
 *
 * Plain: after the handshake the socket is dup'ed and libderp's client is closed:
 * the benchmark drives the raw fd itself, and libderp's 128 KiB receive
 * buffer per client would dominate the generator's own memory. Nothing is
 * lost in that buffer because the server sends nothing unsolicited right
 * after ServerInfo (KeepAlive comes after 60 s, and no peer sends to a client
 * before every client is connected).
 *
 * TLS (--tls): the client is detached instead (derp_client_tls_detach): the
 * SSL object, its fd and any plaintext already read past ServerInfo move into
 * the bench_peer, so nothing can be lost in a buffer either. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "derp/client.h"
#include "derp/client_tls.h"

#define CONNECT_TIMEOUT_MS 10000
/* Churn gives up after this many failed handshakes in a row on one thread. */
#define CHURN_MAX_CONSECUTIVE_FAILS 50

int bench_raise_nofile(size_t need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
    perror("derp-bench: getrlimit(RLIMIT_NOFILE)");
    return -1;
  }
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) perror("derp-bench: setrlimit(RLIMIT_NOFILE)");
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
    fprintf(stderr,
            "derp-bench: need about %zu file descriptors but the limit is %llu; "
            "use fewer --clients or raise the hard limit (ulimit -Hn)\n",
            need, (unsigned long long)rl.rlim_cur);
    return -1;
  }
  return 0;
}

_Atomic int bench_tls_negotiated;

/* Over TLS: libderp_tls's blocking client, then its SSL object taken over.
 * The fd comes back non-blocking (the TLS client runs it that way). */
static int connect_tls(const struct bench_cfg *cfg, const struct derp_client_opts *o,
                       struct bench_peer *p, char *err, size_t errlen) {
  const char *ca = getenv("SSL_CERT_FILE"); /* Go's rules, as derpd's links and derp-mesh */
  struct derp_tls_opts t = {.sni = cfg->tls_sni,
                            .ca_file = ca && *ca ? ca : NULL,
                            .ca_dirs = getenv("SSL_CERT_DIR"),
                            .insecure_skip_verify = cfg->tls_insecure,
                            .pin_sha256 = cfg->tls_have_pin ? cfg->tls_pin : NULL,
                            .min_version = cfg->tls_version,
                            .max_version = cfg->tls_version};
  struct derp_tls_info info;
  struct derp_client *c = NULL;
  if (derp_client_connect_tls(&c, o, &t, &info, err, errlen) < 0) return -1;
  struct derp_tls_conn tc;
  if (derp_client_tls_detach(c, &tc) < 0) {
    snprintf(err, errlen, "tls detach: %s", strerror(errno));
    return -1;
  }
  int zero = 0;
  atomic_compare_exchange_strong(&bench_tls_negotiated, &zero, (int)info.version);
  p->fd = tc.fd;
  p->ssl = tc.ssl;
  p->pending = tc.buffered;
  p->npending = tc.buffered_len;
  return 0;
}

int bench_server_of(const struct bench_cfg *cfg, int i) {
  int n = cfg->nservers > 0 ? cfg->nservers : 1;
  if (cfg->mode == MODE_RELAY && cfg->topo == TOPO_PAIRS) return (i / 2 + i % 2) % n;
  return i % n;
}

int bench_connect_one(const struct bench_cfg *cfg, int server, struct bench_peer *p, char *err,
                      size_t errlen) {
  derp_privkey priv;
  derp_key_generate(&priv, &p->pub);
  p->fd = -1;
  p->ssl = NULL;
  p->pending = NULL;
  p->npending = 0;
  const struct bench_server *sv = &cfg->servers[server];
  struct derp_client_opts o = {.host = sv->host, .port = sv->port, .priv = &priv,
                               .timeout_ms = CONNECT_TIMEOUT_MS, .websocket = cfg->websocket};
  if (cfg->tls) return connect_tls(cfg, &o, p, err, errlen);
  struct derp_client *c = NULL;
  if (derp_client_connect(&c, &o, err, errlen) < 0) return -1;
  int fd = fcntl(derp_client_fd(c), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) snprintf(err, errlen, "dup: %s", strerror(errno));
  derp_client_close(c);
  p->fd = fd;
  return fd < 0 ? -1 : 0;
}

void bench_close_peer(struct bench_peer *p) {
  if (p->ssl) SSL_free(p->ssl); /* no close_notify: the benchmark just drops */
  p->ssl = NULL;
  free(p->pending);
  p->pending = NULL;
  p->npending = 0;
  if (p->fd >= 0) close(p->fd);
  p->fd = -1;
}

/* ---- parallel set-up ---- */

struct setup_job {
  const struct bench_cfg *cfg;
  struct bench_peer *peers;
  int n;
  atomic_int next;      /* next index to connect */
  atomic_int done;      /* clients connected */
  atomic_int running;   /* set-up threads not yet finished */
  atomic_bool failed;
  pthread_mutex_t err_mu;
  char err[300];
};

static int make_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void *setup_thread(void *arg) {
  struct setup_job *j = arg;
  for (int i; !atomic_load(&j->failed) && !atomic_load(&bench_interrupted) &&
              (i = atomic_fetch_add(&j->next, 1)) < j->n;) {
    char err[256] = "";
    struct bench_peer *p = &j->peers[i];
    int rc = bench_connect_one(j->cfg, bench_server_of(j->cfg, i), p, err, sizeof err);
    if (rc == 0 && make_nonblocking(p->fd) < 0) {
      snprintf(err, sizeof err, "fcntl: %s", strerror(errno));
      bench_close_peer(p);
      rc = -1;
    }
    if (rc < 0) {
      pthread_mutex_lock(&j->err_mu);
      if (!atomic_exchange(&j->failed, true))
        snprintf(j->err, sizeof j->err, "client %d: %s", i, err);
      pthread_mutex_unlock(&j->err_mu);
      break;
    }
    atomic_fetch_add(&j->done, 1);
  }
  atomic_fetch_sub(&j->running, 1);
  return NULL;
}

/* Wait for the set-up threads, printing progress once a second for big runs.
 * Each thread ends on its own: every connect has a deadline. */
static void setup_wait(struct setup_job *j, pthread_t *th, int nth) {
  int64_t next_print = bench_now_ns() + 1000000000;
  while (atomic_load(&j->running) > 0) {
    bench_sleep_ns(20000000);
    if (bench_now_ns() < next_print) continue;
    next_print += 1000000000;
    if (!j->cfg->quiet) fprintf(stderr, "connecting: %d/%d\n", atomic_load(&j->done), j->n);
  }
  for (int t = 0; t < nth; t++) pthread_join(th[t], NULL);
}

int bench_connect_all(const struct bench_cfg *cfg, struct bench_peer *peers, int n) {
  for (int i = 0; i < n; i++) peers[i].fd = -1;
  struct setup_job j = {.cfg = cfg, .peers = peers, .n = n};
  pthread_mutex_init(&j.err_mu, NULL);
  int nth = cfg->connect_parallel < n ? cfg->connect_parallel : n;
  pthread_t th[BENCH_MAX_THREADS];
  int started = 0;
  atomic_store(&j.running, nth);
  for (; started < nth; started++)
    if (pthread_create(&th[started], NULL, setup_thread, &j) != 0) break;
  atomic_fetch_sub(&j.running, nth - started);
  if (started == 0) {
    fprintf(stderr, "derp-bench: cannot start set-up threads\n");
    return -1;
  }
  setup_wait(&j, th, started);
  pthread_mutex_destroy(&j.err_mu);
  if (atomic_load(&j.done) == n) return 0;
  if (atomic_load(&j.failed)) fprintf(stderr, "derp-bench: connect failed: %s\n", j.err);
  else fprintf(stderr, "derp-bench: interrupted during set-up\n");
  bench_close_all(peers, n);
  return -1;
}

void bench_close_all(struct bench_peer *peers, int n) {
  for (int i = 0; i < n; i++) bench_close_peer(&peers[i]);
}

/* ---- idle ---- */

/* Over TLS: 1 if the server closed the connection (EOF, close_notify, error). */
static int tls_closed(struct bench_peer *p, uint8_t *scratch, int cap) {
  for (int k = 0; k < 64; k++) {
    int r = SSL_read(p->ssl, scratch, cap);
    if (r > 0) continue;
    int e = SSL_get_error(p->ssl, r);
    ERR_clear_error();
    return e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
  }
  return 0;
}

/* Connections the server has closed: a read that says EOF or error. Bytes
 * (KeepAlive) are read and dropped; nothing pending means alive. */
static int count_closed(struct bench_peer *peers, int n) {
  int closed = 0;
  uint8_t scratch[4096];
  for (int i = 0; i < n; i++) {
    if (peers[i].ssl) {
      closed += tls_closed(&peers[i], scratch, (int)sizeof scratch);
      continue;
    }
    for (int k = 0; k < 64; k++) {
      ssize_t r = recv(peers[i].fd, scratch, sizeof scratch, MSG_DONTWAIT);
      if (r > 0) continue;
      if (r == 0 || (errno != EAGAIN && errno != EINTR)) closed++;
      break;
    }
  }
  return closed;
}

static void hold(const struct bench_cfg *cfg, int64_t ns, struct proc_sample *mid) {
  int64_t end = bench_now_ns() + ns, next_print = bench_now_ns() + 1000000000;
  while (bench_now_ns() < end && !atomic_load(&bench_interrupted)) {
    bench_sleep_ns(50000000);
    if (bench_now_ns() < next_print) continue;
    next_print += 1000000000;
    servers_sample(cfg, mid);
    if (!cfg->quiet && cfg->npids)
      fprintf(stderr, "holding %d clients: server RSS %ld KiB\n", cfg->clients, mid->rss_kb);
  }
}

static void idle_report(const struct bench_cfg *cfg, const struct proc_sample *before,
                        const struct proc_sample *after, double setup_s, int closed) {
  int n = cfg->clients;
  double per_conn = (before->ok && after->ok)
                        ? (double)(after->rss_kb - before->rss_kb) * 1024.0 / n
                        : -1;
  FILE *out = cfg->json ? stderr : stdout;
  fprintf(out, "idle: %d %s clients connected in %.2f s (%.0f handshakes/s), %d closed by server\n",
          n, bench_transport(cfg), setup_s, n / setup_s, closed);
  if (before->ok && after->ok)
    fprintf(out, "server RSS: %ld KiB before, %ld KiB held (peak %ld KiB): %.0f bytes/connection\n",
            before->rss_kb, after->rss_kb, after->hwm_kb, per_conn);
  else
    fprintf(out, "server RSS: unknown (pass --server-pid)\n");
  if (!cfg->json) return;
  json_t *o = json_pack("{s:s, s:s, s:i, s:f, s:f, s:i}", "mode", "idle", "transport",
                        bench_transport(cfg), "clients", n, "setup_s", setup_s,
                        "handshakes_per_s", n / setup_s, "closed_by_server", closed);
  if (before->ok && after->ok) {
    json_object_set_new(o, "server_rss_before_kb", json_integer(before->rss_kb));
    json_object_set_new(o, "server_rss_after_kb", json_integer(after->rss_kb));
    json_object_set_new(o, "server_rss_peak_kb", json_integer(after->hwm_kb));
    json_object_set_new(o, "server_bytes_per_conn", json_real(per_conn));
  }
  json_dumpf(o, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  json_decref(o);
}

int bench_run_idle(const struct bench_cfg *cfg) {
  int n = cfg->clients;
  struct bench_peer *peers = calloc((size_t)n, sizeof *peers);
  if (!peers) return 2;
  struct proc_sample before = {0}, after = {0};
  servers_sample(cfg, &before);
  int64_t t0 = bench_now_ns();
  if (bench_connect_all(cfg, peers, n) < 0) {
    free(peers);
    return 1;
  }
  double setup_s = (double)(bench_now_ns() - t0) / 1e9;
  hold(cfg, cfg->hold_ns, &after);
  servers_sample(cfg, &after);
  int closed = count_closed(peers, n);
  idle_report(cfg, &before, &after, setup_s, closed);
  bench_close_all(peers, n);
  free(peers);
  if (closed) fprintf(stderr, "derp-bench: the server closed %d idle connections\n", closed);
  return closed || atomic_load(&bench_interrupted) ? 1 : 0;
}

/* ---- churn ---- */

struct churn_job {
  const struct bench_cfg *cfg;
  int64_t end_ns;
  atomic_uint_fast64_t ok, failed;
  atomic_bool abort;
  char err[320];
};

struct churn_thread {
  struct churn_job *j;
  int server;      /* --servers: the next handshake's server (round robin) */
  struct hist lat; /* handshake latency, ns */
};

static void *churn_thread_main(void *arg) {
  struct churn_thread *t = arg;
  struct churn_job *j = t->j;
  int fails_in_row = 0;
  while (bench_now_ns() < j->end_ns && !atomic_load(&j->abort) &&
         !atomic_load(&bench_interrupted)) {
    struct bench_peer p;
    char err[256] = "";
    int64_t t0 = bench_now_ns();
    int server = t->server;
    t->server = (t->server + 1) % j->cfg->nservers;
    if (bench_connect_one(j->cfg, server, &p, err, sizeof err) == 0) {
      hist_add(&t->lat, (uint64_t)(bench_now_ns() - t0));
      bench_close_peer(&p);
      atomic_fetch_add_explicit(&j->ok, 1, memory_order_relaxed);
      fails_in_row = 0;
      continue;
    }
    atomic_fetch_add_explicit(&j->failed, 1, memory_order_relaxed);
    if (++fails_in_row >= CHURN_MAX_CONSECUTIVE_FAILS && !atomic_exchange(&j->abort, true))
      snprintf(j->err, sizeof j->err, "%d handshakes in a row failed, last: %s", fails_in_row, err);
  }
  return NULL;
}

static void churn_report(const struct bench_cfg *cfg, uint64_t ok, uint64_t failed, double secs,
                         const struct hist *lat, const struct proc_sample *s0,
                         const struct proc_sample *s1) {
  FILE *out = cfg->json ? stderr : stdout;
  double hs = (double)ok / secs;
  double cpu = (s0->ok && s1->ok) ? s1->cpu_s - s0->cpu_s : -1;
  fprintf(out, "churn (%s): %llu handshakes in %.2f s = %.0f handshakes/s, %llu failed\n",
          bench_transport(cfg), (unsigned long long)ok, secs, hs, (unsigned long long)failed);
  fprintf(out, "handshake latency (connect to ServerInfo): p50 %.1f us, p99 %.1f us, max %.1f us\n",
          hist_quantile(lat, 0.5) / 1e3, hist_quantile(lat, 0.99) / 1e3,
          lat->count ? lat->max / 1e3 : 0.0);
  if (cpu >= 0 && ok)
    fprintf(out, "server CPU: %.2f s, %.1f us per handshake, RSS %ld KiB\n", cpu, cpu * 1e6 / ok,
            s1->rss_kb);
  if (!cfg->json) return;
  json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:I, s:f, s:f, s:f, s:f}", "mode", "churn",
                        "transport", bench_transport(cfg), "threads",
                        cfg->threads, "handshakes", (json_int_t)ok, "failed", (json_int_t)failed,
                        "duration_s", secs, "handshakes_per_s", hs, "latency_p50_us",
                        hist_quantile(lat, 0.5) / 1e3, "latency_p99_us",
                        hist_quantile(lat, 0.99) / 1e3);
  if (cpu >= 0) {
    json_object_set_new(o, "server_cpu_s", json_real(cpu));
    json_object_set_new(o, "server_cpu_us_per_handshake", json_real(ok ? cpu * 1e6 / ok : 0));
    json_object_set_new(o, "server_rss_kb", json_integer(s1->rss_kb));
  }
  json_dumpf(o, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  json_decref(o);
}

static void churn_progress(const struct bench_cfg *cfg, struct churn_job *j) {
  uint64_t last = 0;
  int64_t next = bench_now_ns() + 1000000000;
  while (bench_now_ns() < j->end_ns && !atomic_load(&j->abort) &&
         !atomic_load(&bench_interrupted)) {
    bench_sleep_ns(20000000);
    if (bench_now_ns() < next) continue;
    next += 1000000000;
    uint64_t ok = atomic_load(&j->ok);
    if (!cfg->quiet)
      fprintf(stderr, "churn: %llu handshakes/s, %llu failed\n", (unsigned long long)(ok - last),
              (unsigned long long)atomic_load(&j->failed));
    last = ok;
  }
}

int bench_run_churn(const struct bench_cfg *cfg) {
  struct churn_job j = {.cfg = cfg};
  struct churn_thread *ts = calloc((size_t)cfg->threads, sizeof *ts);
  pthread_t th[BENCH_MAX_THREADS];
  if (!ts) return 2;
  struct proc_sample s0 = {0}, s1 = {0};
  servers_sample(cfg, &s0);
  int64_t t0 = bench_now_ns();
  j.end_ns = t0 + cfg->duration_ns;
  int started = 0;
  for (; started < cfg->threads; started++) {
    ts[started].j = &j;
    ts[started].server = started % cfg->nservers;
    hist_init(&ts[started].lat);
    if (pthread_create(&th[started], NULL, churn_thread_main, &ts[started]) != 0) break;
  }
  churn_progress(cfg, &j);
  for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
  double secs = (double)(bench_now_ns() - t0) / 1e9;
  servers_sample(cfg, &s1);
  struct hist lat;
  hist_init(&lat);
  for (int t = 0; t < started; t++) hist_merge(&lat, &ts[t].lat);
  free(ts);
  churn_report(cfg, atomic_load(&j.ok), atomic_load(&j.failed), secs, &lat, &s0, &s1);
  if (atomic_load(&j.abort)) {
    fprintf(stderr, "derp-bench: churn aborted: %s\n", j.err);
    return 1;
  }
  return atomic_load(&bench_interrupted) ? 1 : 0;
}
