/* test_admission.c: end to end, derpd's admission checks (-verify-client-url,
 * -verify-client-url-fail-open, -verify-clients) against real verifiers:
 * tests/admission_verifier.py as an admission controller (HTTP and HTTPS)
 * and as tailscaled's LocalAPI on a unix socket. Every behaviour of the
 * controller under both fail-open settings, what derpd sends, the LocalAPI
 * request, both checks together, mesh peers, a slow check beside normal
 * relaying, conns that leave while their check is outstanding, a full queue,
 * and kept-alive connections to the controller. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "derp/hex.h"
#include "e2e_util.h"

static struct derpd_proc g_srv, g_srv2;

/* ---- the verifier process ---------------------------------------------------- */

struct verifier {
  pid_t pid;
  char dir[64], modes[96], log[96], sock[96];
  uint16_t port;
};
static struct verifier g_v, g_v2;

/* localapi: tailscaled's LocalAPI on v->sock, else a controller on TCP. */
static void verifier_start(struct verifier *v, const char *args, bool localapi) {
  memset(v, 0, sizeof *v);
  snprintf(v->dir, sizeof v->dir, "/tmp/derpd-adm-XXXXXX");
  cr_assert_not_null(mkdtemp(v->dir));
  snprintf(v->modes, sizeof v->modes, "%s/modes", v->dir);
  snprintf(v->log, sizeof v->log, "%s/log", v->dir);
  snprintf(v->sock, sizeof v->sock, "%s/tailscaled.sock", v->dir);
  char ready[96], cmd[1024];
  snprintf(ready, sizeof ready, "%s/ready", v->dir);
  const char *script = getenv("ADMISSION_VERIFIER");
  cr_assert(script && *script, "ADMISSION_VERIFIER is not set (meson sets it)");
  /* Debian's python3 (scripts/setup installs it) rather than whatever is
   * first on PATH: a pyenv shim takes seconds to start. */
  const char *py = getenv("PYTHON");
  if (!py || !*py) py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  snprintf(cmd, sizeof cmd, "exec %s %s --modes %s --log %s --ready %s %s%s%s", py, script, v->modes, v->log,
           ready, args ? args : "", localapi ? " --localapi --unix " : "", localapi ? v->sock : "");
  pid_t parent = getpid();
  fflush(NULL);
  v->pid = fork();
  cr_assert_geq(v->pid, 0);
  if (v->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    close_range(3, ~0U, 0);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  for (int64_t end = e2e_now_ms() + 10000; e2e_now_ms() < end; e2e_sleep_ms(20)) {
    FILE *f = fopen(ready, "r");
    if (!f) {
      cr_assert_eq(waitpid(v->pid, NULL, WNOHANG), 0, "the verifier exited: %s", cmd);
      continue;
    }
    char line[32] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    v->port = (uint16_t)atoi(line);
    return;
  }
  cr_assert_fail("the verifier did not start: %s", cmd);
}

static void verifier_stop(struct verifier *v) {
  if (v->pid > 0) {
    kill(v->pid, SIGKILL);
    waitpid(v->pid, NULL, 0);
  }
  v->pid = 0;
  if (v->dir[0]) e2e_rm_dir(v->dir);
  v->dir[0] = 0;
}

static void verifier_mode(struct verifier *v, const derp_key *k, const char *mode) {
  char key[DERP_KEY_STRLEN];
  derp_key_format(k, key);
  FILE *f = fopen(v->modes, "a");
  cr_assert_not_null(f);
  fprintf(f, "%s %s\n", key, mode);
  fclose(f);
}

/* The requests the verifier logged that name key k (in the body or the
 * path), as JSON objects (caller json_decref's each); returns how many. */
static int verifier_requests(struct verifier *v, const derp_key *k, json_t **out, int max) {
  char hex[DERP_KEY_HEXLEN + 1];
  derp_key_hex(k, hex);
  FILE *f = fopen(v->log, "r");
  if (!f) return 0;
  char line[32768];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    if (!strstr(line, hex)) continue;
    json_t *j = json_loads(line, 0, NULL);
    cr_assert_not_null(j, "bad log line: %s", line);
    if (n < max && out) out[n] = j;
    else json_decref(j);
    n++;
  }
  fclose(f);
  return n;
}

static const char *header(json_t *req, const char *name) {
  const char *k;
  json_t *val;
  json_object_foreach(json_object_get(req, "headers"), k, val) if (strcasecmp(k, name) == 0) return json_string_value(val);
  return NULL;
}

/* ---- clients ------------------------------------------------------------------ */

/* A client with its own key; NULL if the server refused it (or timed out). */
static struct derp_client *try_connect(const struct derpd_proc *p, const derp_privkey *priv, const char *mesh_key,
                                       int timeout_ms, char *err, size_t errlen) {
  struct derp_client_opts o = {.host = "127.0.0.1", .port = p->port, .priv = priv, .server_key = &p->server_key,
                               .mesh_key = mesh_key, .timeout_ms = timeout_ms};
  struct derp_client *c = NULL;
  if (derp_client_connect(&c, &o, err, errlen) < 0) return NULL;
  return c;
}

/* Connects on a thread, so several checks can be outstanding at once. */
struct attempt {
  const struct derpd_proc *p;
  derp_privkey priv;
  derp_key pub;
  int timeout_ms;
  const char *mode;      /* what the verifier is told for this key */
  bool expect;           /* admitted? */
  pthread_t t;
  struct derp_client *c;
  int64_t ms;            /* how long the connect took */
  char err[256];
};

