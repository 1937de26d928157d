/* test_region.c: regions of derpd nodes on loopback, end to end.
 *
 * Owns the region contract as clients and operators see it: every ordered
 * pair of nodes relays both ways in order (64 KiB packets and sizes at the
 * edges of derpd's buffers too), over plain
 * links and TLS links (self-signed, trusted through SSL_CERT_FILE); a client
 * that moves between nodes keeps receiving, and its contacts hear PeerGone
 * when it leaves the region, not when it leaves a node; a node killed with SIGKILL costs
 * its clients a reconnect, and its keys leave the others (PeerGone to their
 * senders); a ForwardPacket is never forwarded twice; after churn every
 * node's remote view and every watcher's view equal the truth; a wrong mesh
 * key is refused, logged once and retried; a mesh peer that stops reading is
 * cut after 30 s without slowing local pairs; ClosePeer closes exactly its
 * key; a node serving plain HTTP links to one serving TLS and back. What a
 * misbehaving node at the other end of a link does is test_region_fake.c's.
 *
 * Not Criterion: the TLS region links BoringSSL (libderp_tls), which clashes
 * with the OpenSSL that Criterion loads. Each test starts its own nodes;
 * meson runs the tests as separate processes (argv[1] picks one), so slow ones
 * overlap. */
#define MINI_TEST_MAIN
#include "mini_test.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "derp/client_tls.h"
#include "e2e_util.h"
#include "region_util.h"

/* ---- relay across the region --------------------------------------------- */

static void all_pairs(bool tls) {
  region_up(3, tls, false);
  if (tls) wait_links_logged(2);
  else wait_meshed(2);
  /* TLS nodes know their own entry by -hostname and port (localhost:PORT),
   * undialled; plain ones (http://127.0.0.1:PORT) by its server key. */
  for (int i = 0; tls && i < 3; i++)
    cr_assert_eq(count_in_log(&g_r.node[i], "is this node (its -hostname and port): not dialled"), 1,
                 "node %d: own entry not known by name", i);
  struct derp_client *c[3];
  for (int i = 0; i < 3; i++) c[i] = client_on(i, NULL);
  for (int i = 0; i < 3; i++) {
    for (int j = 0; j < 3; j++) {
      e2e_sync_route(c[i], c[j]); /* waits for the mesh to learn the key */
      e2e_relay_check(c[i], c[j], 100);
      send_sizes(c[i], c[j]);
    }
  }
  if (!tls) {
    /* Each node's list names it too: that entry is found and has no series,
     * so an alert on "link up == 0" hears only real links. */
    for (int i = 0; i < 3; i++) {
      char own[96];
      snprintf(own, sizeof own, "derpd_mesh_link_up{peer=\"http://127.0.0.1:%u\"}", g_r.port[i]);
      cr_assert_eq(derpd_varz_eventually(&g_r.node[i], own, -1, 10000), -1, "node %d: its own entry has a series", i);
      cr_assert_eq(derpd_varz_sum(&g_r.node[i], "derpd_mesh_link_up"), 2, "node %d: links up", i);
      cr_assert_eq(count_in_log(&g_r.node[i], "is this node (same server key)"), 1, "node %d: own entry not logged once", i);
    }
    long long in = 0, out = 0;
    for (int i = 0; i < 3; i++) {
      in += derpd_varz(&g_r.node[i], "derp_packets_forwarded_in");
      out += derpd_varz(&g_r.node[i], "derp_packets_forwarded_out");
    }
    cr_assert_geq(in, 6 * 101, "forwarded in: %lld", in);
    cr_assert_eq(in, out, "every packet forwarded out came in: out %lld, in %lld", out, in);
  }
}

static void test_relay_plain(void) { all_pairs(false); }
static void test_relay_tls(void) { all_pairs(true); }
static void test_relay_tls_certdir(void) {
  g_cert_dir = true;
  all_pairs(true);
}

/* A plain node links to a TLS node (an https entry) and the TLS node to the
 * plain one (http): the plain node used to crash adopting its TLS link, as
 * its BIO method was made only when serving TLS. */
static void test_relay_mixed(void) {
  g_mixed = true;
  region_up(2, false, false);
  wait_links_logged(1);
  struct derp_client *c[2] = {client_on(0, NULL), client_on(1, NULL)};
  for (int i = 0; i < 2; i++) {
    e2e_sync_route(c[i], c[1 - i]);
    e2e_relay_check(c[i], c[1 - i], 100);
    send_sizes(c[i], c[1 - i]);
  }
  cr_assert(derpd_alive(&g_r.node[0]) && derpd_alive(&g_r.node[1]));
}

/* K moves from node 0 to node 2 while S on node 1 keeps sending. */
static void test_client_moves(void) {
  region_up(3, false, false);
  wait_meshed(2);
  derp_privkey kp;
  struct derp_client *s = client_on(1, NULL);
  struct derp_client *k = client_on(0, &kp);
  e2e_sync_route(s, k);
  close_client(k);
  struct derp_client *k2 = connect_as(2, &kp, NULL);
  int64_t t0 = e2e_now_ms();
  e2e_sync_route(s, k2);
  cr_assert(e2e_now_ms() - t0 < 5000, "took %lld ms to reach the moved client", (long long)(e2e_now_ms() - t0));
  e2e_relay_check(s, k2, 200);
}

/* Whether c hears PeerGone about k within ms (other frames are skipped). */
static bool hears_gone(struct derp_client *c, const derp_key *k, int ms) {
  int64_t deadline = e2e_now_ms() + ms;
  struct derp_client_msg m;
  while (e2e_now_ms() < deadline) {
    int r = derp_client_recv_packet(c, &m, (int)(deadline - e2e_now_ms()));
    cr_assert_geq(r, 0, "the client lost its connection");
    if (r == 1 && m.type == DERP_FRAME_PEER_GONE && memcmp(m.src.b, k->b, DERP_KEY_LEN) == 0) return true;
  }
  return false;
}

/* Node `to` has applied every PeerPresent/PeerGone that node `from` made
 * (two nodes: one watcher each), and `from` made more than `made_before`. */
static long long presence_synced(int from, int to, long long made_before) {
  long long made = -1, applied = -2;
  for (int64_t end = e2e_now_ms() + 5000; e2e_now_ms() < end; usleep(10000)) {
    made = derpd_varz(&g_r.node[from], "derpd_mesh_presence_frames");
    applied = derpd_varz(&g_r.node[to], "derpd_mesh_presence_applied");
    if (made > made_before && applied == made) return made;
  }
  cr_assert(false, "node %d applied %lld of node %d's %lld presence frames (before: %lld)", to, applied, from,
            made, made_before);
  return -1;
}

