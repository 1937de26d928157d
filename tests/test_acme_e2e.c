/* test_acme_e2e.c: -certmode letsencrypt end to end against Let's Encrypt's
 * test CA, pebble (Debian's package), on loopback.
 *
 * Each test starts pebble-challtestsrv as the DNS server pebble asks (every
 * name resolves to 127.0.0.1), pebble with its validation ports set to
 * derpd's TLS port (tls-alpn-01) and -http-port (http-01), and derpd with
 * --acme-directory and --acme-ca-file pointing at pebble. Clients verify
 * derpd's chain against pebble's root, fetched from pebble's management
 * port (/roots/0). DERPD_TEST_ACME_* make it quick: only one challenge type,
 * a renewal a few seconds after each installation, short retries.
 *
 * Covers: a certificate obtained over tls-alpn-01 and over http-01, clients
 * that verify it relaying, renewal swapping the certificate while those
 * connections stay up, a restart reusing the files (as derper's autocert
 * left them) without asking the CA, a
 * CA that is down at start (no certificate, retried until it is up) and down
 * at renewal (the current certificate keeps serving), and a clean SIGTERM
 * exit while the worker runs, and CA roots that do not load as a start-up
 * error.
 *
 * Not Criterion (libderp_tls links BoringSSL). Exits 77 (skipped) when
 * pebble is not installed (scripts/setup installs it).
 * Usage: test_acme_e2e [substring of test names]. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "derp/client_tls.h"
#include "e2e_util.h"
#include "server/acme/acme_https.h"

#define HOST "derp.acme.test"

static struct derpd_proc srv;
static char dir[64];              /* pebble's files, the root, derpd's -certdir */
static char certdir[128], root_pem[128];
static pid_t pebble_pid, dns_pid;
static uint16_t p_acme, p_mgmt, p_dns, p_dnsmgmt, p_tls, p_http, p_metrics;
#define MAX_CLIENTS 8
static struct derp_client *clients[MAX_CLIENTS];

static void stop_child(pid_t *pid) {
  if (*pid <= 0) return;
  kill(*pid, SIGTERM);
  waitpid(*pid, NULL, 0);
  *pid = 0;
}

static int teardown(void) {
  for (int i = 0; i < MAX_CLIENTS; i++) {
    derp_client_close(clients[i]);
    clients[i] = NULL;
  }
  int rc = 0, st = 0;
  if (srv.pid > 0 && (derpd_stop(&srv, &st) != 0 || st != 0)) {
    fprintf(stderr, "  derpd did not exit 0 on SIGTERM (status %d)\n", st);
    rc = 1;
  }
  if (srv.log_path[0] && (derpd_log_contains(&srv, "Sanitizer") || derpd_log_contains(&srv, "runtime error")))
    rc = 1;
  if (rc || getenv("E2E_LOG")) derpd_dump_log(&srv, 12000);
  derpd_kill(&srv);
  if (e2e_crash_seen()) rc = 1;
  stop_child(&pebble_pid);
  stop_child(&dns_pid);
  if (dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
    dir[0] = 0;
  }
  unsetenv("DERPD_TEST_ACME_CHALLENGE");
  unsetenv("DERPD_TEST_ACME_RENEW_AFTER");
  unsetenv("DERPD_TEST_ACME_RETRY_MS");
  return rc;
}

/* ---- processes ------------------------------------------------------------- */

