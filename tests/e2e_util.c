/* e2e_util.c: start/stop a real derpd on loopback and talk to it.
 *
 * Owns the process handling (fork/exec with PDEATHSIG so a crashed or timed
 * out test never leaves a server behind), readiness polling, key file
 * reading, client helpers with route sync, and raw TCP/HTTP helpers. See
 * e2e_util.h for the contract of each function. */
#include <sodium.h>

#include "e2e_util.h"

#ifdef E2E_NO_CRITERION
#include "mini_test.h" /* same assertion macros, no Criterion (TLS tests) */
#else
#include <criterion/criterion.h>
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 48
#define START_TRIES 3
#define READY_TIMEOUT_MS 10000

/* ---- time ---- */

int64_t e2e_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void e2e_sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* ---- process ---- */

static const char *derpd_bin(void) {
  const char *b = getenv("DERPD_BIN");
  return b && *b ? b : "./build/src/derpd";
}

const char *e2e_derpd_bin(void) { return derpd_bin(); }

int e2e_run_capture(const char *cmd, char *out, size_t cap) {
  FILE *f = popen(cmd, "r");
  cr_assert_not_null(f, "popen %s", cmd);
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  return pclose(f);
}

/* A free port below the kernel's ephemeral range (ip_local_port_range starts
 * at 32768 by default): a port taken from that range can be handed to some
 * client's connect() (tests make thousands) before derpd binds it. Random in
 * 20000..32767, checked free by a bind; regions, whose nodes must know each
 * other's ports before they start, cannot retry elsewhere. */
static int pick_port(uint16_t *port) {
  for (int tries = 0; tries < 200; tries++) {
    uint16_t p = (uint16_t)(20000 + randombytes_uniform(12768));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(p),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    if (ok) {
      *port = p;
      return 0;
    }
  }
  return -1;
}

static int key_path(const struct derpd_proc *p, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s/derper.key", p->dir);
  return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

unsigned long e2e_derpd_nofile;

/* Child side of the fork: redirect output, drop inherited fds, exec. */
static void exec_child(const struct derpd_proc *p, char **argv, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(126); /* parent already gone */
  if (e2e_derpd_nofile) {
    struct rlimit rl = {.rlim_cur = e2e_derpd_nofile, .rlim_max = e2e_derpd_nofile};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
  }
  int log = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int nul = open("/dev/null", O_RDONLY);
  if (log < 0 || nul < 0) _exit(126);
  dup2(nul, 0);
  dup2(log, 1);
  dup2(log, 2);
  /* Criterion's pipes must not stay open in the server. */
  close_range(3, ~0U, 0);
  execvp(argv[0], argv); /* DERPD_BIN may be a bare name, found in $PATH */
  fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

static pid_t spawn(const struct derpd_proc *p, int shards, const char *extra) {
  char addr[64], keyp[300], nshards[16], extra_copy[1024] = "";
  bool v6 = strchr(p->host, ':') != NULL;
  snprintf(addr, sizeof addr, "%s%s%s:%u", v6 ? "[" : "", p->host, v6 ? "]" : "", p->port);
  snprintf(nshards, sizeof nshards, "%d", shards);
  if (key_path(p, keyp, sizeof keyp) < 0) return -1;
  /* STUN on a free port: tests run side by side, derper's 3478 is one port. */
  char *argv[MAX_ARGS] = {(char *)derpd_bin(), "-dev", "-a", addr, "-c", keyp, "--shards", nshards,
                          "-stun-port=0"};
  int argc = 9;
  if (extra && strlen(extra) >= sizeof extra_copy) return -1;
  if (extra) strcpy(extra_copy, extra);
  char *save = NULL;
  for (char *t = strtok_r(extra_copy, " ", &save); t && argc < MAX_ARGS - 1;
       t = strtok_r(NULL, " ", &save))
    argv[argc++] = t;
  argv[argc] = NULL;
  pid_t parent = getpid();
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) exec_child(p, argv, parent);
  return pid;
}

/* A derpd_proc not made by derpd_start* (a test's own) has no host yet. */
static const char *host_of(const struct derpd_proc *p) { return p->host[0] ? p->host : "127.0.0.1"; }

/* A TCP connection to derpd's address (blocking), or -1. */
static int dial(const struct derpd_proc *p) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char port[8];
  snprintf(port, sizeof port, "%u", p->port);
  if (getaddrinfo(host_of(p), port, &hints, &ai) != 0) return -1;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
    close(fd);
    fd = -1;
  }
  freeaddrinfo(ai);
  return fd;
}