/* K is on node 1 too before its conn on node 0 closes (a client moving to
 * another node): K has not left the region, so S, which got packets from K
 * on node 0, hears no PeerGone then, but does when K leaves node 1 (derper
 * keeps one set of PeerGone watchers per key, local or remote). And back: a
 * contact made while K was remote is told when K leaves after moving here. */
static void test_move_keeps_contacts(void) {
  region_up(2, false, false);
  wait_meshed(1);
  derp_privkey kp;
  struct derp_client *k = client_on(0, &kp), *s = client_on(0, NULL);
  derp_key kk = pub_of(&kp);
  e2e_sync_route(k, s); /* s got packets from K: it must hear when K leaves */
  long long made = derpd_varz(&g_r.node[1], "derpd_mesh_presence_frames");
  struct derp_client *k2 = connect_as(1, &kp, NULL);
  presence_synced(1, 0, made); /* node 0 knows K is on node 1 */
  close_client(k);
  cr_assert(!hears_gone(s, &kk, 1000), "PeerGone for a key that moved to node 1");
  e2e_relay_check(k2, s, 20); /* K still reaches s, now from node 1 */
  close_client(k2);
  cr_assert(hears_gone(s, &kk, 5000), "no PeerGone when the moved key left the region");

  /* The other way: R on node 1 while t on node 0 gets packets from it. */
  derp_privkey rp;
  made = derpd_varz(&g_r.node[1], "derpd_mesh_presence_frames");
  struct derp_client *r = client_on(1, &rp), *t = client_on(0, NULL);
  derp_key rk = pub_of(&rp);
  /* Node 0 knows R is on node 1 before R's packets come in (presence and
   * packets travel on different connections), so t is noted as R's contact. */
  made = presence_synced(1, 0, made);
  e2e_sync_route(r, t);
  struct derp_client *r0 = connect_as(0, &rp, NULL); /* R moves to node 0 */
  close_client(r);
  presence_synced(1, 0, made); /* node 0 heard that R left node 1 */
  cr_assert(!hears_gone(t, &rk, 1000), "PeerGone for a key that moved to node 0");
  close_client(r0);
  cr_assert(hears_gone(t, &rk, 5000), "no PeerGone when the key that moved here left");
}

/* K on node 1 sends to R on node 0, leaves, comes back with the same key
 * and sends again: R hears PeerGone(K) every time K leaves (node 0's cache
 * of reported (sender, receiver) pairs once hid the second visit). */
static void test_rejoin_peer_gone(void) {
  region_up(2, false, false);
  wait_meshed(1);
  struct derp_client *r = client_on(0, NULL);
  derp_privkey kp;
  struct derp_client *k = client_on(1, &kp);
  derp_key kk = pub_of(&kp);
  long long made = derpd_varz(&g_r.node[1], "derpd_mesh_presence_frames") - 1;
  for (int round = 1; round <= 3; round++) {
    made = presence_synced(1, 0, made); /* node 0 knows K is on node 1 */
    e2e_sync_route(k, r);
    close_client(k);
    cr_assert(hears_gone(r, &kk, 5000), "round %d: no PeerGone when K left the region", round);
    made = derpd_varz(&g_r.node[1], "derpd_mesh_presence_frames"); /* K's PeerGone is in it */
    if (round < 3) k = connect_as(1, &kp, NULL);
  }
}

/* A node dies holding many keys that one client got packets from: the
 * client hears PeerGone for every one of them, all at once (they were cut
 * at the 64 control frames a conn's queue held). */
static void test_node_gone_burst(void) {
  enum { N = 200 };
  region_up(2, false, false);
  wait_meshed(1);
  struct derp_client *r = client_on(0, NULL);
  static struct derp_client *k[N];
  static derp_key kk[N];
  long long made = derpd_varz(&g_r.node[1], "derpd_mesh_presence_frames");
  for (int i = 0; i < N; i++) {
    derp_privkey kp;
    k[i] = client_on(1, &kp);
    kk[i] = pub_of(&kp);
  }
  presence_synced(1, 0, made + N - 1); /* node 0 knows them all */
  for (int i = 0; i < N; i++) e2e_sync_route(k[i], r);
  long long before = derpd_varz(&g_r.node[0], "derp_peer_gone_disconnected_frames");
  kill(g_r.node[1].pid, SIGKILL);
  derpd_kill(&g_r.node[1]);
  static bool seen[N];
  int got = 0;
  struct derp_client_msg m;
  for (int64_t end = e2e_now_ms() + 10000; got < N && e2e_now_ms() < end;) {
    int rr = derp_client_recv_packet(r, &m, (int)(end - e2e_now_ms()));
    cr_assert_geq(rr, 0, "the receiver lost its connection");
    if (rr != 1 || m.type != DERP_FRAME_PEER_GONE) continue;
    for (int i = 0; i < N; i++)
      if (!seen[i] && memcmp(m.src.b, kk[i].b, DERP_KEY_LEN) == 0) {
        seen[i] = true;
        got++;
      }
  }
  cr_assert_eq(got, N, "PeerGone for %d of the dead node's %d keys", got, N);
  long long sent = derpd_varz(&g_r.node[0], "derp_peer_gone_disconnected_frames") - before;
  cr_assert_geq(sent, N, "derp_peer_gone_disconnected_frames rose by %lld", sent);
  cr_assert_eq(derpd_varz(&g_r.node[0], "derpd_conn_control_frames_dropped"), 0);
  for (int i = 0; i < N; i++) close_client(k[i]);
}

/* A node that stops (SIGTERM) tells its clients Restarting, and not
 * PeerGone for every remote key (its links close first), as derper. */
static void test_stop_no_peer_gone(void) {
  region_up(2, false, false);
  wait_meshed(1);
  struct derp_client *r = client_on(0, NULL);
  derp_privkey kp;
  long long made = derpd_varz(&g_r.node[1], "derpd_mesh_presence_frames");
  struct derp_client *k = client_on(1, &kp);
  derp_key kk = pub_of(&kp);
  presence_synced(1, 0, made);
  e2e_sync_route(k, r);
  cr_assert_eq(kill(g_r.node[0].pid, SIGTERM), 0);
  bool restarting = false;
  struct derp_client_msg m;
  for (int64_t end = e2e_now_ms() + 5000; e2e_now_ms() < end;) {
    int rr = derp_client_recv(r, &m, (int)(end - e2e_now_ms()));
    if (rr != 1) break; /* closed after the Restarting */
    cr_assert(!(m.type == DERP_FRAME_PEER_GONE && memcmp(m.src.b, kk.b, DERP_KEY_LEN) == 0),
              "PeerGone for a remote key from a node that is stopping");
    if (m.type == DERP_FRAME_RESTARTING) restarting = true;
  }
  cr_assert(restarting, "no Restarting");
}

