/* test_region_fake.c: one derpd node linked to a fake node, a scripted
 * DERP server in this process that plays a misbehaving region member.
 *
 * Owns what a link must survive from the node at its other end: one that
 * stops reading (the link is cut after 5 s and dialled again, local pairs
 * relay on, its queue stays within its bounds in packets and bytes), one that stops answering while its kernel still ACKs (cut
 * after a keepalive interval without a frame), one that floods PeerPresent
 * faster than the shards take it in (the link's reads stop, nothing is
 * lost), PeerGone from a node that is not the key's forwarder (derper's
 * delete_other count), and a key on more nodes than a remote entry lists.
 *
 * Not Criterion, as test_region.c (whose region_util.c it shares); one
 * meson test per case. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "derp/frame.h"
#include "e2e_util.h"
#include "region_util.h"

/* A fake node that derpd dials: it says key K is present, then never reads. */
struct fake_node {
  int lfd, fd;
  uint16_t port;
  derp_privkey priv;
  derp_key pub, k;
  int accepts;
};

static int read_frame(int fd, uint8_t *buf, size_t cap, uint8_t *type, uint32_t *len) {
  uint8_t h[5];
  if (raw_read_at_least(fd, h, 5, 5, 5000) < 5) return -1;
  *type = h[0];
  *len = derp_get_be32(h + 1);
  if (*len > cap) return -1;
  return raw_read_at_least(fd, buf, cap, *len, 5000) >= *len ? 0 : -1;
}

static void fake_accept(struct fake_node *f) {
  f->fd = accept(f->lfd, NULL, NULL);
  cr_assert_geq(f->fd, 0);
  f->accepts++;
  char req[4096] = "";
  size_t got = 0;
  while (got < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
    ssize_t r = read(f->fd, req + got, sizeof req - 1 - got);
    cr_assert(r > 0, "fake node: no HTTP request");
    got += (size_t)r;
    req[got] = 0;
  }
  uint8_t out[512];
  const char *resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n";
  cr_assert_eq(raw_write_all(f->fd, resp, strlen(resp)), 0);
  size_t n = derp_enc_server_key(out, sizeof out, &f->pub);
  cr_assert_eq(raw_write_all(f->fd, out, n), 0);
  static uint8_t ci[8192];
  uint8_t type;
  uint32_t len;
  cr_assert_eq(read_frame(f->fd, ci, sizeof ci, &type, &len), 0);
  cr_assert_eq(type, DERP_FRAME_CLIENT_INFO);
  derp_key client;
  memcpy(client.b, ci, DERP_KEY_LEN);
  struct derp_server_info si = {.version = 2};
  size_t sl = derp_server_info_seal(out + 5, sizeof out - 5, &f->priv, &client, &si);
  cr_assert(sl > 0);
  derp_frame_put_header(out, DERP_FRAME_SERVER_INFO, (uint32_t)sl);
  cr_assert_eq(raw_write_all(f->fd, out, 5 + sl), 0);
  cr_assert_eq(read_frame(f->fd, ci, sizeof ci, &type, &len), 0);
  cr_assert_eq(type, DERP_FRAME_WATCH_CONNS, "the link did not send WatchConns first");
  uint8_t pp[5 + DERP_KEY_LEN];
  derp_frame_put_header(pp, DERP_FRAME_PEER_PRESENT, DERP_KEY_LEN);
  memcpy(pp + 5, f->k.b, DERP_KEY_LEN);
  cr_assert_eq(raw_write_all(f->fd, pp, sizeof pp), 0);
  int small = 4096; /* a small window, so the stall shows quickly */
  setsockopt(f->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
}

/* A fake node listening on loopback, with a key of its own to announce. */
static void fake_listen(struct fake_node *f) {
  memset(f, 0, sizeof *f);
  derp_key_generate(&f->priv, &f->pub);
  e2e_random_key(&f->k);
  f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  socklen_t sl = sizeof sa;
  getsockname(f->lfd, (struct sockaddr *)&sa, &sl);
  f->port = ntohs(sa.sin_port);
  cr_assert_eq(listen(f->lfd, 8), 0);
}

/* The one derpd node's region (g_r): its directory, mesh key and port. */
static void region_of_one(void) {
  struct region *r = &g_r;
  memset(r, 0, sizeof *r);
  r->n = 1;
  snprintf(r->dir, sizeof r->dir, "/tmp/derpd-region-XXXXXX");
  cr_assert_not_null(mkdtemp(r->dir));
  snprintf(r->key_file, sizeof r->key_file, "%.100s/mesh.key", r->dir);
  make_key_file(r->key_file);
  cr_assert_eq(e2e_pick_port(&r->port[0]), 0);
}

/* A fake node, and one derpd node (g_r) with a mesh key that will dial it;
 * returns the fake node. */
static struct fake_node fake_node_up(void) {
  struct fake_node f;
  fake_listen(&f);
  region_of_one();
  return f;
}

/* fake_node_up, then the node (`shards` shards, `extra` flags) dials it and
 * the fake node says its key f.k is present there. One shard unless the
 * test is about shards: a flood and a local pair then share no inter-shard
 * ring, whose drops (shard_queue) under a saturating local sender are
 * policy, not what these tests look at. */
static struct fake_node fake_node_linked_on(int shards, const char *extra) {
  struct fake_node f = fake_node_up();
  struct region *r = &g_r;
  char args[600];
  snprintf(args, sizeof args, "-mesh-psk-file %.200s -mesh-with http://127.0.0.1:%u %s", r->key_file, f.port, extra);
  cr_assert_eq(derpd_start_port(&r->node[0], shards, r->port[0], args), 0);
  fake_accept(&f);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 1, 5000), 1);
  return f;
}

