/* test_tls_e2e.c: derpd over TLS, end to end, against a real derpd process.
 *
 * Not a Criterion binary: Criterion loads OpenSSL's libcrypto.so.3 (through
 * libgit2), and this binary links BoringSSL (libderp_tls), whose symbols have
 * the same names. mini_test.h gives the same assertion macros and a runner.
 *
 * Covers: TLS 1.2 and 1.3 handshakes and relaying across shards (2 and 4),
 * ALPN, the meta certificate and fast start, certificate pinning, SIGHUP
 * reload with clients connected, and bad input (garbage, a stalled
 * handshake, a wrong SNI, plain HTTP to the TLS port, missing certificates,
 * a flood of warning alerts). kTLS's tests are test_tls_e2e_ktls.c, in the
 * same binary (tls_e2e.h).
 *
 * Usage: test_tls_e2e [substring of test names]. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "derp/client_tls.h"
#include "e2e_util.h"
#include "ktls_emul.h"
#include "tls_e2e.h"
#include "server/transport/ktls.h"

struct derpd_proc srv;
char certdir[64];
struct derp_client *clients[MAX_TLS_CLIENTS];

static void rm_certdir(void) {
  if (!certdir[0]) return;
  e2e_rm_dir(certdir);
  certdir[0] = 0;
}

/* Clients first, then a clean SIGTERM exit, so that a sanitizer build of
 * derpd reports leaks too; any sanitizer report in its log fails the test. */
static int teardown(void) {
  for (int i = 0; i < MAX_TLS_CLIENTS; i++) {
    derp_client_close(clients[i]);
    clients[i] = NULL;
  }
  int rc = 0, st = 0;
  if (srv.pid > 0 && derpd_stop(&srv, &st) != 0) {
    fprintf(stderr, "  derpd did not exit on SIGTERM\n");
    rc = 1;
  }
  if (srv.log_path[0] && (derpd_log_contains(&srv, "Sanitizer") ||
                          derpd_log_contains(&srv, "runtime error"))) {
    derpd_dump_log(&srv, 8000);
    rc = 1;
  }
  derpd_kill(&srv);
  if (e2e_crash_seen()) rc = 1;
  rm_certdir();
  return rc;
}

/* derpd with -certmode selfsigned for "localhost" in a fresh cert dir. */
void start_tls(int shards, const char *more) {
  snprintf(certdir, sizeof certdir, "/tmp/derpd-tls-certs-XXXXXX");
  cr_assert(mkdtemp(certdir), "mkdtemp: %s", strerror(errno));
  char args[512];
  snprintf(args, sizeof args, "-certmode selfsigned -certdir %s -hostname localhost -http-port -1%s%s",
           certdir, more ? " " : "", more ? more : "");
  if (derpd_start(&srv, shards, args) != 0) cr_assert_fail("derpd did not start");
}

/* The nth (0-based) certificate sha256 the server logged; false if absent. */
static bool logged_sha256(int nth, uint8_t out[32]) {
  FILE *f = fopen(srv.log_path, "r");
  if (!f) return false;
  char line[1024];
  int seen = 0;
  bool ok = false;
  while (!ok && fgets(line, sizeof line, f)) {
    char *at = strstr(line, "tls: certificate ");
    at = at ? strstr(at, ", sha256 ") : NULL;
    if (!at || seen++ != nth) continue;
    at += 9;
    ok = true;
    for (int i = 0; i < 32 && ok; i++) {
      unsigned v;
      if (sscanf(at + 2 * i, "%2x", &v) != 1) ok = false;
      out[i] = (uint8_t)v;
    }
  }
  fclose(f);
  return ok;
}

static void wait_logged_sha256(int nth, uint8_t out[32]) {
  int64_t deadline = e2e_now_ms() + 5000;
  while (!logged_sha256(nth, out)) {
    cr_assert(e2e_now_ms() < deadline, "no certificate hash #%d in the log", nth);
    e2e_sleep_ms(20);
  }
}


struct derp_client *try_client(const struct tls_conn_opts *co, struct derp_tls_info *info, char *err,
                               size_t errlen) {
  uint8_t pin[32];
  if (!co->pin) wait_logged_sha256(0, pin);
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = srv.port, .priv = &priv,
                               .fast_start = co->fast_start,
                               .server_key = co->meta ? co->server_key
                                             : co->server_key ? co->server_key : &srv.server_key,
                               .timeout_ms = 5000, .websocket = co->websocket};
  struct derp_tls_opts t = {.sni = co->sni ? co->sni : "localhost", .pin_sha256 = co->pin ? co->pin : pin,
                            .min_version = co->version, .max_version = co->version,
                            .use_meta_cert = co->meta};
  struct derp_client *c = NULL;
  if (derp_client_connect_tls(&c, &o, &t, info, err, errlen) < 0) return NULL;
  return c;
}

struct derp_client *tls_client(const struct tls_conn_opts *co, struct derp_tls_info *info) {
  char err[256] = "";
  struct derp_tls_info local;
  struct derp_client *c = try_client(co, info ? info : &local, err, sizeof err);
  if (!c) derpd_dump_log(&srv, 2000);
  cr_assert_not_null(c, "TLS client: %s", err);
  for (int i = 0; i < MAX_TLS_CLIENTS; i++)
    if (!clients[i]) {
      clients[i] = c;
      return c;
    }
  cr_assert_fail("too many clients");
}

/* One HTTPS request with BoringSSL directly: the response, or -1. With
 * close_notify, the client's close_notify follows the request in the same
 * TCP segment (corked), as a client that sends its request and closes does. */
static bool g_clean_end; /* the last https_get* ended with the server's close_notify */