static pid_t spawn(char *const argv[], const char *log) {
  pid_t parent = getpid(), pid = fork();
  cr_assert(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static bool port_open(uint16_t port) {
  struct derpd_proc probe = {.port = port};
  int fd = raw_connect(&probe);
  if (fd < 0) return false;
  close(fd);
  return true;
}

static void wait_port(uint16_t port, const char *what) {
  int64_t end = e2e_now_ms() + 10000;
  while (!port_open(port)) {
    cr_assert(e2e_now_ms() < end, "%s did not listen on port %u", what, port);
    e2e_sleep_ms(50);
  }
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
}

/* External Account Binding: pebble requires it when eab_required, with one
 * key, bytes 0xe0..0xff: pebble reads it as unpadded base64url, derpd gets
 * it as padded standard base64 (what `gcloud` prints), so the test also
 * proves derpd takes either form. */
static bool eab_required;
#define EAB_KID "kid-derpd"
#define EAB_KEY_URL "4OHi4-Tl5ufo6err7O3u7_Dx8vP09fb3-Pn6-_z9_v8"
#define EAB_KEY_STD "4OHi4+Tl5ufo6err7O3u7/Dx8vP09fb3+Pn6+/z9/v8="
#define EAB_KEY_WRONG "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

/* A free port for *ports[i], none of ports[0..i-1]. */
static void pick_distinct(uint16_t *const *ports, size_t i) {
  bool dup;
  do {
    cr_assert_eq(e2e_pick_port(ports[i]), 0);
    dup = false;
    for (size_t j = 0; j < i; j++) dup |= *ports[j] == *ports[i];
  } while (dup);
}

static void write_pebble_config(void);

/* The test directory, ports, pebble's TLS certificate (self-signed, for
 * 127.0.0.1: derpd's --acme-ca-file) and its configuration. */
static void prepare(void) {
  snprintf(dir, sizeof dir, "/tmp/derpd-acme-e2e-XXXXXX");
  cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
  snprintf(certdir, sizeof certdir, "%s/certs", dir);
  snprintf(root_pem, sizeof root_pem, "%s/pebble-root.pem", dir);
  uint16_t *ports[] = {&p_acme, &p_mgmt, &p_dns, &p_dnsmgmt, &p_tls, &p_http, &p_metrics};
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) pick_distinct(ports, i);
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
           "-subj /CN=pebble -addext subjectAltName=IP:127.0.0.1 "
           "-keyout %s/pebble.key -out %s/pebble.crt >%s/openssl.log 2>&1",
           dir, dir, dir);
  cr_assert_eq(system(cmd), 0, "openssl req failed: see %s/openssl.log", dir);
  write_pebble_config();
}

/* pebble's configuration: its ports, and the ports it validates derpd on. */
static void write_pebble_config(void) {
  char json[1024], path[128];
  snprintf(json, sizeof json,
           "{\"pebble\": {\"listenAddress\": \"127.0.0.1:%u\", \"managementListenAddress\": \"127.0.0.1:%u\",\n"
           " \"certificate\": \"%s/pebble.crt\", \"privateKey\": \"%s/pebble.key\",\n"
           " \"httpPort\": %u, \"tlsPort\": %u, \"ocspResponderURL\": \"\",\n"
           " \"externalAccountBindingRequired\": %s,\n"
           " \"externalAccountMACKeys\": {\"" EAB_KID "\": \"" EAB_KEY_URL "\"}}}\n",
           p_acme, p_mgmt, dir, dir, p_http, p_tls, eab_required ? "true" : "false");
  snprintf(path, sizeof path, "%s/pebble.json", dir);
  write_file(path, json);
}

/* The mock DNS (every A query: 127.0.0.1, no AAAA) and pebble, with random
 * sleeps, nonce rejections and authorization reuse off. */
static void start_ca(void) {
  char dns[32], dnsm[32], conf[128], log[128], dnsarg[32];
  snprintf(dns, sizeof dns, "127.0.0.1:%u", p_dns);
  snprintf(dnsm, sizeof dnsm, "127.0.0.1:%u", p_dnsmgmt);
  snprintf(log, sizeof log, "%s/challtestsrv.log", dir);
  if (dns_pid <= 0) {
    char *dargv[] = {"pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                     "-dns01", dns, "-http01", "", "-https01", "", "-tlsalpn01", "",
                     "-management", dnsm, NULL};
    dns_pid = spawn(dargv, log);
    wait_port(p_dnsmgmt, "pebble-challtestsrv");
  }
  setenv("PEBBLE_VA_NOSLEEP", "1", 1);
  setenv("PEBBLE_WFE_NONCEREJECT", "0", 1);
  setenv("PEBBLE_AUTHZREUSE", "0", 1);
  snprintf(conf, sizeof conf, "%s/pebble.json", dir);
  snprintf(log, sizeof log, "%s/pebble.log", dir);
  snprintf(dnsarg, sizeof dnsarg, "127.0.0.1:%u", p_dns);
  char *pargv[] = {"pebble", "-config", conf, "-dnsserver", dnsarg, NULL};
  pebble_pid = spawn(pargv, log);
  wait_port(p_acme, "pebble");
  wait_port(p_mgmt, "pebble's management interface");
}

