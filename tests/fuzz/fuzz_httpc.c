/* fuzz_httpc.c: libFuzzer target for the workers' HTTP client
 * (server/httpc/httpc.c) reading a response: what an admission controller,
 * tailscaled or an ACME CA sends back. The input is the whole response,
 * written into a socketpair whose far end then closes; byte 0 picks the
 * request's options (HEAD, the body cap). Whatever the bytes, httpc_request
 * returns one of its codes without reading past its buffers, keeps at most
 * body_cap body bytes, hands over headers cut to 1 KiB without surrounding
 * blanks, and says complete only for a response read whole. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "server/httpc/httpc.h"

static void on_header(const char *name, size_t nlen, const char *v, size_t vl, bool cut, void *arg) {
  (void)name;
  (void)arg;
  (void)cut;
  FUZZ_CHECK(nlen <= 1024 && vl <= 1024);
  FUZZ_CHECK(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != ' ' && v[vl - 1] != '\t'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536) return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  int big = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  const uint8_t *resp = data + 1;
  size_t n = size - 1;
  if (n && write(sv[1], resp, n) != (ssize_t)n) {
    close(sv[0]);
    close(sv[1]);
    return 0;
  }
  shutdown(sv[1], SHUT_WR);
  uint8_t body[512];
  struct httpc_resp r = {.head = data[0] & 1, .on_header = on_header, .body = body,
                         .body_cap = (data[0] & 2) ? 7 : sizeof body};
  /* A conn that carried a response before: httpc sends on it without
   * dialling (the request lands in sv[1], unread); a failure before any
   * response byte is retried once on a fresh dial, which fails at once. */
  struct httpc_conn cn = {.fd = sv[0], .used = true};
  struct httpc_endpoint ep = {.kind = HTTPC_UNIX, .host = "/nonexistent/derpd-fuzz.sock"};
  char err[256] = "";
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  enum httpc_rc rc = httpc_request(&cn, &ep, req, sizeof req - 1, &r, NULL, NULL, httpc_now_ms() + 2000, -1, err,
                                   sizeof err);
  FUZZ_CHECK(rc == HTTPC_OK || rc == HTTPC_ERROR || rc == HTTPC_TIMEOUT);
  FUZZ_CHECK(rc != HTTPC_TIMEOUT); /* everything was there at once, then EOF */
  if (rc != HTTPC_OK) FUZZ_CHECK(err[0] != 0);
  FUZZ_CHECK(r.body_len <= r.body_cap);
  if (rc == HTTPC_OK) FUZZ_CHECK(r.status >= 100 && r.status <= 999);
  if (r.complete) FUZZ_CHECK(rc == HTTPC_OK && !r.body_error);
  if (r.head && r.complete) FUZZ_CHECK(r.body_len == 0);
  httpc_conn_close(&cn);
  close(sv[1]);
  return 0;
}
