/* test_e2e_stun.c: derpd's STUN service end to end, over loopback UDP:
 * Tailscale requests answered with the right address, port and transaction
 * id on IPv4, IPv6 and an IPv4-mapped socket; everything else dropped and
 * counted by reason; --stun-generic; a port in use stops derpd at start;
 * a flood of garbage while two DERP clients relay; and a live upgrade
 * (SIGUSR2) that hands the sockets over without a request lost. Each test
 * starts its own derpd, with STUN on a port picked here. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "derp/stun.h"
#include "e2e_util.h"

static struct derpd_proc g_srv;
static pid_t g_new_pid; /* the process a live upgrade started */

static void setup(void) { e2e_test_init(); }
static void teardown(void) {
  e2e_reap(&g_new_pid, &g_srv);
  e2e_test_fini(&g_srv);
}

#define E2E .init = setup, .fini = teardown, .timeout = 90

/* host:port as a socket address. */
static void udp_addr(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len) {
  struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char ps[8];
  snprintf(ps, sizeof ps, "%u", port);
  cr_assert_eq(getaddrinfo(host, ps, &hints, &ai), 0, "address %s", host);
  memcpy(ss, ai->ai_addr, ai->ai_addrlen);
  *len = ai->ai_addrlen;
  freeaddrinfo(ai);
}

/* A UDP socket bound to host (port 0: any), or -1. */
static int udp_bound(const char *host, uint16_t port, bool reuseport) {
  struct sockaddr_storage ss;
  socklen_t len;
  udp_addr(host, port, &ss, &len);
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0 && reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&ss, len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static uint16_t local_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof ss;
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&ss, &l), 0);
  return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                        : ((struct sockaddr_in *)&ss)->sin_port);
}

/* A UDP port free on host a moment ago (0 if host has no such address). */
static uint16_t free_udp_port(const char *host) {
  int fd = udp_bound(host, 0, false);
  if (fd < 0) return 0;
  uint16_t p = local_port(fd);
  close(fd);
  return p;
}

/* Start derpd on host with STUN on a port it picks (-stun-port=0: no port
 * picked here and bound later, which another test could take between); the
 * port, from its "STUN on UDP ADDR:PORT" line. */
static uint16_t start_stun(const char *host, int shards, const char *extra) {
  char args[512];
  snprintf(args, sizeof args, "-stun-port=0 %s", extra ? extra : "");
  cr_assert_eq(derpd_start_on(&g_srv, shards, host, args), 0, "derpd did not start on %s", host);
  FILE *f = fopen(g_srv.log_path, "r");
  cr_assert_not_null(f, "derpd's log");
  char line[512];
  unsigned port = 0;
  while (!port && fgets(line, sizeof line, f)) {
    const char *at = strstr(line, "STUN on UDP ");
    const char *colon = at ? strrchr(at, ':') : NULL; /* [::1]:PORT too */
    if (colon) port = (unsigned)strtoul(colon + 1, NULL, 10);
  }
  fclose(f);
  cr_assert(port > 0 && port < 65536, "no STUN port in derpd's log");
  return (uint16_t)port;
}

static void send_to(int fd, const char *host, uint16_t port, const void *b, size_t n) {
  struct sockaddr_storage ss;
  socklen_t len;
  udp_addr(host, port, &ss, &len);
  cr_assert_eq(sendto(fd, b, n, 0, (struct sockaddr *)&ss, len), (ssize_t)n, "sendto: %s", strerror(errno));
}

/* The next datagram within ms, or -1. */
static ssize_t recv_within(int fd, uint8_t *buf, size_t cap, int ms) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  if (poll(&pfd, 1, ms) != 1) return -1;
  return recv(fd, buf, cap, 0);
}

static void random_txid(uint8_t txid[DERP_STUN_TXID_LEN]) {
  for (int i = 0; i < DERP_STUN_TXID_LEN; i++) txid[i] = (uint8_t)random();
}

/* A Tailscale request from fd; the reply must be exactly derper's for
 * (want_ip, fd's port) and the request's transaction id. */