/* kill -9 of node 0: its clients reconnect elsewhere; whoever sent to them
 * or got packets from them hears PeerGone. */
static void test_kill_node(void) {
  region_up(3, false, false);
  wait_meshed(2);
  derp_privkey xp;
  struct derp_client *x = client_on(0, &xp);
  struct derp_client *y = client_on(1, NULL);
  struct derp_client *z = client_on(2, NULL);
  struct derp_client *w = client_on(2, NULL); /* only receives from x */
  e2e_sync_route(y, x);
  e2e_sync_route(z, x);
  e2e_sync_route(y, z);
  e2e_sync_route(x, w);
  long long remote_before = derpd_varz(&g_r.node[1], "derp_clients_remote");
  kill(g_r.node[0].pid, SIGKILL);
  derpd_kill(&g_r.node[0]);
  close_client(x);
  /* Senders to x, and w, hear it left the region. */
  struct derp_client *senders[3] = {y, z, w};
  for (int i = 0; i < 3; i++) {
    struct derp_client_msg m;
    int64_t deadline = e2e_now_ms() + 5000;
    bool gone = false;
    while (!gone && e2e_now_ms() < deadline) {
      int r = derp_client_recv_packet(senders[i], &m, (int)(deadline - e2e_now_ms()));
      cr_assert_geq(r, 0, "survivor's client lost its connection");
      if (r == 1 && m.type == DERP_FRAME_PEER_GONE &&
          memcmp(m.src.b, pub_of(&xp).b, DERP_KEY_LEN) == 0)
        gone = true;
    }
    cr_assert(gone, "%s got no PeerGone for the dead node's client", i < 2 ? "a sender" : "its receiver");
  }
  /* x was held only by node 0 (node 0's own key was also local here, its link). */
  long long remote_after = derpd_varz_eventually(&g_r.node[1], "derp_clients_remote", remote_before - 1, 5000);
  cr_assert_eq(remote_after, remote_before - 1, "node 1 still lists the dead node's keys (%lld -> %lld)",
               remote_before, remote_after);
  /* x comes back on node 1; traffic between survivors resumes. */
  struct derp_client *x2 = connect_as(1, &xp, NULL);
  e2e_sync_route(y, x2);
  e2e_sync_route(z, x2);
  e2e_relay_check(z, x2, 100);
  e2e_relay_check(y, z, 100);
}

/* A - B - C: A and C do not know each other; B never forwards a forward. */
static void test_chain_one_hop(void) {
  region_up(3, false, true);
  for (int i = 0; i < 3; i++) {
    long long want = i == 1 ? 2 : 1;
    cr_assert_eq(derpd_varz_eventually(&g_r.node[i], "derp_watchers", want, 10000), want);
  }
  struct derp_client *a = client_on(0, NULL), *b = client_on(1, NULL), *c = client_on(2, NULL);
  e2e_sync_route(a, b);
  e2e_sync_route(b, c);
  e2e_sync_route(c, b);
  /* derper's mesh update histograms: every presence frame went out in a
   * counted batch, and every flush that sent one counted its batches. */
  for (int i = 0; i < 3; i++) {
    long long frames = derpd_varz(&g_r.node[i], "derpd_mesh_presence_frames");
    cr_assert(frames > 0, "node %d told its watchers nothing", i + 1);
    cr_assert_eq(derpd_varz(&g_r.node[i], "derp_mesh_update_batch_size_sum"), frames, "node %d", i + 1);
    cr_assert_geq(derpd_varz(&g_r.node[i], "derp_mesh_update_batch_size_count"), 1, "node %d", i + 1);
    cr_assert_eq(derpd_varz(&g_r.node[i], "derp_mesh_update_loop_count_sum"),
                  derpd_varz(&g_r.node[i], "derp_mesh_update_batch_size_count"), "node %d", i + 1);
  }
  /* A knows only B's clients: a packet for c dies at A. */
  long long unk = derpd_varz(&g_r.node[0], "derp_packets_dropped_reason{reason=\"unknown_dest\"}");
  cr_assert_eq(derp_client_send(a, derp_client_public_key(c), "x", 1), 0);
  cr_assert_eq(derpd_varz_eventually(&g_r.node[0], "derp_packets_dropped_reason{reason=\"unknown_dest\"}",
                                     unk + 1, 3000), unk + 1);
  /* A mesh peer of B forwards to c (which B reaches only through C): B drops it. */
  derp_privkey mp;
  derp_key mpub;
  derp_key_generate(&mp, &mpub);
  struct derp_client *m = connect_as(1, &mp, mesh_key());
  uint8_t frame[2 * DERP_KEY_LEN + 4];
  memcpy(frame, derp_client_public_key(a)->b, DERP_KEY_LEN);
  memcpy(frame + DERP_KEY_LEN, derp_client_public_key(c)->b, DERP_KEY_LEN);
  memcpy(frame + 2 * DERP_KEY_LEN, "fwd!", 4);
  cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_FORWARD_PACKET, frame, sizeof frame), 0);
  const char *dn = "derp_packets_dropped_reason{reason=\"unknown_dest_on_fwd\"}";
  cr_assert_eq(derpd_varz_eventually(&g_r.node[1], dn, 1, 3000), 1, "B did not drop the second hop");
  struct derp_client_msg msg;
  int r = derp_client_recv_packet(c, &msg, 500);
  while (r == 1 && msg.type == DERP_FRAME_RECV_PACKET && msg.packet_len >= E2E_SYNC_MAGIC_LEN &&
         memcmp(msg.packet, E2E_SYNC_MAGIC, E2E_SYNC_MAGIC_LEN) == 0)
    r = derp_client_recv_packet(c, &msg, 500);
  cr_assert(r == 0 || msg.type != DERP_FRAME_RECV_PACKET, "c got a packet forwarded twice");
  /* As derper, a disco ForwardPacket for a key not here gets PeerGone(not
   * here) back to the node that sent it (which drops that forwarder); one
   * that is not disco gets nothing. */
  cr_assert_eq(derp_client_recv_packet(m, &msg, 300), 0, "an answer to a forward that was not disco");
  uint8_t disco[2 * DERP_KEY_LEN + DERP_DISCO_MIN_LEN] = {0};
  memcpy(disco, frame, 2 * DERP_KEY_LEN);
  memcpy(disco + 2 * DERP_KEY_LEN, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN);
  cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_FORWARD_PACKET, disco, sizeof disco), 0);
  r = derp_client_recv_packet(m, &msg, 3000);
  cr_assert(r == 1 && msg.type == DERP_FRAME_PEER_GONE && msg.reason == DERP_PEER_GONE_NOT_HERE &&
                memcmp(msg.src.b, derp_client_public_key(c)->b, DERP_KEY_LEN) == 0,
            "no PeerGone(not here) for a disco forward to an unknown key (r %d, type %d)", r, r == 1 ? msg.type : -1);
  cr_assert_eq(derpd_varz(&g_r.node[1], dn), 2);
  /* A forward to B's own client is delivered. */
  memcpy(frame + DERP_KEY_LEN, derp_client_public_key(b)->b, DERP_KEY_LEN);
  cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_FORWARD_PACKET, frame, sizeof frame), 0);
  e2e_recv_data(b, &msg, 3000);
  cr_assert(msg.packet_len == 4 && memcmp(msg.packet, "fwd!", 4) == 0);
  cr_assert(memcmp(msg.src.b, derp_client_public_key(a)->b, DERP_KEY_LEN) == 0, "source key not kept");
}