static struct fake_node fake_node_linked(const char *extra) { return fake_node_linked_on(1, extra); }

static void test_stalled_link(void) {
  struct fake_node f = fake_node_linked("");
  struct region *r = &g_r;
  /* Flood the stalled link while a local pair relays. */
  struct derp_client *s = client_on(0, NULL), *a = client_on(0, NULL), *b = client_on(0, NULL);
  e2e_sync_route(a, b);
  static uint8_t pkt[1200];
  int64_t t0 = e2e_now_ms();
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 2000; i++) cr_assert_eq(derp_client_send(s, &f.k, pkt, sizeof pkt), 0);
    int64_t t = e2e_relay_check(a, b, 20);
    cr_assert(t < 2000, "local relay slowed to %lld ms for 20 packets", (long long)t);
  }
  cr_assert(e2e_now_ms() - t0 < 20000);
  long long drops = derpd_varz(&r->node[0], "derp_packets_dropped_reason{reason=\"mesh_queue\"}");
  cr_assert(drops > 0, "the link's queue never filled (drops %lld)", drops);
  /* Cut after 5 s without progress (derper's for its mesh client's
   * ForwardPacket), then dialled again. */
  long long wt = derpd_varz_eventually(&r->node[0], "derpd_conn_closed{reason=\"write_timeout\"}", 1, 15000);
  cr_assert_eq(wt, 1, "the stalled link was not cut (write timeouts: %lld)", wt);
  e2e_relay_check(a, b, 50);
  close(f.fd);
  f.fd = accept(f.lfd, NULL, NULL); /* the redial */
  cr_assert_geq(f.fd, 0, "derpd did not dial again");
  close(f.fd);
  close(f.lfd);
}

/* The same stalled link with full-size packets: its queue is bounded in
 * bytes too (LINK_QUEUE_KIB, 8 MiB), not only in packets (2048 of 64 KiB
 * would pin 128 MiB), so 1000 of them mostly drop. */
