/* test_client_deadline.c: libderp's client keeps its deadline against a
 * server that never stops sending bytes that make no frame for it: frames it
 * skips during the handshake, empty WebSocket frames, KeepAlives while it
 * waits for a packet. Each read used to restart the wait, so such a server
 * held the caller for ever (derpd's mesh dialler among them: a hostile or
 * broken node pinned its thread). A fake server on loopback, in a thread. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "derp/client.h"
#include "derp/frame.h"
#include "derp/handshake.h"
#include "lib/wsaccept.h"

enum flood { SKIPPED_FRAMES, EMPTY_WS_FRAMES, KEEPALIVES_AFTER_HANDSHAKE };

struct fake {
  enum flood what;
  int lfd;
  uint16_t port;
  derp_privkey priv;
  derp_key pub;
  atomic_bool stop;
  pthread_t t;
};

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int put(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
    if (k <= 0) return -1;
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

static int get(int fd, void *p, size_t n) {
  uint8_t *b = p;
  while (n) {
    ssize_t k = read(fd, b, n);
    if (k <= 0) return -1;
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

/* The request head, read a byte at a time (nothing behind it is ours). */
static int read_head(int fd, char *req, size_t cap) {
  size_t n = 0;
  while (n < cap - 1) {
    if (get(fd, req + n, 1) < 0) return -1;
    req[++n] = 0;
    if (n >= 4 && memcmp(req + n - 4, "\r\n\r\n", 4) == 0) return 0;
  }
  return -1;
}

static int ws_101(int fd, char *req) {
  char *k = strcasestr(req, "Sec-WebSocket-Key:");
  if (!k) return -1;
  k += strlen("Sec-WebSocket-Key:");
  while (*k == ' ') k++;
  *strstr(k, "\r\n") = 0;
  char acc[64], resp[512];
  derp_ws_accept(k, acc);
  snprintf(resp, sizeof resp,
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: derp\r\n\r\n",
           acc);
  return put(fd, resp, strlen(resp));
}

/* ServerKey, ClientInfo in, ServerInfo out. */
static int handshake(struct fake *f, int fd) {
  static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
  uint8_t out[512], h[DERP_FRAME_HDR_LEN], ci[2048];
  size_t n = derp_enc_server_key(out, sizeof out, &f->pub);
  if (put(fd, resp, sizeof resp - 1) < 0 || put(fd, out, n) < 0 || get(fd, h, sizeof h) < 0) return -1;
  uint32_t len = derp_get_be32(h + 1);
  if (len > sizeof ci || get(fd, ci, len) < 0) return -1;
  derp_key client;
  struct derp_client_info info;
  derp_box_key k;
  const char *why;
  if (derp_client_info_open_k(ci, len, &f->priv, &client, &info, &k, &why) < 0) return -1;
  struct derp_server_info si = {.version = 2};
  size_t sl = derp_server_info_seal_k(out + DERP_FRAME_HDR_LEN, sizeof out - DERP_FRAME_HDR_LEN, &k, &si);
  derp_frame_put_header(out, DERP_FRAME_SERVER_INFO, (uint32_t)sl);
  return put(fd, out, DERP_FRAME_HDR_LEN + sl);
}

/* Serves one client, then floods it for at most 20 s or until it leaves. */
static void *fake_main(void *arg) {
  struct fake *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  if (fd < 0) return NULL;
  static _Thread_local uint8_t buf[60000];
  char req[4096];
  int ok = read_head(fd, req, sizeof req);
  if (ok == 0 && f->what == SKIPPED_FRAMES) {
    static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
    ok = put(fd, resp, sizeof resp - 1);
    for (size_t i = 0; i < sizeof buf; i += DERP_FRAME_HDR_LEN) derp_frame_put_header(buf + i, 0x30, 0);
  } else if (ok == 0 && f->what == EMPTY_WS_FRAMES) {
    ok = ws_101(fd, req);
    for (size_t i = 0; i < sizeof buf; i += 2) buf[i] = 0x82, buf[i + 1] = 0;
  } else if (ok == 0) {
    ok = handshake(f, fd);
    for (size_t i = 0; i < sizeof buf; i += DERP_FRAME_HDR_LEN) derp_frame_put_header(buf + i, DERP_FRAME_KEEP_ALIVE, 0);
  }
  for (int64_t end = now_ms() + 20000; ok == 0 && !atomic_load(&f->stop) && now_ms() < end;)
    ok = put(fd, buf, sizeof buf);
  close(fd);
  return NULL;
}

static void fake_start(struct fake *f, enum flood what) {
  memset(f, 0, sizeof *f);
  f->what = what;
  derp_key_generate(&f->priv, &f->pub);
  f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  getsockname(f->lfd, (struct sockaddr *)&a, &al);
  f->port = ntohs(a.sin_port);
  cr_assert_eq(listen(f->lfd, 4), 0);
  cr_assert_eq(pthread_create(&f->t, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f) {
  atomic_store(&f->stop, true);
  pthread_join(f->t, NULL);
  close(f->lfd);
}

/* connect's 1 s timeout, against a flood that makes no ServerKey. */
static void connect_times_out(enum flood what, bool websocket) {
  struct fake f;
  fake_start(&f, what);
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = f.port, .priv = &priv, .timeout_ms = 1000,
                               .websocket = websocket};
  struct derp_client *c = NULL;
  char err[256] = "";
  int64_t t0 = now_ms();
  int r = derp_client_connect(&c, &o, err, sizeof err);
  int64_t took = now_ms() - t0;
  fake_stop(&f);
  cr_assert_eq(r, -1, "connected to a server that sent no ServerKey");
  cr_assert_lt(took, 3000, "a 1 s connect took %lld ms: %s", (long long)took, err);
  cr_assert(strstr(err, "timeout"), "error: %s", err);
}

Test(client_deadline, connect_past_skipped_frames, .timeout = 30) { connect_times_out(SKIPPED_FRAMES, false); }

Test(client_deadline, connect_past_empty_websocket_frames, .timeout = 30) {
  connect_times_out(EMPTY_WS_FRAMES, true);
}

Test(client_deadline, recv_packet_past_keepalives, .timeout = 30) {
  struct fake f;
  fake_start(&f, KEEPALIVES_AFTER_HANDSHAKE);
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = f.port, .priv = &priv, .timeout_ms = 5000};
  struct derp_client *c = NULL;
  char err[256] = "";
  cr_assert_eq(derp_client_connect(&c, &o, err, sizeof err), 0, "%s", err);
  struct derp_client_msg m;
  int64_t t0 = now_ms();
  int r = derp_client_recv_packet(c, &m, 1000);
  int64_t took = now_ms() - t0;
  derp_client_close(c);
  fake_stop(&f);
  cr_assert_eq(r, 0, "recv_packet: %d", r);
  cr_assert_lt(took, 3000, "a 1 s wait took %lld ms", (long long)took);
  cr_assert_geq(took, 900, "gave up after %lld ms", (long long)took);
}