static int https_get_closing(const char *sni, const char *path, char *resp, size_t cap, bool close_notify) {
  g_clean_end = false;
  int fd = raw_connect(&srv);
  if (fd < 0) return -1;
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (sni) SSL_set_tlsext_host_name(ssl, sni);
  int n = -1;
  if (SSL_connect(ssl) == 1) {
    char req[256];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    int on = 1, off = 0;
    if (close_notify) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    int wrote = SSL_write(ssl, req, rl);
    if (close_notify) {
      SSL_shutdown(ssl); /* sends close_notify; reading stays possible */
      setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    }
    if (wrote == rl) {
      n = 0;
      int r;
      while ((size_t)n + 1 < cap && (r = SSL_read(ssl, resp + n, (int)(cap - 1 - (size_t)n))) > 0) n += r;
      resp[n] = 0;
      g_clean_end = (size_t)n + 1 < cap && SSL_get_error(ssl, r) == SSL_ERROR_ZERO_RETURN;
    }
  }
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return n;
}

static int https_get(const char *sni, const char *path, char *resp, size_t cap) {
  return https_get_closing(sni, path, resp, cap, false);
}

long long tls_varz(const char *name) {
  static char resp[65536];
  if (https_get("localhost", "/debug/varz", resp, sizeof resp) <= 0) return -1;
  size_t nl = strlen(name);
  for (char *l = resp; (l = strstr(l, name)); l += nl)
    if ((l == resp || l[-1] == '\n') && l[nl] == ' ') return atoll(l + nl + 1);
  return -1;
}

/* ---- tests ---------------------------------------------------------------- */

/* Clients on every shard, relaying to each other in both directions. */
static void relay_over(int shards, uint16_t version) {
  start_tls(shards, NULL);
  enum { N = 8 };
  struct derp_client *c[N];
  for (int i = 0; i < N; i++) {
    struct derp_tls_info info;
    c[i] = tls_client(&(struct tls_conn_opts){.version = version}, &info);
    cr_assert_eq(info.version, version, "negotiated 0x%04x", info.version);
    cr_assert(strcmp(info.alpn, "http/1.1") == 0, "ALPN \"%s\"", info.alpn);
    cr_assert_eq(derp_client_http_status(c[i]), 101);
    cr_assert_eq(info.chain_len, 2, "chain of %d (leaf + meta)", info.chain_len);
  }
  for (int i = 0; i < N; i++) {
    struct derp_client *a = c[i], *b = c[(i + 1) % N];
    e2e_sync_route(a, b);
    e2e_relay_check(a, b, 64);
  }
  /* Big packets: many full records in one send, frames spanning records. */
  static uint8_t big[DERP_MAX_PACKET];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
  for (int k = 0; k < 8; k++)
    cr_assert_eq(derp_client_send(c[0], derp_client_public_key(c[1]), big, sizeof big), 0);
  for (int k = 0; k < 8; k++) {
    struct derp_client_msg m;
    e2e_recv_data(c[1], &m, 3000);
    cr_assert_eq(m.packet_len, sizeof big);
    cr_assert(memcmp(m.packet, big, sizeof big) == 0, "big packet %d corrupt", k);
  }
  cr_assert_geq(tls_varz("derpd_tls_handshakes"), N);
  /* All 8 on their owner shard happens 1 time in 256 with 2 shards: then more
   * clients, each moving with p = 1/2, until one has moved. */
  for (int i = 0; i < 16 && tls_varz("derpd_handoffs") == 0; i++)
    tls_client(&(struct tls_conn_opts){.version = version}, NULL);
  cr_assert(tls_varz("derpd_handoffs") > 0, "no connection moved shards");
}

static void tls13_relay_2_shards(void) { relay_over(2, TLS1_3_VERSION); }
static void tls12_relay_2_shards(void) { relay_over(2, TLS1_2_VERSION); }
static void tls13_relay_4_shards(void) { relay_over(4, TLS1_3_VERSION); }
static void tls12_relay_4_shards(void) { relay_over(4, TLS1_2_VERSION); }

/* Go clients on TLS 1.3 read the server key from the meta certificate and
 * send ClientInfo right behind the request: no 101 comes back. */
static void fast_start_with_meta_cert(void) {
  start_tls(2, NULL);
  struct derp_tls_info info;
  struct derp_client *a = tls_client(&(struct tls_conn_opts){.version = TLS1_3_VERSION,
                                                             .fast_start = true, .meta = true},
                                     &info);
  cr_assert(info.meta_key_found, "no meta certificate");
  cr_assert(derp_key_equal(&info.meta_key, &srv.server_key), "meta cert names another key");
  cr_assert_eq(info.meta_version, 2);
  cr_assert_eq(derp_client_http_status(a), 0, "fast start got an HTTP response");
  struct derp_client *b = tls_client(&(struct tls_conn_opts){.version = TLS1_3_VERSION,
                                                             .fast_start = true, .meta = true},
                                     NULL);
  e2e_sync_route(a, b);
  e2e_relay_check(a, b, 32);
  e2e_relay_check(b, a, 32);
  /* TLS 1.2 sends certificates in the clear: the meta cert is not trusted
   * there, so a key-less fast start has nothing to go on. */
  char err[256];
  struct derp_client *c = try_client(&(struct tls_conn_opts){.version = TLS1_2_VERSION,
                                                             .fast_start = true, .meta = true},
                                     &info, err, sizeof err);
  cr_assert_eq(c, NULL, "TLS 1.2 fast start without a key should not work");
  cr_assert(info.meta_key_found, "the chain still carries the meta certificate");
}

/* No SNI is fine for a self-signed (IP-only) server; the wrong name is not. */
static void sni_rules(void) {
  start_tls(2, NULL);
  tls_client(&(struct tls_conn_opts){.sni = ""}, NULL);
  tls_client(&(struct tls_conn_opts){.sni = "LOCALHOST"}, NULL);
  char err[256] = "";
  struct derp_client *c = try_client(&(struct tls_conn_opts){.sni = "wrong.example.com"}, NULL,
                                     err, sizeof err);
  cr_assert_eq(c, NULL, "wrong SNI accepted");
  cr_assert(strstr(err, "UNRECOGNIZED_NAME"), "error: %s", err);
  wait_log("tls_error: SNI is not -hostname"); /* logged once the alert is written: after the client saw it */
  cr_assert(derpd_alive(&srv));
}