static void expect_answer(int fd, const char *host, uint16_t port, const uint8_t *want_ip, size_t iplen) {
  uint8_t txid[DERP_STUN_TXID_LEN], req[DERP_STUN_REQUEST_LEN], buf[256], want[DERP_STUN_REPLY_MAX];
  random_txid(txid);
  derp_stun_request(req, txid);
  send_to(fd, host, port, req, sizeof req);
  ssize_t n = recv_within(fd, buf, sizeof buf, 3000);
  cr_assert_gt(n, 0, "no STUN reply from %s:%u", host, port);
  size_t wn = derp_stun_reply(want, sizeof want, txid, want_ip, iplen, local_port(fd));
  cr_assert_eq((size_t)n, wn, "reply of %zd bytes, want %zu", n, wn);
  cr_assert_arr_eq(buf, want, wn, "reply differs from derper's");
  uint8_t id[DERP_STUN_TXID_LEN], ip[16];
  size_t got_len = 0;
  uint16_t got_port = 0;
  cr_assert_eq(derp_stun_parse_response(buf, (size_t)n, id, ip, &got_len, &got_port), 0);
  cr_assert_arr_eq(id, txid, sizeof id);
  cr_assert_eq(got_port, local_port(fd));
}

static const uint8_t lo4[4] = {127, 0, 0, 1};
static const uint8_t lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

Test(e2e_stun, answers_ipv4, E2E) {
  uint16_t port = start_stun("127.0.0.1", 2, NULL);
  /* Several sockets: the kernel spreads them over both shards' sockets. */
  for (int i = 0; i < 8; i++) {
    int fd = udp_bound("127.0.0.1", 0, false);
    cr_assert_geq(fd, 0);
    expect_answer(fd, "127.0.0.1", port, lo4, 4);
    expect_answer(fd, "127.0.0.1", port, lo4, 4);
    close(fd);
  }
  cr_assert_eq(derpd_varz_eventually(&g_srv, "stun_requests{disposition=\"success\"}", 16, 2000), 16);
  cr_assert_eq(derpd_varz(&g_srv, "stun_addrfamily{family=\"ipv4\"}"), 16);
  cr_assert_eq(derpd_varz(&g_srv, "stun_addrfamily{family=\"ipv6\"}"), 0);
  cr_assert_eq(derpd_varz(&g_srv, "stun_requests{disposition=\"not_stun\"}"), 0);
  cr_assert(derpd_log_contains(&g_srv, "STUN on UDP 127.0.0.1:"), "no STUN line in the log");
}

Test(e2e_stun, answers_ipv6, E2E) {
  int probe = udp_bound("::1", 0, false);
  if (probe < 0) cr_skip_test("no IPv6 loopback here");
  close(probe);
  uint16_t port = start_stun("::1", 2, NULL);
  for (int i = 0; i < 4; i++) {
    int fd = udp_bound("::1", 0, false);
    cr_assert_geq(fd, 0);
    expect_answer(fd, "::1", port, lo6, 16);
    close(fd);
  }
  cr_assert_eq(derpd_varz_eventually(&g_srv, "stun_requests{disposition=\"success\"}", 4, 2000), 4);
  cr_assert_eq(derpd_varz(&g_srv, "stun_addrfamily{family=\"ipv6\"}"), 4);
  cr_assert_eq(derpd_varz(&g_srv, "stun_addrfamily{family=\"ipv4\"}"), 0);
}

/* An IPv6 socket that IPv4 clients reach (as [::]:3478 is for -a :443):
 * their address arrives IPv4-mapped. derper v1.78.3 answers with it as an
 * IPv6 address (family 2), which Tailscale clients unmap; derpd answers
 * with the IPv4 address itself (family 1), as RFC 5389 clients expect. */
Test(e2e_stun, ipv4_mapped_answered_as_ipv4, E2E) {
  uint16_t port = free_udp_port("127.0.0.1");
  char args[64];
  snprintf(args, sizeof args, "-stun-port=%u", port);
  if (derpd_start_on(&g_srv, 1, "::ffff:127.0.0.1", args) != 0)
    cr_skip_test("this kernel cannot bind an IPv6 socket to an IPv4-mapped address");
  int fd = udp_bound("127.0.0.1", 0, false);
  cr_assert_geq(fd, 0);
  expect_answer(fd, "127.0.0.1", port, lo4, 4);
  close(fd);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "stun_addrfamily{family=\"ipv4\"}", 1, 2000), 1);
}

/* Every kind of bad datagram, then a good one from the same socket (same
 * shard, handled in order): only the good one is answered. */