/* derpd for HOST with -certmode letsencrypt against pebble (or the given
 * -certmode and other flags: mode_args). env: "NAME=value" strings for derpd
 * only (NULL-terminated), the DERPD_TEST_ACME_* knobs. */
static void start_derpd_host(const char *const *env, const char *mode_args, const char *host) {
  for (int attempt = 0;; attempt++) {
    for (const char *const *e = env; e && *e; e++) putenv((char *)*e);
    char args[1536];
    snprintf(args, sizeof args,
             "%s -hostname %s -certdir %s -http-port %u "
             "--acme-directory https://127.0.0.1:%u/dir --acme-ca-file %s/pebble.crt "
             "--metrics-listen 127.0.0.1:%u",
             mode_args, host, certdir, p_http, p_acme, dir, p_metrics);
    int rc = derpd_start_port(&srv, 2, p_tls, args);
    unsetenv("DERPD_TEST_ACME_CHALLENGE");
    unsetenv("DERPD_TEST_ACME_RENEW_AFTER");
    unsetenv("DERPD_TEST_ACME_RETRY_MS");
    unsetenv("DERPD_TEST_ACME_ANY_IP");
    if (rc == 0) return;
    /* Another test took one of derpd's ports between the pick and the bind
     * (tests run two at a time): new ones, and pebble restarted on them. */
    bool taken = derpd_log_contains(&srv, "already in use");
    derpd_kill(&srv);
    cr_assert(taken && attempt < 2, "derpd did not start");
    uint16_t *ports[] = {&p_acme, &p_mgmt, &p_dns, &p_dnsmgmt, &p_tls, &p_http, &p_metrics};
    for (size_t i = 4; i < sizeof ports / sizeof ports[0]; i++) pick_distinct(ports, i);
    write_pebble_config();
    fprintf(stderr, "acme_e2e: a port of derpd's was taken; again on %u, %u, %u\n", p_tls, p_http, p_metrics);
    if (pebble_pid > 0) {
      stop_child(&pebble_pid);
      start_ca();
    }
  }
}

static void start_derpd_mode(const char *const *env, const char *mode_args) {
  start_derpd_host(env, mode_args, HOST);
}

static void start_derpd(const char *const *env) { start_derpd_mode(env, "-certmode letsencrypt"); }

/* ---- the log, the root, clients ---------------------------------------------- */

/* Lines of the file at path that contain what. */
static int file_count(const char *path, const char *what) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f)) n += strstr(line, what) != NULL;
  fclose(f);
  return n;
}

static int log_count(const char *what) { return file_count(srv.log_path, what); }

static void wait_log_count(const char *what, int n, int ms) {
  int64_t end = e2e_now_ms() + ms;
  while (log_count(what) < n) {
    if (e2e_now_ms() > end) {
      derpd_dump_log(&srv, 6000);
      cr_assert_fail("no %d x \"%s\" in derpd's log within %d ms", n, what, ms);
    }
    e2e_sleep_ms(50);
  }
}

#define INSTALLED "acme: " HOST ": new certificate installed"

/* pebble's root (a new one every run), from its management interface. */
static void fetch_root(void) {
  struct acme_https h;
  struct acme_resp r;
  char err[300], ca[128], url[64];
  snprintf(ca, sizeof ca, "%s/pebble.crt", dir);
  snprintf(url, sizeof url, "https://127.0.0.1:%u/roots/0", p_mgmt);
  cr_assert_eq(acme_https_init(&h, ca, -1, 5000, err, sizeof err), 0, "%s", err);
  cr_assert_eq(acme_https_do(&h, "GET", url, NULL, NULL, &r, err, sizeof err), 0, "%s", err);
  cr_assert(r.status == 200 && r.body && strstr(r.body, "BEGIN CERTIFICATE"), "HTTP %d", r.status);
  write_file(root_pem, r.body);
  acme_resp_free(&r);
  acme_https_free(&h);
}

/* A client that sends sni and verifies derpd's chain against pebble's root
 * and that name (sni NULL: no SNI, and the address 127.0.0.1 verified), or
 * (insecure) takes any chain. */
