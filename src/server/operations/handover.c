/* handover.c: live upgrade (see handover.h). Owns the environment protocol
 * between an old and a new derpd and the fork+exec; the shards' part (stop
 * accepting without closing) is in core/shard_stop.c's shard_begin_stop. */
#include "server/operations/handover.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server/log.h"
#include "server/operations/service.h"

#define ENV_FDS "DERPD_HANDOVER"
#define ENV_READY "DERPD_HANDOVER_READY"

struct inherited {
  char kind[16];
  int fd;
  int idx;
  bool claimed;
};

static struct inherited g_in[HANDOVER_FDS_MAX];
static int g_nin = -1; /* -1: environment not read yet */
static int g_ready_fd = -1;

static bool valid_listener(int fd) {
  int type = 0, acc = 0;
  socklen_t l = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0) return false;
  if (type == SOCK_DGRAM) return true;
  l = sizeof acc;
  return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) == 0 && acc;
}

static bool listed(int fd) {
  for (int j = 0; j < g_nin; j++)
    if (g_in[j].fd == fd) return true;
  return false;
}

/* "main=5,6;http80=7" -> g_in. Anything malformed is ignored with a warning:
 * the process then opens its own sockets, as at a cold start. */
static void read_env(void) {
  g_nin = 0;
  const char *env = getenv(ENV_FDS);
  const char *rd = getenv(ENV_READY);
  if (rd) g_ready_fd = atoi(rd);
  if (!env) return;
  static char buf[HANDOVER_ENV_MAX];
  snprintf(buf, sizeof buf, "%s", env);
  char *save1 = NULL;
  for (char *part = strtok_r(buf, ";", &save1); part; part = strtok_r(NULL, ";", &save1)) {
    char *eq = strchr(part, '=');
    if (!eq || eq - part >= 16) continue;
    *eq = 0;
    char *save2 = NULL;
    int idx = 0;
    for (char *f = strtok_r(eq + 1, ",", &save2); f; f = strtok_r(NULL, ",", &save2)) {
      int fd = atoi(f);
      if (listed(fd)) { /* once only: a second entry would be closed as unused under its owner */
        log_warn("handover: %s fd %d listed twice; the second ignored", part, fd);
        idx++;
        continue;
      }
      if (fd >= 3 && g_nin == HANDOVER_FDS_MAX && valid_listener(fd)) {
        /* No room (the old process passed more than it may): closed, so no
         * socket stays in a port's group with nobody reading it. */
        log_warn("handover: %s fd %d: more than %d sockets passed; closed", part, fd, HANDOVER_FDS_MAX);
        close(fd);
        idx++;
        continue;
      }
      if (fd < 3 || !valid_listener(fd)) {
        log_warn("handover: %s fd %s is not a listening socket; ignored", part, f);
        idx++;
        continue;
      }
      fcntl(fd, F_SETFD, FD_CLOEXEC);
      snprintf(g_in[g_nin].kind, sizeof g_in[g_nin].kind, "%s", part);
      g_in[g_nin].fd = fd;
      g_in[g_nin].idx = idx++;
      g_in[g_nin].claimed = false;
      g_nin++;
    }
  }
  unsetenv(ENV_FDS);
  unsetenv(ENV_READY);
  if (g_nin) log_info("handover: %d listening socket%s from the previous process", g_nin, g_nin == 1 ? "" : "s");
}

bool handover_active(void) {
  if (g_nin < 0) read_env();
  return g_nin > 0;
}

int handover_inherited(const char *kind, int i) {
  if (g_nin < 0) read_env();
  for (int j = 0; j < g_nin; j++) {
    if (g_in[j].claimed || g_in[j].idx != i || strcmp(g_in[j].kind, kind) != 0) continue;
    g_in[j].claimed = true;
    return g_in[j].fd;
  }
  return -1;
}

void handover_ready(void) {
  if (g_nin < 0) read_env();
  int extra = 0;
  for (int j = 0; j < g_nin; j++) {
    if (g_in[j].claimed) continue;
    close(g_in[j].fd);
    extra++;
  }
  if (extra)
    log_warn("handover: %d inherited socket%s not used (fewer shards than before); connections "
             "queued on them at the switch may be reset: keep --shards the same across upgrades",
             extra, extra == 1 ? "" : "s");
  if (g_ready_fd >= 0) {
    char one = '1';
    if (write(g_ready_fd, &one, 1) != 1)
      log_warn("handover: telling the old process: %s%s", strerror(errno),
               errno == EPIPE ? " (it is gone already; this process serves on)" : "");
    close(g_ready_fd);
    g_ready_fd = -1;
  }
}

/* ---- the old process ------------------------------------------------------- */

static int build_env(const struct handover_set *set, char *out, size_t cap) {
  size_t n = 0;
  int total = 0;
  for (int k = 0; k < set->nkinds; k++) total += set->k[k].n;
  if (total > HANDOVER_FDS_MAX) return -1; /* more than the new process takes */
  for (int k = 0; k < set->nkinds; k++) {
    if (!set->k[k].n) continue;
    int w = snprintf(out + n, cap - n, "%s%s=", n ? ";" : "", set->k[k].kind);
    if (w < 0 || (size_t)w >= cap - n) return -1;
    n += (size_t)w;
    for (int i = 0; i < set->k[k].n; i++) {
      w = snprintf(out + n, cap - n, "%s%d", i ? "," : "", set->k[k].fds[i]);
      if (w < 0 || (size_t)w >= cap - n) return -1;
      n += (size_t)w;
    }
  }
  return 0;
}