static bool tcp_probe(const struct derpd_proc *p) {
  int fd = dial(p);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

/* The server writes the key file itself (atomically); only read it once it
 * exists, so we never race the server into creating a different one. */
static int load_server_key(struct derpd_proc *p) {
  char path[300], msg[256] = "";
  struct stat st;
  if (key_path(p, path, sizeof path) < 0 || stat(path, &st) < 0 || st.st_size == 0) return 1;
  derp_privkey priv;
  int created = 0;
  if (derp_keyfile_load_or_create(path, &priv, &created, msg, sizeof msg) < 0) {
    fprintf(stderr, "e2e: key file %s: %s\n", path, msg);
    return 1; /* maybe half-written by a non-atomic writer: retry */
  }
  if (created) {
    fprintf(stderr, "e2e: key file %s vanished and was recreated\n", path);
    return -1;
  }
  derp_key_public(&priv, &p->server_key);
  return 0;
}

/* 0 = ready, 1 = exited early (reaped), -1 = timeout. */
static int wait_ready(struct derpd_proc *p) {
  int64_t deadline = e2e_now_ms() + READY_TIMEOUT_MS;
  while (e2e_now_ms() < deadline) {
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      p->pid = 0;
      return 1;
    }
    /* The log line as well: a derpd that fails at start (a busy port) has
     * written its key file, and a probe may reach whoever holds the port. */
    if (tcp_probe(p) && derpd_log_contains(p, "derpd: listening on")) {
      int k = load_server_key(p);
      if (k == 0) return 0;
      if (k < 0) return -1;
    }
    e2e_sleep_ms(20);
  }
  return -1;
}

/* A fresh temp dir for p's key file and log; p->host is where derpd listens
 * ("127.0.0.1" or "::1"). 0 or -1. */
static int prepare(struct derpd_proc *p, const char *host) {
  memset(p, 0, sizeof *p);
  snprintf(p->host, sizeof p->host, "%s", host);
  signal(SIGPIPE, SIG_IGN);
  if (derp_init() < 0) return -1;
  snprintf(p->dir, sizeof p->dir, "/tmp/derpd-e2e-XXXXXX");
  if (!mkdtemp(p->dir)) {
    perror("e2e: mkdtemp");
    p->dir[0] = 0;
    return -1;
  }
  snprintf(p->log_path, sizeof p->log_path, "%s/derpd.log", p->dir);
  return 0;
}

/* Spawn derpd in p->dir on p->port and wait until it is ready: 0; 1 = it
 * exited early, -1 = not ready in time (the log dumped either way); -2 = it
 * could not be spawned. */
static int spawn_ready(struct derpd_proc *p, int shards, const char *extra_args) {
  p->pid = spawn(p, shards, extra_args);
  if (p->pid < 0) {
    p->pid = 0;
    return -2;
  }
  int r = wait_ready(p);
  if (r == 0) return 0;
  fprintf(stderr, "e2e: derpd (port %u) %s; log:\n", p->port, r == 1 ? "exited early" : "not ready in 10 s");
  derpd_dump_log(p, 4096);
  return r;
}

/* A derpd the test reaped without killing it. One that died of a signal
 * the tests do not send (a sanitizer's abort, a crash), or (unless the
 * caller takes the status itself) with a failing status, has its log shown:
 * the test around it fails somewhere else, and the log says why. A crash
 * is remembered (any derpd of this test: Criterion runs each test in a
 * process of its own), which fails the test at teardown (e2e_test_fini)
 * even where the test asserted nothing about it. */