static struct derp_client *try_client_sni(const char *sni, bool verify, struct derp_tls_info *info, char *err,
                                          size_t errlen) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = srv.port, .priv = &priv,
                               .server_key = &srv.server_key, .timeout_ms = 5000};
  struct derp_tls_opts t = {.sni = sni, .ca_file = verify ? root_pem : NULL, .insecure_skip_verify = !verify,
                            .sni_ip = true};
  struct derp_client *c = NULL;
  if (derp_client_connect_tls(&c, &o, &t, info, err, errlen) < 0) return NULL;
  return c;
}

static struct derp_client *try_client_v(bool verify, struct derp_tls_info *info, char *err, size_t errlen) {
  return try_client_sni(HOST, verify, info, err, errlen);
}

static struct derp_client *try_client(struct derp_tls_info *info, char *err, size_t errlen) {
  return try_client_v(true, info, err, errlen);
}

static struct derp_client *keep_client(struct derp_client *c) {
  for (int i = 0; i < MAX_CLIENTS; i++)
    if (!clients[i]) return clients[i] = c;
  cr_assert_fail("too many clients");
}

/* A verified client for sni (NULL: by address, 127.0.0.1), kept for teardown. */
static struct derp_client *client_sni(const char *sni, struct derp_tls_info *info) {
  char err[300] = "";
  struct derp_client *c = try_client_sni(sni, true, info, err, sizeof err);
  if (!c) derpd_dump_log(&srv, 4000);
  cr_assert_not_null(c, "TLS client (SNI %s): %s", sni ? sni : "none", err);
  return keep_client(c);
}

static struct derp_client *client(struct derp_tls_info *info) {
  char err[300] = "";
  struct derp_client *c = try_client(info, err, sizeof err);
  if (!c) derpd_dump_log(&srv, 4000);
  cr_assert_not_null(c, "TLS client: %s", err);
  return keep_client(c);
}

/* Close every client, stop derpd (exit 0 on SIGTERM), before a restart. */
static void stop_derpd_clean(void) {
  for (int i = 0; i < MAX_CLIENTS; i++) {
    derp_client_close(clients[i]);
    clients[i] = NULL;
  }
  int status = -1;
  cr_assert_eq(derpd_stop(&srv, &status), 0);
  cr_assert_eq(status, 0);
  derpd_kill(&srv);
}

static void check_files(void) {
  char p[256];
  struct stat st;
  snprintf(p, sizeof p, "%s/" HOST ".crt", certdir);
  cr_assert_eq(stat(p, &st), 0, "%s", p);
  snprintf(p, sizeof p, "%s/" HOST ".key", certdir);
  cr_assert(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600, "%s: mode %o", p, st.st_mode & 0777);
  snprintf(p, sizeof p, "%s/acme_account+key", certdir);
  cr_assert(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600, "%s: mode %o", p, st.st_mode & 0777);
}

/* ---- tests ------------------------------------------------------------------ */

/* tls-alpn-01 on the TLS port; a renewal 4 s after each installation swaps
 * the certificate while two clients stay connected and relaying. */
static void tls_alpn_obtain_and_renew(void) {
  prepare();
  start_ca();
  static const char *const env[] = {"DERPD_TEST_ACME_CHALLENGE=tls-alpn-01", "DERPD_TEST_ACME_RENEW_AFTER=4",
                                    NULL};
  start_derpd(env);
  wait_log_count(INSTALLED, 1, 20000);
  cr_assert(log_count("tls-alpn-01 challenge passed") >= 1);
  cr_assert_eq(log_count("http-01: answered"), 0, "only tls-alpn-01 was allowed");
  check_files();
  fetch_root();
  struct derp_tls_info ia, ib, ic;
  struct derp_client *a = client(&ia), *b = client(&ib);
  cr_assert(memcmp(ia.leaf_sha256, ib.leaf_sha256, 32) == 0);
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 32);
  int before = log_count(INSTALLED);
  wait_log_count(INSTALLED, before + 1, 20000);
  struct derp_client *c = client(&ic);
  cr_assert(memcmp(ia.leaf_sha256, ic.leaf_sha256, 32) != 0, "a new connection got the old certificate");
  /* The connections from before the renewal are still up and relaying. */
  e2e_relay_check(a, b, 32);
  e2e_relay_check(b, a, 32);
  e2e_sync_route(c, a);
  e2e_relay_check(c, a, 16);
  cr_assert(derpd_alive(&srv));
}

/* http-01 on the -http-port helper; then a restart with the same -certdir,
 * its files turned into derper's autocert cache file, serves the stored
 * certificate without asking the CA. */
