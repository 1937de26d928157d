/* main.c: derpd's process: flags, key, listening sockets, the shards, signals.
 *
 * Owns start-up and shutdown only. Everything here happens before the shard
 * threads start or after they have been joined, except the `stopping` flag,
 * which the signal loop sets and every shard polls on its tick. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "server/acme/acme.h"
#include "server/admission/admission.h"
#include "server/core/listen.h"
#include "server/transport/ktls.h"
#include "server/httpc/httpc.h"
#include "server/log.h"
#include "server/operations/debug_http.h"
#include "server/operations/handover.h"
#include "server/operations/service.h"
#include "server/operations/tcp_rtt.h"
#include "server/region/region.h"
#include "server/server.h"
#include "server/stun/stun_server.h"
#include "server/thread_join.h"
#include "server/transport/tls.h"

/* Every shard's listener sets SO_REUSEPORT, which would let a second derpd
 * (same user) quietly share a port with the first. Not after a live
 * upgrade: the old process holds the port on purpose. */
static int port_in_use(const char *host, uint16_t port, char *err, size_t errlen) {
  return !handover_active() && listen_port_in_use(host, port, err, errlen);
}

/* CPUs this process may run on (taskset, cpusets), as Go's GOMAXPROCS counts
 * them; the online count if the mask cannot be read. */
static int usable_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* The descriptors derpd holds besides its clients' connections, so that
 * connections up to --max-conns cannot take the ones the rest needs (an
 * admission check that cannot open its socket fails, and under fail-open
 * admits the client unasked). Each shard: a ring, up to three listeners (the
 * main port, the port-80 helper, --metrics-listen) and a STUN socket; logs,
 * key and certificate files, and spares: 32. Admission: per worker a ring,
 * its kept-alive connections to the controller and to tailscaled, and a
 * lookup's eventfd and resolver socket. Admission and ACME share httpc's
 * lookups, abandoned ones included (an eventfd and a socket each). A mesh
 * link: its dialler's eventfd, the socket being dialled and the link conn,
 * and its own lookups. */
static long fd_reserve(const struct config *c, int nshards) {
  long r = 32 + 5L * nshards + (c->metrics_port >= 0 ? METRICS_CONNS_MAX : 0);
  bool adm = c->verify_client_url[0] || c->verify_clients;
  if (adm) r += 5L * c->admission_workers;
  if (adm || config_acme(c)) r += 2L * HTTPC_SHARED_LOOKUPS + 8;
  if (c->mesh_with[0]) {
    long links = 1;
    for (const char *p = c->mesh_with; *p; p++) links += *p == ',';
    r += (3 + 2L * REGION_LINK_LOOKUPS) * links;
  }
  return r;
}

/* Raise the open-file limit to its hard cap; derive the connection bound. */
static int conn_budget(const struct config *cfg, int nshards, int configured) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  long avail = (long)rl.rlim_cur - fd_reserve(cfg, nshards);
  if (avail < 16) avail = 16;
  if (configured > 0 && configured < avail) return configured;
  if (configured > avail)
    log_warn("--max-conns=%d is above the open-file limit; using %ld", configured, avail);
  return (int)avail;
}

static int load_key(struct server *s) {
  const struct config *c = &s->cfg;
  if (c->key_path_default) log_info("no -c given; using %s (derper's default as root)", c->key_path);
  if (c->key_path[0]) {
    char msg[256] = "";
    int created = 0;
    if (derp_keyfile_load_or_create(c->key_path, &s->priv, &created, msg, sizeof msg) != 0) {
      log_error("key file %s: %s", c->key_path, msg[0] ? msg : strerror(errno));
      return -1;
    }
    if (created) log_info("created new key file %s", c->key_path);
  } else if (c->dev) {
    derp_key pub;
    derp_key_generate(&s->priv, &pub);
    log_info("dev mode: using an ephemeral key (pass -c FILE to keep one)");
  } else {
    log_error("no key file: pass -c FILE (derper's key file format), or -dev "
              "(as root the default is " CONFIG_ROOT_KEY_PATH ")");
    return -1;
  }
  derp_key_public(&s->priv, &s->pub);
  derp_key_hex(&s->pub, s->pub_hex);
  return 0;
}