static bool g_crashed;

static void note_death(struct derpd_proc *p, int st, bool status_taken) {
  int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  bool sent = sig == SIGKILL || sig == SIGTERM || sig == SIGINT;
  /* ASan and UBSan abort (abort_on_error), TSan exits 66. */
  bool crashed = sig == SIGABRT || sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE ||
                 (WIFEXITED(st) && WEXITSTATUS(st) == 66);
  bool failed = !sent && !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  if (crashed || (failed && !status_taken)) {
    fprintf(stderr, "e2e: derpd (port %u) had died: %s %d; log:\n", p->port, sig ? "signal" : "exit status",
            sig ? sig : WEXITSTATUS(st));
    derpd_dump_log(p, 8192);
  }
  g_crashed |= crashed;
  p->pid = 0;
}

bool e2e_crash_seen(void) {
  bool c = g_crashed;
  g_crashed = false;
  return c;
}

/* SIGKILL and reap p's process, if any (note_death for one that had died
 * on its own). */
static void reap(struct derpd_proc *p) {
  if (p->pid <= 0) return;
  int st = 0;
  if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
    note_death(p, st, false);
  } else {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
  }
  p->pid = 0;
}

int derpd_start(struct derpd_proc *p, int shards, const char *extra_args) {
  return derpd_start_on(p, shards, "127.0.0.1", extra_args);
}

int derpd_start_on(struct derpd_proc *p, int shards, const char *host, const char *extra_args) {
  if (prepare(p, host) < 0) return -1;
  for (int attempt = 0; attempt < START_TRIES; attempt++) {
    if (pick_port(&p->port) < 0) return -1;
    int r = spawn_ready(p, shards, extra_args);
    if (r == 0) return 0;
    if (r != 1) break; /* a hung server will not get better on another port */
  }
  reap(p);
  return -1;
}

int e2e_pick_port(uint16_t *port) { return pick_port(port); }

int derpd_start_port(struct derpd_proc *p, int shards, uint16_t port, const char *extra_args) {
  if (prepare(p, "127.0.0.1") < 0) return -1;
  p->port = port;
  if (spawn_ready(p, shards, extra_args) == 0) return 0;
  reap(p);
  return -1;
}

int derpd_restart(struct derpd_proc *p, int shards, const char *extra_args, int *exit_status) {
  derpd_stop(p, exit_status);
  for (int attempt = 0; attempt < START_TRIES; attempt++) {
    int r = spawn_ready(p, shards, extra_args);
    if (r == 0) return 0;
    if (r != 1) break;
    e2e_sleep_ms(200); /* the port may still be held a moment */
  }
  reap(p);
  return -1;
}

static int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

int derpd_wait(struct derpd_proc *p, int timeout_ms, int *exit_status) {
  if (p->pid <= 0) return -1;
  int64_t deadline = e2e_now_ms() + timeout_ms;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) {
      note_death(p, st, exit_status != NULL);
      if (exit_status) *exit_status = decode_status(st);
      return 0;
    }
    if (r < 0 || e2e_now_ms() >= deadline) return -1;
    e2e_sleep_ms(10);
  }
}

int derpd_stop_within(struct derpd_proc *p, int timeout_ms, int *exit_status) {
  if (p->pid <= 0) return -1;
  kill(p->pid, SIGTERM);
  if (derpd_wait(p, timeout_ms, exit_status) == 0) return 0;
  int st = 0;
  kill(p->pid, SIGKILL);
  waitpid(p->pid, &st, 0);
  p->pid = 0;
  if (exit_status) *exit_status = decode_status(st);
  return -1;
}