/* ---- views after churn ----------------------------------------------------- */

struct view {
  derp_key keys[512];
  int n;
};

static int view_find(const struct view *v, const derp_key *k) {
  for (int i = 0; i < v->n; i++)
    if (memcmp(v->keys[i].b, k->b, DERP_KEY_LEN) == 0) return i;
  return -1;
}

/* Applies every presence frame that is waiting (timeout_ms for the first). */
static void view_pump(struct derp_client *w, struct view *v, int timeout_ms) {
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv(w, &m, timeout_ms)) == 1) {
    timeout_ms = 0;
    if (m.len < DERP_KEY_LEN) continue;
    derp_key k;
    memcpy(k.b, m.payload, DERP_KEY_LEN);
    int at = view_find(v, &k);
    if (m.type == DERP_FRAME_PEER_PRESENT && at < 0) {
      cr_assert(v->n < 512);
      v->keys[v->n++] = k;
    } else if (m.type == DERP_FRAME_PEER_GONE && at >= 0) {
      v->keys[at] = v->keys[--v->n];
    }
  }
  cr_assert_geq(r, 0, "watcher connection closed");
}

static void test_churn_views(void) {
  region_up(3, false, false);
  wait_meshed(2);
  struct derp_client *w[3];
  struct view views[3];
  memset(views, 0, sizeof views);
  for (int i = 0; i < 3; i++) {
    derp_privkey p;
    derp_key pub;
    derp_key_generate(&p, &pub);
    w[i] = connect_as(i, &p, mesh_key());
    cr_assert_eq(derp_client_send_raw(w[i], DERP_FRAME_WATCH_CONNS, NULL, 0), 0);
  }
  int ops = sanitized() ? 600 : 2000;
  enum { POOL = 60 };
  struct { struct derp_client *c; int node; derp_key key; } pool[POOL];
  int np = 0;
  uint32_t rnd = 12345;
  for (int op = 0; op < ops; op++) {
    rnd = rnd * 1103515245u + 12345u;
    bool add = np == 0 || (np < POOL && ((rnd >> 16) & 1));
    if (add) {
      int node = (int)((rnd >> 8) % 3);
      pool[np].c = client_on(node, NULL);
      pool[np].node = node;
      pool[np].key = *derp_client_public_key(pool[np].c);
      np++;
    } else {
      int at = (int)((rnd >> 4) % (uint32_t)np);
      close_client(pool[at].c);
      pool[at] = pool[--np];
    }
    if (op % 16 == 0)
      for (int i = 0; i < 3; i++) view_pump(w[i], &views[i], 0);
  }
  /* The truth: pool[] per node. Each node also holds the other nodes' links
   * (2) and its watcher (1). Remote, by key as derper counts it, is what is
   * held elsewhere and not here: the other nodes' clients and watchers, and
   * this node's own key (its links are clients of the others); the other
   * nodes' keys are local here too (their links). */
  for (int i = 0; i < 3; i++) {
    int local = 0;
    for (int k = 0; k < np; k++) local += pool[k].node == i;
    int64_t deadline = e2e_now_ms() + 10000;
    for (;;) {
      view_pump(w[i], &views[i], 100);
      int seen = 0;
      for (int k = 0; k < np; k++) seen += pool[k].node == i && view_find(&views[i], &pool[k].key) >= 0;
      if ((seen == local && views[i].n == local + 3) || e2e_now_ms() > deadline) {
        cr_assert_eq(seen, local, "watcher of node %d sees %d of its %d clients", i, seen, local);
        cr_assert_eq(views[i].n, local + 3, "watcher of node %d sees %d keys, want %d", i, views[i].n, local + 3);
        break;
      }
    }
    long long want_remote = (np - local) + 2 /* other watchers */ + 1 /* this node's key */;
    long long want_local = local + 3;
    long long loc = derpd_varz_eventually(&g_r.node[i], "derp_clients_local", want_local, 10000);
    cr_assert_eq(loc, want_local, "node %d: derp_clients_local %lld, want %lld", i, loc, want_local);
    long long tot = derpd_varz_eventually(&g_r.node[i], "derp_clients_total", want_local + want_remote, 10000);
    cr_assert_eq(tot, want_local + want_remote, "node %d: derp_clients_total %lld", i, tot);
    long long rem = derpd_varz_eventually(&g_r.node[i], "derp_clients_remote", want_remote, 10000);
    cr_assert_eq(rem, want_remote, "node %d: derp_clients_remote %lld, want %lld", i, rem, want_remote);
  }
}