static void *attempt_main(void *arg) {
  struct attempt *a = arg;
  int64_t t0 = e2e_now_ms();
  a->c = try_connect(a->p, &a->priv, NULL, a->timeout_ms, a->err, sizeof a->err);
  a->ms = e2e_now_ms() - t0;
  return NULL;
}

/* mode: what verifier v answers for the attempt's new key (NULL: its default). */
static void attempt_start_as(struct attempt *a, const struct derpd_proc *p, struct verifier *v, const char *mode,
                             int timeout_ms) {
  a->p = p;
  a->timeout_ms = timeout_ms;
  derp_key_generate(&a->priv, &a->pub);
  if (mode) verifier_mode(v, &a->pub, mode);
  cr_assert_eq(pthread_create(&a->t, NULL, attempt_main, a), 0);
}

static void attempt_start(struct attempt *a, const struct derpd_proc *p, int timeout_ms) {
  attempt_start_as(a, p, NULL, NULL, timeout_ms);
}

static void attempt_join(struct attempt *a) { pthread_join(a->t, NULL); }

static void new_key(derp_privkey *priv, derp_key *pub) { derp_key_generate(priv, pub); }

static void setup(void) { e2e_test_init(); }

/* SIGTERM, and a clean exit 0: workers stopped mid-check, everything freed
 * (ASan builds check for leaks at exit). */
static void stop_clean(struct derpd_proc *p) {
  if (!p->pid) return;
  int st = -1;
  int r = derpd_stop_within(p, 10000, &st);
  if (r != 0 || st != 0) derpd_dump_log(p, 8192);
  cr_assert_eq(r, 0, "derpd did not stop within 10 s");
  cr_assert_eq(st, 0, "derpd exited %d", st);
}

static void teardown(void) {
  stop_clean(&g_srv);
  stop_clean(&g_srv2);
  e2e_test_fini(&g_srv);
  derpd_kill(&g_srv2);
  verifier_stop(&g_v);
  verifier_stop(&g_v2);
}

#define ADM .init = setup, .fini = teardown, .timeout = 90