int derpd_stop(struct derpd_proc *p, int *exit_status) {
  return derpd_stop_within(p, 5000, exit_status);
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[600];
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

void derpd_kill(struct derpd_proc *p) {
  reap(p);
  if (p->dir[0] && !getenv("E2E_KEEP")) remove_dir(p->dir);
  p->dir[0] = 0;
}

bool derpd_alive(struct derpd_proc *p) {
  if (p->pid <= 0) return false;
  int st = 0;
  pid_t r = waitpid(p->pid, &st, WNOHANG);
  if (r == 0) return true;
  if (r == p->pid) note_death(p, st, false);
  p->pid = 0;
  return false;
}

long derpd_rss_kb(const struct derpd_proc *p) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)p->pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* Whole log into a malloc'd NUL-terminated buffer (capped at 64 MiB). */
static char *read_log(const struct derpd_proc *p, size_t *len) {
  FILE *f = fopen(p->log_path, "r");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap || cap >= (64u << 20)) break;
    char *nb = realloc(buf, cap * 2 + 1);
    if (!nb) break;
    buf = nb;
    cap *= 2;
  }
  fclose(f);
  if (buf) buf[n] = 0;
  *len = n;
  return buf;
}

bool derpd_log_contains(const struct derpd_proc *p, const char *substr) {
  size_t n = 0;
  char *buf = read_log(p, &n);
  bool found = buf && memmem(buf, n, substr, strlen(substr)) != NULL;
  free(buf);
  return found;
}

pid_t derpd_new_pid(const struct derpd_proc *p, pid_t old) {
  FILE *f = fopen(p->log_path, "r");
  if (!f) return 0;
  char line[512];
  pid_t found = 0;
  while (fgets(line, sizeof line, f)) {
    const char *m = strstr(line, "derpd: pid ");
    if (m && atoi(m + 11) != old) found = atoi(m + 11);
  }
  fclose(f);
  return found;
}

void e2e_reap(pid_t *pid, const struct derpd_proc *log_of) {
  if (*pid <= 0) return;
  int st = 0;
  if (waitpid(*pid, &st, WNOHANG) == *pid) { /* died on its own: a crash counts */
    struct derpd_proc p = *log_of;
    p.pid = *pid;
    note_death(&p, st, false);
  } else {
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
  }
  *pid = 0;
}

void derpd_dump_log(const struct derpd_proc *p, size_t max) {
  size_t n = 0;
  char *buf = read_log(p, &n);
  if (!buf) return;
  /* The head too: a start that failed says why in its first lines, and a
   * sanitizer's exit report (leaks of the early return) can fill the tail. */
  size_t head = max / 2;
  if (n > max + head)
    fprintf(stderr, "---- %s (first %zu bytes) ----\n%.*s\n[... %zu bytes ...]\n", p->log_path, head,
            (int)head, buf, n - max - head);
  size_t from = n > max ? n - max : 0;
  fprintf(stderr, "---- %s (last %zu bytes) ----\n%s\n----\n", p->log_path, n - from, buf + from);
  free(buf);
}

/* ---- clients ---- */

struct derp_client *derpd_client(const struct derpd_proc *p, const derp_privkey *priv,
                                 bool fast_start, char *err, size_t errlen) {
  struct derp_client_opts o = {.host = host_of(p), .port = p->port, .priv = priv,
                               .fast_start = fast_start, .server_key = &p->server_key,
                               .timeout_ms = 5000};
  struct derp_client *c = NULL;
  if (derp_client_connect(&c, &o, err, errlen) < 0) return NULL;
  return c;
}

struct derp_client *derpd_client_ws(const struct derpd_proc *p, const derp_privkey *priv,
                                    uint32_t frame_max, char *err, size_t errlen) {
  struct derp_client_opts o = {.host = host_of(p), .port = p->port, .priv = priv,
                               .server_key = &p->server_key, .timeout_ms = 5000,
                               .websocket = true, .ws_frame_max = frame_max};
  struct derp_client *c = NULL;
  if (derp_client_connect(&c, &o, err, errlen) < 0) return NULL;
  return c;
}

static struct derp_client *tracked[E2E_MAX_CLIENTS];

static struct derp_client *track(struct derp_client *c) {
  for (int i = 0; i < E2E_MAX_CLIENTS; i++)
    if (!tracked[i]) {
      tracked[i] = c;
      return c;
    }
  derp_client_close(c);
  cr_assert_fail("more than %d tracked clients", E2E_MAX_CLIENTS);
  return NULL;
}