/* A wrong pin fails; so does chain verification against the system roots. */
static void pin_and_verify(void) {
  start_tls(1, NULL);
  uint8_t bad[32] = {1};
  char err[256] = "";
  cr_assert_eq(try_client(&(struct tls_conn_opts){.pin = bad}, NULL, err, sizeof err), NULL);
  cr_assert(strstr(err, "pinned"), "error: %s", err);
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = srv.port, .priv = &priv, .timeout_ms = 3000};
  struct derp_tls_opts t = {.sni = "localhost"};
  struct derp_client *c = NULL;
  cr_assert_eq(derp_client_connect_tls(&c, &o, &t, NULL, err, sizeof err), -1,
               "a self-signed certificate passed verification");
  cr_assert(strstr(err, "CERTIFICATE_VERIFY_FAILED: self signed certificate (checked for localhost)"), "error: %s", err);
  /* With the certificate itself as the root, it verifies. */
  char ca[300];
  snprintf(ca, sizeof ca, "%s/localhost.crt", certdir);
  t.ca_file = ca;
  cr_assert_eq(derp_client_connect_tls(&c, &o, &t, NULL, err, sizeof err), 0, "%s", err);
  derp_client_close(c);
  /* Dialled by address with no name to check, the address is checked: the
   * certificate names localhost, not 127.0.0.1. */
  t.sni = NULL;
  cr_assert_eq(derp_client_connect_tls(&c, &o, &t, NULL, err, sizeof err), -1,
               "a certificate for localhost passed for 127.0.0.1");
  cr_assert(strstr(err, "CERTIFICATE_VERIFY_FAILED: IP address mismatch (checked for 127.0.0.1)"), "error: %s", err);
}

/* SIGHUP: new connections get the new certificate; old ones keep relaying. */
static void sighup_reload(void) {
  start_tls(2, NULL);
  uint8_t old_sha[32], new_sha[32];
  wait_logged_sha256(0, old_sha);
  struct derp_client *a = tls_client(&(struct tls_conn_opts){.pin = old_sha}, NULL);
  struct derp_client *b = tls_client(&(struct tls_conn_opts){.pin = old_sha, .version = TLS1_2_VERSION}, NULL);
  e2e_sync_route(a, b);
  /* selfsigned makes a new certificate when the files are gone. */
  char path[300];
  snprintf(path, sizeof path, "%s/localhost.crt", certdir);
  cr_assert_eq(unlink(path), 0);
  snprintf(path, sizeof path, "%s/localhost.key", certdir);
  cr_assert_eq(unlink(path), 0);
  kill(srv.pid, SIGHUP);
  wait_logged_sha256(1, new_sha);
  cr_assert(memcmp(old_sha, new_sha, 32) != 0, "same certificate after reload");
  int64_t deadline = e2e_now_ms() + 5000;
  while (!derpd_log_contains(&srv, "TLS certificates reloaded")) {
    cr_assert(e2e_now_ms() < deadline, "no reload logged");
    e2e_sleep_ms(20);
  }
  struct derp_tls_info info;
  struct derp_client *c = tls_client(&(struct tls_conn_opts){.pin = new_sha}, &info);
  cr_assert(memcmp(info.leaf_sha256, new_sha, 32) == 0);
  /* selfsigned: valid for 3650 days from now. */
  long long na = tls_varz("derpd_tls_cert_not_after"), want = (long long)time(NULL) + 3650LL * 86400;
  cr_assert(na > want - 2 * 86400 && na < want + 86400, "derpd_tls_cert_not_after %lld, want about %lld", na, want);
  char err[256];
  cr_assert_eq(try_client(&(struct tls_conn_opts){.pin = old_sha}, NULL, err, sizeof err), NULL,
               "a new connection still got the old certificate");
  e2e_relay_check(a, b, 64);
  e2e_relay_check(b, a, 64);
  e2e_sync_route(a, c);
  e2e_relay_check(a, c, 32);
  e2e_sync_route(c, b);
  e2e_relay_check(c, b, 32);
  /* A reload that fails (a broken file) keeps the current certificate. */
  snprintf(path, sizeof path, "%s/localhost.crt", certdir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs("not a certificate\n", f);
  fclose(f);
  kill(srv.pid, SIGHUP);
  deadline = e2e_now_ms() + 5000;
  while (!derpd_log_contains(&srv, "TLS reload failed")) {
    cr_assert(e2e_now_ms() < deadline, "no failed reload logged");
    e2e_sleep_ms(20);
  }
  tls_client(&(struct tls_conn_opts){.pin = new_sha}, NULL);
  e2e_relay_check(a, b, 16);
}

/* A request and the client's close_notify in one read: the reply still goes
 * out before the close (Go's server answers; derpd dropped it). */
static void close_notify_after_request(void) {
  start_tls(1, "");
  char resp[1024];
  int n = https_get_closing("localhost", "/generate_204", resp, sizeof resp, true);
  cr_assert(n > 0 && strncmp(resp, "HTTP/1.1 204", 12) == 0, "no reply before the close: %d %s", n, n > 0 ? resp : "");
  cr_assert(g_clean_end, "the reply did not end with derpd's close_notify");
  /* An error reply ends at the close (no Content-Length, as Go's): the
   * close_notify says it is whole. */
  n = https_get("localhost", "/a b", resp, sizeof resp); /* a malformed request line */
  cr_assert(n > 0 && strncmp(resp, "HTTP/1.1 400", 12) == 0, "%d %s", n, n > 0 ? resp : "");
  cr_assert(g_clean_end, "the 400 did not end with derpd's close_notify");
}

static void garbage_closes(void) {
  start_tls(2, NULL);
  int fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  uint8_t junk[1024];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 131 + 7);
  raw_write_all(fd, junk, sizeof junk);
  char buf[256];
  bool closed;
  raw_read_until_close(fd, buf, sizeof buf, 3000, &closed);
  close(fd);
  cr_assert(closed, "garbage did not close the connection");
  /* Garbage that reads as a record header declaring more than follows, of a
   * type no client starts with: closed at once, as derper does (BoringSSL
   * alone waits for the record, until the 10 s handshake timeout). */
  fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  static const uint8_t hdr[] = {0x45, 0x03, 0x01, 0x10, 0x00, 1, 2, 3};
  raw_write_all(fd, hdr, sizeof hdr);
  int64_t t0 = e2e_now_ms();
  raw_read_until_close(fd, buf, sizeof buf, 3000, &closed);
  close(fd);
  cr_assert(closed, "a record header of type 0x45 held the conn %lld ms", (long long)(e2e_now_ms() - t0));
  /* Only the stream's first two bytes are judged: a handshake record whose
   * first byte came alone is not judged by the next input's bytes (03 03). */
  fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  raw_write_all(fd, "\x16", 1);
  e2e_sleep_ms(100);
  static const uint8_t rest[] = {0x03, 0x03, 0x10, 0x00, 1, 2, 3};
  raw_write_all(fd, rest, sizeof rest);
  raw_read_until_close(fd, buf, sizeof buf, 500, &closed);
  close(fd);
  cr_assert(!closed, "a handshake record split after its first byte was closed at once");
  /* And garbage split the same way is judged across the two inputs. */
  fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  raw_write_all(fd, "\x45", 1);
  e2e_sleep_ms(100);
  raw_write_all(fd, rest, sizeof rest);
  t0 = e2e_now_ms();
  raw_read_until_close(fd, buf, sizeof buf, 3000, &closed);
  close(fd);
  cr_assert(closed, "a record header of type 0x45 split after its first byte held the conn %lld ms",
            (long long)(e2e_now_ms() - t0));
  cr_assert(derpd_alive(&srv));
  tls_client(&(struct tls_conn_opts){0}, NULL); /* still serving */
}

