/* test_ktls_openssl.c: test_ktls's checks with `openssl s_client` in a
 * child process over loopback TCP as the peer (every version x cipher; the
 * only way to get TLS 1.3 AES-256-GCM, which BoringSSL never picks against
 * itself). Part of the test_ktls binary (ktls_test.h); the runner and the
 * in-memory BoringSSL pair are test_ktls.c. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ktls_emul.h"
#include "ktls_test.h"
#include "server/transport/ktls.h"

/* ---- openssl s_client as the peer --------------------------------------- */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read exactly one TLS record from fd (5 s limit). */
static long read_record(int fd, uint8_t *buf, size_t cap) {
  size_t got = 0, want = 5;
  int64_t end = mono_ms() + 5000;
  while (got < want) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int left = (int)(end - mono_ms());
    if (left <= 0 || poll(&p, 1, left) <= 0) return -1;
    ssize_t n = read(fd, buf + got, want - got);
    if (n <= 0) return -1;
    got += (size_t)n;
    if (got == 5) {
      want = 5 + ((size_t)buf[3] << 8 | buf[4]);
      if (want > cap) return -1;
    }
  }
  return (long)got;
}

/* Read from fd until `want` has appeared (5 s limit). */
static bool read_until(int fd, const char *want) {
  char buf[4096];
  size_t got = 0;
  int64_t end = mono_ms() + 5000;
  while (got < sizeof buf - 1) {
    buf[got] = 0;
    if (strstr(buf, want)) return true;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int left = (int)(end - mono_ms());
    if (left <= 0 || poll(&p, 1, left) <= 0) return false;
    ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
    if (n <= 0) return false;
    got += (size_t)n;
  }
  return false;
}

static bool have_openssl(void) {
  return system("openssl version >/dev/null 2>&1") == 0;
}

struct child {
  pid_t pid;
  int in, out; /* its stdin (we write), its stdout (we read) */
};

static int spawn_s_client(struct child *ch, int port, int version, const struct cipher *ci) {
  int pin[2], pout[2];
  if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0) return -1;
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(pin[0], 0);
    dup2(pout[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    if (version == TLS1_3_VERSION)
      execlp("openssl", "openssl", "s_client", "-connect", addr, "-quiet", "-no_ign_eof",
             "-tls1_3", "-ciphersuites", ci->tls13, (char *)NULL);
    else
      execlp("openssl", "openssl", "s_client", "-connect", addr, "-quiet", "-no_ign_eof",
             "-tls1_2", "-cipher", ci->tls12, (char *)NULL);
    _exit(127);
  }
  close(pin[0]);
  close(pout[1]);
  ch->pid = pid, ch->in = pin[1], ch->out = pout[0];
  return 0;
}

static void reap(struct child *ch) {
  if (ch->in >= 0) close(ch->in);
  if (ch->out >= 0) close(ch->out);
  if (ch->pid > 0) {
    kill(ch->pid, SIGTERM);
    waitpid(ch->pid, NULL, 0);
  }
}