static void http01_obtain_and_restart(void) {
  prepare();
  start_ca();
  static const char *const env[] = {"DERPD_TEST_ACME_CHALLENGE=http-01", NULL};
  start_derpd(env);
  wait_log_count(INSTALLED, 1, 20000);
  cr_assert(log_count("http-01 challenge passed") >= 1);
  cr_assert(log_count("acme: http-01: answered the challenge") >= 1);
  cr_assert_eq(log_count("tls-alpn-01: serving"), 0, "only http-01 was allowed");
  fetch_root();
  struct derp_tls_info i1, i2;
  struct derp_client *a = client(&i1);
  e2e_assert_ping_pong(a);
  /* Other port-80 paths behave as before: a redirect to https. */
  char resp[2048];
  struct derpd_proc p80 = {.port = p_http};
  int st = http_request(&p80, "GET /x HTTP/1.1\r\nHost: " HOST "\r\n\r\n", resp, sizeof resp);
  cr_assert_eq(st, 302, "%s", resp);
  st = http_request(&p80, "GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: " HOST "\r\n\r\n", resp,
                    sizeof resp);
  cr_assert_eq(st, 404, "%s", resp);
  stop_derpd_clean();
  /* As derper's autocert stores it: one file <certdir>/<hostname>, key then
   * chain. derpd takes it over when its own files are missing. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "cd %s && cat " HOST ".key " HOST ".crt > " HOST " && rm " HOST ".key " HOST ".crt",
           certdir);
  cr_assert_eq(system(cmd), 0);
  start_derpd(NULL);
  wait_log_count("renewal due", 1, 10000);
  cr_assert_eq(log_count("took over derper's autocert certificate"), 1);
  cr_assert_eq(log_count("requesting a certificate"), 0, "a restart asked the CA again");
  client(&i2);
  cr_assert(memcmp(i1.leaf_sha256, i2.leaf_sha256, 32) == 0, "a restart changed the certificate");
  stop_derpd_clean();
  /* Files whose leaf and key look right but whose chain does not load (a
   * broken intermediate): nothing can be served from them, so the worker
   * asks the CA at once instead of waiting for the renewal date. */
  snprintf(cmd, sizeof cmd,
           "cd %s && printf -- '-----BEGIN CERTIFICATE-----\\nnot base64\\n-----END CERTIFICATE-----\\n' >> " HOST ".crt",
           certdir);
  cr_assert_eq(system(cmd), 0);
  start_derpd(NULL);
  wait_log_count(INSTALLED, 1, 20000);
  cr_assert_eq(log_count("requesting a certificate"), 1);
  struct derp_tls_info i3;
  client(&i3);
  cr_assert(memcmp(i1.leaf_sha256, i3.leaf_sha256, 32) != 0, "still the certificate whose chain did not load");
}

/* The CA is down when derpd starts: no certificate (handshakes fail), the
 * worker retries; once the CA is up the certificate arrives. The CA goes
 * down again: the renewal fails, and the certificate in use keeps serving. */
/* A series of derpd's /debug/varz, read on its --metrics-listen port. */
static long long varz(const char *name) {
  struct derpd_proc m = srv;
  m.port = p_metrics;
  return derpd_varz(&m, name);
}