static void start_derpd(struct derpd_proc *p, int shards, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void start_derpd(struct derpd_proc *p, int shards, const char *fmt, ...) {
  char args[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  cr_assert_eq(derpd_start(p, shards, args), 0, "derpd did not start with %s", args);
}

static long long varz(const struct derpd_proc *p, const char *result) {
  char name[96];
  snprintf(name, sizeof name, "derpd_admission_checks{result=\"%s\"}", result);
  return derpd_varz(p, name);
}

/* ---- the controller's every behaviour, under both fail-open settings ------- */

struct mode_case {
  const char *mode;
  bool open, closed;     /* admitted with fail-open true / false */
  const char *result;    /* derpd_admission_checks{result} it counts as */
};

static const struct mode_case cases[] = {
    {"allow", true, true, "allow"},
    {"deny", false, false, "deny"},
    {"500", false, false, "deny"},          /* non-200 refuses, fail-open or not */
    {"garbage", false, false, "error"},     /* Decode fails after Do succeeded: no fail-open */
    {"truncated", false, false, "error"},
    {"wrongtype", false, false, "error"},   /* "true" is not a bool */
    {"lowercase", true, true, "allow"},     /* Go matches "allow" to Allow */
    {"oversized_ok", true, true, "allow"},  /* value within 4 KiB, padding after */
    {"oversized_bad", false, false, "error"}, /* value past 4 KiB: cut */
    {"chunked", true, true, "allow"},
    {"close", true, false, "error"},        /* no response: unreachable */
    {"slow", true, false, "timeout"},       /* 5 s timeout: unreachable */
    {"stall_body", false, false, "error"},  /* a 200 head, then a body that never ends */
};
#define NCASES (sizeof cases / sizeof cases[0])

static void every_mode(bool fail_open) {
  verifier_start(&g_v, "--default deny", false);
  start_derpd(&g_srv, 2, "-verify-client-url http://127.0.0.1:%u/verify?x=1 -verify-client-url-fail-open=%s",
              g_v.port, fail_open ? "true" : "false");
  struct attempt at[NCASES];
  memset(at, 0, sizeof at);
  for (size_t i = 0; i < NCASES; i++) {
    derp_key_generate(&at[i].priv, &at[i].pub);
    verifier_mode(&g_v, &at[i].pub, cases[i].mode);
  }
  for (size_t i = 0; i < NCASES; i++) {
    at[i].p = &g_srv;
    at[i].timeout_ms = 9000;
    cr_assert_eq(pthread_create(&at[i].t, NULL, attempt_main, &at[i]), 0);
  }
  for (size_t i = 0; i < NCASES; i++) attempt_join(&at[i]);
  long long want[6] = {0};
  const char *results[] = {"allow", "deny", "error", "timeout", "overload", "abandoned"};
  int admitted = 0, fail_opened = 0;
  for (size_t i = 0; i < NCASES; i++) {
    bool expect = fail_open ? cases[i].open : cases[i].closed;
    cr_assert_eq(at[i].c != NULL, expect, "mode %s, fail-open %d: %s (%s, %lld ms)", cases[i].mode, fail_open,
                 at[i].c ? "admitted" : "refused", at[i].err, (long long)at[i].ms);
    for (int r = 0; r < 6; r++)
      if (strcmp(results[r], cases[i].result) == 0) want[r]++;
    if (at[i].c) {
      admitted++;
      if (strcmp(cases[i].result, "allow") != 0) fail_opened++;
      e2e_assert_ping_pong(at[i].c);
    }
    /* ServerInfo never before the verdict: a slow check holds the client 5 s. */
    if (strcmp(cases[i].mode, "slow") == 0 || strcmp(cases[i].mode, "stall_body") == 0)
      cr_assert_geq(at[i].ms, 4500, "mode %s answered after %lld ms", cases[i].mode, (long long)at[i].ms);
    /* What derper sends: a POST of {"NodePublic","Source"} as JSON. */
    json_t *reqs[4];
    int n = verifier_requests(&g_v, &at[i].pub, reqs, 4);
    cr_assert_geq(n, 1, "mode %s: the verifier saw no request", cases[i].mode);
    char want_body[200], key[DERP_KEY_STRLEN];
    derp_key_format(&at[i].pub, key);
    if (!at[i].c) { /* a refusal's close line names the client */
      char line[200];
      snprintf(line, sizeof line, "%s: closed: admission_denied", key);
      cr_assert(derpd_log_contains(&g_srv, line), "mode %s: no '%s' in the log", cases[i].mode, line);
    }
    snprintf(want_body, sizeof want_body, "{\"NodePublic\":\"%s\",\"Source\":\"127.0.0.1\"}", key);
    for (int r = 0; r < n && r < 4; r++) {
      cr_assert_str_eq(json_string_value(json_object_get(reqs[r], "method")), "POST");
      cr_assert_str_eq(json_string_value(json_object_get(reqs[r], "path")), "/verify?x=1");
      cr_assert_str_eq(json_string_value(json_object_get(reqs[r], "body")), want_body);
      const char *ct = header(reqs[r], "Content-Type"), *host = header(reqs[r], "Host");
      cr_assert(ct && strcmp(ct, "application/json") == 0, "Content-Type %s", ct ? ct : "(none)");
      char h[64];
      snprintf(h, sizeof h, "127.0.0.1:%u", g_v.port);
      cr_assert(host && strcmp(host, h) == 0, "Host %s", host ? host : "(none)");
      json_decref(reqs[r]);
    }
    /* One request each, but "close" may be retried once on a fresh
     * connection when it went out on a kept-alive one. */
    cr_assert(n == 1 || (n == 2 && strcmp(cases[i].mode, "close") == 0), "mode %s: %d requests", cases[i].mode, n);
  }
  for (int r = 0; r < 6; r++)
    cr_assert_eq(varz(&g_srv, results[r]), want[r], "result %s: %lld, want %lld", results[r], varz(&g_srv, results[r]),
                 want[r]);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_fail_open"), fail_opened);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_pending"), 0);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_conn_closed{reason=\"admission_denied\"}"), (long long)NCASES - admitted);
  cr_assert(derpd_log_contains(&g_srv, "closed: admission_denied: admission controller"), "no log line for a refusal");
  /* Two admitted clients relay to each other. */
  struct derp_client *a = at[0].c, *b = at[6].c;
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 50);
  for (size_t i = 0; i < NCASES; i++)
    if (at[i].c) derp_client_close(at[i].c);
}

Test(admission, controller_fail_open, ADM) { every_mode(true); }
Test(admission, controller_fail_closed, ADM) { every_mode(false); }

/* Nothing listens at the URL: connection refused. The port stays bound (no
 * listen) for the test, so no verifier of a test running beside it can take
 * it between a pick and derpd's requests (it did: a refusal under fail-open). */
Test(admission, controller_unreachable, ADM) {
  int hold = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  cr_assert(hold >= 0 && bind(hold, (struct sockaddr *)&sa, sizeof sa) == 0 &&
            getsockname(hold, (struct sockaddr *)&sa, &sl) == 0, "bind: %s", strerror(errno));
  uint16_t port = ntohs(sa.sin_port);
  start_derpd(&g_srv, 1, "-verify-client-url http://127.0.0.1:%u/", port);
  start_derpd(&g_srv2, 1, "-verify-client-url http://127.0.0.1:%u/ -verify-client-url-fail-open=false", port);
  derp_privkey priv;
  derp_key pub;
  char err[256];
  new_key(&priv, &pub);
  struct derp_client *c = try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err);
  cr_assert_not_null(c, "fail-open: refused: %s", err);
  derp_client_close(c);
  cr_assert_null(try_connect(&g_srv2, &priv, NULL, 5000, err, sizeof err), "fail-closed: admitted");
  cr_assert_eq(varz(&g_srv, "error"), 1);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_fail_open"), 1);
  cr_assert_eq(varz(&g_srv2, "error"), 1);
  cr_assert_eq(derpd_varz(&g_srv2, "derpd_admission_fail_open"), 0);
  cr_assert(derpd_log_contains(&g_srv, "allowing the client (-verify-client-url-fail-open)"));
  cr_assert(derpd_log_contains(&g_srv2, "Connection refused"), "the refusal's log line names the cause");
  close(hold);
}

/* ---- asynchrony ---------------------------------------------------------------- */

/* One shard: while a check hangs, other clients connect and relay at full
 * speed, and the hanging client hears nothing until its verdict. */