struct derp_client *e2e_client_ws(const struct derpd_proc *p, derp_privkey *priv_out,
                                  uint32_t frame_max) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  if (priv_out) *priv_out = priv;
  char err[256] = "";
  struct derp_client *c = derpd_client_ws(p, &priv, frame_max, err, sizeof err);
  cr_assert_not_null(c, "websocket client connect (frames of %u): %s", frame_max, err);
  return track(c);
}

void e2e_close(struct derp_client *c) {
  for (int i = 0; i < E2E_MAX_CLIENTS; i++)
    if (tracked[i] == c) tracked[i] = NULL;
  derp_client_close(c);
}

void e2e_close_all(void) {
  for (int i = 0; i < E2E_MAX_CLIENTS; i++) {
    derp_client_close(tracked[i]);
    tracked[i] = NULL;
  }
}

void e2e_test_init(void) {
  signal(SIGPIPE, SIG_IGN);
  cr_assert_eq(derp_init(), 0);
  srandom((unsigned)(getpid() ^ e2e_now_ms()));
}

void e2e_test_fini(struct derpd_proc *p) {
  if (getenv("E2E_LOG") && p->dir[0]) derpd_dump_log(p, 8192);
  e2e_close_all();
  /* Let it take those closes first (200 ms at most: a test may leave mesh
   * links or raw sockets open): a crash on the close path is found too. */
  for (int64_t end = e2e_now_ms() + 200; p->pid > 0 && e2e_now_ms() < end;) {
    long long open = derpd_varz(p, "derpd_open_connections"); /* 1: this request */
    if (open <= 1) break;
    e2e_sleep_ms(5);
  }
  /* A server that crashed fails the test, even one whose checks had passed,
   * and even one the test had seen gone (derpd_alive, derpd_wait). */
  reap(p);
  derpd_kill(p);
  if (e2e_crash_seen()) { /* Criterion ignores a failed assertion or an exit in .fini; a crash fails the run */
    fprintf(stderr, "e2e: derpd crashed during the test (its log is above)\n");
    abort();
  }
}

void e2e_rm_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char path[400];
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
      }
    closedir(d);
  }
  rmdir(dir);
}

struct derp_client *e2e_client_with_key(const struct derpd_proc *p, const derp_privkey *priv,
                                        bool fast_start) {
  char err[256] = "";
  struct derp_client *c = derpd_client(p, priv, fast_start, err, sizeof err);
  cr_assert_not_null(c, "client connect (%s): %s", fast_start ? "fast start" : "normal", err);
  return track(c);
}

struct derp_client *e2e_client(const struct derpd_proc *p, derp_privkey *priv_out, bool fast_start) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  if (priv_out) *priv_out = priv;
  return e2e_client_with_key(p, &priv, fast_start);
}

static bool is_marker(const struct derp_client_msg *m) {
  return m->packet_len >= E2E_SYNC_MAGIC_LEN &&
         memcmp(m->packet, E2E_SYNC_MAGIC, E2E_SYNC_MAGIC_LEN) == 0;
}

void e2e_sync_route(struct derp_client *from, struct derp_client *to) {
  const derp_key *src = derp_client_public_key(from);
  int64_t deadline = e2e_now_ms() + 5000;
  for (uint32_t i = 0; e2e_now_ms() < deadline; i++) {
    uint8_t pkt[E2E_SYNC_MAGIC_LEN + 4];
    memcpy(pkt, E2E_SYNC_MAGIC, E2E_SYNC_MAGIC_LEN);
    memcpy(pkt + E2E_SYNC_MAGIC_LEN, &i, 4);
    cr_assert_eq(derp_client_send(from, derp_client_public_key(to), pkt, sizeof pkt), 0,
                 "sync send: %s", strerror(errno));
    struct derp_client_msg m;
    int64_t wait_until = e2e_now_ms() + 50;
    int r;
    while ((r = derp_client_recv_packet(to, &m, (int)(wait_until - e2e_now_ms()))) == 1) {
      if (m.type == DERP_FRAME_RECV_PACKET && is_marker(&m) && derp_key_equal(&m.src, src))
        return;
      if (e2e_now_ms() >= wait_until) break;
    }
    cr_assert_geq(r, 0, "sync: receiver connection closed: %s", strerror(errno));
  }
  cr_assert_fail("sync: no marker packet got through in 5 s");
}