Test(e2e_stun, drops_and_counts, E2E) {
  uint16_t port = start_stun("127.0.0.1", 2, NULL);
  int fd = udp_bound("127.0.0.1", 0, false);
  cr_assert_geq(fd, 0);
  uint8_t txid[DERP_STUN_TXID_LEN], good[DERP_STUN_REQUEST_LEN], b[3000];
  random_txid(txid);
  derp_stun_request(good, txid);
  static const struct { const char *reason; int n; } want[] = {
      {"short", 2}, {"not_stun", 2}, {"not_binding", 1}, {"bad_fingerprint", 1},
      {"software", 2}, {"bad_attrs", 1}, {"no_fingerprint", 1}, {"oversized", 2},
  };
  send_to(fd, "127.0.0.1", port, good, 10);                    /* short */
  send_to(fd, "127.0.0.1", port, "", 0);                       /* short: empty */
  memcpy(b, good, sizeof good);
  b[5] ^= 1;                                                   /* the cookie */
  send_to(fd, "127.0.0.1", port, b, sizeof good);
  memset(b, 0x5a, 200);                                        /* garbage */
  send_to(fd, "127.0.0.1", port, b, 200);
  memcpy(b, good, sizeof good);
  b[1] = 0x11;                                                 /* a Binding Indication */
  send_to(fd, "127.0.0.1", port, b, sizeof good);
  memcpy(b, good, sizeof good);
  b[39] ^= 0xff;                                               /* FINGERPRINT */
  send_to(fd, "127.0.0.1", port, b, sizeof good);
  memcpy(b, good, sizeof good);
  b[27] = 'N';                                                 /* SOFTWARE "taiNnode", sealed again */
  uint32_t fp = derp_stun_fingerprint(b, 32);
  b[36] = (uint8_t)(fp >> 24), b[37] = (uint8_t)(fp >> 16), b[38] = (uint8_t)(fp >> 8), b[39] = (uint8_t)fp;
  send_to(fd, "127.0.0.1", port, b, sizeof good);
  uint8_t bare[20];                                            /* plain RFC 5389: no SOFTWARE */
  memcpy(bare, good, 20);
  bare[2] = bare[3] = 0;
  send_to(fd, "127.0.0.1", port, bare, sizeof bare);
  memcpy(b, good, sizeof good);
  b[22] = 0x40;                                                /* SOFTWARE's length: 16392 */
  send_to(fd, "127.0.0.1", port, b, sizeof good);
  send_to(fd, "127.0.0.1", port, good, 32);                    /* no FINGERPRINT */
  memset(b, 0, sizeof b);                                      /* 1501 and 3000 bytes */
  memcpy(b, good, sizeof good);
  send_to(fd, "127.0.0.1", port, b, DERP_STUN_REQUEST_MAX + 1);
  send_to(fd, "127.0.0.1", port, b, sizeof b);
  /* The good one: its answer is the only datagram back. */
  send_to(fd, "127.0.0.1", port, good, sizeof good);
  uint8_t r[256];
  ssize_t n = recv_within(fd, r, sizeof r, 3000);
  cr_assert_eq(n, 32, "no answer to the good request (or another datagram: %zd bytes)", n);
  cr_assert_arr_eq(r + 8, txid, DERP_STUN_TXID_LEN, "answered something else first");
  cr_assert_lt(recv_within(fd, r, sizeof r, 200), 0, "a second datagram came back");
  int total = 0;
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char name[96];
    snprintf(name, sizeof name, "derpd_stun_dropped{reason=\"%s\"}", want[i].reason);
    cr_assert_eq(derpd_varz(&g_srv, name), want[i].n, "%s", name);
    total += want[i].n;
  }
  cr_assert_eq(derpd_varz(&g_srv, "stun_requests{disposition=\"not_stun\"}"), total);
  cr_assert_eq(derpd_varz_eventually(&g_srv, "stun_requests{disposition=\"success\"}", 1, 2000), 1);
  cr_assert_eq(derpd_varz(&g_srv, "stun_requests{disposition=\"write_error\"}"), 0);
  cr_assert_eq(derpd_varz(&g_srv, "stun_requests{disposition=\"read_error\"}"), 0);
  close(fd);
}