static void ca_down_then_up_then_down(void) {
  prepare();
  static const char *const env[] = {"DERPD_TEST_ACME_RETRY_MS=300", "DERPD_TEST_ACME_RENEW_AFTER=5", NULL};
  start_derpd(env);
  wait_log_count("no certificate to serve yet", 1, 10000);
  char err[300] = "";
  struct derp_tls_info info;
  cr_assert_eq(try_client_v(false, &info, err, sizeof err), NULL, "a TLS handshake passed without a certificate");
  cr_assert(strstr(err, "handshake"), "%s", err);
  cr_assert(derpd_alive(&srv));
  cr_assert_eq(varz("derpd_tls_cert_not_after"), 0, "no certificate yet");
  cr_assert(varz("derpd_acme_certificates{result=\"failed\"}") >= 1);
  cr_assert_eq(varz("derpd_acme_certificates{result=\"issued\"}"), 0);
  start_ca();
  wait_log_count(INSTALLED, 1, 20000);
  cr_assert_eq(varz("derpd_acme_certificates{result=\"issued\"}"), 1);
  long long na = varz("derpd_tls_cert_not_after");
  cr_assert(na > (long long)time(NULL) + 3600, "NotAfter %lld: not the new certificate's", na);
  long long failed = varz("derpd_acme_certificates{result=\"failed\"}");
  fetch_root();
  stop_child(&pebble_pid); /* before the renewal, due 5 s after installation */
  wait_log_count("still serving the current one", 1, 15000);
  cr_assert_eq(log_count(INSTALLED), 1, "a renewal succeeded without a CA");
  /* The certificate from before is still served, and verifies. */
  struct derp_client *c = client(&info);
  cr_assert(info.chain_len >= 3, "leaf, intermediate and meta certificate: %d", info.chain_len);
  e2e_assert_ping_pong(c);
  wait_log_count("still serving the current one", 2, 15000); /* retried with backoff */
  cr_assert(varz("derpd_acme_certificates{result=\"failed\"}") >= failed + 2, "each failed try counts");
  cr_assert_eq(varz("derpd_tls_cert_not_after"), na, "the certificate served is the same");
}

/* A new certificate that is due for renewal at once (here by the test's
 * renewal clock; in life a clock ahead of the CA's): the next request waits
 * as after a failure (5 s here), not a second, so a CA's rate limits are not
 * spent in a loop. */
static void due_at_once_backs_off(void) {
  prepare();
  start_ca();
  static const char *const env[] = {"DERPD_TEST_ACME_RETRY_MS=5000", "DERPD_TEST_ACME_RENEW_AFTER=0", NULL};
  start_derpd(env);
  wait_log_count(INSTALLED, 1, 20000);
  e2e_sleep_ms(3500);
  cr_assert_eq(log_count("requesting a certificate"), 1, "asked the CA again within 3.5 s of a certificate");
  cr_assert_eq(log_count("due for renewal already"), 1, "the due certificate was not reported");
  cr_assert(derpd_alive(&srv));
}

/* derper v1.94's -certmode gcp against a CA that requires External Account
 * Binding (pebble, standing in for Google Trust Services): a wrong HMAC key
 * is refused by the CA and logged, with no certificate; the right one (given
 * in the other base64 form) registers the account with its contact and gets
 * the certificate, which clients then verify and relay through. */
static void gcp_eab_and_contact(void) {
  eab_required = true;
  prepare();
  eab_required = false;
  start_ca();
  static const char *const env[] = {"DERPD_TEST_ACME_RETRY_MS=300", NULL};
  start_derpd_mode(env, "-certmode gcp -acme-eab-kid " EAB_KID " -acme-eab-key " EAB_KEY_WRONG
                        " -acme-email ops@derp.acme.test");
  wait_log_count("external account binding JWS verification error", 1, 15000);
  cr_assert_eq(log_count(INSTALLED), 0, "a wrong EAB key got a certificate");
  cr_assert_eq(log_count("acme: account "), 0, "a wrong EAB key registered an account");
  cr_assert(log_count("-certmode gcp for " HOST " from https://127.0.0.1:") == 1,
            "--acme-directory wins over gcp's default directory");
  stop_derpd_clean();
  start_derpd_mode(NULL, "-certmode gcp -acme-eab-kid " EAB_KID " -acme-eab-key " EAB_KEY_STD
                         " -acme-email ops@derp.acme.test");
  wait_log_count(INSTALLED, 1, 20000);
  cr_assert_eq(log_count("(new, external account binding; contact mailto:ops@derp.acme.test)"), 1,
               "the account as the CA answered: bound, with the contact");
  char plog[128];
  snprintf(plog, sizeof plog, "%s/pebble.log", dir);
  cr_assert(file_count(plog, "Successful newAccount Binding with CA using kid \"" EAB_KID "\"") >= 1,
            "pebble did not bind the account to " EAB_KID);
  fetch_root();
  struct derp_tls_info ia, ib;
  struct derp_client *a = client(&ia), *b = client(&ib);
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 16);
  e2e_relay_check(b, a, 16);
}

#define IP_INSTALLED "acme: 127.0.0.1: new certificate installed"

/* derper v1.102's -acme-ip-certs beside a DNS -hostname: the hostname's
 * certificate as before; a client that dials the address (no SNI) makes
 * derpd ask the CA for a certificate for 127.0.0.1 (that first handshake
 * fails), and once it is in, such clients verify it as an IP SAN and relay
 * with the hostname's clients. An IP SNI the connection did not reach is
 * refused, and nothing is asked for it. */