Test(admission, slow_check_does_not_block_the_shard, ADM) {
  verifier_start(&g_v, "--default allow", false);
  start_derpd(&g_srv, 1, "-verify-client-url http://127.0.0.1:%u/", g_v.port);
  struct attempt slow = {0};
  attempt_start_as(&slow, &g_srv, &g_v, "slow", 9000);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_admission_pending", 1, 3000), 1);
  int64_t t0 = e2e_now_ms();
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  struct derp_client *b = e2e_client(&g_srv, NULL, true);
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 100); /* few enough for a TSan derpd beside three others */
  e2e_relay_check(b, a, 100);
  int64_t took = e2e_now_ms() - t0;
  cr_assert_lt(took, 4000, "two clients and 200 packets took %lld ms beside a slow check", (long long)took);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_pending"), 1, "the slow check ended early");
  attempt_join(&slow);
  cr_assert_not_null(slow.c, "fail-open: the slow client was refused: %s", slow.err);
  cr_assert_geq(slow.ms, 4500, "admitted after %lld ms, before the 5 s timeout", (long long)slow.ms);
  e2e_assert_ping_pong(slow.c);
  derp_client_close(slow.c);
  cr_assert_eq(varz(&g_srv, "timeout"), 1);
  cr_assert_eq(varz(&g_srv, "allow"), 2);
}

/* A check still running at a live upgrade finishes during the old
 * process's drain: the client is admitted and told Restarting (it was
 * refused as "admission controller unreachable ... stopped" when the workers
 * stopped before the shards). Fail-open off, so a cut check would refuse. */
Test(admission, check_in_flight_at_upgrade_finishes, ADM) {
  prctl(PR_SET_CHILD_SUBREAPER, 1); /* the new derpd is orphaned to us */
  verifier_start(&g_v, "--default allow", false);
  start_derpd(&g_srv, 1, "-verify-client-url http://127.0.0.1:%u/ -verify-client-url-fail-open=false", g_v.port);
  pid_t old = g_srv.pid;
  struct attempt late = {0};
  attempt_start_as(&late, &g_srv, &g_v, "allow_1s", 9000);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_admission_pending", 1, 3000), 1);
  cr_assert_eq(kill(old, SIGUSR2), 0);
  attempt_join(&late);
  int st = -1;
  int waited = derpd_wait(&g_srv, 15000, &st);
  pid_t new_pid = derpd_new_pid(&g_srv, old);
  e2e_reap(&new_pid, &g_srv);
  cr_assert_eq(waited, 0, "the old process did not exit");
  cr_assert_eq(st, 0, "the old process exited %d", st);
  cr_assert_not_null(late.c, "refused at the upgrade: %s", late.err);
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv(late.c, &m, 3000)) == 1 && m.type != DERP_FRAME_RESTARTING) {}
  cr_assert_eq(r, 1, "no Restarting frame");
  derp_client_close(late.c);
  cr_assert(!derpd_log_contains(&g_srv, "admission_denied"));
}

/* Connections up to --max-conns leave a check the descriptors it needs
 * (each worker's ring, its connection to the controller, a lookup's): with
 * the default 32 workers and 512 open files, max-conns idle connections less
 * one, then a client, whom the controller must be asked about. Before the
 * reserve counted admission, the descriptors ran out below the limit: here
 * the /debug/varz request was not even accepted, and with a few idle
 * connections fewer the check failed with EMFILE ("lookup 127.0.0.1: Too
 * many open files") and the client was refused (under fail-open, admitted
 * unasked). */
Test(admission, conns_at_the_limit_leave_checks_their_descriptors, ADM) {
  enum { NOFILE = 512 };
  verifier_start(&g_v, "--default allow", false);
  char args[256];
  snprintf(args, sizeof args, "-verify-client-url http://127.0.0.1:%u/ -verify-client-url-fail-open=false",
           g_v.port);
  e2e_derpd_nofile = NOFILE;
  int started = derpd_start(&g_srv, 1, args);
  e2e_derpd_nofile = 0;
  cr_assert_eq(started, 0, "derpd did not start with %d open files", NOFILE);
  char line[160] = "";
  int max = 0;
  for (int64_t end = e2e_now_ms() + 3000; max == 0 && e2e_now_ms() < end; e2e_sleep_ms(20)) {
    FILE *f = fopen(g_srv.log_path, "r");
    while (f && fgets(line, sizeof line, f)) {
      const char *m = strstr(line, ", max ");
      if (m) max = atoi(m + 6);
    }
    if (f) fclose(f);
  }
  cr_assert_gt(max, 16, "no usable --max-conns in the log (%d)", max);
  cr_assert_lt(max, NOFILE);
  static int fds[NOFILE];
  int n = max - 1;
  for (int i = 0; i < n; i++) cr_assert_geq(fds[i] = raw_connect(&g_srv), 0);
  long long open = 0; /* the idle ones, and the /debug/varz request's own */
  for (int64_t end = e2e_now_ms() + 5000; open < n + 1 && e2e_now_ms() < end; e2e_sleep_ms(20))
    open = derpd_varz(&g_srv, "derpd_shard_connections{shard=\"0\"}");
  cr_assert_eq(open, n + 1, "derpd holds %lld connections, not the %d idle ones and the request", open, n);
  derp_privkey priv;
  derp_key pub;
  new_key(&priv, &pub);
  char err[256];
  struct derp_client *c = try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err);
  for (int i = 0; i < n; i++) close(fds[i]);
  cr_assert_not_null(c, "refused with %d of %d connections open: %s", n, max, err);
  derp_client_close(c);
  cr_assert_eq(verifier_requests(&g_v, &pub, NULL, 0), 1, "the controller was not asked");
  cr_assert_eq(varz(&g_srv, "allow"), 1);
}