/* A corrupt record in the same read as the ClientInfo that admits a client
 * (fast start): a TLS error, closed at once. It was closed after its alert
 * was sent, by which time the admitted conn had moved to its owner shard and
 * registered there (a doomed conn taking over the key), then counted as a
 * write_error. */
static void bad_record_after_client_info(void) {
  start_tls(2, NULL);
  long long acc0 = tls_varz("derpd_clients_accepted");
  long long tls0 = tls_varz("derpd_conn_closed{reason=\"tls_error\"}");
  long long we0 = tls_varz("derpd_conn_closed{reason=\"write_error\"}");
  int fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  cr_assert_eq(SSL_connect(ssl), 1, "TLS handshake");
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  static uint8_t req[1024 + DERP_FRAME_HDR_LEN + DERP_CLIENT_INFO_SEAL_MAX];
  int rl = snprintf((char *)req, 1024,
                    "GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                    "Derp-Fast-Start: 1\r\n\r\n");
  struct derp_client_info ci = {.version = DERP_PROTOCOL_VERSION};
  size_t cl = derp_client_info_seal(req + rl + DERP_FRAME_HDR_LEN, sizeof req - (size_t)rl - DERP_FRAME_HDR_LEN,
                                    &priv, &srv.server_key, &ci);
  cr_assert(cl > 0, "ClientInfo seal");
  derp_frame_put_header(req + rl, DERP_FRAME_CLIENT_INFO, (uint32_t)cl);
  int on = 1, off = 0;
  setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
  int len = rl + DERP_FRAME_HDR_LEN + (int)cl;
  cr_assert_eq(SSL_write(ssl, req, len), len);
  uint8_t bad[5 + 32] = {0x17, 0x03, 0x03, 0x00, 0x20}; /* application data that will not decrypt */
  for (size_t i = 5; i < sizeof bad; i++) bad[i] = (uint8_t)(i * 37);
  cr_assert_eq(raw_write_all(fd, bad, sizeof bad), 0);
  setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
  char buf[4096];
  bool closed = false;
  raw_read_until_close(fd, buf, sizeof buf, 3000, &closed);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  cr_assert(closed, "not closed");
  long long tls1 = -1;
  for (int i = 0; i < 100 && (tls1 = tls_varz("derpd_conn_closed{reason=\"tls_error\"}")) == tls0; i++) e2e_sleep_ms(20);
  cr_assert_eq(tls1, tls0 + 1, "tls_error closes %lld, then %lld", tls0, tls1);
  cr_assert_eq(tls_varz("derpd_conn_closed{reason=\"write_error\"}"), we0);
  /* In userspace TLS the error is seen in the same read as the ClientInfo:
   * closed before it moves. Under kTLS (the qemu phase) the kernel hands
   * over the good records first and the error on the next read, as Go's
   * crypto/tls does for derper: the client registers, then closes. */
  if (!kernel_has_ktls())
    cr_assert_eq(tls_varz("derpd_clients_accepted"), acc0, "the conn was registered as a client");
}

/* derper's TLS version metrics: each request on the TLS port counted by
 * its conn's version, and the ones being served (a DERP conn's whole life;
 * each scrape here is a TLS 1.3 request of its own, served while it renders). */
static void tls_version_metrics(void) {
  start_tls(1, NULL);
  struct derp_client *a = tls_client(&(struct tls_conn_opts){.version = TLS1_3_VERSION}, NULL);
  char err[256] = "";
  struct derp_tls_info info;
  struct derp_client *b = try_client(&(struct tls_conn_opts){.version = TLS1_2_VERSION}, &info, err, sizeof err);
  cr_assert_not_null(b, "%s", err); /* untracked: closed below */
  e2e_sync_route(a, b);
  cr_assert_eq(tls_varz("derper_tls_request_version{version=\"1.2\"}"), 1);
  cr_assert_eq(tls_varz("derper_tls_active_version{version=\"1.2\"}"), 1);
  /* a, the scrape before, and this one */
  cr_assert_eq(tls_varz("derper_tls_request_version{version=\"1.3\"}"), 4);
  cr_assert_eq(tls_varz("derper_tls_active_version{version=\"1.3\"}"), 2, "a and this scrape");
  derp_client_close(b);
  long long act = -1;
  for (int i = 0; i < 100 && (act = tls_varz("derper_tls_active_version{version=\"1.2\"}")) != 0; i++)
    e2e_sleep_ms(20);
  cr_assert_eq(act, 0, "b closed, still active");
  cr_assert_eq(tls_varz("derper_tls_request_version{version=\"1.2\"}"), 1);
  (void)a;
}

static void stalled_handshake_deadline(void) {
  start_tls(2, "--handshake-timeout 1s");
  int fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  /* Half a TLS record header, then nothing. */
  raw_write_all(fd, "\x16\x03\x01", 3);
  int64_t t0 = e2e_now_ms();
  char buf[256];
  bool closed;
  raw_read_until_close(fd, buf, sizeof buf, 5000, &closed);
  int64_t took = e2e_now_ms() - t0;
  close(fd);
  cr_assert(closed, "stalled handshake not closed");
  cr_assert(took >= 700 && took < 3500, "closed after %lld ms", (long long)took);
  cr_assert(tls_varz("derpd_conn_closed{reason=\"handshake_timeout\"}") >= 1);
}

/* A caller bounds a TLS client's writes with SO_SNDTIMEO (derp/client.h),
 * as on plain TCP: to a server that reads no more (-rate-config at 1000 B/s
 * after its 64 KiB burst) a send fails with EAGAIN about the bound later.
 * Under TLS it waited for ever: the socket is non-blocking there, so the
 * kernel never applied the option. The sends run on a thread, so that a
 * regression fails the test instead of hanging it. */
struct sndtimeo_run {
  struct derp_client *c;
  int r, err, sends;
  int64_t blocked_ms;
  _Atomic bool done;
};

static void *sndtimeo_sender(void *arg) {
  struct sndtimeo_run *run = arg;
  static uint8_t pkt[DERP_MAX_PACKET];
  derp_key dst;
  e2e_random_key(&dst);
  int64_t last = e2e_now_ms();
  for (run->sends = 0; run->sends < 1000 && run->r == 0; run->sends++) {
    last = e2e_now_ms();
    run->r = derp_client_send(run->c, &dst, pkt, sizeof pkt);
  }
  run->err = errno;
  run->blocked_ms = e2e_now_ms() - last;
  atomic_store(&run->done, true);
  return NULL;
}

static void tls_write_keeps_sndtimeo(void) {
  char rate[96], more[160];
  snprintf(rate, sizeof rate, "/tmp/derpd-tls-rate-%d.json", (int)getpid());
  FILE *f = fopen(rate, "w");
  cr_assert_not_null(f);
  fputs("{\"PerClientRateLimitBytesPerSec\": 1000}", f);
  fclose(f);
  snprintf(more, sizeof more, "-rate-config %s", rate);
  start_tls(1, more);
  unlink(rate);
  struct sndtimeo_run run = {.c = tls_client(&(struct tls_conn_opts){0}, NULL)};
  struct timeval tv = {.tv_sec = 1};
  cr_assert_eq(setsockopt(derp_client_fd(run.c), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, sndtimeo_sender, &run), 0);
  for (int64_t end = e2e_now_ms() + 30000; !atomic_load(&run.done) && e2e_now_ms() < end;) e2e_sleep_ms(20);
  cr_assert(atomic_load(&run.done), "a TLS send still blocked 30 s on, SO_SNDTIMEO 1 s");
  pthread_join(t, NULL);
  cr_assert_eq(run.r, -1, "%d sends of 64 KiB to a server that reads 1000 B/s", run.sends);
  cr_assert(run.err == EAGAIN || run.err == EWOULDBLOCK, "errno %d", run.err);
  cr_assert(run.blocked_ms >= 800 && run.blocked_ms < 5000, "the last send failed after %lld ms",
            (long long)run.blocked_ms);
}

static void plain_http_to_tls_port(void) {
  start_tls(2, NULL);
  int fd = raw_connect(&srv);
  cr_assert_geq(fd, 0);
  const char req[] = "GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
  raw_write_all(fd, req, sizeof req - 1);
  char buf[512] = "";
  bool closed;
  size_t n = raw_read_until_close(fd, buf, sizeof buf - 1, 3000, &closed);
  buf[n] = 0;
  close(fd);
  cr_assert(closed, "plain HTTP not closed");
  cr_assert(strncmp(buf, "HTTP/1.0 400", 12) == 0, "answer: %s", buf);
}

/* manual as derper: the files must be there and name -hostname, at start
 * and at a reload; an IP -hostname without files gets a self-signed
 * certificate (derper v1.82+), named without an IPv6 address's colons. */
static void manual_mode_needs_files(void) {
  snprintf(certdir, sizeof certdir, "/tmp/derpd-tls-certs-XXXXXX");
  cr_assert(mkdtemp(certdir));
  char args[256], cmd[600];
  snprintf(args, sizeof args, "-certmode manual -certdir %s -hostname localhost -http-port -1", certdir);
  cr_assert_neq(derpd_start(&srv, 1, args), 0, "started without certificates");
  /* A pair for other.example, made by selfsigned, as localhost's files. */
  snprintf(args, sizeof args, "-certmode selfsigned -certdir %s/o -hostname other.example -http-port -1", certdir);
  cr_assert_eq(derpd_start(&srv, 1, args), 0);
  derpd_kill(&srv);
  snprintf(cmd, sizeof cmd, "cp %s/o/other.example.crt %s/localhost.crt && cp %s/o/other.example.key %s/localhost.key",
           certdir, certdir, certdir, certdir);
  cr_assert_eq(system(cmd), 0);
  snprintf(args, sizeof args, "-certmode manual -certdir %s -hostname localhost -http-port -1", certdir);
  cr_assert_neq(derpd_start(&srv, 1, args), 0, "started with a certificate for another name");
  cr_assert(derpd_log_contains(&srv, "localhost.crt is not valid for -hostname localhost"));
  derpd_kill(&srv);
  /* An address: a self-signed certificate, made once, pinned by clients. */
  snprintf(args, sizeof args, "-certmode manual -certdir %s/ip -hostname 127.0.0.1 -http-port -1", certdir);
  cr_assert_eq(derpd_start(&srv, 1, args), 0, "manual for an address without files did not start");
  uint8_t sha[32];
  wait_logged_sha256(0, sha);
  tls_client(&(struct tls_conn_opts){.pin = sha}, NULL);
  snprintf(cmd, sizeof cmd, "mkdir %s/w && cp %s/ip/127.0.0.1.key %s/w/ && cat %s/o/other.example.crt %s/ip/127.0.0.1.crt"
           " > %s/w/127.0.0.1.crt", certdir, certdir, certdir, certdir, certdir, certdir);
  cr_assert_eq(system(cmd), 0); /* for below: the address's key, its certificate second in the chain */
  /* A reload to a certificate that does not name the address keeps the old one. */
  snprintf(cmd, sizeof cmd, "cp %s/o/other.example.crt %s/ip/127.0.0.1.crt && cp %s/o/other.example.key %s/ip/127.0.0.1.key",
           certdir, certdir, certdir, certdir);
  cr_assert_eq(system(cmd), 0);
  kill(srv.pid, SIGHUP);
  int64_t deadline = e2e_now_ms() + 5000;
  while (!derpd_log_contains(&srv, "127.0.0.1.crt is not valid for -hostname 127.0.0.1")) {
    cr_assert(e2e_now_ms() < deadline, "no refused reload logged");
    e2e_sleep_ms(20);
  }
  tls_client(&(struct tls_conn_opts){.pin = sha}, NULL);
  derpd_kill(&srv);
  /* A chain whose leaf is not first: the error says so, not only that the key mismatches. */
  snprintf(args, sizeof args, "-certmode manual -certdir %s/w -hostname 127.0.0.1 -http-port -1", certdir);
  cr_assert_neq(derpd_start(&srv, 1, args), 0, "started with the leaf second in its chain");
  cr_assert(derpd_log_contains(&srv, "the leaf must come first"));
  derpd_kill(&srv);
  /* IPv6: derper's file name, colons dropped. */
  snprintf(args, sizeof args, "-certmode manual -certdir %s/ip6 -hostname ::1 -http-port -1", certdir);
  cr_assert_eq(derpd_start_on(&srv, 1, "::1", args), 0, "manual for ::1 did not start");
  snprintf(cmd, sizeof cmd, "test -s %s/ip6/1.crt && test -s %s/ip6/1.key", certdir, certdir);
  cr_assert_eq(system(cmd), 0, "no 1.crt and 1.key (derper's names for ::1)");
}

/* A few KiB per idle TLS connection, as the design asks. RSS also counts
 * what malloc keeps from the handshakes (measured with a malloc counter, an
 * idle TLS conn holds about 2.5 KiB more than a plain one), so the bound here
 * only catches gross regressions such as a record buffer kept per conn.
 * The shards' receive buffers are a fixed pool that a ring hands out in turn,
 * so its pages are touched a few per handshake until all have been used (under
 * kTLS on a stock kernel this came to 4 MiB for 40 conns): a small pool,
 * used up by the warm-up, keeps that fixed cost out of the figure. */
static void idle_memory(void) {
  start_tls(2, "--recv-bufs 32");
  enum { N = 40, WARM = 24 };
  for (int i = 0; i < WARM; i++) tls_client(&(struct tls_conn_opts){0}, NULL); /* stay open */
  e2e_sleep_ms(100);
  long before = derpd_rss_kb(&srv);
  for (int i = 0; i < N; i++) tls_client(&(struct tls_conn_opts){.version = i % 2 ? TLS1_2_VERSION : 0}, NULL);
  e2e_sleep_ms(200);
  long after = derpd_rss_kb(&srv);
  long per = (after - before) * 1024 / N;
  fprintf(stderr, "  idle TLS connection: about %ld bytes of RSS each (%d conns)\n", per, N);
  const char *san = getenv("DERPD_SANITIZE");
  if (san && *san && strcmp(san, "none") != 0) return; /* redzones, quarantine, shadow */
  cr_assert(per < 40 * 1024, "%ld bytes per idle TLS connection", per);
}

/* -http-port: plain HTTP beside the TLS port; /generate_204, a redirect to
 * https for everything else, and never the DERP upgrade. */
static void port80_helper(void) {
  snprintf(certdir, sizeof certdir, "/tmp/derpd-tls-certs-XXXXXX");
  cr_assert(mkdtemp(certdir));
  char args[256];
  snprintf(args, sizeof args, "-certmode selfsigned -certdir %s -hostname localhost -http-port 0",
           certdir);
  if (derpd_start(&srv, 2, args) != 0) cr_assert_fail("derpd did not start");
  /* derpd logs the port after its shards start, which can be after the
   * listener already accepts (derpd_start returns then): wait for the line. */
  unsigned port80 = 0;
  for (int64_t deadline = e2e_now_ms() + 5000; !port80 && e2e_now_ms() < deadline; e2e_sleep_ms(20)) {
    FILE *f = fopen(srv.log_path, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
      if (strstr(line, "port-80 helper on port ")) port80 = (unsigned)atoi(strstr(line, "on port ") + 8);
    if (f) fclose(f);
  }
  cr_assert(port80 > 0, "no port-80 helper port in the log");
  struct derpd_proc p80 = srv;
  p80.port = (uint16_t)port80;
  char resp[4096], hv[256], want[256];
  cr_assert_eq(http_request(&p80, "GET /generate_204 HTTP/1.1\r\nHost: localhost\r\n\r\n", resp,
                            sizeof resp), 204, "%s", resp);
  cr_assert_eq(http_request(&p80, "GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\n"
                                  "Connection: Upgrade\r\n\r\n", resp, sizeof resp), 302, "%s", resp);
  cr_assert(http_header(resp, "Location", hv, sizeof hv));
  snprintf(want, sizeof want, "https://localhost:%u/derp", srv.port);
  cr_assert(strcmp(hv, want) == 0, "Location %s", hv);
  cr_assert_eq(http_request(&p80, "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
                            resp, sizeof resp), 400, "%s", resp);
  cr_assert_eq(http_request(&p80, "GET /debug/varz HTTP/1.1\r\nHost: localhost\r\n\r\n", resp,
                            sizeof resp), 200);
  cr_assert(strstr(resp, "derp_accepts"));
  tls_client(&(struct tls_conn_opts){0}, NULL); /* the TLS port is unaffected */
}

/* WebSocket is a framing layer over any transport: over TLS the batch's
 * WebSocket header is encrypted with its frames. WebSocket and raw DERP
 * clients relay to each other across shards, big packets included. */
static void websocket_over_tls(void) {
  start_tls(2, NULL);
  enum { N = 6 };
  struct derp_client *c[N];
  for (int i = 0; i < N; i++)
    c[i] = tls_client(&(struct tls_conn_opts){.version = TLS1_3_VERSION, .websocket = i % 2 == 0},
                      NULL);
  for (int i = 0; i < N; i++) {
    struct derp_client *a = c[i], *b = c[(i + 1) % N];
    e2e_sync_route(a, b);
    e2e_relay_check(a, b, 64);
  }
  static uint8_t big[DERP_MAX_PACKET];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 13);
  for (int k = 0; k < 4; k++)
    cr_assert_eq(derp_client_send(c[1], derp_client_public_key(c[0]), big, sizeof big), 0);
  for (int k = 0; k < 4; k++) {
    struct derp_client_msg m;
    e2e_recv_data(c[0], &m, 3000);
    cr_assert_eq(m.packet_len, sizeof big);
    cr_assert(memcmp(m.packet, big, sizeof big) == 0, "big packet %d corrupt over WS+TLS", k);
  }
  cr_assert_geq(tls_varz("derpd_websocket_upgrades"), N / 2);
  cr_assert_geq(tls_varz("derpd_tls_handshakes"), N);
}

/* A client that keeps sending TLS 1.2 warning alerts (records with no data
 * and no effect) is cut: under kTLS by derpd's own budget (KTLS_IGNORED_MAX
 * per connection), in userspace TLS by BoringSSL's (4 in a row). The alerts
 * are sealed here with the client's write keys (ktls_emul), so this runs on
 * any kernel. */
static void warning_alerts_are_capped(void) {
  start_tls(1, "--ktls=auto");
  bool ktls = kernel_has_ktls();
  struct derp_client *c = tls_client(&(struct tls_conn_opts){.version = TLS1_2_VERSION}, NULL);
  for (int i = 0; i < MAX_TLS_CLIENTS; i++)
    if (clients[i] == c) clients[i] = NULL; /* detached below: not ours to close */
  if (ktls) {
    int64_t deadline = e2e_now_ms() + 5000;
    while (tls_varz("derpd_ktls_installs") < 1 && e2e_now_ms() < deadline) e2e_sleep_ms(20);
    cr_assert_geq(tls_varz("derpd_ktls_installs"), 1, "the connection never switched to kTLS");
  }
  struct derp_tls_conn tc;
  cr_assert_eq(derp_client_tls_detach(c, &tc), 0);
  union ktls_info ki;
  char err[128];
  cr_assert_eq(ktls_crypto_info(tc.ssl, KTLS_TX, &ki, err, sizeof err), 0, "%s", err);
  struct kdir tx; /* the client's write side, sealed as the kernel would */
  cr_assert_eq(kdir_init(&tx, &ki), 0);
  ktls_info_wipe(&ki);
  long long before = tls_varz("derpd_conn_closed{reason=\"tls_error\"}");
  static const uint8_t warning[2] = {1, 100}; /* warning, no_renegotiation */
  uint8_t rec[64];
  /* One alert is taken in stride: proof that the records are sealed right
   * (a bad one would close the connection at once, for the wrong reason). */
  size_t n = kseal(&tx, KTLS_REC_ALERT, warning, sizeof warning, rec);
  cr_assert_eq(raw_write_all(tc.fd, rec, n), 0);
  e2e_sleep_ms(300);
  cr_assert_eq(tls_varz("derpd_conn_closed{reason=\"tls_error\"}"), before, "one warning alert closed it");
  cr_assert_eq(tls_varz("derp_clients_local"), 1, "one warning alert closed it");
  for (int i = 1; i < 5; i++) {
    n = kseal(&tx, KTLS_REC_ALERT, warning, sizeof warning, rec);
    if (raw_write_all(tc.fd, rec, n) != 0) break; /* closed already: fine */
  }
  int64_t deadline = e2e_now_ms() + 3000;
  while (tls_varz("derpd_conn_closed{reason=\"tls_error\"}") <= before && e2e_now_ms() < deadline)
    e2e_sleep_ms(20);
  cr_assert_eq(tls_varz("derpd_conn_closed{reason=\"tls_error\"}"), before + 1,
               "five warning alerts did not close the connection as tls_error");
  if (ktls) wait_log("kTLS: more than 3 records with no data (last: warning alert)");
  kdir_free(&tx);
  SSL_free(tc.ssl);
  close(tc.fd);
  free(tc.buffered);
  cr_assert(derpd_alive(&srv));
  tls_client(&(struct tls_conn_opts){0}, NULL); /* still serving */
}

/* A verified connection (no pin) to derpd's self-signed certificate, trusted
 * through ca_file; NULL with err. */
static struct derp_client *verified_client(const char *host, const char *sni, const char *ca_file, char *err,
                                           size_t errlen) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = host, .port = srv.port, .priv = &priv, .server_key = &srv.server_key,
                               .timeout_ms = 5000};
  struct derp_tls_opts t = {.sni = sni, .ca_file = ca_file};
  struct derp_client *c = NULL;
  if (derp_client_connect_tls(&c, &o, &t, NULL, err, errlen) < 0) return NULL;
  for (int i = 0; i < MAX_TLS_CLIENTS; i++)
    if (!clients[i]) return clients[i] = c;
  cr_assert_fail("too many clients");
  return NULL;
}

