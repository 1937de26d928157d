/* test_httpc.c: the workers' HTTP client (server/httpc/httpc.c) against a
 * loopback server that writes canned responses, some a few bytes at a time so
 * that header names and values reach the client in pieces: the headers a
 * caller asks for, Content-Length, chunked and to-EOF bodies, HEAD, 204, 1xx
 * skipped, the body cap, a body cut short, malformed answers, keep-alive and
 * its one retry; a name lookup that the resolver never answers ends at the
 * request's deadline. TLS and the other bounds (stop descriptor, deadline)
 * are tested through acme_https in test_acme and through admission end to
 * end.
 *
 * Not Criterion (httpc links BoringSSL; Criterion brings OpenSSL's libcrypto).
 * Usage: test_httpc [substring of test names]. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/httpc/httpc.h"

/* ---- the server ---------------------------------------------------------- */

/* Answers each request on one accepted connection with the next of resp[],
 * in pieces of `piece` bytes (0: whole); closes after the last, or leaves the
 * connection open (hold) so that only the response's own framing can end it. */
struct server {
  int ls;
  uint16_t port;
  const char *resp[4];
  int nresp;
  size_t piece;
  bool hold;
  bool close_after_first; /* the keep-alive case: the server drops the idle conn */
  const char *stray;       /* sent after the first answer once `go` is posted */
  sem_t go;
  atomic_int accepted;     /* written by the server thread */
  pthread_t th;
};

static bool read_request(int fd) {
  char buf[4096];
  size_t n = 0;
  while (n < sizeof buf - 1) {
    ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
    if (r <= 0) return false;
    n += (size_t)r;
    buf[n] = 0;
    if (strstr(buf, "\r\n\r\n")) return true;
  }
  return false;
}

static void write_pieces(int fd, const char *s, size_t piece) {
  size_t len = strlen(s);
  for (size_t off = 0; off < len;) {
    size_t k = piece && piece < len - off ? piece : len - off;
    if (send(fd, s + off, k, MSG_NOSIGNAL) != (ssize_t)k) return;
    off += k;
    if (piece) usleep(2000); /* its own segment: the client reads it alone */
  }
}

static void *serve(void *arg) {
  struct server *sv = arg;
  int i = 0;
  while (i < sv->nresp) {
    int fd = accept(sv->ls, NULL, NULL);
    if (fd < 0) return NULL;
    sv->accepted++;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while (i < sv->nresp && read_request(fd)) {
      write_pieces(fd, sv->resp[i++], sv->piece);
      if (sv->close_after_first && i == 1) break;
      if (sv->stray && i == 1) {
        sem_wait(&sv->go);
        write_pieces(fd, sv->stray, 0);
      }
    }
    if (sv->hold && i == sv->nresp) usleep(1500 * 1000); /* longer than any test's wait */
    close(fd);
  }
  return NULL;
}