/* Conns that go away while their check is outstanding: the client gives up
 * (EOF), or the handshake deadline passes. The late verdicts touch nothing
 * (ASan and TSan builds run this too) and are counted as abandoned. */
Test(admission, conn_gone_before_verdict, ADM) {
  verifier_start(&g_v, "--default slow", false);
  start_derpd(&g_srv, 2, "-verify-client-url http://127.0.0.1:%u/ --handshake-timeout 2s", g_v.port);
  struct attempt quit = {0}, wait = {0};
  attempt_start(&quit, &g_srv, 700); /* gives up after 0.7 s: EOF */
  attempt_start(&wait, &g_srv, 9000); /* waits; the 2 s deadline cuts it */
  attempt_join(&quit);
  attempt_join(&wait);
  cr_assert_null(quit.c);
  cr_assert_null(wait.c, "admitted past the handshake deadline");
  cr_assert_lt(wait.ms, 4000, "the handshake deadline did not cut the wait (%lld ms)", (long long)wait.ms);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_admission_checks{result=\"abandoned\"}", 2, 3000), 2);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_pending"), 0);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_conn_closed{reason=\"handshake_timeout\"}"), 1);
  /* The verdicts come back at 5 s (the verifier sleeps 7): nothing to apply. */
  e2e_sleep_ms(4500);
  cr_assert(derpd_alive(&g_srv));
  cr_assert_eq(varz(&g_srv, "timeout"), 0, "a verdict was counted for a conn that is gone");
  /* And the server goes on admitting. */
  derp_privkey priv;
  derp_key pub;
  new_key(&priv, &pub);
  verifier_mode(&g_v, &pub, "allow");
  char err[256];
  struct derp_client *c = try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err);
  cr_assert_not_null(c, "%s", err);
  derp_client_close(c);
}

/* A check ends when its client's handshake deadline has passed, not 5 s
 * after it started: one worker, a client whose controller never answers in
 * time, then one it admits. The second is asked once the first's deadline
 * frees the worker, in time for its own deadline (before, the worker stayed
 * on the first for the full 5 s and the second's deadline passed). */
Test(admission, deadline_frees_worker, ADM) {
  verifier_start(&g_v, "--default slow", false);
  /* The second starts about when the first's 2 s deadline frees the worker,
   * and its own deadline (about 4.1 s) comes before the 5 s request timeout
   * would have: asked in time only if the deadline ended the first check,
   * with about 2 s to spare (the 1 s of a 3 s deadline was tight for TSan). */
  start_derpd(&g_srv, 1, "-verify-client-url http://127.0.0.1:%u/ --admission-workers 1 --handshake-timeout 2s",
              g_v.port);
  struct attempt first = {0}, second = {0};
  attempt_start(&first, &g_srv, 9000);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_admission_pending", 1, 4000), 1);
  e2e_sleep_ms(2000);
  attempt_start_as(&second, &g_srv, &g_v, "allow", 9000);
  attempt_join(&first);
  attempt_join(&second);
  cr_assert_null(first.c, "admitted past the handshake deadline");
  cr_assert_not_null(second.c, "the second client was not asked in time: %s (%lld ms)", second.err,
                     (long long)second.ms);
  derp_client_close(second.c);
  cr_assert_eq(varz(&g_srv, "timeout"), 0, "a check cut at its client's deadline gave a verdict");
}

/* A check cut short by its client's deadline gives no verdict, whichever
 * comes first after a stall: derpd is stopped (SIGSTOP) across the 1 s
 * deadline and the checks' end 250 ms after it, so that the workers' failed
 * checks and the shard's deadline tick all come due in one wake-up. No
 * client may get in by fail-open (a verdict applied in a turn before the
 * tick's used to admit it). */
Test(admission, stalled_past_deadline_no_fail_open, ADM) {
  enum { N = 8 };
  verifier_start(&g_v, "--default slow", false);
  start_derpd(&g_srv, 1, "-verify-client-url http://127.0.0.1:%u/ --admission-workers 8 --handshake-timeout 1s",
              g_v.port);
  struct attempt at[N];
  memset(at, 0, sizeof at);
  for (int i = 0; i < N; i++) attempt_start(&at[i], &g_srv, 9000);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "derpd_admission_pending", N, 4000), N);
  e2e_sleep_ms(500);
  cr_assert_eq(kill(g_srv.pid, SIGSTOP), 0);
  e2e_sleep_ms(1500);
  cr_assert_eq(kill(g_srv.pid, SIGCONT), 0);
  for (int i = 0; i < N; i++) attempt_join(&at[i]);
  for (int i = 0; i < N; i++) cr_assert_null(at[i].c, "client %d admitted after its deadline", i);
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_fail_open"), 0, "a check cut at its client's deadline was failed open");
  cr_assert_eq(derpd_varz(&g_srv, "derpd_conn_closed{reason=\"handshake_timeout\"}"), N);
}

/* One worker, a queue of one: the third check finds no room and is refused
 * at once, with fail-open as without it (fail-open is for a controller that
 * cannot be asked, not for a full queue that anyone can fill). Both servers
 * at once, so the slow checks overlap. */