/* A server known by its IP address (a mesh entry or a DERP map node without
 * a name): its certificate's IP SAN verifies whether the address comes as
 * the host or as the name to verify (the mesh passes it as both); it is
 * never sent as SNI. An empty SSL_CERT_FILE is unset, as in Go. */
static void verify_ip_san(void) {
  start_tls(1, "-hostname 127.0.0.1");
  char crt[160], err[256] = "";
  snprintf(crt, sizeof crt, "%s/127.0.0.1.crt", certdir);
  wait_logged_sha256(0, (uint8_t[32]){0});
  cr_assert(verified_client("127.0.0.1", NULL, crt, err, sizeof err), "host 127.0.0.1: %s", err);
  cr_assert(verified_client("127.0.0.1", "127.0.0.1", crt, err, sizeof err), "sni 127.0.0.1: %s", err);
  cr_assert(verified_client("127.0.0.1", "", crt, err, sizeof err), "no sni: %s", err);
  cr_assert(!verified_client("127.0.0.1", "localhost", crt, err, sizeof err), "a name the certificate lacks");
  cr_assert(strstr(err, "CERTIFICATE_VERIFY_FAILED: Hostname mismatch"), "%s", err);
  cr_assert(!verified_client("127.0.0.1", NULL, "", err, sizeof err), "a self-signed certificate verified");
  cr_assert(strstr(err, "CERTIFICATE_VERIFY_FAILED: self signed certificate") && !strstr(err, "No such file"), "%s", err);
}