static void server_start(struct server *sv) {
  sv->ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  cr_assert(bind(sv->ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(sv->ls, 8) == 0);
  cr_assert(getsockname(sv->ls, (struct sockaddr *)&a, &al) == 0);
  sv->port = ntohs(a.sin_port);
  cr_assert_eq(pthread_create(&sv->th, NULL, serve, sv), 0);
}

static void server_stop(struct server *sv) {
  shutdown(sv->ls, SHUT_RDWR);
  pthread_join(sv->th, NULL);
  close(sv->ls);
}

/* ---- the client ---------------------------------------------------------- */

struct got {
  char nonce[64], location[64], x[2048];
  size_t xlen;
  bool xcut;
  int headers, cuts;
};

static void on_header(const char *name, size_t nlen, const char *v, size_t vl, bool cut, void *arg) {
  struct got *g = arg;
  g->headers++;
  char *dst = NULL;
  if (nlen == 12 && strncasecmp(name, "Replay-Nonce", 12) == 0) dst = g->nonce;
  else if (nlen == 8 && strncasecmp(name, "Location", 8) == 0) dst = g->location;
  if (dst && vl < 64) {
    memcpy(dst, v, vl);
    dst[vl] = 0;
  }
  if (nlen == 5 && strncasecmp(name, "X-Big", 5) == 0) {
    g->xlen = vl;
    g->xcut = cut;
  }
  if (cut) g->cuts++;
}

struct call {
  enum httpc_rc rc;
  struct httpc_resp r;
  uint8_t body[256];
  char err[256];
  struct got got;
  int64_t ms; /* the request took */
};

/* One GET (or HEAD) on cn to sv. A server that holds the connection open
 * past its answer (hold: 1.5 s) gets a 1 s deadline, so that a client that
 * waits for a body that does not come times out; any other request has 10 s,
 * since a response written in pieces (2 ms apart, up to ~150 of them in
 * long_header_cut) takes 0.3 s at best and more on a loaded TSan machine. */
static void call_on(struct httpc_conn *cn, const struct server *sv, bool head, size_t cap, struct call *c) {
  memset(c, 0, sizeof *c);
  c->r = (struct httpc_resp){.head = head, .on_header = on_header, .header_arg = &c->got, .body = c->body,
                             .body_cap = cap ? cap : sizeof c->body - 1};
  struct httpc_endpoint ep = {.kind = HTTPC_TCP, .host = "127.0.0.1", .port = sv->port};
  const char *req = head ? "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" : "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  int64_t t0 = httpc_now_ms();
  c->rc = httpc_request(cn, &ep, req, strlen(req), &c->r, NULL, NULL, t0 + (sv->hold ? 1000 : 10000), -1, c->err,
                        sizeof c->err);
  c->ms = httpc_now_ms() - t0;
  c->body[c->r.body_len] = 0;
}

/* One request to a server that answers resp (in pieces of piece bytes). */
static void one(const char *resp, size_t piece, bool head, bool hold, size_t cap, struct call *c) {
  struct server sv = {.resp = {resp}, .nresp = 1, .piece = piece, .hold = hold};
  server_start(&sv);
  struct httpc_conn cn = HTTPC_CONN_INIT;
  call_on(&cn, &sv, head, cap, c);
  httpc_conn_close(&cn);
  server_stop(&sv);
}

/* ---- tests --------------------------------------------------------------- */

static void headers_in_pieces(void) {
  struct call c;
  one("HTTP/1.1 201 Created\r\nreplay-nonce:  abc-123 \r\nLocation: https://ca/acct/7\r\n"
      "Content-Length: 7\r\n\r\n{\"a\":1}", 3, false, false, 0, &c);
  cr_assert_eq(c.rc, HTTPC_OK, "%s", c.err);
  cr_assert(c.r.status == 201 && c.r.complete && strcmp((char *)c.body, "{\"a\":1}") == 0, "%d %s", c.r.status,
            c.body);
  cr_assert(strcmp(c.got.nonce, "abc-123") == 0, "nonce \"%s\": pieces joined, blanks trimmed", c.got.nonce);
  cr_assert(strcmp(c.got.location, "https://ca/acct/7") == 0, "location \"%s\"", c.got.location);
  cr_assert_eq(c.got.headers, 3);
}

static void long_header_cut(void) {
  char resp[4096];
  char big[3000];
  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = 0;
  snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 0\r\n\r\n", big);
  struct call c;
  one(resp, 0, false, false, 0, &c);
  cr_assert_eq(c.rc, HTTPC_OK, "%s", c.err);
  cr_assert(c.got.xlen == 1024, "a 2999-byte value reaches the caller cut to 1024, got %zu", c.got.xlen);
  cr_assert(c.got.xcut && c.got.cuts == 1, "the cut value is not said to be cut (or another is)");
  /* Exactly 1024 bytes fit: not cut. */
  big[1024] = 0;
  snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 0\r\n\r\n", big);
  one(resp, 7, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.got.xlen == 1024 && !c.got.xcut && c.got.cuts == 0, "1024 bytes: %zu, cut %d",
            c.got.xlen, c.got.xcut);
}

static void chunked(void) {
  struct call c;
  one("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n----\r\n5;ext=1\r\nBEGIN\r\n0\r\n"
      "X-Trailer: 1\r\n\r\n", 5, false, true, 0, &c);
  cr_assert_eq(c.rc, HTTPC_OK, "%s", c.err);
  cr_assert(c.r.complete && strcmp((char *)c.body, "----BEGIN") == 0, "body \"%s\"", c.body);
  one("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n-----\r\n0\r\n\r\n", 0, false, false, 0, &c);
  cr_assert(!c.r.complete && c.r.body_error, "a chunk longer than its size is malformed");
}

static void to_eof(void) {
  struct call c;
  one("HTTP/1.0 200 OK\r\n\r\nto the end", 4, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.complete && strcmp((char *)c.body, "to the end") == 0, "%s", c.body);
}

/* HEAD and 204: no body, whatever Content-Length says; the server keeps the
 * connection open, so only the framing can end the response in time. */
static void head_and_204(void) {
  struct call c;
  one("HTTP/1.1 200 OK\r\nReplay-Nonce: n1\r\nContent-Length: 100\r\n\r\n", 0, true, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.complete && c.r.body_len == 0, "%d %s", c.rc, c.err);
  cr_assert(strcmp(c.got.nonce, "n1") == 0);
  cr_assert(c.ms < 900, "HEAD waited %lld ms for a body that does not come", (long long)c.ms);
  one("HTTP/1.1 204 No Content\r\n\r\n", 0, false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.status == 204 && c.r.complete, "%d %s", c.rc, c.err);
  cr_assert(c.ms < 900, "204 waited %lld ms for a body that does not come", (long long)c.ms);
  /* Nor for a Content-Length on a 204 or a 304 (RFC 9112 §6.3: they have no body). */
  one("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 0, false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.status == 204 && c.r.complete && c.ms < 900,
            "204 with Content-Length: %d %s after %lld ms", c.rc, c.err, (long long)c.ms);
  one("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 0, false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.status == 304 && c.r.complete && c.ms < 900,
            "304 with Content-Length: %d %s after %lld ms", c.rc, c.err, (long long)c.ms);
}

static void informational_skipped(void) {
  struct call c;
  one("HTTP/1.1 100 Continue\r\nReplay-Nonce: early\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0,
      false, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.status == 200 && strcmp((char *)c.body, "ok") == 0, "%d", c.r.status);
  cr_assert(c.got.nonce[0] == 0 && c.got.headers == 1, "a 1xx response's headers are not the answer's");
  /* A 1xx has no body whatever it says: what follows its head is the next
   * response, and nothing of it lands in the answer's body. */
  one("HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0,
      false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.status == 200 && c.r.complete && strcmp((char *)c.body, "ok") == 0,
            "1xx with Content-Length: rc %d status %d body \"%s\" (%s)", c.rc, c.r.status, c.body, c.err);
}

static void cap_and_cut(void) {
  struct call c;
  one("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
      "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
      0, false, false, 10, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.body_len == 10 && !c.r.complete, "the cap keeps a prefix, not all");
  one("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && !c.r.complete && c.r.body_error && c.r.body_len == 3, "%s",
            c.r.body_error ? c.r.body_error : "no body_error");
}

static void malformed(void) {
  struct call c;
  one("SMTP ready\r\n\r\n", 0, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_ERROR && strstr(c.err, "malformed"), "%d %s", c.rc, c.err);
  one("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", 0, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_ERROR && strstr(c.err, "malformed"), "a two-digit status: %d %s", c.rc, c.err);
  one("", 0, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_ERROR && strstr(c.err, "without a response"), "%d %s", c.rc, c.err);
  /* Content-Length lines that disagree: Go refuses the response too. */
  one("HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nok!", 0, false, false, 0, &c);
  cr_assert(c.rc == HTTPC_ERROR && strstr(c.err, "malformed"), "Content-Length 2 and 3: %d %s", c.rc, c.err);
}

/* Heads Go's client reads (net/http's transfer.go), though http_parser
 * refuses them by default: a repeated Content-Length with one value, and
 * Transfer-Encoding: chunked beside a Content-Length (chunked wins). An
 * admission controller's answer must not turn into "unreachable" (and so a
 * fail-open) where derper reads it. */
static void go_lenient_heads(void) {
  struct call c;
  one("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCONTENT-LENGTH:  2 \r\n\r\nok", 0, false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.complete && strcmp((char *)c.body, "ok") == 0,
            "a repeated Content-Length: rc %d (%s)", c.rc, c.err);
  one("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 1, false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.complete && strcmp((char *)c.body, "ok") == 0,
            "a repeated Content-Length, a byte a read: rc %d (%s)", c.rc, c.err);
  one("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nok\r\n0\r\n\r\n", 0,
      false, true, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.complete && strcmp((char *)c.body, "ok") == 0,
            "chunked beside Content-Length: rc %d (%s)", c.rc, c.err);
}

/* A kept-alive conn carries the next request; when the server has dropped
 * it while idle, the request goes once more on a new connection. */
static void keep_alive_and_retry(void) {
  struct server sv = {.resp = {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
                               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"},
                      .nresp = 3};
  server_start(&sv);
  struct httpc_conn cn = HTTPC_CONN_INIT;
  struct call c;
  call_on(&cn, &sv, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && strcmp((char *)c.body, "a") == 0 && cn.fd >= 0, "kept alive");
  call_on(&cn, &sv, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && strcmp((char *)c.body, "b") == 0);
  cr_assert_eq(sv.accepted, 1, "two requests, one connection");
  httpc_conn_close(&cn);
  server_stop(&sv);

  struct server sv2 = {.resp = {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"},
                       .nresp = 2, .close_after_first = true};
  server_start(&sv2);
  call_on(&cn, &sv2, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && cn.fd >= 0);
  usleep(50 * 1000); /* the server's close reaches us */
  call_on(&cn, &sv2, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && strcmp((char *)c.body, "b") == 0, "%d %s", c.rc, c.err);
  cr_assert_eq(sv2.accepted, 2, "the retry took a new connection");
  httpc_conn_close(&cn);
  server_stop(&sv2);
}

/* Bytes that arrive on an idle kept-alive conn (the 408 a server sends when
 * it times an idle connection out): the next request goes on a new
 * connection, and its answer is its own, not read from those bytes. The
 * server sends the 408 only once the first answer has been read and the
 * conn kept (a 408 in the same read would end keep-alive at once). */
static void stale_bytes_not_reused(void) {
  struct server sv = {.resp = {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
                               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"},
                      .nresp = 2, .stray = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"};
  sem_init(&sv.go, 0, 0);
  server_start(&sv);
  struct httpc_conn cn = HTTPC_CONN_INIT;
  struct call c;
  call_on(&cn, &sv, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && strcmp((char *)c.body, "a") == 0 && cn.fd >= 0, "kept alive");
  sem_post(&sv.go);
  struct pollfd pf = {.fd = cn.fd, .events = POLLIN}; /* the stray response is in our socket */
  cr_assert_eq(poll(&pf, 1, 5000), 1, "the stray response never came");
  call_on(&cn, &sv, false, 0, &c);
  cr_assert(c.rc == HTTPC_OK && c.r.status == 200 && strcmp((char *)c.body, "b") == 0,
            "rc %d, status %d, body %s (%s)", c.rc, c.r.status, (char *)c.body, c.err);
  cr_assert_eq(sv.accepted, 2, "the stale connection was reused");
  httpc_conn_close(&cn);
  server_stop(&sv);
}

/* A resolver that never answers: the request ends at its deadline with a
 * lookup timeout, not after the resolver's 30 s. In a child with a mount
 * namespace of its own whose /etc/resolv.conf names a loopback UDP socket
 * this test holds and never answers (root, as the test machines run). */
static void lookup_bounded(void) {
  cr_assert_eq(geteuid(), 0, "this test needs root (a mount namespace for its resolv.conf)");
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = htonl(0x7f00004d)};
  cr_assert_eq(bind(u, (struct sockaddr *)&sa, sizeof sa), 0, "bind 127.0.0.77:53: %s", strerror(errno));
  char dir[] = "/tmp/derpd-httpc-XXXXXX", conf[64];
  cr_assert_not_null(mkdtemp(dir));
  snprintf(conf, sizeof conf, "%s/resolv.conf", dir);
  FILE *f = fopen(conf, "w");
  cr_assert_not_null(f);
  fputs("nameserver 127.0.0.77\noptions timeout:30 attempts:1\n", f);
  fclose(f);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) { /* a fresh process: glibc's lookup threads do not survive a fork */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount(conf, "/etc/resolv.conf", NULL, MS_BIND, NULL) != 0)
      _exit(3);
    execl("/proc/self/exe", "test_httpc", "--lookup-child", (char *)NULL);
    _exit(3);
  }
  int st = -1;
  int64_t t0 = httpc_now_ms();
  while (waitpid(pid, &st, WNOHANG) == 0 && httpc_now_ms() - t0 < 10000) usleep(20000);
  if (httpc_now_ms() - t0 >= 10000) { /* still in the lookup: killed */
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  uint8_t q[512];
  ssize_t got = recv(u, q, sizeof q, MSG_DONTWAIT);
  close(u);
  unlink(conf);
  rmdir(dir);
  cr_assert(!(WIFEXITED(st) && WEXITSTATUS(st) == 3), "the child could not set up its resolv.conf");
  cr_assert(got > 0, "the resolver was never asked");
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the request did not end at its deadline with a lookup timeout");
}

static const struct mini_test tests[] = {
    {"headers_in_pieces", headers_in_pieces},
    {"long_header_cut", long_header_cut},
    {"chunked", chunked},
    {"to_eof", to_eof},
    {"head_and_204", head_and_204},
    {"informational_skipped", informational_skipped},
    {"cap_and_cut", cap_and_cut},
    {"malformed", malformed},
    {"go_lenient_heads", go_lenient_heads},
    {"keep_alive_and_retry", keep_alive_and_retry},
    {"stale_bytes_not_reused", stale_bytes_not_reused},
    {"lookup_bounded", lookup_bounded},
};

/* lookup_bounded's child, in its own mount namespace: exit 0 if the request
 * ended at its deadline with a lookup timeout. */
static int lookup_child(void) {
  struct httpc_conn cn = HTTPC_CONN_INIT;
  struct httpc_resp r = {0};
  char err[256] = "";
  struct httpc_endpoint ep = {.kind = HTTPC_TCP, .host = "hang.derpd-test.example", .port = 9};
  const char *req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
  int64_t t0 = httpc_now_ms();
  enum httpc_rc rc = httpc_request(&cn, &ep, req, strlen(req), &r, NULL, NULL, t0 + 1000, -1, err, sizeof err);
  int64_t ms = httpc_now_ms() - t0;
  fprintf(stderr, "request: rc %d after %lld ms: %s\n", rc, (long long)ms, err);
  return rc == HTTPC_TIMEOUT && ms < 2500 && strstr(err, "lookup") ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--lookup-child") == 0) return lookup_child();
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, NULL);
}