/* Every ring's slots live in one anonymous mapping, so a page is backed only
 * once a ring's index reaches it: an idle server, or a pair that carries
 * little, costs next to nothing (with calloc, 64 shards held 240 MB of RSS
 * before the first packet). */
static int make_rings(struct server *s) {
  int n = s->nshards;
  uint32_t dd, cd;
  config_ring_depths(n, s->cfg.queue_depth, &dd, &cd);
  s->data_q = calloc((size_t)n * n, sizeof *s->data_q);
  s->ctrl_q = calloc((size_t)n * n, sizeof *s->ctrl_q);
  s->hand_q = calloc((size_t)n * n, sizeof *s->hand_q);
  if (!s->data_q || !s->ctrl_q || !s->hand_q) return -1;
  size_t per_pair = ((size_t)dd + 2 * (size_t)cd) * sizeof(void *);
  s->ring_mem_len = per_pair * (size_t)n * (size_t)(n - 1);
  if (s->ring_mem_len) {
    void *m = mmap(NULL, s->ring_mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      s->ring_mem_len = 0;
      return -1;
    }
    s->ring_mem = m;
  }
  void **slot = s->ring_mem;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      if (i == j) continue;
      s->data_q[i * n + j] = spsc_new_at(dd, slot);
      s->ctrl_q[i * n + j] = spsc_new_at(cd, slot + dd);
      s->hand_q[i * n + j] = spsc_new_at(cd, slot + dd + cd);
      slot += dd + 2 * cd;
      if (!s->data_q[i * n + j] || !s->ctrl_q[i * n + j] || !s->hand_q[i * n + j]) return -1;
    }
  if (n > 1)
    log_info("derpd: inter-shard rings per shard pair: data %u, control %u, handoff %u "
             "(%zu MiB of address space, backed as used)", dd, cd, cd, s->ring_mem_len >> 20);
  return 0;
}

/* After the shards are joined: free what is still in the rings. */
static void drain_rings(struct server *s) {
  int n = s->nshards;
  void *items[256];
  for (int i = 0; i < n * n; i++) {
    uint32_t k;
    if (s->data_q[i]) {
      spsc_publish(s->data_q[i]);
      while ((k = spsc_pop_batch(s->data_q[i], items, 256)))
        for (uint32_t j = 0; j < k; j++) free(items[j]);
      spsc_free(s->data_q[i]);
    }
    if (s->ctrl_q[i]) {
      spsc_publish(s->ctrl_q[i]);
      while ((k = spsc_pop_batch(s->ctrl_q[i], items, 256)))
        for (uint32_t j = 0; j < k; j++) free(items[j]);
      spsc_free(s->ctrl_q[i]);
    }
    if (s->hand_q[i]) {
      spsc_publish(s->hand_q[i]);
      while ((k = spsc_pop_batch(s->hand_q[i], items, 256)))
        for (uint32_t j = 0; j < k; j++) conn_free_orphan(items[j]);
      spsc_free(s->hand_q[i]);
    }
  }
  free(s->data_q);
  free(s->ctrl_q);
  free(s->hand_q);
  if (s->ring_mem) munmap(s->ring_mem, s->ring_mem_len);
}

static int start_shards(struct server *s, pthread_barrier_t *bar) {
  int err = 0;
  for (int i = 0; i < s->nshards; i++) {
    struct shard *sh = &s->shards[i];
    sh->id = i;
    sh->srv = s;
    sh->rng = ((uint64_t)randombytes_random() << 32) | randombytes_random() | 1;
    int r = shard_spawn(sh, bar, &err);
    if (r < 0) {
      log_error("shard %d: cannot start: %s", i, strerror(-r));
      exit(1); /* threads already started wait on the barrier; exit ends them */
    }
  }
  pthread_barrier_wait(bar); /* every ring is set up (or failed) */
  if (err) atomic_store(&s->stopping, true);
  pthread_barrier_wait(bar); /* go */
  return err ? -1 : 0;
}