void e2e_recv_data(struct derp_client *c, struct derp_client_msg *m, int timeout_ms) {
  int64_t deadline = e2e_now_ms() + timeout_ms;
  for (;;) {
    int left = (int)(deadline - e2e_now_ms());
    int r = derp_client_recv_packet(c, m, left > 0 ? left : 0);
    cr_assert_eq(r, 1, "recv data: %s", r == 0 ? "timeout" : strerror(errno));
    if (m->type == DERP_FRAME_RECV_PACKET && !is_marker(m)) return;
  }
}

/* Payload: run tag (4) + seq (4) + filler derived from both. */
static void fill_payload(uint8_t *buf, size_t len, uint32_t tag, uint32_t seq) {
  memcpy(buf, &tag, 4);
  memcpy(buf + 4, &seq, 4);
  for (size_t i = 8; i < len; i++) buf[i] = (uint8_t)(i * 31 + seq + tag);
}

void e2e_fill_receiver(const struct derpd_proc *p, struct derp_client *tx, struct derp_client *rx,
                       struct derp_client *sync) {
  static uint8_t pkt[64 * 1024 - 1];
  const char *qh = "derp_packets_dropped_reason{reason=\"queue_head\"}";
  int round = 0;
  for (; round < 40; round++) {
    for (int i = 0; i < 48; i++) cr_assert_eq(derp_client_send(tx, derp_client_public_key(rx), pkt, sizeof pkt), 0);
    e2e_relay_check(tx, sync, 4); /* the flood is through */
    e2e_sleep_ms(200);
    long long d0 = derpd_varz(p, qh);
    for (int i = 0; i < 48; i++) cr_assert_eq(derp_client_send(tx, derp_client_public_key(rx), pkt, sizeof pkt), 0);
    e2e_relay_check(tx, sync, 4);
    if (derpd_varz(p, qh) - d0 >= 16) break; /* its write stayed pending: stuck */
  }
  cr_assert(round < 40, "the receiver's socket never filled");
}

int64_t e2e_relay_check(struct derp_client *a, struct derp_client *b, int n) {
  enum { LEN = 100, WINDOW = 16 };
  uint32_t tag = (uint32_t)random();
  uint8_t want[LEN];
  int64_t t0 = e2e_now_ms();
  for (int base = 0; base < n; base += WINDOW) {
    int w = n - base < WINDOW ? n - base : WINDOW;
    for (int i = 0; i < w; i++) {
      fill_payload(want, LEN, tag, (uint32_t)(base + i));
      cr_assert_eq(derp_client_send(a, derp_client_public_key(b), want, LEN), 0,
                   "relay send: %s", strerror(errno));
    }
    for (int i = 0; i < w; i++) {
      struct derp_client_msg m;
      e2e_recv_data(b, &m, 2000);
      fill_payload(want, LEN, tag, (uint32_t)(base + i));
      cr_assert(derp_key_equal(&m.src, derp_client_public_key(a)), "relay: wrong source key");
      cr_assert_eq(m.packet_len, LEN, "relay: length %u", m.packet_len);
      cr_assert(memcmp(m.packet, want, LEN) == 0, "relay: packet %d corrupt or out of order",
                base + i);
    }
  }
  return e2e_now_ms() - t0;
}

bool e2e_wait_closed(struct derp_client *c, int timeout_ms) {
  int64_t deadline = e2e_now_ms() + timeout_ms;
  for (long frames = 0; frames < 10000000; frames++) {
    int left = (int)(deadline - e2e_now_ms());
    struct derp_client_msg m;
    int r = derp_client_recv(c, &m, left > 0 ? left : 0);
    if (r < 0) return true;
    if (r == 0) return false;
  }
  return false;
}