static void ip_certs_on_demand(void) {
  prepare();
  start_ca();
  static const char *const env[] = {"DERPD_TEST_ACME_RETRY_MS=300", "DERPD_TEST_ACME_ANY_IP=1", NULL};
  start_derpd_mode(env, "-certmode letsencrypt -acme-ip-certs");
  wait_log_count(INSTALLED, 1, 20000);
  cr_assert_eq(log_count("acme: 127.0.0.1:"), 0, "nothing asked for an address before a client dialled one");
  fetch_root();
  struct derp_tls_info ih, ii;
  struct derp_client *h = client_sni(HOST, &ih);
  char err[300] = "";
  struct derp_tls_info info;
  cr_assert(!try_client_sni(NULL, true, &info, err, sizeof err), "an address without a certificate");
  wait_log_count("acme: 127.0.0.1: a client dialled this address", 1, 5000);
  wait_log_count(IP_INSTALLED, 1, 20000);
  cr_assert(log_count("acme: 127.0.0.1: http-01 challenge passed") >= 1, "IP addresses use http-01");
  struct derp_client *a = client_sni(NULL, &ii);
  cr_assert(memcmp(ih.leaf_sha256, ii.leaf_sha256, 32) != 0, "the address got the hostname's certificate");
  cr_assert(ii.chain_len >= 3, "leaf, intermediate and meta certificate: %d", ii.chain_len);
  e2e_sync_route(a, h);
  e2e_relay_check(a, h, 16);
  e2e_relay_check(h, a, 16);
  cr_assert(!try_client_sni("127.0.0.2", false, &info, err, sizeof err), "an IP SNI not reached");
  wait_log_count("SNI names an IP address this connection did not reach", 1, 5000);
  cr_assert_eq(log_count("acme: 127.0.0.2"), 0, "nothing was asked for 127.0.0.2");
  char p[256];
  struct stat st;
  snprintf(p, sizeof p, "%s/127.0.0.1.key", certdir);
  cr_assert(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600, "%s", p);
  cr_assert_eq(log_count(IP_INSTALLED), 1);
}

/* An IP-only server (-hostname an address, -acme-ip-certs): the address's
 * certificate is asked for at start, so the first client by address gets
 * it; a DNS SNI is refused. Restarted on the same -certdir, it serves the
 * stored certificate without asking the CA. */
static void ip_only_restart(void) {
  prepare();
  start_ca();
  /* Without the tests' knob, an address no CA certifies is refused at start. */
  char cmd[1200], out[2048] = "";
  snprintf(cmd, sizeof cmd,
           "%s -c %s/refused.key -a 127.0.0.1:%u -certmode letsencrypt -acme-ip-certs -hostname 127.0.0.1 "
           "-certdir %s -http-port %u --acme-directory https://127.0.0.1:%u/dir --acme-ca-file %s/pebble.crt 2>&1",
           e2e_derpd_bin(), dir, p_tls, certdir, p_http, p_acme, dir);
  int st = e2e_run_capture(cmd, out, sizeof out);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0 && strstr(out, "not a public address"), "exit %d: %s", st, out);
  static const char *const env[] = {"DERPD_TEST_ACME_ANY_IP=1", NULL};
  start_derpd_host(env, "-certmode letsencrypt -acme-ip-certs", "127.0.0.1");
  wait_log_count(IP_INSTALLED, 1, 20000);
  fetch_root();
  struct derp_tls_info i1, i2, info;
  struct derp_client *a = client_sni(NULL, &i1);
  e2e_assert_ping_pong(a);
  long long na = varz("derpd_tls_cert_not_after");
  cr_assert(na > (long long)time(NULL) + 3600, "NotAfter %lld: not the address's certificate", na);
  char err[300] = "";
  cr_assert(!try_client_sni(HOST, false, &info, err, sizeof err), "a DNS SNI on an IP-only server");
  wait_log_count("a DNS name as SNI on an IP-only server", 1, 5000);
  stop_derpd_clean();
  start_derpd_host(env, "-certmode letsencrypt -acme-ip-certs", "127.0.0.1");
  wait_log_count("acme: 127.0.0.1: serving the certificate in", 1, 10000);
  cr_assert_eq(log_count("requesting a certificate"), 0, "a restart asked the CA again");
  client_sni(NULL, &i2);
  cr_assert(memcmp(i1.leaf_sha256, i2.leaf_sha256, 32) == 0, "a restart changed the certificate");
}