Test(admission, queue_full, ADM) {
  verifier_start(&g_v, "--default slow", false);
  start_derpd(&g_srv, 1, "-verify-client-url http://127.0.0.1:%u/ --admission-workers 1 --admission-queue 1",
              g_v.port);
  start_derpd(&g_srv2, 1,
              "-verify-client-url http://127.0.0.1:%u/ --admission-workers 1 --admission-queue 1 "
              "-verify-client-url-fail-open=false", g_v.port);
  struct derpd_proc *srv[2] = {&g_srv, &g_srv2};
  struct attempt busy[2][2];
  memset(busy, 0, sizeof busy);
  /* Each server's overflow right after its own queue fills: the first check
   * times out 5 s after it starts, and a loaded machine must not eat that. */
  for (int s = 0; s < 2; s++) {
    for (int i = 0; i < 2; i++) { /* one running, one waiting in the queue */
      attempt_start(&busy[s][i], srv[s], 8000);
      cr_assert_eq(derpd_varz_eventually(srv[s], "derpd_admission_pending", i + 1, 4000), i + 1,
                   "server %d: check %d never became pending", s, i);
      /* The worker has taken the first from the queue once the verifier
       * heard it: before that the queue of one is full, and a loaded
       * machine refused the second as overload (seen under ASan). */
      for (int64_t end = e2e_now_ms() + 4000; i == 0 && !verifier_requests(&g_v, &busy[s][0].pub, NULL, 0);) {
        cr_assert(e2e_now_ms() < end, "server %d: the first check never reached the verifier", s);
        e2e_sleep_ms(10);
      }
    }
    derp_privkey priv;
    derp_key pub;
    new_key(&priv, &pub);
    char err[256];
    int64_t t0 = e2e_now_ms();
    struct derp_client *c = try_connect(srv[s], &priv, NULL, 5000, err, sizeof err);
    int64_t ms = e2e_now_ms() - t0;
    cr_assert(c == NULL, "fail-open %d: a client admitted with the queue full", s == 0);
    cr_assert_lt(ms, 2500, "the overloaded client waited %lld ms (a check takes 5 s)", (long long)ms);
    if (c) derp_client_close(c);
    cr_assert_eq(varz(srv[s], "overload"), 1);
    cr_assert_eq(derpd_varz(srv[s], "derpd_admission_fail_open"), 0);
    cr_assert_eq(verifier_requests(&g_v, &pub, NULL, 0), 0, "asked about a client with no room");
  }
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < 2; i++) {
      attempt_join(&busy[s][i]);
      if (busy[s][i].c) derp_client_close(busy[s][i].c);
    }
  for (int s = 0; s < 2; s++) cr_assert(derpd_log_contains(srv[s], "waiting already (--admission-queue)"));
}

/* One worker keeps its connection to the controller alive across checks. */
Test(admission, controller_connection_kept_alive, ADM) {
  verifier_start(&g_v, "--default allow", false);
  start_derpd(&g_srv, 2, "-verify-client-url http://127.0.0.1:%u/ --admission-workers 1", g_v.port);
  long ports[5];
  for (int i = 0; i < 5; i++) {
    derp_privkey priv;
    derp_key pub;
    new_key(&priv, &pub);
    char err[256];
    struct derp_client *c = try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err);
    cr_assert_not_null(c, "%s", err);
    derp_client_close(c);
    json_t *r[2];
    cr_assert_eq(verifier_requests(&g_v, &pub, r, 2), 1);
    ports[i] = (long)json_integer_value(json_object_get(r[0], "peer_port"));
    json_decref(r[0]);
  }
  for (int i = 1; i < 5; i++) cr_assert_eq(ports[i], ports[0], "check %d came on a new connection", i);
}

/* ---- mesh peers ------------------------------------------------------------------ */

Test(admission, mesh_peer_skips_admission, ADM) {
  verifier_start(&g_v, "--default deny", false);
  char keyfile[128], mesh[80];
  snprintf(keyfile, sizeof keyfile, "%s/mesh.key", g_v.dir);
  uint8_t raw[32];
  for (int i = 0; i < 32; i++) raw[i] = (uint8_t)random();
  derp_hex_encode(raw, sizeof raw, mesh);
  FILE *f = fopen(keyfile, "w");
  cr_assert_not_null(f);
  fprintf(f, "%s\n", mesh);
  fclose(f);
  start_derpd(&g_srv, 2, "-mesh-psk-file %s -verify-client-url http://127.0.0.1:%u/ -verify-client-url-fail-open=false",
              keyfile, g_v.port);
  derp_privkey priv;
  derp_key pub;
  new_key(&priv, &pub);
  char err[256];
  struct derp_client *m = try_connect(&g_srv, &priv, mesh, 5000, err, sizeof err);
  cr_assert_not_null(m, "mesh peer refused: %s", err);
  cr_assert_eq(derp_client_watch_conns(m), 0); /* and it is a mesh peer */
  e2e_assert_ping_pong(m);
  cr_assert_eq(verifier_requests(&g_v, &pub, NULL, 0), 0, "the controller was asked about a mesh peer");
  cr_assert_eq(derpd_varz(&g_srv, "derpd_admission_mesh_skips"), 1);
  derp_client_close(m);
  /* Anyone else is asked, and refused. */
  new_key(&priv, &pub);
  cr_assert_null(try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err));
  cr_assert_eq(verifier_requests(&g_v, &pub, NULL, 0), 1);
  /* A wrong mesh key is no mesh peer: asked, refused. */
  new_key(&priv, &pub);
  mesh[0] = mesh[0] == 'a' ? 'b' : 'a';
  cr_assert_null(try_connect(&g_srv, &priv, mesh, 5000, err, sizeof err));
  cr_assert_eq(verifier_requests(&g_v, &pub, NULL, 0), 1);
}