/* A stopping derpd ends a TLS conn in order: Restarting, then close_notify
 * (Go's client reads io.EOF, not an unexpected EOF). */
static void stop_ends_with_close_notify(void) {
  start_tls(2, NULL);
  char err[256] = "";
  struct derp_tls_info info;
  struct derp_client *c = try_client(&(struct tls_conn_opts){.version = 0}, &info, err, sizeof err);
  cr_assert_not_null(c, "TLS client: %s", err);
  struct derp_tls_conn tc;
  cr_assert_eq(derp_client_tls_detach(c, &tc), 0, "detach: %s", strerror(errno));
  cr_assert_eq(kill(srv.pid, SIGTERM), 0);
  uint8_t buf[256];
  size_t n = tc.buffered_len < sizeof buf ? tc.buffered_len : 0;
  if (n) memcpy(buf, tc.buffered, n);
  int64_t deadline = e2e_now_ms() + 5000;
  int r = 0, e = 0;
  while (e2e_now_ms() < deadline) {
    r = SSL_read(tc.ssl, buf + n, (int)(sizeof buf - n));
    if (r > 0) { n += (size_t)r; continue; }
    e = SSL_get_error(tc.ssl, r);
    if (e != SSL_ERROR_WANT_READ) break;
    struct pollfd pfd = {.fd = tc.fd, .events = POLLIN};
    poll(&pfd, 1, 100);
  }
  ERR_clear_error();
  SSL_free(tc.ssl);
  close(tc.fd);
  free(tc.buffered);
  cr_assert_eq(e, SSL_ERROR_ZERO_RETURN, "the conn did not end with close_notify: r %d, error %d", r, e);
  cr_assert(n == 13 && buf[0] == DERP_FRAME_RESTARTING, "%zu bytes before the close, first %02x", n, buf[0]);
  int st = -1;
  cr_assert_eq(derpd_wait(&srv, 5000, &st), 0, "derpd did not exit");
  cr_assert_eq(st, 0);
}