/* The shards get 5 s of this process's running time to stop (their own
 * drain ends after 1 s, 2 s at an upgrade). Joined in 100 ms slices, a slice
 * that overran counting once: a process frozen meanwhile (SIGSTOP, a paused
 * VM) does not charge the freeze to the shards, which stop within a tick of
 * waking because their deadlines have passed too. */
#define STOP_SLICE_MS 100
#define STOP_SLICES 50

static void shutdown_shards(struct server *s) {
  atomic_store(&s->stopping, true);
  shards_wake_for_stop(s);
  int left = STOP_SLICES;
  for (int i = 0; i < s->nshards; i++) {
    for (;;) {
      if (join_within(s->shards[i].thread, STOP_SLICE_MS) == 0) break;
      if (--left == 0) {
        log_error("shard %d did not stop within %ds; exiting anyway", i,
                  STOP_SLICES * STOP_SLICE_MS / 1000);
        _exit(1);
      }
    }
  }
}

/* A start that fails once the shards run: sockets inherited in a live
 * upgrade are the old process's too, and it serves on them. Stop as the old
 * process does in an upgrade (cancel the accepts): a shutdown() would take
 * the shared sockets out of listening for both processes. */
static void stop_failed_start(struct server *s) {
  if (handover_active()) atomic_store(&s->handover, true);
  admission_quiesce(s); /* workers started (admission_start failed midway) wake no ring */
  shutdown_shards(s);
}

static void free_server(struct server *s) {
  drain_rings(s);
  for (int i = 0; i < s->nshards; i++) {
    struct shard *sh = &s->shards[i];
    if (sh->ring_fd > 0 && !sh->ring_exited) io_uring_queue_exit(&sh->ring);
    stun_shard_free(sh); /* a shard that never ran */
    free(sh->bufs);
    free(sh->buf_free);
    free(sh->br);
    free(sh->pending_pub);
    free(sh->outbox_pend);
    free(sh->outbox_h);
    free(sh->outbox_t);
    region_shard_free(sh); /* a shard that never ran */
    peer_table_free(&sh->peers); /* likewise (SIGTERM before it passed the start barrier) */
    free((void *)sh->inbound);
    if (sh->listen_fd >= 0) close(sh->listen_fd);
    if (sh->listen80_fd >= 0) close(sh->listen80_fd);
    if (sh->metrics_fd >= 0) close(sh->metrics_fd);
  }
  free(s->shards);
  region_free(s);
  debug_state_free(s);
  free(s);
}

/* DERPD_TEST_ASSUME_KTLS=refuse-keys: TCP_ULP "succeeds" without reaching
 * the kernel and every key is refused (EINVAL), on any kernel;
 * =refuse-suites: refused as a kernel that cannot load the crypto does
 * (ENOENT), which derpd remembers per suite; =refuse-tx: the RX key is
 * "taken" (nothing reaches the kernel, so only bytes derpd read before the
 * switch are plaintext) and the TX key refused, as a kernel short of memory
 * would: the conn cannot go back and is closed. */
static int refuse_errno = EINVAL;
static bool refuse_tx_only;
static int refuse_keys(int fd, int level, int name, const void *val, socklen_t len) {
  (void)fd, (void)val, (void)len;
  if (level == SOL_TCP || (refuse_tx_only && name == TLS_RX)) return 0;
  errno = refuse_errno;
  return -1;
}

/* --ktls: probe the kernel once. For tests only, DERPD_TEST_ASSUME_KTLS=1
 * skips the probe and takes kTLS as present, so that a kernel without it
 * still runs the switch-over up to the refused TCP_ULP; =refuse-keys also
 * fakes the ULP and refuses the keys (refuse_keys). 0, or -1 (require). */