static int interop_body(int version, const struct cipher *ci, int lfd, int port, struct child *ch,
                        int *afd) {
  CHECK(spawn_s_client(ch, port, version, ci) == 0, "spawn openssl s_client");
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  CHECK(poll(&p, 1, 10000) == 1, "s_client did not connect");
  *afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  CHECK(*afd >= 0, "accept");
  struct timeval tv = {.tv_sec = 10};
  setsockopt(*afd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  SSL_CTX *sctx = make_ctx(true, version, ci, true);
  CHECK(sctx, "ctx");
  SSL *s = SSL_new(sctx);
  SSL_set_fd(s, *afd);
  int r = SSL_accept(s);
  CHECK(r == 1, "handshake with s_client: %d", SSL_get_error(s, r));
  CHECK(SSL_CIPHER_get_cipher_nid(SSL_get_current_cipher(s)) == ci->nid, "negotiated %s",
        SSL_CIPHER_get_name(SSL_get_current_cipher(s)));
  /* One record in userspace first: in TLS 1.3 it brings BoringSSL's
   * session tickets out before it, so the TX sequence counts them too. */
  static const char hello[] = "userspace record from BoringSSL\n";
  CHECK(SSL_write(s, hello, sizeof hello - 1) == (int)sizeof hello - 1, "SSL_write");
  CHECK(read_until(ch->out, hello), "s_client did not print the userspace record");
  union ktls_info tx, rx;
  char err[128] = "";
  CHECK(ktls_crypto_info(s, KTLS_TX, &tx, err, sizeof err) == 0, "TX: %s", err);
  CHECK(ktls_crypto_info(s, KTLS_RX, &rx, err, sizeof err) == 0, "RX: %s", err);
  SSL_free(s);
  SSL_CTX_free(sctx);

  struct kdir krx, ktx;
  CHECK(kdir_init(&krx, &rx) == 0 && kdir_init(&ktx, &tx) == 0, "AEAD from infos");
  uint8_t rec[16384 + 256], body[16384 + 256];
  uint16_t kv = version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION;

  /* (a) what the peer types arrives as a record we open. */
  for (int i = 0; i < 2; i++) {
    char msg[64];
    int ml = snprintf(msg, sizeof msg, "line %d from openssl\n", i);
    CHECK(write(ch->in, msg, (size_t)ml) == ml, "write to s_client");
    long l = read_record(*afd, rec, sizeof rec);
    CHECK(l > 0, "no record from s_client");
    uint8_t t;
    long n = kopen(&krx, rec, (size_t)l, &t, body);
    CHECK(n >= 0, "s_client record %d did not authenticate", i);
    CHECK(t == KTLS_REC_APPDATA && n == ml && !memcmp(body, msg, (size_t)ml), "plaintext %d", i);
  }
  /* (b) what we seal, the peer prints. */
  for (int i = 0; i < 3; i++) {
    char msg[64];
    int ml = snprintf(msg, sizeof msg, "sealed-by-ktls-info-%d\n", i);
    uint8_t wire[256];
    size_t wl = kseal(&ktx, KTLS_REC_APPDATA, msg, (size_t)ml, wire);
    CHECK(wl > 0 && write(*afd, wire, wl) == (ssize_t)wl, "send sealed record");
    CHECK(read_until(ch->out, msg), "s_client did not print record %d", i);
  }
  /* stdin EOF: s_client sends close_notify. */
  close(ch->in);
  ch->in = -1;
  long l = read_record(*afd, rec, sizeof rec);
  CHECK(l > 0, "no close_notify record");
  uint8_t t;
  long n = kopen(&krx, rec, (size_t)l, &t, body);
  CHECK(n >= 0, "close_notify did not authenticate");
  struct ktls_verdict vd;
  CHECK(ktls_classify(t, body, (size_t)n, kv, &vd) == KTLS_ACT_CLOSE, "classified %d (%s)",
        vd.action, vd.why);
  kdir_free(&krx);
  kdir_free(&ktx);
  return PASS;
}

static int interop(int version, const struct cipher *ci) {
  if (!have_openssl()) return skip("no openssl binary (apt-get install openssl)");
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 1) == 0 &&
            getsockname(lfd, (struct sockaddr *)&a, &alen) == 0,
        "listen");
  struct child ch = {.pid = -1, .in = -1, .out = -1};
  int afd = -1;
  int r = interop_body(version, ci, lfd, ntohs(a.sin_port), &ch, &afd);
  reap(&ch);
  if (afd >= 0) close(afd);
  close(lfd);
  return r;
}

int o12_aes128(void) { return interop(TLS1_2_VERSION, &ciphers[0]); }
int o12_aes256(void) { return interop(TLS1_2_VERSION, &ciphers[1]); }
int o12_chacha(void) { return interop(TLS1_2_VERSION, &ciphers[2]); }
int o13_aes128(void) { return interop(TLS1_3_VERSION, &ciphers[0]); }
int o13_aes256(void) { return interop(TLS1_3_VERSION, &ciphers[1]); }
int o13_chacha(void) { return interop(TLS1_3_VERSION, &ciphers[2]); }