static const struct mini_test tests[] = {
    {"verify_ip_san", verify_ip_san},
    {"stop_ends_with_close_notify", stop_ends_with_close_notify},
    {"websocket_over_tls", websocket_over_tls},
    {"port80_helper", port80_helper},
    {"tls13_relay_2_shards", tls13_relay_2_shards},
    {"tls12_relay_2_shards", tls12_relay_2_shards},
    {"tls13_relay_4_shards", tls13_relay_4_shards},
    {"tls12_relay_4_shards", tls12_relay_4_shards},
    {"fast_start_with_meta_cert", fast_start_with_meta_cert},
    {"sni_rules", sni_rules},
    {"pin_and_verify", pin_and_verify},
    {"sighup_reload", sighup_reload},
    {"garbage_closes", garbage_closes},
    {"bad_record_after_client_info", bad_record_after_client_info},
    {"tls_version_metrics", tls_version_metrics},
    {"close_notify_after_request", close_notify_after_request},
    {"stalled_handshake_deadline", stalled_handshake_deadline},
    {"tls_write_keeps_sndtimeo", tls_write_keeps_sndtimeo},
    {"plain_http_to_tls_port", plain_http_to_tls_port},
    {"manual_mode_needs_files", manual_mode_needs_files},
    {"idle_memory", idle_memory},
    {"ktls_auto", ktls_auto},
    {"ktls_off", ktls_off},
    {"ktls_require_needs_kernel", ktls_require_needs_kernel},
    {"ktls_assumed_fallback", ktls_assumed_fallback},
    {"ktls_assumed_require", ktls_assumed_require},
    {"ktls_key_refused", ktls_key_refused},
    {"ktls_key_refused_require", ktls_key_refused_require},
    {"ktls_suite_remembered", ktls_suite_remembered},
    {"ktls_tx_refused_after_rx", ktls_tx_refused_after_rx},
    {"warning_alerts_are_capped", warning_alerts_are_capped},
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (derp_init() != 0) return 2;
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, teardown);
}