static void test_stalled_link_bytes(void) {
  struct fake_node f = fake_node_linked("");
  struct region *r = &g_r;
  struct derp_client *s = client_on(0, NULL);
  static uint8_t pkt[DERP_MAX_PACKET];
  for (int i = 0; i < 1000; i++) cr_assert_eq(derp_client_send(s, &f.k, pkt, sizeof pkt), 0);
  long long in = derpd_varz_eventually(r->node, "derp_packets_received", 1000, 5000);
  cr_assert_eq(in, 1000, "derpd read %lld of the 1000 packets", in);
  long long drops = derpd_varz(r->node, "derp_packets_dropped_reason{reason=\"mesh_queue\"}");
  /* At most 8 MiB queued, a 256 KiB send and the kernel's buffers (a few
   * MiB) hold the rest; with a bound in packets only, none would drop. */
  cr_assert(drops >= 700, "%lld of 1000 full-size packets dropped; want >= 700", drops);
  cr_assert(drops < 1000, "every packet dropped (%lld): the link took none", drops);
  /* derper v1.80+'s families: ForwardPackets dropped, counted by their payload. */
  long long bytes = derpd_varz(r->node, "derp_bytes_dropped{reason=\"mesh_queue\",kind=\"other\"}");
  cr_assert_eq(derpd_varz(r->node, "derp_packets_dropped{reason=\"mesh_queue\",kind=\"other\"}"), drops);
  cr_assert_eq(bytes, drops * (long long)sizeof pkt, "%lld bytes dropped for %lld packets", bytes, drops);
  close(f.fd);
  close(f.lfd);
}

/* The fake node says PeerGone(key, disconnected). */
static void fake_gone(struct fake_node *f, const derp_key *k) {
  uint8_t pg[5 + DERP_KEY_LEN + 1];
  derp_frame_put_header(pg, DERP_FRAME_PEER_GONE, DERP_KEY_LEN + 1);
  memcpy(pg + 5, k->b, DERP_KEY_LEN);
  pg[5 + DERP_KEY_LEN] = DERP_PEER_GONE_DISCONNECTED;
  cr_assert_eq(raw_write_all(f->fd, pg, sizeof pg), 0);
}

/* derper's derp_packet_forwarder_delete_other_value: a PeerGone from a node
 * that is not the key's forwarder, for a key this node knows (its own
 * client, here); one for a key nobody knows is not counted. */
static void test_delete_other(void) {
  struct fake_node f = fake_node_linked("");
  struct region *r = &g_r;
  derp_privkey lp;
  struct derp_client *l = client_on(0, &lp);
  (void)l;
  derp_key lk = pub_of(&lp), unknown;
  e2e_random_key(&unknown);
  const char *other = "derp_packet_forwarder_delete_other_value", *applied = "derpd_mesh_presence_applied";
  long long a0 = derpd_varz(&r->node[0], applied);
  fake_gone(&f, &lk);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], applied, a0 + 1, 5000), a0 + 1);
  cr_assert_eq(derpd_varz(&r->node[0], other), 1, "a PeerGone for a local key from a non-forwarder");
  fake_gone(&f, &unknown);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], applied, a0 + 2, 5000), a0 + 2);
  cr_assert_eq(derpd_varz(&r->node[0], other), 1, "a PeerGone for a key nobody knows was counted");
  fake_gone(&f, &f.k); /* its forwarder says it went: gone from the region */
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 0, 5000), 0);
  cr_assert_eq(derpd_varz(&r->node[0], other), 1);
  close(f.fd);
  close(f.lfd);
}

/* n fake nodes, and one derpd node (one shard) that dials them all; each
 * says its key is present (k: all the same key). */
static void fakes_linked(struct fake_node *f, int n, const derp_key *k) {
  struct region *r = &g_r;
  region_of_one();
  char list[16 * 32] = "", args[16 * 32 + 300];
  cr_assert_leq(n, 16);
  size_t len = 0;
  for (int i = 0; i < n; i++) {
    fake_listen(&f[i]);
    if (k) f[i].k = *k;
    len += (size_t)snprintf(list + len, sizeof list - len, "%shttp://127.0.0.1:%u", i ? "," : "", f[i].port);
  }
  snprintf(args, sizeof args, "-mesh-psk-file %.200s -mesh-with %s", r->key_file, list);
  cr_assert_eq(derpd_start_port(&r->node[0], 1, r->port[0], args), 0);
  for (int i = 0; i < n; i++) fake_accept(&f[i]);
}

/* A link's drop takes what it said was present, and is no PeerGone from a
 * non-forwarder for the keys of other links (it counted one
 * derp_packet_forwarder_delete_other_value for each of them). */
static void test_link_drop_is_not_delete_other(void) {
  struct fake_node f[2];
  struct region *r = &g_r;
  fakes_linked(f, 2, NULL);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 2, 5000), 2);
  close(f[0].fd);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 1, 5000), 1);
  cr_assert_eq(derpd_varz(&r->node[0], "derp_packet_forwarder_delete_other_value"), 0);
  close(f[0].lfd);
  close(f[1].fd);
  close(f[1].lfd);
}