Test(e2e_stun, generic_mode, E2E) {
  uint16_t port = start_stun("127.0.0.1", 1, "--stun-generic");
  int fd = udp_bound("127.0.0.1", 0, false);
  cr_assert_geq(fd, 0);
  uint8_t bare[20] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42};
  random_txid(bare + 8);
  send_to(fd, "127.0.0.1", port, bare, sizeof bare);
  uint8_t r[256], id[DERP_STUN_TXID_LEN], ip[16];
  size_t iplen = 0;
  uint16_t rport = 0;
  ssize_t n = recv_within(fd, r, sizeof r, 3000);
  cr_assert_eq(n, 32, "plain RFC 5389 request not answered with --stun-generic");
  cr_assert_eq(derp_stun_parse_response(r, (size_t)n, id, ip, &iplen, &rport), 0);
  cr_assert_arr_eq(id, bare + 8, DERP_STUN_TXID_LEN);
  cr_assert_eq(iplen, 4);
  cr_assert_eq(rport, local_port(fd));
  /* USERNAME is for an ICE peer, not for us. */
  uint8_t user[28];
  memcpy(user, bare, 20);
  user[3] = 8;
  memcpy(user + 20, "\x00\x06\x00\x04" "user", 8);
  send_to(fd, "127.0.0.1", port, user, sizeof user);
  expect_answer(fd, "127.0.0.1", port, lo4, 4); /* Tailscale's still answered, in order */
  cr_assert_eq(derpd_varz(&g_srv, "derpd_stun_dropped{reason=\"unknown_attr\"}"), 1);
  close(fd);
}

static void expect_refused_port(int holder, const char *why) {
  char args[64];
  snprintf(args, sizeof args, "-stun-port=%u", local_port(holder));
  cr_assert_neq(derpd_start(&g_srv, 1, args), 0, "derpd started on a STUN port in use (%s)", why);
  cr_assert(derpd_log_contains(&g_srv, "Address already in use"), "no clear message (%s)", why);
  cr_assert(derpd_log_contains(&g_srv, "-stun-port"), "the message does not name -stun-port (%s)", why);
  derpd_kill(&g_srv);
}

Test(e2e_stun, port_in_use_stops_start, E2E) {
  int holder = udp_bound("127.0.0.1", 0, false);
  cr_assert_geq(holder, 0);
  expect_refused_port(holder, "a plain socket");
  close(holder);
  /* A holder in a SO_REUSEPORT group of its own (another derpd): the
   * shards' group would share the port with it; derpd must refuse. */
  holder = udp_bound("127.0.0.1", 0, true);
  cr_assert_geq(holder, 0);
  expect_refused_port(holder, "SO_REUSEPORT");
  close(holder);
}

Test(e2e_stun, off, E2E) {
  uint16_t port = free_udp_port("127.0.0.1");
  char args[64];
  snprintf(args, sizeof args, "-stun=false -stun-port=%u", port);
  e2e_start(&g_srv, 1, args);
  cr_assert(derpd_log_contains(&g_srv, "STUN off"));
  int fd = udp_bound("127.0.0.1", port, false);
  cr_assert_geq(fd, 0, "the STUN port is bound although -stun=false");
  close(fd);
}

/* ---- a flood ---- */

#define FLOOD_DATAGRAMS 200000
#define FLOOD_MS 5000
#define FLOOD_SOCKETS 4

struct flood {
  uint16_t port;
  int sent;
  int done; /* atomic accesses only */
};

/* Garbage of every length 0..99 from several sockets (several shards), in
 * batches of 64, until FLOOD_DATAGRAMS are out or FLOOD_MS pass. */