/* How many of keys[0..n) w hears PeerPresent for within ms. */
static int heard_present(struct derp_client *w, const derp_key *keys, int n, int ms) {
  bool seen[16] = {false};
  int got = 0;
  int64_t deadline = e2e_now_ms() + ms;
  struct derp_client_msg m;
  while (got < n && e2e_now_ms() < deadline) {
    int r = derp_client_recv(w, &m, 100);
    cr_assert_geq(r, 0, "watcher connection closed");
    if (r == 0 || m.type != DERP_FRAME_PEER_PRESENT || m.len < DERP_KEY_LEN) continue;
    for (int i = 0; i < n; i++)
      if (!seen[i] && memcmp(m.payload, keys[i].b, DERP_KEY_LEN) == 0) {
        seen[i] = true;
        got++;
      }
  }
  return got;
}

/* A second WatchConns on a watching conn gets the snapshot again, as from
 * derper's addWatcher (derpd ignored it); then nothing more is sent. */
static void test_watch_again(void) {
  enum { N = 6 };
  region_up(1, false, false);
  derp_key keys[N];
  struct derp_client *cl[N];
  for (int i = 0; i < N; i++) {
    cl[i] = client_on(0, NULL);
    keys[i] = *derp_client_public_key(cl[i]);
  }
  derp_privkey p;
  derp_key pub;
  derp_key_generate(&p, &pub);
  struct derp_client *w = connect_as(0, &p, mesh_key());
  cr_assert_eq(derp_client_send_raw(w, DERP_FRAME_WATCH_CONNS, NULL, 0), 0);
  cr_assert_eq(heard_present(w, keys, N, 5000), N, "the first snapshot");
  e2e_sleep_ms(1100); /* one snapshot a second per watcher */
  cr_assert_eq(derp_client_send_raw(w, DERP_FRAME_WATCH_CONNS, NULL, 0), 0);
  cr_assert_eq(heard_present(w, keys, N, 5000), N, "the second WatchConns brought no snapshot");
  /* A flood of them within that second: covered by the snapshot under way,
   * nothing more made (a message per shard per frame, unbounded, else). */
  static uint8_t flood[2000 * DERP_FRAME_HDR_LEN];
  for (int i = 0; i < 2000; i++) derp_frame_put_header(flood + i * DERP_FRAME_HDR_LEN, DERP_FRAME_WATCH_CONNS, 0);
  cr_assert_eq(derp_client_write_bytes(w, flood, sizeof flood), 0);
  e2e_assert_ping_pong(w);
  /* The flood came within the second: one more snapshot when it is up (a
   * request is never dropped), two had it straddled the second; not 2000.
   * Counted over the clients' keys (the watcher's own may trail the last). */
  int frames = 0;
  struct derp_client_msg m;
  int64_t until = e2e_now_ms() + 3000;
  int r;
  while (e2e_now_ms() < until && (r = derp_client_recv(w, &m, 100)) >= 0) {
    if (r != 1 || m.type != DERP_FRAME_PEER_PRESENT) continue;
    for (int i = 0; i < N; i++) frames += memcmp(m.src.b, keys[i].b, DERP_KEY_LEN) == 0;
  }
  cr_assert_geq(frames, N, "WatchConns within the second after a snapshot: %d of %d keys again", frames, N);
  cr_assert_leq(frames, 2 * N, "a flood of WatchConns made %d PeerPresent frames", frames);
  /* A PeerGone to a watcher counts in derp_peer_gone_disconnected_frames,
   * as derper's sendPeerGone counts every one (no other client heard of
   * this key). */
  long long gone = derpd_varz(&g_r.node[0], "derp_peer_gone_disconnected_frames");
  close_client(cl[0]);
  bool told = false;
  for (int64_t end = e2e_now_ms() + 5000; !told && e2e_now_ms() < end;) {
    r = derp_client_recv(w, &m, 100);
    cr_assert_geq(r, 0, "watcher connection closed");
    told = r == 1 && m.type == DERP_FRAME_PEER_GONE && memcmp(m.src.b, keys[0].b, DERP_KEY_LEN) == 0;
  }
  cr_assert(told, "the watcher heard no PeerGone");
  cr_assert_eq(derpd_varz(&g_r.node[0], "derp_peer_gone_disconnected_frames"), gone + 1);
}

/* A watcher's set of keys not yet told grows to hold a snapshot and goes
 * back to nothing once all is told: it stayed at the snapshot's size, and
 * every later change scanned and cleared all of it (found by a chaos run:
 * 110 µs a connect per watcher at 16k keys). derpd_watch_dirty_slots shows it. */
static void test_watch_sets_shrink(void) {
  enum { N = 300 };
  region_up(1, false, false);
  for (int i = 0; i < N; i++) client_on(0, NULL);
  long long made = derpd_varz(&g_r.node[0], "derpd_mesh_presence_frames");
  cr_assert_eq(derpd_varz(&g_r.node[0], "derpd_watch_dirty_slots"), 0, "slots held before any watcher");
  derp_privkey p;
  derp_key pub;
  derp_key_generate(&p, &pub);
  struct derp_client *w = connect_as(0, &p, mesh_key());
  cr_assert_eq(derp_client_send_raw(w, DERP_FRAME_WATCH_CONNS, NULL, 0), 0);
  int frames = 0;
  struct derp_client_msg m;
  for (int64_t end = e2e_now_ms() + 10000; frames < N + 1 && e2e_now_ms() < end;) {
    int r = derp_client_recv(w, &m, 100);
    cr_assert_geq(r, 0, "watcher connection closed");
    frames += r == 1 && m.type == DERP_FRAME_PEER_PRESENT;
  }
  cr_assert_eq(frames, N + 1, "the snapshot: %d of %d PeerPresent", frames, N + 1);
  cr_assert_geq(derpd_varz(&g_r.node[0], "derpd_mesh_presence_frames") - made, N + 1);
  /* About 150 keys a shard: one batch each (up to 256 frames), not the
   * dozen a scan that skipped slots made. */
  long long batches = derpd_varz(&g_r.node[0], "derp_mesh_update_batch_size_count");
  cr_assert(batches >= 2 && batches <= 4, "the snapshot took %lld batches", batches);
  long long slots = derpd_varz_eventually(&g_r.node[0], "derpd_watch_dirty_slots", 0, 5000);
  cr_assert_eq(slots, 0, "a watcher that heard everything still holds %lld slots", slots);
  /* A change after it: the smallest set, 64 slots, on the key's shard. */
  client_on(0, NULL);
  bool heard = false;
  for (int64_t end = e2e_now_ms() + 5000; !heard && e2e_now_ms() < end;) {
    int r = derp_client_recv(w, &m, 100);
    cr_assert_geq(r, 0, "watcher connection closed");
    heard = r == 1 && m.type == DERP_FRAME_PEER_PRESENT;
  }
  cr_assert(heard, "the new client was not told");
  slots = derpd_varz(&g_r.node[0], "derpd_watch_dirty_slots");
  cr_assert(slots >= 0 && slots <= 64, "%lld slots after one change", slots);
}