/* A key on more nodes than a remote entry lists (FWD_MAX, 8): ten nodes
 * say K is present, then the first eight say it went. K is still on two, so
 * it stays remote and packets to it go out (the 9th and 10th were dropped:
 * K was taken for gone from the region, its senders told PeerGone). */
static void test_many_forwarders(void) {
  enum { NODES = 10 };
  static struct fake_node f[NODES];
  struct region *r = &g_r;
  derp_key k;
  e2e_random_key(&k);
  fakes_linked(f, NODES, &k);
  const char *applied = "derpd_mesh_presence_applied";
  cr_assert_eq(derpd_varz_eventually(&r->node[0], applied, NODES, 5000), NODES);
  cr_assert_eq(derpd_varz(&r->node[0], "derp_clients_remote"), 1);
  for (int i = 0; i < 8; i++) fake_gone(&f[i], &k);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], applied, NODES + 8, 5000), NODES + 8);
  cr_assert_eq(derpd_varz(&r->node[0], "derp_clients_remote"), 1, "K is on two nodes still");
  struct derp_client *c = client_on(0, NULL);
  static const uint8_t pl[100];
  cr_assert_eq(derp_client_send(c, &k, pl, sizeof pl), 0);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_packets_forwarded_out", 1, 5000), 1,
               "the packet to K was not forwarded");
  for (int i = 8; i < NODES; i++) fake_gone(&f[i], &k);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 0, 5000), 0);
  for (int i = 0; i < NODES; i++) {
    close(f[i].fd);
    close(f[i].lfd);
  }
}

/* A node that stops answering (SIGSTOP, a black hole) while its kernel still
 * ACKs: derpd's Pings go unanswered and the link is cut after an interval. */
static void test_hung_link(void) {
  /* It answers the handshake, says K is present, then nothing. */
  struct fake_node f = fake_node_linked("--keepalive-interval 1s");
  struct region *r = &g_r;
  long long cut = derpd_varz_eventually(&r->node[0], "derpd_conn_closed{reason=\"link_silent\"}", 1, 8000);
  cr_assert_eq(cut, 1, "the hung link was not cut");
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 0, 3000), 0,
               "what the hung node forwarded is still listed");
  close(f.fd);
  close(f.lfd);
}

/* A node that floods PeerPresent for new keys faster than the owner shard
 * takes them in (a shard drains 256 region messages per source and turn; a
 * 64 KiB read brings 1771 frames, half of them for the other shard): the
 * link's reads stop while OUTBOX_PAUSE messages wait for ring space, so
 * what waits stays bounded, nothing is lost, and local pairs relay on. */
static void test_presence_flood(void) {
  struct fake_node f = fake_node_linked_on(2, "");
  struct region *r = &g_r;
  struct derp_client *a = client_on(0, NULL), *b = client_on(0, NULL);
  e2e_sync_route(a, b);
  const int n = sanitized() ? 100000 : 300000;
  const size_t fl = 5 + DERP_KEY_LEN;
  uint8_t *buf = malloc((size_t)n * fl);
  cr_assert_not_null(buf);
  for (int i = 0; i < n; i++) {
    uint8_t *p = buf + (size_t)i * fl;
    derp_frame_put_header(p, DERP_FRAME_PEER_PRESENT, DERP_KEY_LEN);
    derp_key k;
    e2e_random_key(&k);
    memcpy(p + 5, k.b, DERP_KEY_LEN);
  }
  cr_assert_eq(raw_write_all(f.fd, buf, (size_t)n * fl), 0);
  free(buf);
  long long want = n + 1; /* and f.k */
  long long got = derpd_varz_eventually(&r->node[0], "derp_clients_remote", want, 60000);
  cr_assert_eq(got, want, "remote keys %lld after the flood, want %lld: presence lost", got, want);
  cr_assert_eq(count_in_log(&r->node[0], "region messages waiting for ring space"), 0,
               "the outbox grew past 65536 messages");
  long long paused = derpd_varz(&r->node[0], "derpd_mesh_reads_paused");
  cr_assert(paused > 0, "the link's reads never stopped: the outbox was never full");
  cr_assert_eq(derpd_varz(&r->node[0], "derpd_region_outbox_messages"), 0);
  e2e_relay_check(a, b, 20);
  close(f.fd);
  close(f.lfd);
}