/* ---- raw TCP / HTTP ---- */

int raw_connect(const struct derpd_proc *p) {
  int fd = dial(p);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

int raw_write_all(int fd, const void *buf, size_t n) {
  const uint8_t *b = buf;
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One poll+recv. >0 bytes, 0 = EOF, -1 = error (reset), -2 = timeout. */
static ssize_t recv_some(int fd, void *buf, size_t cap, int64_t deadline) {
  for (;;) {
    int left = (int)(deadline - e2e_now_ms());
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int pr = poll(&pfd, 1, left > 0 ? left : 0);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) return pr < 0 ? -1 : -2;
    ssize_t n = recv(fd, buf, cap, 0);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

size_t raw_read_until_close(int fd, void *buf, size_t cap, int timeout_ms, bool *closed) {
  int64_t deadline = e2e_now_ms() + timeout_ms;
  uint8_t sink[4096];
  size_t n = 0;
  *closed = false;
  for (int i = 0; i < 1000000; i++) {
    bool full = n >= cap;
    ssize_t r = full ? recv_some(fd, sink, sizeof sink, deadline)
                     : recv_some(fd, (uint8_t *)buf + n, cap - n, deadline);
    if (r == -2) return n;
    if (r <= 0) {
      *closed = true;
      return n;
    }
    if (!full) n += (size_t)r;
  }
  return n;
}

size_t raw_read_at_least(int fd, void *buf, size_t cap, size_t want, int timeout_ms) {
  int64_t deadline = e2e_now_ms() + timeout_ms;
  size_t n = 0;
  while (n < want && n < cap) {
    ssize_t r = recv_some(fd, (uint8_t *)buf + n, cap - n, deadline);
    if (r <= 0) break;
    n += (size_t)r;
  }
  return n;
}

static int parse_status(const char *resp) {
  int status = -1;
  if (strncmp(resp, "HTTP/1.", 7) != 0 || sscanf(resp + 8, " %3d", &status) != 1) return -1;
  return status;
}

int http_request(const struct derpd_proc *p, const char *req, char *resp, size_t cap) {
  resp[0] = 0;
  int fd = raw_connect(p);
  if (fd < 0 || raw_write_all(fd, req, strlen(req)) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  int64_t deadline = e2e_now_ms() + 2000;
  size_t n = 0, need = 0;
  while (n + 1 < cap && e2e_now_ms() < deadline) {
    ssize_t r = recv_some(fd, resp + n, cap - 1 - n, deadline);
    if (r <= 0) break;
    n += (size_t)r;
    resp[n] = 0;
    char *end = strstr(resp, "\r\n\r\n");
    if (!end) continue;
    char cl[32];
    /* HEAD, 1xx, 204 and 304 responses have no body whatever they say. */
    bool nobody = strncmp(req, "HEAD ", 5) == 0 || parse_status(resp) == 204 ||
                  parse_status(resp) == 304 || parse_status(resp) / 100 == 1;
    need = (size_t)(end + 4 - resp);
    if (!nobody && http_header(resp, "Content-Length", cl, sizeof cl)) need += strtoul(cl, NULL, 10);
    else if (!nobody) need = cap; /* no length: read to EOF */
    if (n >= need) break;
  }
  close(fd);
  return parse_status(resp);
}

bool http_header(const char *resp, const char *name, char *out, size_t cap) {
  const char *end = strstr(resp, "\r\n\r\n");
  size_t nl = strlen(name);
  for (const char *line = strstr(resp, "\r\n"); line && (!end || line < end);
       line = strstr(line + 2, "\r\n")) {
    const char *h = line + 2;
    if (strncasecmp(h, name, nl) != 0 || h[nl] != ':') continue;
    h += nl + 1;
    while (*h == ' ' || *h == '\t') h++;
    size_t vl = strcspn(h, "\r\n");
    if (vl >= cap) vl = cap - 1;
    memcpy(out, h, vl);
    out[vl] = 0;
    return true;
  }
  return false;
}

int raw_derp_upgrade(const struct derpd_proc *p, int fd) {
  static const char req[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\n"
                            "Connection: Upgrade\r\n\r\n";
  if (raw_write_all(fd, req, sizeof req - 1) < 0) return -1;
  char buf[8192];
  size_t n = 0;
  int64_t deadline = e2e_now_ms() + 3000;
  char *end = NULL;
  while (n + 1 < sizeof buf) {
    ssize_t r = recv_some(fd, buf + n, sizeof buf - 1 - n, deadline);
    if (r <= 0) return -1;
    n += (size_t)r;
    buf[n] = 0;
    end = strstr(buf, "\r\n\r\n");
    if (end && n >= (size_t)(end + 4 - buf) + DERP_FRAME_HDR_LEN + DERP_SERVER_KEY_PAYLOAD_LEN) break;
  }
  if (!end || parse_status(buf) != 101) return -1;
  const uint8_t *f = (const uint8_t *)end + 4;
  derp_key k;
  if (f[0] != DERP_FRAME_SERVER_KEY || derp_get_be32(f + 1) < DERP_SERVER_KEY_PAYLOAD_LEN ||
      derp_server_key_parse(f + 5, DERP_SERVER_KEY_PAYLOAD_LEN, &k) != 0)
    return -1;
  return derp_key_equal(&k, &p->server_key) ? 0 : -1;
}

long long derpd_varz(const struct derpd_proc *p, const char *name) {
  static char resp[128 * 1024];
  if (http_request(p, "GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp) != 200)
    return -1;
  size_t nl = strlen(name);
  for (const char *l = resp; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, name, nl) == 0 && l[nl] == ' ') return strtoll(l + nl + 1, NULL, 10);
  return -1;
}

long long derpd_varz_sum(const struct derpd_proc *p, const char *family) {
  static char resp[128 * 1024];
  if (http_request(p, "GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp) != 200)
    return -1;
  size_t nl = strlen(family);
  long long sum = 0;
  int found = 0;
  for (const char *l = resp; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    if (strncmp(l, family, nl) != 0 || (l[nl] != ' ' && l[nl] != '{')) continue;
    const char *v = l[nl] == ' ' ? l + nl : strstr(l + nl, "} ");
    if (v && v < strchrnul(l, '\n')) sum += strtoll(v + (*v == '}' ? 2 : 1), NULL, 10), found++;
  }
  return found ? sum : -1;
}

long long derpd_varz_eventually(const struct derpd_proc *p, const char *name, long long want, int ms) {
  int64_t deadline = e2e_now_ms() + ms;
  long long v;
  while ((v = derpd_varz(p, name)) != want && e2e_now_ms() < deadline) e2e_sleep_ms(20);
  return v;
}

void e2e_start(struct derpd_proc *p, int shards, const char *extra_args) {
  const char *bin = getenv("DERPD_BIN");
  cr_assert_eq(derpd_start(p, shards, extra_args), 0, "derpd did not start (DERPD_BIN=%s)",
               bin ? bin : "(unset)");
}

void e2e_random_key(derp_key *k) {
  derp_privkey priv;
  derp_key_generate(&priv, k);
}

void e2e_assert_ping_pong(struct derp_client *c) {
  uint8_t data[8];
  for (int i = 0; i < 8; i++) data[i] = (uint8_t)random();
  cr_assert_eq(derp_client_ping(c, data), 0, "ping: %s", strerror(errno));
  int64_t deadline = e2e_now_ms() + 2000;
  for (;;) {
    struct derp_client_msg m;
    int r = derp_client_recv(c, &m, (int)(deadline - e2e_now_ms()));
    cr_assert_eq(r, 1, "no pong: %s", r == 0 ? "timeout" : strerror(errno));
    if (m.type != DERP_FRAME_PONG) continue;
    cr_assert(memcmp(m.ping_data, data, 8) == 0, "pong carries other bytes than the ping");
    return;
  }
}