/* ---- -verify-clients: tailscaled's LocalAPI ------------------------------------------ */

Test(admission, local_tailscaled, ADM) {
  verifier_start(&g_v, "--default unknown", true);
  start_derpd(&g_srv, 2, "-verify-clients -socket %s", g_v.sock);
  /* What tailscaled says about each key, and whether derpd admits it. */
  static const struct { const char *mode; bool admit; } k[] = {
      {"known", true}, {"unknown", false}, {"garbage", false}, {"500", false}};
  derp_privkey priv[4];
  derp_key pub[4];
  char err[256];
  for (int i = 0; i < 4; i++) {
    new_key(&priv[i], &pub[i]);
    verifier_mode(&g_v, &pub[i], k[i].mode);
    struct derp_client *c = try_connect(&g_srv, &priv[i], NULL, 5000, err, sizeof err);
    cr_assert_eq(c != NULL, k[i].admit, "tailscaled says %s: %s", k[i].mode, c ? "admitted" : err);
    if (c) e2e_assert_ping_pong(c);
    if (c) derp_client_close(c);
  }
  /* The request, as derper's LocalClient.WhoIsNodeKey makes it. */
  json_t *r[2];
  cr_assert_eq(verifier_requests(&g_v, &pub[0], r, 2), 1);
  char hex[DERP_KEY_HEXLEN + 1], path[128];
  derp_key_hex(&pub[0], hex);
  snprintf(path, sizeof path, "/localapi/v0/whois?addr=nodekey%%3A%s", hex);
  cr_assert_str_eq(json_string_value(json_object_get(r[0], "method")), "GET");
  cr_assert_str_eq(json_string_value(json_object_get(r[0], "path")), path);
  cr_assert_str_eq(header(r[0], "Host"), "local-tailscaled.sock");
  cr_assert_str_eq(header(r[0], "Tailscale-Cap"), "109");
  json_decref(r[0]);
  cr_assert_eq(varz(&g_srv, "allow"), 1);
  cr_assert_eq(varz(&g_srv, "deny"), 1);
  cr_assert_eq(varz(&g_srv, "error"), 2);
  cr_assert(derpd_log_contains(&g_srv, "not authorized (not found in local tailscaled)"));
}

/* No tailscaled at the socket: every client is refused; fail-open is for the
 * controller only (as in derper). */
Test(admission, local_tailscaled_missing, ADM) {
  start_derpd(&g_srv, 1, "-verify-clients -socket /nonexistent/tailscaled.sock -verify-client-url-fail-open=true");
  cr_assert(derpd_log_contains(&g_srv, "every client will be refused"));
  derp_privkey priv;
  derp_key pub;
  new_key(&priv, &pub);
  char err[256];
  cr_assert_null(try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err));
  cr_assert_eq(varz(&g_srv, "error"), 1);
  cr_assert(derpd_log_contains(&g_srv, "failed to query local tailscaled status"));
}

/* Both checks: tailscaled first, then the controller; both must say yes. */
Test(admission, both_checks, ADM) {
  verifier_start(&g_v, "--default allow", false);
  verifier_start(&g_v2, "--default unknown", true);
  start_derpd(&g_srv, 2, "-verify-clients -socket %s -verify-client-url http://127.0.0.1:%u/", g_v2.sock,
              g_v.port);
  /* tailscaled's word, the controller's, and derpd's. */
  static const struct { const char *local, *url; bool admit; } k[] = {
      {"known", "allow", true}, {"known", "deny", false}, {"unknown", "allow", false}};
  derp_privkey priv[3];
  derp_key pub[3];
  char err[256];
  for (int i = 0; i < 3; i++) {
    new_key(&priv[i], &pub[i]);
    verifier_mode(&g_v2, &pub[i], k[i].local);
    verifier_mode(&g_v, &pub[i], k[i].url);
    struct derp_client *c = try_connect(&g_srv, &priv[i], NULL, 5000, err, sizeof err);
    cr_assert_eq(c != NULL, k[i].admit, "tailscaled %s, controller %s: %s", k[i].local, k[i].url,
                 c ? "admitted" : err);
    if (c) derp_client_close(c);
    cr_assert_eq(verifier_requests(&g_v2, &pub[i], NULL, 0), 1);
    /* The controller is not asked about a key tailscaled refused. */
    cr_assert_eq(verifier_requests(&g_v, &pub[i], NULL, 0), strcmp(k[i].local, "known") == 0 ? 1 : 0);
  }
}

/* ---- HTTPS ------------------------------------------------------------------------ */