/* Watchers that are not the region's nodes (tools with the mesh key) are
 * limited, and never take the slots kept for the nodes: a node whose link
 * redials into a node full of them is let in (it was refused for good). */
/* One tool watcher on node 0 (mesh key): true if it was let in. */
static bool tool_admitted(void) {
  derp_privkey tp;
  derp_key tk;
  derp_key_generate(&tp, &tk);
  struct derp_client *t = connect_as(0, &tp, mesh_key());
  cr_assert_eq(derp_client_send_raw(t, DERP_FRAME_WATCH_CONNS, NULL, 0), 0);
  uint8_t data[8] = {7};
  cr_assert_eq(derp_client_ping(t, data), 0);
  struct derp_client_msg m;
  int r;
  while ((r = derp_client_recv(t, &m, 3000)) == 1 && m.type != DERP_FRAME_PONG) {}
  return r == 1;
}

static void test_watch_limit(void) {
  region_up(2, false, false);
  wait_meshed(1);
  /* 2 shards: (64 - 16) tool slots each; the node's link holds one of its
   * shard's others. Then 10 more, all refused. */
  const int most = 2 * (64 - 16);
  int tools = 0, refused = 0, after = 0;
  for (int i = 0; i < 400 && after < 10; i++) {
    after += tools == most;
    if (tool_admitted()) tools++;
    else refused++;
  }
  cr_assert_eq(tools, most, "%d tools admitted", tools);
  cr_assert_eq(after, 10, "the tool slots did not fill");
  cr_assert_eq(derpd_varz(&g_r.node[0], "derpd_conn_closed{reason=\"watchers_full\"}"), refused);
  /* Node 1's link on node 0 closed (ClosePeer of node 1's server key, from a
   * tool), and 10 more tools while it redials: none takes the slot it left
   * (they did, and the node stayed locked out), and the link gets back in. */
  struct derp_client *c1 = client_on(1, NULL);
  derp_key k1 = *derp_client_server_key(c1);
  derp_privkey tp;
  derp_key tk;
  derp_key_generate(&tp, &tk);
  struct derp_client *closer = connect_as(0, &tp, mesh_key());
  cr_assert_eq(derp_client_send_raw(closer, DERP_FRAME_CLOSE_PEER, k1.b, DERP_KEY_LEN), 0);
  cr_assert_eq(derpd_varz_eventually(&g_r.node[0], "derp_watchers", tools, 3000), tools, "node 1's link was not closed");
  for (int i = 0; i < 10; i++) cr_assert(!tool_admitted(), "a tool took a node's slot");
  long long w = derpd_varz_eventually(&g_r.node[0], "derp_watchers", tools + 1, 25000);
  cr_assert_eq(w, tools + 1, "node 0: %lld watchers, want the tools and node 1's link", w);
  long long rem = derpd_varz_eventually(&g_r.node[1], "derp_clients_remote", tools, 10000);
  cr_assert_geq(rem, tools, "node 1 sees %lld of node 0's clients", rem);
}

/* ---- bad mesh peers --------------------------------------------------------- */

static void test_wrong_mesh_key(void) {
  struct region *r = &g_r;
  memset(r, 0, sizeof *r);
  r->n = 2;
  snprintf(r->dir, sizeof r->dir, "/tmp/derpd-region-XXXXXX");
  cr_assert_not_null(mkdtemp(r->dir));
  char other[600];
  snprintf(r->key_file, sizeof r->key_file, "%.100s/mesh.key", r->dir);
  snprintf(other, sizeof other, "%.100s/other.key", r->dir);
  make_key_file(r->key_file);
  make_key_file(other);
  for (int i = 0; i < 2; i++) cr_assert_eq(e2e_pick_port(&r->port[i]), 0);
  start_node(r, 0, false, r->key_file);
  start_node(r, 1, false, other);
  e2e_sleep_ms(11500); /* three tries at 5 s */
  const char *refused = "closed right after connecting";
  for (int i = 0; i < 2; i++)
    cr_assert_eq(count_in_log(&r->node[i], refused), 1, "node %d: the refusal should be logged once", i);
  long long nm = derpd_varz(&r->node[1], "derpd_conn_closed{reason=\"not_mesh\"}");
  cr_assert_geq(nm, 2, "node 1 refused the link %lld times; want retries", nm);
  cr_assert_eq(derpd_varz(&r->node[0], "derp_watchers"), 0);
  /* WatchConns without the key still closes. */
  struct derp_client *c = client_on(0, NULL);
  cr_assert_eq(derp_client_send_raw(c, DERP_FRAME_WATCH_CONNS, NULL, 0), 0);
  cr_assert(e2e_wait_closed(c, 3000), "WatchConns without the mesh key was not closed");
}

/* A mesh peer (a client with the mesh key, as another node's link is) that
 * stops reading: local pairs relay on, and it is cut after derper's 30 s for
 * mesh peers, not after -tcp-write-timeout's 2 s. */