static void *flood_run(void *arg) {
  struct flood *f = arg;
  int fds[FLOOD_SOCKETS];
  for (int i = 0; i < FLOOD_SOCKETS; i++) fds[i] = udp_bound("127.0.0.1", 0, false);
  struct sockaddr_storage ss;
  socklen_t len;
  udp_addr("127.0.0.1", f->port, &ss, &len);
  static uint8_t bufs[64][100];
  struct mmsghdr msgs[64];
  struct iovec iov[64];
  for (int i = 0; i < 64; i++) {
    for (int j = 0; j < 100; j++) bufs[i][j] = (uint8_t)random();
    iov[i] = (struct iovec){bufs[i], (size_t)(i * 37) % 100};
    msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_name = &ss, .msg_namelen = len, .msg_iov = &iov[i], .msg_iovlen = 1}};
  }
  int64_t end = e2e_now_ms() + FLOOD_MS;
  for (int round = 0; f->sent < FLOOD_DATAGRAMS && e2e_now_ms() < end; round++) {
    int r = sendmmsg(fds[round % FLOOD_SOCKETS], msgs, 64, 0);
    if (r > 0) f->sent += r;
    else if (errno == ENOBUFS || errno == EAGAIN) e2e_sleep_ms(1);
  }
  for (int i = 0; i < FLOOD_SOCKETS; i++) close(fds[i]);
  __atomic_store_n(&f->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

Test(e2e_stun, flood_while_relaying, E2E) {
  uint16_t port = start_stun("127.0.0.1", 2, NULL);
  struct derp_client *a = e2e_client(&g_srv, NULL, false);
  struct derp_client *b = e2e_client(&g_srv, NULL, false);
  e2e_sync_route(a, b);
  struct flood f = {.port = port};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, flood_run, &f), 0);
  int rounds = 0;
  int64_t worst = 0;
  while (!__atomic_load_n(&f.done, __ATOMIC_ACQUIRE)) {
    int64_t ms = e2e_relay_check(a, b, 64);
    if (ms > worst) worst = ms;
    rounds++;
  }
  pthread_join(th, NULL);
  cr_log_info("flood: %d datagrams; %d relay rounds of 64 packets meanwhile, the slowest %lld ms",
              f.sent, rounds, (long long)worst);
  cr_assert_gt(rounds, 0);
  cr_assert_gt(f.sent, 10000, "the flood sent only %d datagrams", f.sent);
  /* STUN still answers (the socket queue drains first). */
  int fd = udp_bound("127.0.0.1", 0, false);
  cr_assert_geq(fd, 0);
  expect_answer(fd, "127.0.0.1", port, lo4, 4);
  close(fd);
  e2e_relay_check(a, b, 100);
  long long dropped = derpd_varz(&g_srv, "stun_requests{disposition=\"not_stun\"}");
  cr_log_info("flood: %lld read and dropped by derpd (the rest the kernel dropped)", dropped);
  cr_assert(dropped > 0 && dropped <= f.sent, "%lld counted of %d sent", dropped, f.sent);
  cr_assert(derpd_alive(&g_srv));
}

/* ---- a live upgrade ---- */

struct asker {
  uint16_t port;
  _Atomic bool stop;
  _Atomic int ok, failed;
};

/* A Tailscale request every 2 ms, each waiting up to 2 s for its answer. */
static void *ask_main(void *arg) {
  struct asker *k = arg;
  int fd = udp_bound("127.0.0.1", 0, false);
  while (fd >= 0 && !atomic_load(&k->stop)) {
    uint8_t txid[DERP_STUN_TXID_LEN], req[DERP_STUN_REQUEST_LEN], r[256];
    random_txid(txid);
    derp_stun_request(req, txid);
    struct sockaddr_storage ss;
    socklen_t len;
    udp_addr("127.0.0.1", k->port, &ss, &len);
    sendto(fd, req, sizeof req, 0, (struct sockaddr *)&ss, len);
    ssize_t n = recv_within(fd, r, sizeof r, 2000);
    if (n == 32 && memcmp(r + 8, txid, DERP_STUN_TXID_LEN) == 0) atomic_fetch_add(&k->ok, 1);
    else atomic_fetch_add(&k->failed, 1);
    e2e_sleep_ms(2);
  }
  if (fd >= 0) close(fd);
  return NULL;
}

Test(e2e_stun, live_upgrade_keeps_answering, E2E) {
  prctl(PR_SET_CHILD_SUBREAPER, 1); /* the new derpd is orphaned to us */
  uint16_t port = start_stun("127.0.0.1", 2, NULL);
  pid_t old = g_srv.pid;
  struct asker k = {.port = port};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, ask_main, &k), 0);
  e2e_sleep_ms(300);
  cr_assert_gt(atomic_load(&k.ok), 0, "no answer before the upgrade");
  cr_assert_eq(kill(old, SIGUSR2), 0);
  int status = -1;
  cr_assert_eq(derpd_wait(&g_srv, 15000, &status), 0, "the old process did not exit");
  cr_assert_eq(status, 0, "the old process exited with %d", status);
  int at_exit = atomic_load(&k.ok);
  e2e_sleep_ms(300);
  atomic_store(&k.stop, true);
  pthread_join(th, NULL);
  g_new_pid = derpd_new_pid(&g_srv, old);
  cr_assert(g_new_pid > 0 && kill(g_new_pid, 0) == 0, "no new process");
  cr_assert_gt(atomic_load(&k.ok), at_exit, "no answer from the new process");
  cr_assert_eq(atomic_load(&k.failed), 0, "%d of %d requests unanswered across the upgrade",
               atomic_load(&k.failed), atomic_load(&k.ok) + atomic_load(&k.failed));
  cr_assert(derpd_log_contains(&g_srv, "STUN on UDP 127.0.0.1:"), "no STUN line");
}