static void set_cloexec_all(const struct handover_set *set, bool on) {
  for (int k = 0; k < set->nkinds; k++)
    for (int i = 0; i < set->k[k].n; i++) {
      int fd = set->k[k].fds[i];
      int fl = fcntl(fd, F_GETFD);
      if (fl >= 0) fcntl(fd, F_SETFD, on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC));
    }
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The new process's environment: ours without any stale handover entries,
 * plus fds and ready. Built before fork, because between fork and exec in a
 * threaded process only async-signal-safe calls are safe, and setenv is not
 * (it locks and allocates). NULL if out of memory; free() the array only. */
static char **child_environ(char *fds, char *ready) {
  extern char **environ;
  size_t n = 0;
  while (environ[n]) n++;
  char **e = calloc(n + 3, sizeof *e);
  if (!e) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], ENV_FDS "=", sizeof ENV_FDS) != 0 &&
        strncmp(environ[i], ENV_READY "=", sizeof ENV_READY) != 0)
      e[k++] = environ[i];
  e[k++] = fds;
  e[k++] = ready;
  return e;
}

/* The file to exec, found before fork: execvp's PATH search may allocate,
 * which a child of a threaded process must not. argv[0] with a slash is
 * taken as it is (a path relative to the cwd, as execvp takes it); a bare
 * name is looked up in $PATH (default "/bin:/usr/bin"), the first regular
 * executable file winning. The file is read again at each upgrade, so a
 * binary replaced in place is the one started. 0, or -1 if none. */
static int exec_path(const char *arg0, char *out, size_t cap) {
  if (strchr(arg0, '/')) {
    int n = snprintf(out, cap, "%s", arg0);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
  }
  const char *path = getenv("PATH");
  if (!path || !*path) path = "/bin:/usr/bin";
  for (const char *d = path;; ) {
    const char *end = strchr(d, ':');
    size_t dl = end ? (size_t)(end - d) : strlen(d);
    /* An empty entry is the cwd, as for execvp. */
    int n = dl ? snprintf(out, cap, "%.*s/%s", (int)dl, d, arg0) : snprintf(out, cap, "%s", arg0);
    struct stat st;
    if (n >= 0 && (size_t)n < cap && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
        access(out, X_OK) == 0)
      return 0;
    if (!end) return -1;
    d = end + 1;
  }
}

int handover_spawn(char *const argv[], const struct handover_set *set, int timeout_ms, pid_t *child) {
  char file[4096];
  if (exec_path(argv[0], file, sizeof file) < 0) {
    log_error("upgrade: %s: no such executable in PATH", argv[0]);
    return -1;
  }
  static char env[HANDOVER_ENV_MAX] = ENV_FDS "="; /* main thread only */
  const size_t pre = sizeof ENV_FDS; /* "DERPD_HANDOVER=": each attempt writes after it anew */
  if (build_env(set, env + pre, sizeof env - pre) < 0) {
    log_error("upgrade: too many sockets to pass");
    return -1;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    log_error("upgrade: pipe: %s", strerror(errno));
    return -1;
  }
  char rd[64];
  snprintf(rd, sizeof rd, ENV_READY "=%d", p[1]);
  char **envp = child_environ(env, rd);
  if (!envp) {
    log_error("upgrade: out of memory");
    close(p[0]);
    close(p[1]);
    return -1;
  }
  /* Only the child may inherit: the flags come back right after fork. */
  set_cloexec_all(set, false);
  pid_t pid = fork();
  if (pid == 0) { /* async-signal-safe calls only, up to exec */
    fcntl(p[1], F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* the shards' blocked mask is not the new main's */
    execve(file, argv, envp);
    static const char msg[] = "derpd: upgrade: exec of the new binary failed\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(127);
  }
  free(envp);
  set_cloexec_all(set, true);
  close(p[1]);
  if (pid < 0) {
    log_error("upgrade: fork: %s", strerror(errno));
    close(p[0]);
    return -1;
  }
  log_info("upgrade: started %s as pid %d; waiting for it to listen", file, (int)pid);
  int64_t deadline = mono_ms() + timeout_ms;
  int rc = -1, status = 0;
  bool eof = false;
  for (;;) {
    int64_t left = deadline - mono_ms();
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    int r = left > 0 ? poll(&pfd, 1, (int)(left > 200 ? 200 : left)) : 0;
    if (r > 0) {
      char c;
      rc = read(p[0], &c, 1) == 1 ? 0 : -1;
      eof = rc < 0; /* it closed the pipe without a word: it is exiting */
      break;
    }
    if (r < 0 && errno != EINTR) break;
    if (waitpid(pid, &status, WNOHANG) == pid) { pid = -1; break; }
    if (left <= 0) break;
    service_watchdog_due(); /* systemd's watchdog still watches this process */
  }
  close(p[0]);
  if (rc == 0) {
    *child = pid;
    return 0;
  }
  /* A child that closed the pipe gets a second to be reaped, so that its
   * exit is reported as such rather than as a timeout. */
  for (int i = 0; eof && pid > 0 && i < 20; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid) pid = -1;
    else usleep(50 * 1000);
  }
  if (pid > 0) {
    log_error("upgrade: pid %d did not start listening%s; stopping it, this process serves on", (int)pid,
              eof ? " (it closed the handover pipe)" : "");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
  } else if (WIFEXITED(status)) {
    log_error("upgrade: the new process exited with status %d before listening (its log says why); "
              "this process serves on", WEXITSTATUS(status));
  } else {
    log_error("upgrade: the new process died of signal %d before listening; this process serves on",
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  }
  return -1;
}