static void test_stalled_mesh_peer(void) {
  region_up(1, false, false);
  derp_privkey mp;
  derp_key mk;
  derp_key_generate(&mp, &mk);
  struct derp_client *m = connect_as(0, &mp, mesh_key());
  int rcv = 4096;
  cr_assert_eq(setsockopt(derp_client_fd(m), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
  cr_assert_eq(derp_client_watch_conns(m), 0);
  struct derp_client *s = client_on(0, NULL), *a = client_on(0, NULL), *b = client_on(0, NULL);
  e2e_sync_route(a, b);
  static uint8_t pkt[1200];
  const char *wt = "derpd_conn_closed{reason=\"write_timeout\"}";
  const char *we = "derpd_conn_closed{reason=\"write_error\"}"; /* the kernel's TCP_USER_TIMEOUT */
  int64_t t0 = e2e_now_ms();
  /* Until it is cut (at most 45 s): a flood at it, and the local pair checked. */
  while (derpd_varz(&g_r.node[0], wt) == 0 && derpd_varz(&g_r.node[0], we) == 0 && e2e_now_ms() - t0 < 45000) {
    for (int i = 0; i < 500; i++) cr_assert_eq(derp_client_send(s, &mk, pkt, sizeof pkt), 0);
    int64_t t = e2e_relay_check(a, b, 10);
    cr_assert(t < 2000, "local relay slowed to %lld ms for 10 packets", (long long)t);
    usleep(200000);
  }
  int64_t took = e2e_now_ms() - t0;
  cr_assert_eq(derpd_varz(&g_r.node[0], wt), 1, "the stalled mesh peer was not cut for its write timeout in %lld ms "
               "(write errors: %lld)", (long long)took, derpd_varz(&g_r.node[0], we));
  cr_assert(took >= 25000, "a mesh peer cut after %lld ms: not derper's 30 s", (long long)took);
  e2e_relay_check(a, b, 50);
}

/* ClosePeer closes every conn of its key and nothing else, each in order
 * as derper's Close does (a WebSocket conn gets a close frame 1000). */
static void test_close_peer(void) {
  region_up(1, false, false);
  derp_privkey kp;
  struct derp_client *k1 = client_on(0, &kp);
  struct derp_client *k2 = connect_as(0, &kp, NULL);
  char err[256] = "";
  struct derp_client *k3 = derpd_client_ws(&g_r.node[0], &kp, 0, err, sizeof err);
  cr_assert(k3, "WebSocket conn of the key: %s", err);
  struct derp_client *other = client_on(0, NULL);
  e2e_assert_ping_pong(k1);
  e2e_assert_ping_pong(k2);
  e2e_assert_ping_pong(k3);
  derp_privkey mp;
  derp_key mpub;
  derp_key_generate(&mp, &mpub);
  struct derp_client *m = connect_as(0, &mp, mesh_key());
  derp_key unknown;
  e2e_random_key(&unknown);
  cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_CLOSE_PEER, unknown.b, DERP_KEY_LEN), 0);
  cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_CLOSE_PEER, pub_of(&kp).b, DERP_KEY_LEN), 0);
  cr_assert(e2e_wait_closed(k1, 3000), "first conn of the key not closed");
  cr_assert(e2e_wait_closed(k2, 3000), "second conn of the key not closed");
  uint8_t buf[64];
  bool closed = false;
  size_t n = raw_read_until_close(derp_client_fd(k3), buf, sizeof buf, 3000, &closed);
  derp_client_close(k3);
  cr_assert(closed, "the WebSocket conn of the key not closed");
  cr_assert(n == 4 && memcmp(buf, "\x88\x02\x03\xe8", 4) == 0, "WebSocket conn: %zu bytes, not a close 1000", n);
  e2e_assert_ping_pong(other);
  e2e_assert_ping_pong(m);
  cr_assert_eq(derpd_varz(&g_r.node[0], "derpd_conn_closed{reason=\"close_peer\"}"), 3);
  cr_assert(derpd_log_contains(&g_r.node[0], "no such client here"), "unknown key not logged");
  /* A mesh peer sending ClosePeer in a loop: the log keeps to its budget
   * (50 lines a second per shard), the requester stays. */
  for (int i = 0; i < 500; i++) {
    e2e_random_key(&unknown);
    cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_CLOSE_PEER, unknown.b, DERP_KEY_LEN), 0);
  }
  e2e_assert_ping_pong(m);
  int lines = count_in_log(&g_r.node[0], "ClosePeer");
  cr_assert(lines <= 2 * 50 + 3, "%d ClosePeer log lines for 502 ClosePeer frames", lines);
}

/* ClosePeer of a client that stopped reading, with -tcp-write-timeout 0
 * (no write deadline): its goodbye cannot be written, and the conn, with its
 * key, still goes within the 5 s derper gives a close_notify; other clients
 * are not held up meanwhile. */
static void test_goodbye_bounded(void) {
  g_node_extra = "-tcp-write-timeout 0";
  region_up(1, false, false);
  derp_privkey kp;
  struct derp_client *k = client_on(0, &kp); /* never reads */
  struct derp_client *a = client_on(0, NULL), *b = client_on(0, NULL);
  e2e_fill_receiver(&g_r.node[0], a, k, b);
  derp_privkey mp;
  derp_key mpub;
  derp_key_generate(&mp, &mpub);
  struct derp_client *m = connect_as(0, &mp, mesh_key());
  cr_assert_eq(derp_client_send_raw(m, DERP_FRAME_CLOSE_PEER, pub_of(&kp).b, DERP_KEY_LEN), 0);
  int64_t t0 = e2e_now_ms();
  const char *wt = "derpd_conn_closed{reason=\"write_timeout\"}";
  cr_assert_eq(derpd_varz_eventually(&g_r.node[0], wt, 1, 9000), 1,
               "the stuck conn of the closed key was not cut (-tcp-write-timeout 0)");
  int64_t took = e2e_now_ms() - t0;
  cr_assert(took >= 3000 && took <= 8000, "cut after %lld ms, not about 5 s", (long long)took);
  e2e_relay_check(a, b, 20);
  e2e_assert_ping_pong(m);
  (void)k; /* closed by the teardown, as every client_on */
}

/* derp-mesh, the operator's tool, against a real node: its watch output is
 * the node's clients as they come and go, and close-peer closes one. */
static bool file_has(const char *path, const char *s) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, s) != NULL;
  fclose(f);
  return found;
}

static void key_hex(const derp_key *k, char out[65]) {
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", k->b[i]);
}