/* A node that sends frames too short for their type (PeerPresent, PeerGone,
 * Restarting), longer than today's (fields a newer server might append), and
 * Health and Restarting in a loop: the short ones are dropped and the long
 * ones read from the front, as derper's client does; the link stays up, what
 * comes after is applied, and the log gets a line per 10 s, not per frame. */
static void test_odd_frames(void) {
  struct fake_node f = fake_node_linked("");
  struct region *r = &g_r;
  static uint8_t buf[4000 * 16 + 64];
  size_t n = 0;
  const uint8_t short_types[] = {DERP_FRAME_PEER_PRESENT, DERP_FRAME_PEER_GONE, DERP_FRAME_RESTARTING};
  for (size_t i = 0; i < sizeof short_types; i++) {
    derp_frame_put_header(buf + n, short_types[i], 3);
    memcpy(buf + n + 5, "abc", 3);
    n += 8;
  }
  for (int i = 0; i < 2000; i++) {
    /* The first is logged: its newline must not forge a log line. */
    n += derp_enc_health(buf + n, sizeof buf - n, i ? "bad" : "bad\nERROR forged");
    n += derp_enc_restarting(buf + n, sizeof buf - n, 1000, 30000);
  }
  derp_key k2, k3;
  e2e_random_key(&k2);
  e2e_random_key(&k3);
  derp_frame_put_header(buf + n, DERP_FRAME_PEER_PRESENT, DERP_KEY_LEN);
  memcpy(buf + n + 5, k2.b, DERP_KEY_LEN);
  n += 5 + DERP_KEY_LEN;
  /* Long ones: k3 present in 600 bytes, then gone in 65, then Restarting in 100. */
  derp_frame_put_header(buf + n, DERP_FRAME_PEER_PRESENT, 600);
  memcpy(buf + n + 5, k3.b, DERP_KEY_LEN);
  n += 5 + 600;
  cr_assert(n <= sizeof buf);
  cr_assert_eq(raw_write_all(f.fd, buf, n), 0);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 3, 5000), 3,
               "the PeerPresent frames after the odd frames were not applied");
  n = 0;
  derp_frame_put_header(buf + n, DERP_FRAME_PEER_GONE, 65);
  memcpy(buf + n + 5, k3.b, DERP_KEY_LEN);
  n += 5 + 65;
  derp_frame_put_header(buf + n, DERP_FRAME_RESTARTING, 100);
  n += 5 + 100;
  cr_assert_eq(raw_write_all(f.fd, buf, n), 0);
  cr_assert_eq(derpd_varz_eventually(&r->node[0], "derp_clients_remote", 2, 5000), 2,
               "the long PeerGone was not applied");
  cr_assert_eq(derpd_varz(&r->node[0], "derpd_unknown_frames"), 3, "the short frames were not dropped and counted");
  cr_assert_eq(derpd_varz(&r->node[0], "derpd_conn_closed{reason=\"bad_frame_length\"}"), 0, "the link was cut");
  int lines = count_in_log(&r->node[0], "the node sent");
  cr_assert(lines >= 1 && lines <= 2, "%d log lines for 4000 Health and Restarting frames", lines);
  cr_assert_eq(count_in_log(&r->node[0], "bad\\x0aERROR forged"), 1, "the Health text was not escaped");
  close(f.fd);
  close(f.lfd);
}

int main(int argc, char **argv) {
  e2e_test_init();
  static const struct mini_test tests[] = {
      {"stalled_link", test_stalled_link},
      {"stalled_link_bytes", test_stalled_link_bytes},
      {"delete_other", test_delete_other},
      {"many_forwarders", test_many_forwarders},
      {"link_drop_is_not_delete_other", test_link_drop_is_not_delete_other},
      {"hung_link", test_hung_link},
      {"presence_flood", test_presence_flood},
      {"odd_frames", test_odd_frames},
  };
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, region_teardown);
}