static int setup_ktls(struct server *s) {
  enum ktls_mode mode = (enum ktls_mode)s->cfg.ktls_mode;
  if (mode == KTLS_OFF) {
    log_info("kTLS: off (--ktls=off): userspace TLS");
    tls_set_ktls(false, false);
    return 0;
  }
  const char *assume = getenv("DERPD_TEST_ASSUME_KTLS");
  bool avail = ktls_probe() == 1;
  if (assume && (strcmp(assume, "refuse-keys") == 0 || strcmp(assume, "refuse-suites") == 0 ||
                 strcmp(assume, "refuse-tx") == 0)) {
    log_warn("kTLS: DERPD_TEST_ASSUME_KTLS=%s: faking TCP_ULP, refusing %s (tests only)", assume,
             strcmp(assume, "refuse-tx") == 0 ? "the TX key" : "every key");
    if (strcmp(assume, "refuse-suites") == 0) refuse_errno = ENOENT;
    refuse_tx_only = strcmp(assume, "refuse-tx") == 0;
    ktls_setsockopt = refuse_keys;
    avail = true;
  } else if (!avail && assume && strcmp(assume, "1") == 0) {
    log_warn("kTLS: DERPD_TEST_ASSUME_KTLS=1: taking kTLS as available without the probe (tests only)");
    avail = true;
  } else if (avail) {
    log_info("kTLS: available");
  } else if (mode == KTLS_REQUIRE) {
    log_error("kTLS: --ktls=require, but this kernel has no kTLS (TCP_ULP \"tls\" refused; "
              "modprobe tls, or CONFIG_TLS): not starting");
    return -1;
  } else {
    log_info("kTLS: not available (kernel has no TCP_ULP tls): userspace TLS");
  }
  s->ktls = avail;
  tls_set_ktls(avail, mode == KTLS_REQUIRE);
  return 0;
}

/* Per-transport totals for the log at exit (counters summed over shards;
 * the shards are joined). */
static void log_mode_totals(struct server *s) {
  int64_t v[STAT_NSCALARS] = {0};
  for (int i = 0; i < s->nshards; i++)
    for (int j = 0; j < STAT_NSCALARS; j++)
      v[j] += atomic_load_explicit(&s->shards[i].stats.v[j], memory_order_relaxed);
  log_info("derpd: clients by transport: plain %lld, tls %lld, ktls %lld%s",
           (long long)v[STAT_conns_plain], (long long)v[STAT_conns_tls], (long long)v[STAT_conns_ktls],
           s->ktls ? "" : " (kTLS not in use)");
  if (s->ktls)
    log_info("derpd: kTLS: %lld switched, %lld kept in userspace, %lld refused by the kernel",
             (long long)v[STAT_ktls_installs], (long long)v[STAT_ktls_fallbacks],
             (long long)v[STAT_ktls_failures]);
}

/* -rate-config: read the file and put it in force; the shards take it at
 * their next tick (core/recv_pause.c). Main thread only. */
static int apply_rate_config(struct server *s, char *err, size_t cap) {
  struct rate_cfg rc;
  if (rate_cfg_load(s->cfg.rate_config, &rc, err, cap) != 0) return -1;
  rc = rate_cfg_applied(rc);
  recv_limit_publish(&s->recv_lim, rc);
  log_info("rate config applied: client-rate=%llu bytes/sec, client-burst=%llu bytes%s",
           (unsigned long long)rc.bps, (unsigned long long)rc.burst, rc.bps ? "" : " (no limit)");
  return 0;
}

/* SIGHUP reloads the TLS certificates (new connections get the new ones,
 * connections already open keep theirs) and the -rate-config file (every
 * client gets a new, full bucket; a file that fails keeps the old limit). */