/* The certificate file cannot be written (a directory is in its place): the
 * certificate the CA issued is kept and written at each retry, and once the
 * path is free it is installed, with no second order. */
static void unwritable_file_no_second_order(void) {
  prepare();
  start_ca();
  char crt[256];
  cr_assert_eq(mkdir(certdir, 0700), 0);
  snprintf(crt, sizeof crt, "%s/" HOST ".crt", certdir);
  cr_assert_eq(mkdir(crt, 0700), 0);
  static const char *const env[] = {"DERPD_TEST_ACME_RETRY_MS=300", NULL};
  start_derpd(env);
  wait_log_count("the certificate the CA issued is kept", 3, 20000);
  cr_assert_eq(log_count(INSTALLED), 0);
  cr_assert_eq(rmdir(crt), 0);
  wait_log_count(INSTALLED, 1, 20000);
  char plog[128];
  snprintf(plog, sizeof plog, "%s/pebble.log", dir);
  int orders = file_count(plog, "Issued certificate serial");
  cr_assert_eq(orders, 1, "pebble issued %d certificates", orders);
  check_files();
  fetch_root();
  struct derp_tls_info ia, ib;
  struct derp_client *a = client(&ia), *b = client(&ib);
  e2e_sync_route(a, b);
}

/* CA roots that do not load: the worker found that only after the start,
 * and derpd served on without a certificate for good. A start-up error that
 * names the file now, as an EAB key that does not decode is (flags). */
static void bad_roots_or_eab_at_start(void) {
  prepare();
  char args[1024];
  snprintf(args, sizeof args,
           "-certmode letsencrypt -hostname " HOST " -certdir %s -http-port %u "
           "--acme-directory https://127.0.0.1:%u/dir --acme-ca-file %s/missing.pem",
           certdir, p_http, p_acme, dir);
  cr_assert_neq(derpd_start_port(&srv, 1, p_tls, args), 0, "derpd started with CA roots that do not load");
  cr_assert(derpd_log_contains(&srv, "acme: TLS roots from") && derpd_log_contains(&srv, "/missing.pem"),
            "the start-up error does not name the roots file");
  snprintf(args, sizeof args,
           "-certmode gcp -acme-eab-kid " EAB_KID " -acme-eab-key @@@@ -acme-email ops@derp.acme.test "
           "-hostname " HOST " -certdir %s -http-port %u --acme-directory https://127.0.0.1:%u/dir "
           "--acme-ca-file %s/pebble.crt",
           certdir, p_http, p_acme, dir);
  cr_assert_neq(derpd_start_port(&srv, 1, p_tls, args), 0, "derpd started with an EAB key that does not decode");
  cr_assert(derpd_log_contains(&srv, "-acme-eab-key: not base64url"), "no start-up error for the EAB key");
}

static const struct mini_test tests[] = {
    {"bad_roots_or_eab_at_start", bad_roots_or_eab_at_start},
    {"unwritable_file_no_second_order", unwritable_file_no_second_order},
    {"tls_alpn_obtain_and_renew", tls_alpn_obtain_and_renew},
    {"http01_obtain_and_restart", http01_obtain_and_restart},
    {"ca_down_then_up_then_down", ca_down_then_up_then_down},
    {"due_at_once_backs_off", due_at_once_backs_off},
    {"gcp_eab_and_contact", gcp_eab_and_contact},
    {"ip_certs_on_demand", ip_certs_on_demand},
    {"ip_only_restart", ip_only_restart},
};

static bool in_path(const char *prog) {
  const char *path = getenv("PATH");
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path ? path : "/usr/bin:/bin");
  for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", d, prog);
    if (access(p, X_OK) == 0) return true;
  }
  return false;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (!in_path("pebble") || !in_path("pebble-challtestsrv") || !in_path("openssl")) {
    printf("SKIP: pebble, pebble-challtestsrv or openssl not installed (apt-get install pebble openssl)\n");
    return 77;
  }
  if (derp_init() != 0) return 2;
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, teardown);
}