static void test_tool(void) {
  region_up(1, false, false);
  const char *bin = getenv("DERP_MESH_BIN");
  cr_assert_not_null(bin, "DERP_MESH_BIN is not set");
  char out[700], errf[700], cmd[2400];
  snprintf(out, sizeof out, "%.100s/watch.out", g_r.dir);
  snprintf(errf, sizeof errf, "%.100s/watch.err", g_r.dir);
  snprintf(cmd, sizeof cmd, "%s watch --server http://127.0.0.1:%u --mesh-psk-file %s --timeout 20s >%s 2>%s &",
           bin, g_r.port[0], g_r.key_file, out, errf);
  cr_assert_eq(system(cmd), 0);
  int64_t deadline = e2e_now_ms() + 5000;
  while (!file_has(errf, "watching") && e2e_now_ms() < deadline) e2e_sleep_ms(20);
  cr_assert(file_has(errf, "watching"), "derp-mesh watch did not subscribe");
  derp_privkey p1, p2;
  derp_key pub1;
  derp_key_generate(&p1, &pub1);
  struct derp_client_opts o = {.host = "127.0.0.1", .port = g_r.port[0], .priv = &p1, .ideal_node = "derp9"};
  struct derp_client *k1 = NULL;
  char cerr[200];
  cr_assert_eq(derp_client_connect(&k1, &o, cerr, sizeof cerr), 0, "%s", cerr);
  g_clients[g_nclients++] = k1;
  cr_assert_eq(derpd_varz_eventually(&g_r.node[0], "derp_current_notideal_connections", 1, 3000), 1);
  struct derp_client *k2 = client_on(0, &p2);
  e2e_assert_ping_pong(k2);
  close_client(k1);
  cr_assert_eq(derpd_varz_eventually(&g_r.node[0], "derp_current_notideal_connections", 0, 3000), 0);
  char h1[65], h2[65], line[200];
  key_hex(derp_client_public_key(k2), h2);
  derp_key pk1 = pub_of(&p1);
  key_hex(&pk1, h1);
  snprintf(cmd, sizeof cmd, "%s close-peer --server http://127.0.0.1:%u --mesh-psk-file %s nodekey:%s",
           bin, g_r.port[0], g_r.key_file, h2);
  cr_assert_eq(system(cmd), 0, "derp-mesh close-peer failed");
  cr_assert(e2e_wait_closed(k2, 3000), "close-peer did not close the client");
  /* Until k2's gone is out, then the tool is stopped (events of different
   * keys come from different shards, in no fixed order between them). */
  deadline = e2e_now_ms() + 8000;
  snprintf(line, sizeof line, "gone nodekey:%s", h2);
  while (!file_has(out, line) && e2e_now_ms() < deadline) e2e_sleep_ms(20);
  snprintf(line, sizeof line, "pkill -f 'derp-mesh watch --server http://127.0.0.1:%u '", g_r.port[0]);
  if (system(line) != 0) fprintf(stderr, "derp-mesh watch had already exited\n");
  /* The tool itself first (the snapshot), then k1 and k2 come, k1 goes, the
   * closing tool comes, k2 goes (and the closing tool goes); order is kept
   * per key (across keys it may vary: they live on different shards). */
  FILE *f = fopen(out, "r");
  cr_assert_not_null(f);
  char got[10][256];
  int n = 0;
  while (n < 10 && fgets(got[n], sizeof got[n], f)) n++;
  fclose(f);
  cr_assert(n >= 6 && n <= 7, "watch printed %d lines, want 6 or 7", n);
  cr_assert(strstr(got[0], "present nodekey:") && strstr(got[0], "flags=mesh"), "first line: %s", got[0]);
  const char *keys[2] = {h1, h2};
  for (int k = 0; k < 2; k++) {
    int pres = -1, gone = -1;
    for (int i = 0; i < n; i++) {
      char w[120];
      snprintf(w, sizeof w, "present nodekey:%s 127.0.0.1:", keys[k]);
      if (strstr(got[i], w)) {
        pres = i;
        const char *want_flags = k == 0 ? "flags=notideal" : "flags=regular";
        cr_assert(strstr(got[i], want_flags) != NULL, "a client's flags: %s; want %s", got[i], want_flags);
      }
      snprintf(w, sizeof w, "gone nodekey:%s reason=disconnected", keys[k]);
      if (strstr(got[i], w)) gone = i;
    }
    cr_assert(pres > 0 && gone > pres, "key %d: present at line %d, gone at line %d", k + 1, pres + 1, gone + 1);
  }
}

static bool at_least_8(long long v) { return v >= 8; }
static bool at_most_1(long long v) { return v >= 0 && v <= 1; }

/* -mesh-max-remote-keys 4 on 2 shards: node 1 remembers at most 2 remote keys
 * per shard of the 12 that node 0 announces, counts the rest, logs once per
 * shard, and takes keys again once they have gone. (Each node may also learn
 * its own key, from its link's conn on the other node.) */
static void test_remote_bound(void) {
  g_node_extra = "-mesh-max-remote-keys 4";
  region_up(2, false, false);
  wait_meshed(1);
  struct derp_client *c[12];
  for (int i = 0; i < 12; i++) c[i] = client_on(0, NULL);
  long long refused = varz_until(1, "derpd_mesh_remote_refused", at_least_8);
  long long remote = derpd_varz(&g_r.node[1], "derp_clients_remote");
  cr_assert(refused >= 8 && remote <= 4, "node 1: %lld remote keys, %lld refused; want <= 4 and >= 8",
            remote, refused);
  int warned = count_in_log(&g_r.node[1], "its share of -mesh-max-remote-keys");
  cr_assert(warned >= 1 && warned <= 2, "the bound was logged %d times, want once per shard that hit it", warned);
  for (int i = 0; i < 12; i++) close_client(c[i]);
  remote = varz_until(1, "derp_clients_remote", at_most_1);
  cr_assert(remote <= 1, "node 1 still has %lld remote keys after node 0's clients left", remote);
  cr_assert(count_in_log(&g_r.node[1], "new ones accepted again") >= 1, "no log line when the bound eased");
  /* Room again: a key announced now is reachable from node 1. */
  struct derp_client *k = client_on(0, NULL);
  struct derp_client *s = client_on(1, NULL);
  e2e_sync_route(s, k);
  e2e_relay_check(s, k, 50);
}

int main(int argc, char **argv) {
  e2e_test_init();
  static const struct mini_test tests[] = {
      {"relay_plain", test_relay_plain},     {"relay_tls", test_relay_tls},
      {"relay_tls_certdir", test_relay_tls_certdir}, {"relay_mixed", test_relay_mixed},
      {"client_moves", test_client_moves},   {"move_keeps_contacts", test_move_keeps_contacts},
      {"kill_node", test_kill_node}, {"rejoin_peer_gone", test_rejoin_peer_gone},
      {"node_gone_burst", test_node_gone_burst}, {"stop_no_peer_gone", test_stop_no_peer_gone},
      {"chain_one_hop", test_chain_one_hop}, {"churn_views", test_churn_views},
      {"wrong_mesh_key", test_wrong_mesh_key}, {"close_peer", test_close_peer},
      {"goodbye_bounded", test_goodbye_bounded}, {"watch_again", test_watch_again},
      {"watch_limit", test_watch_limit}, {"watch_sets_shrink", test_watch_sets_shrink},
      {"tool", test_tool},
      {"remote_bound", test_remote_bound},   {"stalled_mesh_peer", test_stalled_mesh_peer},
  };
  return mini_run(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, region_teardown);
}