static int wait_for_signal(const sigset_t *set, struct server *s) {
  for (;;) {
    int sig = 0;
    if (service_sigwait(set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      char err[512] = "";
      service_reloading();
      if (!s->tls && !s->cfg.rate_config[0])
        log_info("SIGHUP: nothing to reload (not serving TLS, no -rate-config)");
      if (s->tls && tls_reload(err, sizeof err) == 0)
        log_info("SIGHUP: TLS certificates reloaded");
      else if (s->tls)
        log_error("SIGHUP: TLS reload failed, keeping the old certificates: %s", err);
      if (s->cfg.rate_config[0]) {
        log_info("SIGHUP: reloading rate config from %s", s->cfg.rate_config);
        if (apply_rate_config(s, err, sizeof err) != 0)
          log_error("SIGHUP: rate config reload failed, keeping the limit in force: %s", err);
      }
      service_reloaded();
      continue;
    }
    return sig;
  }
}

/* SIGUSR2: a live upgrade (handover.h). 0 once the new process listens
 * (the shards then stop accepting without closing the sockets), -1 if it
 * failed and this process serves on. */
static int upgrade(struct server *s, char **argv) {
  int main_fds[s->nshards], fds80[s->nshards], fdsm[s->nshards], fdss[s->nshards];
  int n80 = 0, nm = 0, ns = 0;
  for (int i = 0; i < s->nshards; i++) {
    main_fds[i] = s->shards[i].listen_fd;
    if (s->shards[i].listen80_fd >= 0) fds80[n80++] = s->shards[i].listen80_fd;
    if (s->shards[i].metrics_fd >= 0) fdsm[nm++] = s->shards[i].metrics_fd;
    if (stun_shard_fd(&s->shards[i]) >= 0) fdss[ns++] = stun_shard_fd(&s->shards[i]);
  }
  struct handover_set set = {.nkinds = 4,
                             .k = {{"main", s->nshards, main_fds}, {"http80", n80, fds80},
                                   {"metrics", nm, fdsm}, {"stun", ns, fdss}}};
  pid_t child;
  log_info("derpd: SIGUSR2: live upgrade");
  if (handover_spawn(argv, &set, 30000, &child) != 0) return -1;
  log_info("upgrade: pid %d listens on the same sockets", (int)child);
  atomic_store(&s->handover, true); /* before `stopping`: the shards read it then */
  return 0;
}

/* Before any thread starts (bootstrap DNS and the ACME worker start before
 * the shards): every thread inherits this mask, so these signals reach only
 * the main thread's sigwait. A thread that did not block them would take one
 * that came while the main thread was busy (a reload, an upgrade) with the
 * default action, and the process would die instead of stopping cleanly.
 * SIGPIPE is ignored, not waited for: a write to a closed pipe or socket is
 * an error to handle where it happens, never a reason to stop. */
static void block_signals(sigset_t *set) {
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGHUP);
  sigaddset(set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* The server, reachable from here for the process's life: a start that
 * fails returns with it allocated, and a mesh dialler may outlive the stop
 * (region_leaked); the exit frees it, and LeakSanitizer's report does not
 * bury the line that says why derpd stopped. */
struct server *volatile kept_server;

int main(int argc, char **argv) {
  sigset_t set;
  block_signals(&set);
  struct server *s = calloc(1, sizeof *s);
  if (!s) return 1;
  kept_server = s;
  char err[512];
  config_defaults(&s->cfg);
  int r = config_parse(&s->cfg, argc, argv, stdout, err, sizeof err);
  if (r == 1) { free(s); return 0; }
  if (r < 0) {
    fprintf(stderr, "derpd: %s\nRun 'derpd -help' for the list of flags.\n", err);
    free(s);
    return 2;
  }
  log_set_level(LOG_INFO + s->cfg.verbose);
  if (s->cfg.notes[0]) log_info("derpd: %s", s->cfg.notes);
  /* Before anything is allocated: a bad file is the operator's error, and
   * leaves nothing behind. */
  if (s->cfg.rate_config[0] && apply_rate_config(s, err, sizeof err) != 0) {
    log_error("derpd: loading rate config: %s", err);
    free(s);
    return 1;
  }
  if (derp_init() != 0) { log_error("libsodium failed to initialise"); return 1; }
  if (load_key(s) != 0) return 1;
  s->tls = s->cfg.tls;
  /* Always: a node serving plain HTTP still adopts its https mesh links
   * onto derpd's BIO (transport_tls_adopt). */
  if (transport_tls_init() != 0) {
    log_error("tls: cannot make the connection BIO method");
    return 1;
  }
  if (s->tls) {
    if (setup_ktls(s) != 0) {
      free(s);
      return 1;
    }
    if (acme_init(&s->cfg, err, sizeof err) != 0) {
      log_error("acme: %s", err);
      return 1;
    }
    if (tls_init(&s->cfg, s->pub_hex, err, sizeof err) != 0) {
      log_error("tls: %s", err);
      return 1;
    }
  }
  randombytes_buf(s->hash_key, sizeof s->hash_key);
  int cpus = usable_cpus();
  s->nshards = s->cfg.shards > 0 ? s->cfg.shards : cpus;
  s->max_conns = conn_budget(&s->cfg, s->nshards, s->cfg.max_conns);
  rate_limiter_init(&s->accept_lim, s->cfg.accept_limit, s->cfg.accept_burst);
  if (isfinite(s->cfg.accept_limit) && s->cfg.accept_burst == INT64_MAX)
    log_warn("-accept-connection-limit %g limits nothing without -accept-connection-burst: as in derper, "
             "the default burst lets any number through at once", s->cfg.accept_limit);
  tcp_rtt_init();
  /* Before the first thread (bootstrap DNS, below): it reads and clears
   * DERPD_HANDOVER* and may rewrite WATCHDOG_PID, and a setenv or unsetenv
   * races any thread's getenv (the resolver's). */
  (void)handover_active();
  if (service_init(s->nshards) != 0) return 1;
  if (debug_state_init(s, err, sizeof err) != 0) { log_error("debug: %s", err); return 1; }
  if (region_setup(s) != 0) return 1;
  if (admission_setup(s) != 0) return 1;
  /* 64-byte aligned: each shard's `sleeping` has its cache line to itself. */
  s->shards = aligned_alloc(64, (size_t)s->nshards * sizeof *s->shards);
  if (s->shards) memset(s->shards, 0, (size_t)s->nshards * sizeof *s->shards);
  if (!s->shards || make_rings(s) != 0) { log_error("out of memory at start"); return 1; }
  for (int i = 0; i < s->nshards; i++) /* in force from the first packet */
    recv_limit_read(&s->recv_lim, &s->shards[i].rl, &s->shards[i].rl_gen);

  uint16_t port = s->cfg.listen_port;
  if (port_in_use(s->cfg.listen_host, port, err, sizeof err)) { log_error("%s", err); return 1; }
  /* STUN before the listeners: a port in use stops derpd before anyone connects. */
  if (stun_open(s, err, sizeof err) != 0) { log_error("%s", err); return 1; }
  for (int i = 0; i < s->nshards; i++) {
    /* After a live upgrade the old process's sockets, else new ones. */
    int fd = handover_inherited("main", i);
    if (fd >= 0 && i == 0) port = listen_bound_port(fd);
    s->shards[i].listen_fd = fd >= 0 ? fd : listen_open(s->cfg.listen_host, port, err, sizeof err);
    if (s->shards[i].listen_fd < 0) { log_error("%s", err); return 1; }
    if (i == 0) port = listen_bound_port(s->shards[0].listen_fd); /* -a :0 picks one for all */
  }
  s->port = port;
  /* derper: with TLS, a plain-HTTP helper on -http-port (80) answers
   * /generate_204 and redirects the rest to https; failing to bind is fatal. */
  int p80 = s->tls ? s->cfg.http_port : -1;
  if (p80 > 0 && port_in_use(s->cfg.listen_host, (uint16_t)p80, err, sizeof err)) {
    log_error("-http-port: %s", err);
    return 1;
  }
  for (int i = 0; i < s->nshards; i++) {
    s->shards[i].listen80_fd = -1;
    if (p80 < 0) continue;
    int fd = handover_inherited("http80", i);
    if (fd >= 0 && i == 0) p80 = listen_bound_port(fd);
    s->shards[i].listen80_fd = fd >= 0 ? fd : listen_open(s->cfg.listen_host, (uint16_t)p80, err, sizeof err);
    if (s->shards[i].listen80_fd < 0) { log_error("-http-port: %s", err); return 1; }
    if (i == 0) p80 = listen_bound_port(s->shards[0].listen80_fd);
  }
  if (p80 >= 0) s->port80 = (uint16_t)p80;
  /* --metrics-listen: plain HTTP, /debug/ only (operations/debug_http.c). */
  int pm = s->cfg.metrics_port;
  if (pm > 0 && port_in_use(s->cfg.metrics_host, (uint16_t)pm, err, sizeof err)) {
    log_error("--metrics-listen: %s", err);
    return 1;
  }
  for (int i = 0; i < s->nshards; i++) {
    s->shards[i].metrics_fd = -1;
    if (pm < 0) continue;
    int fd = handover_inherited("metrics", i);
    if (fd >= 0 && i == 0) pm = listen_bound_port(fd);
    s->shards[i].metrics_fd = fd >= 0 ? fd : listen_open(s->cfg.metrics_host, (uint16_t)pm, err, sizeof err);
    if (s->shards[i].metrics_fd < 0) { log_error("--metrics-listen: %s", err); return 1; }
    if (i == 0) pm = listen_bound_port(s->shards[0].metrics_fd);
  }

  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)s->nshards + 1);
  if (start_shards(s, &bar) != 0) {
    stop_failed_start(s);
    return 1;
  }
  log_info("derpd: listening on %s%s%s:%u (%s, %d shard%s, max %d conns)",
           strchr(s->cfg.listen_host, ':') ? "[" : "", s->cfg.listen_host[0] ? s->cfg.listen_host : "*",
           strchr(s->cfg.listen_host, ':') ? "]" : "", port,
           s->tls ? "TLS" : "plain HTTP", s->nshards, s->nshards == 1 ? "" : "s", s->max_conns);
  log_info("derpd: server key nodekey:%s", s->pub_hex);
  if (s->port80) log_info("derpd: port-80 helper on port %u (-http-port)", s->port80);
  if (!s->cfg.derp) log_info("derpd: -derp=false: /derp answers 404; probes and bootstrap DNS are served");
  if (pm >= 0)
    log_info("derpd: metrics listener on %s%s%s:%d (--metrics-listen: /debug/ only, plain HTTP)",
             strchr(s->cfg.metrics_host, ':') ? "[" : "",
             s->cfg.metrics_host[0] ? s->cfg.metrics_host : "*",
             strchr(s->cfg.metrics_host, ':') ? "]" : "", pm);
  log_info("derpd: pid %d", (int)getpid());
  if (admission_start(s) != 0) {
    stop_failed_start(s);
    return 1;
  }
  service_ready(s); /* READY=1 (after a live upgrade, MAINPID= too) before the old process stops */
  handover_ready(); /* a live upgrade: the old process may stop now */
  region_start(s);
  acme_start(); /* -certmode letsencrypt: the certificate worker */

  int sig;
  while ((sig = wait_for_signal(&set, s)) == SIGUSR2 && upgrade(s, argv) != 0) {}
  service_stopping(sig == SIGUSR2);
  if (sig == SIGUSR2)
    log_info("derpd: upgrade: the new process serves; telling clients to reconnect, then exiting");
  else
    log_info("derpd: %s: telling clients to reconnect, then exiting", strsignal(sig));
  /* Checks run on while the shards drain (a live upgrade lets handshakes
   * in progress finish): the workers stop only once the shards are joined. */
  admission_quiesce(s);
  shutdown_shards(s);
  admission_stop(s);
  acme_stop();
  region_stop(s);
  pthread_barrier_destroy(&bar);
  log_mode_totals(s);
  admission_free(s);
  if (region_leaked(s)) { /* the dialler still reads s (kept_server): the exit frees it all */
    service_free();
    log_info("derpd: stopped (a mesh dialler was still dialling)");
    return 0;
  }
  free_server(s);
  tls_shutdown();
  service_free();
  log_info("derpd: stopped");
  return 0;
}