Test(admission, https_controller, ADM) {
  char dir[] = "/tmp/derpd-adm-tls-XXXXXX", cmd[1024], cert[96], key[96], args[400];
  cr_assert_not_null(mkdtemp(dir));
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=verifier "
           "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null", key, cert);
  cr_assert_eq(system(cmd), 0, "openssl could not make a certificate");
  snprintf(args, sizeof args, "--default allow --tls %s %s", cert, key);
  verifier_start(&g_v, args, false);
  /* Trusted through SSL_CERT_FILE, as Go would take it. */
  setenv("SSL_CERT_FILE", cert, 1);
  start_derpd(&g_srv, 1, "-verify-client-url https://127.0.0.1:%u/v -verify-client-url-fail-open=false", g_v.port);
  unsetenv("SSL_CERT_FILE");
  /* Not trusted: the system roots do not have it. */
  start_derpd(&g_srv2, 1, "-verify-client-url https://127.0.0.1:%u/v -verify-client-url-fail-open=false", g_v.port);
  derp_privkey priv;
  derp_key pub;
  new_key(&priv, &pub);
  char err[256];
  struct derp_client *c = try_connect(&g_srv, &priv, NULL, 5000, err, sizeof err);
  cr_assert_not_null(c, "refused over HTTPS: %s", err);
  derp_client_close(c);
  cr_assert_eq(verifier_requests(&g_v, &pub, NULL, 0), 1);
  new_key(&priv, &pub);
  cr_assert_null(try_connect(&g_srv2, &priv, NULL, 5000, err, sizeof err), "admitted by an untrusted controller");
  cr_assert_eq(varz(&g_srv2, "error"), 1);
  cr_assert(derpd_log_contains(&g_srv2, "certificate"), "the log does not say the certificate failed");
  e2e_rm_dir(dir);
}

/* Redirects as derper's Go client follows them: 307 (relative, dot segments)
 * repeats the POST, 302 (absolute) turns it into a GET; a 307 without a
 * Location is the answer (not 200: refused); a loop stops after 10, an ftp
 * Location and one over 1 KiB (never followed cut) fail the request (all
 * "unreachable": refused without fail-open). */
Test(admission, controller_redirects, ADM) {
  verifier_start(&g_v, "--default deny", false);
  start_derpd(&g_srv, 2, "-verify-client-url http://127.0.0.1:%u/verify?x=1 -verify-client-url-fail-open=false",
              g_v.port);
  static const struct { const char *mode; bool admit; int requests; const char *result; } k[] = {
      {"r307", true, 2, "allow"}, {"r302", true, 2, "allow"}, {"rnoloc", false, 1, "deny"},
      {"rloop", false, 10, "error"}, {"rbad", false, 1, "error"}, {"rlong", false, 1, "error"},
  };
  enum { N = sizeof k / sizeof k[0] };
  derp_privkey priv[N];
  derp_key pub[N];
  for (int i = 0; i < N; i++) {
    new_key(&priv[i], &pub[i]);
    verifier_mode(&g_v, &pub[i], k[i].mode);
  }
  for (int i = 0; i < N; i++) {
    char err[256] = "";
    struct derp_client *c = try_connect(&g_srv, &priv[i], NULL, 8000, err, sizeof err);
    cr_assert_eq(c != NULL, k[i].admit, "%s: %s", k[i].mode, c ? "admitted" : err);
    if (c) derp_client_close(c);
    json_t *reqs[12];
    int n = verifier_requests(&g_v, &pub[i], reqs, 12);
    cr_assert_eq(n, k[i].requests, "%s: %d requests", k[i].mode, n);
    char hex[DERP_KEY_HEXLEN + 1], path[160];
    derp_key_hex(&pub[i], hex);
    if (strcmp(k[i].mode, "r307") == 0) {
      snprintf(path, sizeof path, "/final/nodekey:%s", hex);
      cr_assert_str_eq(json_string_value(json_object_get(reqs[1], "method")), "POST");
      cr_assert_str_eq(json_string_value(json_object_get(reqs[1], "path")), path);
      cr_assert_str_eq(json_string_value(json_object_get(reqs[1], "body")),
                       json_string_value(json_object_get(reqs[0], "body")), "307 sends the body again");
    } else if (strcmp(k[i].mode, "r302") == 0) {
      snprintf(path, sizeof path, "/final/get?k=nodekey:%s", hex);
      cr_assert_str_eq(json_string_value(json_object_get(reqs[1], "method")), "GET");
      cr_assert_str_eq(json_string_value(json_object_get(reqs[1], "path")), path);
      cr_assert(header(reqs[1], "Content-Type") == NULL, "302's GET has no body");
    }
    for (int r = 0; r < n && r < 12; r++) json_decref(reqs[r]);
  }
  cr_assert_eq(varz(&g_srv, "allow"), 2);
  cr_assert_eq(varz(&g_srv, "deny"), 1);
  cr_assert_eq(varz(&g_srv, "error"), 3);
  cr_assert(derpd_log_contains(&g_srv, "stopped after 10 redirects"), "the loop's reason is not logged");
  cr_assert(derpd_log_contains(&g_srv, "Location over 1 KiB"), "a Location too long to follow was followed cut");
  cr_assert(derpd_log_contains(&g_srv, "failed to follow redirect"), "the bad Location's reason is not logged");
}

/* ---- flags ------------------------------------------------------------------------ */

Test(admission, bad_url_is_a_usage_error, ADM) {
  char cmd[600], out[1024] = "";
  snprintf(cmd, sizeof cmd, "%s -dev -verify-client-url ftp://example.com/ 2>&1", e2e_derpd_bin());
  int st = e2e_run_capture(cmd, out, sizeof out);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit %d: %s", st, out);
  cr_assert(strstr(out, "-verify-client-url") && strstr(out, "http or https"), "%s", out);
}
