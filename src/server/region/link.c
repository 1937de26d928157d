/* link.c: outbound mesh links, one per -mesh-with entry (this node's own entry,
 * known by -hostname or else dialled once and found by its server key, has no
 * metrics).
 *
 * Dialling blocks (DNS, TCP connect, TLS, the DERP handshake: all within
 * DIAL_TIMEOUT_MS, the lookup on a thread of its own through httpc), so each
 * link has a dialler thread that does only that: libderp's client connects with
 * our private key and the mesh key, sends WatchConns, and hands the socket
 * (and the SSL, and any bytes already read) to the link's shard through
 * `ready`. The shard adopts it at its next tick (conn_new_link) and from then
 * on the link is an ordinary conn on that shard: frames from the other node
 * (PeerPresent, PeerGone) become forwarder changes on each key's owner, and
 * ForwardPackets for that node are queued on it (LINK_QUEUE_MAX packets and
 * LINK_QUEUE_KIB, 5 s write timeout). When the conn closes, the shard tells
 * every shard to forget what the link forwarded (MSG_LINK_DOWN, made at
 * adoption) and wakes the dialler, which dials again:
 * at once after a link that was up for a while, else after 0.5 s, doubling
 * up to derper's 5 s.
 * A dialler never touches a conn; a shard never blocks on a dialler.
 * Logs say each change of state once, not each retry. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "derp/client.h"
#include "derp/client_tls.h"
#include "server/httpc/httpc.h"
#include "server/log.h"
#include "server/region/region_internal.h"
#include "server/thread_join.h"

#define RETRY_MS 5000       /* derper's retry interval: the backoff's cap */
#define RETRY_FIRST_MS 500  /* nodes of a region often start together */
#define DIAL_TIMEOUT_MS 5000
#define STABLE_MS 5000      /* up this long: a drop redials at once */

struct link_ready {
  int fd;
  SSL *ssl;                 /* NULL over plain TCP */
  uint8_t *buf;             /* bytes read past ServerInfo */
  size_t len;
  derp_key server_key;      /* the other node's */
};

struct link {
  struct server *srv;
  int idx, shard;
  struct mesh_entry e;
  pthread_t thread;
  bool started;
  int evfd;                          /* wakes the dialler: down or stop */
  _Atomic(struct link_ready *) ready; /* dialler -> shard */
  _Atomic int down_reason;           /* enum close_reason of the last drop */
  _Atomic bool heard;                /* a frame came on the link since it was adopted */
  _Atomic uint64_t peer_hash;        /* key_hash of the node's server key, once met
                                        (dialler writes; watch.c reads: region_is_peer) */
  _Atomic bool self;                 /* the entry is this node (region_start, by name,
                                        or the dialler, by key; once):
                                        no series of its own, so "link up == 0" means
                                        a node down, not the shared list's own entry */
  /* Shard-owned. */
  struct conn *c;
  struct pkt *down;                  /* while c is up: a MSG_LINK_DOWN per shard,
                                        made at adoption so the drop is never lost */
  int64_t note_ms;                   /* the last Health/Restarting line logged */
  uint32_t notes_quiet;              /* such frames not logged since (NOTE_MS) */
  /* Metrics: single writer each (shard: up, drops, pkts, bytes; dialler: dials). */
  _Atomic int64_t up, dials, drops, pkts, bytes;
};

int region_link_shard(const struct server *s, uint8_t link) { return s->region->links[link].shard; }

bool region_is_peer(const struct server *s, uint64_t key_hash) {
  const struct region *rg = s->region;
  for (int i = 0; rg && i < rg->nlinks; i++)
    if (atomic_load_explicit(&rg->links[i].peer_hash, memory_order_relaxed) == key_hash) return true;
  return false;
}

static void stat_set(_Atomic int64_t *x, int64_t v) { atomic_store_explicit(x, v, memory_order_relaxed); }
static void stat_bump(_Atomic int64_t *x, int64_t d) {
  atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + d, memory_order_relaxed);
}

/* ---- the dialler thread ------------------------------------------------- */

/* Waits up to ms for the event fd; returns its count (0 on timeout). */
static uint64_t wait_event(struct link *l, int ms) {
  struct pollfd pfd = {.fd = l->evfd, .events = POLLIN};
  if (poll(&pfd, 1, ms) <= 0) return 0;
  uint64_t v = 0;
  if (read(l->evfd, &v, sizeof v) != sizeof v) return 0;
  return v;
}

static bool stopping(const struct link *l) { return atomic_load(&l->srv->stopping); }

/* Each link's own lookups: the one its dial waits for and one it abandoned
 * (at its dial deadline, the resolver silent), which lives on until the
 * resolver's own timeout. A link that retries every few seconds then holds
 * two threads, not one per retry, and the lookups of admission checks and
 * ACME (httpc's shared budget) are not crowded out. Static: an abandoned
 * lookup may outlive the links. */
static struct httpc_lookups link_lookups[REGION_MAX_LINKS];

/* libderp's TCP connect for a link: the name lookup within the dial's
 * deadline (not the resolver's own, up to 30 s), and a stop (evfd) ends it
 * at once. */
static int tcp_dial(void *arg, const char *host, uint16_t port, int64_t deadline, char *err, size_t errlen) {
  struct link *l = arg;
  char why[200] = "";
  int fd = -1;
  if (httpc_connect_tcp(host, port, &link_lookups[l->idx], deadline, l->evfd, &fd, why, sizeof why) == HTTPC_OK)
    return fd;
  snprintf(err, errlen, "%s:%u: %s", host, port, why);
  return -1;
}

static int dial(struct link *l, struct link_ready *out, bool *self, char *err, size_t errlen) {
  struct server *s = l->srv;
  struct derp_client_opts o = {
      .host = l->e.dial, .port = l->e.port, .priv = &s->priv,
      .mesh_key = s->region->mesh_key, .timeout_ms = DIAL_TIMEOUT_MS, .dial = tcp_dial, .dial_arg = l};
  struct derp_client *c = NULL;
  int r;
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (l->e.tls) {
    /* Go's rules: SSL_CERT_FILE replaces the system bundle, SSL_CERT_DIR
     * adds directories of hashed roots. */
    struct derp_tls_opts t = {.sni = l->e.name, .ca_file = getenv("SSL_CERT_FILE"),
                              .ca_dirs = getenv("SSL_CERT_DIR")};
    r = derp_client_connect_tls(&c, &o, &t, NULL, err, errlen);
  } else {
    r = derp_client_connect(&c, &o, err, errlen);
  }
  if (r < 0) return -1;
  *self = memcmp(derp_client_server_key(c)->b, s->pub.b, DERP_KEY_LEN) == 0;
  if (*self) {
    derp_client_close(c);
    return -1;
  }
  out->server_key = *derp_client_server_key(c);
  atomic_store(&l->peer_hash, key_hash(s, &out->server_key));
  if (derp_client_send_raw(c, DERP_FRAME_WATCH_CONNS, NULL, 0) < 0) {
    snprintf(err, errlen, "sending WatchConns: %s", strerror(errno));
    derp_client_close(c);
    return -1;
  }
  if (l->e.tls) {
    struct derp_tls_conn tc;
    if (derp_client_tls_detach(c, &tc) < 0) {
      snprintf(err, errlen, "detach: %s", strerror(errno));
      return -1;
    }
    out->fd = tc.fd;
    out->ssl = tc.ssl;
    out->buf = tc.buffered;
    out->len = tc.buffered_len;
    return 0;
  }
  struct derp_client_stream st;
  bool has_stream;
  if (derp_client_detach(c, &out->fd, &st, &has_stream, &out->buf, &out->len) < 0) {
    snprintf(err, errlen, "detach: %s", strerror(errno));
    derp_client_close(c);
    return -1;
  }
  return 0;
}

static void ready_free(struct link_ready *r) {
  if (!r) return;
  SSL_free(r->ssl);
  if (r->fd >= 0) close(r->fd);
  free(r->buf);
  free(r);
}

/* Logs msg unless it is what was logged last: each change of state once. */
static void log_state(char *last, size_t cap, bool warn, const char *msg) {
  if (strcmp(last, msg) == 0) return;
  if (warn) log_warn("%s", msg);
  else log_info("%s", msg);
  snprintf(last, cap, "%s", msg);
}

static void *link_main(void *arg) {
  struct link *l = arg;
  pthread_setname_np(pthread_self(), "mesh-dialler");
  char err[256], msg[1024], last[1024] = "";
  int backoff = RETRY_FIRST_MS; /* doubles per failure up to RETRY_MS; reset once up */
  while (!stopping(l)) {
    struct link_ready *r = calloc(1, sizeof *r);
    bool self = false;
    stat_bump(&l->dials, 1);
    if (!r) snprintf(err, sizeof err, "out of memory");
    if (r && dial(l, r, &self, err, sizeof err) == 0) {
      atomic_store(&l->ready, r);
      /* Up and still up a while later: say so once. */
      uint64_t ev = wait_event(l, STABLE_MS);
      if (!ev && !stopping(l)) {
        snprintf(msg, sizeof msg, "mesh: link to %s: up (watching its clients)", l->e.label);
        log_state(last, sizeof last, false, msg);
        backoff = RETRY_FIRST_MS;
        wait_event(l, -1); /* until the shard says it dropped, or we stop */
      }
      ready_free(atomic_exchange(&l->ready, NULL)); /* never adopted */
      if (stopping(l)) break;
      int why = atomic_load(&l->down_reason);
      if (ev && !atomic_load(&l->heard)) {
        snprintf(msg, sizeof msg,
                 "mesh: link to %s: closed right after connecting (%s): a wrong mesh key does "
                 "that, or the node's limit of watchers; retrying, at most 5s apart", l->e.label, close_reason_name((enum close_reason)why));
        log_state(last, sizeof last, true, msg);
        wait_event(l, backoff);
        backoff = backoff * 2 < RETRY_MS ? backoff * 2 : RETRY_MS;
      } else {
        snprintf(msg, sizeof msg, "mesh: link to %s: down (%s); redialling", l->e.label,
                 close_reason_name((enum close_reason)why));
        log_state(last, sizeof last, true, msg);
        if (ev) { /* up only briefly: no tight loop */
          wait_event(l, backoff);
          backoff = backoff * 2 < RETRY_MS ? backoff * 2 : RETRY_MS;
        }
      }
      continue;
    }
    free(r);
    if (stopping(l)) break; /* the dial was cut short by the stop: nothing to say */
    if (self) {
      log_info("mesh: -mesh-with %s is this node (same server key): not dialled", l->e.label);
      atomic_store(&l->self, true);
      break;
    }
    snprintf(msg, sizeof msg, "mesh: link to %s: cannot connect: %s%s; retrying, at most 5s apart", l->e.label, err,
             strstr(err, "CERTIFICATE_VERIFY_FAILED") ? " (links trust the system roots, or SSL_CERT_FILE and SSL_CERT_DIR)" : "");
    log_state(last, sizeof last, true, msg);
    wait_event(l, backoff);
    backoff = backoff * 2 < RETRY_MS ? backoff * 2 : RETRY_MS;
  }
  return NULL;
}

/* ---- on the link's shard -------------------------------------------------- */

/* Only the links of c's shard: another shard's `c` is not ours to read. */
static struct link *link_of(struct conn *c) {
  struct region *rg = c->sh->srv->region;
  for (int i = 0; i < rg->nlinks; i++)
    if (rg->links[i].shard == c->sh->id && rg->links[i].c == c) return &rg->links[i];
  return NULL;
}

/* The link is down: its dialler, waiting for that, dials again. */
static void wake_dialler(struct link *l, int reason) {
  atomic_store(&l->down_reason, reason);
  uint64_t one = 1;
  if (write(l->evfd, &one, sizeof one) < 0) log_error("mesh: waking a dialler: %s", strerror(errno));
}

/* One MSG_LINK_DOWN per shard onto l->down; false (none kept) when out of
 * memory. */
static bool make_down_msgs(struct shard *sh, struct link *l) {
  for (int t = 0; t < sh->srv->nshards; t++) {
    struct pkt *m = pkt_alloc(sh, 0);
    if (!m) {
      pkt_free_list(sh, l->down);
      l->down = NULL;
      return false;
    }
    m->kind = MSG_LINK_DOWN;
    m->len = 0;
    memset(m->dst.b, 0, sizeof m->dst.b);
    rmsg(m)->link = (uint8_t)l->idx;
    rmsg(m)->from = (uint16_t)sh->id;
    rmsg(m)->to = (uint16_t)t;
    m->next = l->down;
    l->down = m;
  }
  return true;
}

static void adopt(struct shard *sh, struct link *l, struct link_ready *r) {
  struct conn *c = make_down_msgs(sh, l) ? conn_new_link(sh, r->fd) : NULL;
  if (!c) {
    pkt_free_list(sh, l->down);
    l->down = NULL;
    ready_free(r);
    wake_dialler(l, CLOSE_nomem);
    return;
  }
  r->fd = -1; /* the conn has it */
  if (r->ssl && transport_tls_adopt(c, r->ssl) < 0) {
    r->ssl = NULL;
    ready_free(r);
    pkt_free_list(sh, l->down);
    l->down = NULL;
    conn_close(c, CLOSE_nomem, "TLS for a mesh link"); /* not l->c yet: link_conn_closed skips it */
    wake_dialler(l, CLOSE_nomem);
    return;
  }
  r->ssl = NULL;
  c->key = r->server_key; /* for logs: the node at the other end */
  l->c = c;
  atomic_store(&l->heard, false);
  stat_set(&l->up, 1);
  if (r->len) conn_stream_input(c, r->buf, r->len);
  ready_free(r);
  if (c->state == CS_ESTABLISHED) conn_start_established(c);
}

/* The shard is exiting: a link still up keeps its unsent MSG_LINK_DOWNs. */
void link_shard_free(struct shard *sh) {
  struct region *rg = sh->srv->region;
  for (int i = 0; rg && i < rg->nlinks; i++)
    if (rg->links[i].shard == sh->id) {
      pkt_free_list(sh, rg->links[i].down);
      rg->links[i].down = NULL;
    }
}

void region_links_tick(struct shard *sh) {
  struct region *rg = sh->srv->region;
  for (int i = 0; i < rg->nlinks; i++) {
    struct link *l = &rg->links[i];
    if (l->shard != sh->id || l->c) continue;
    struct link_ready *r = atomic_exchange(&l->ready, NULL);
    if (!r) continue;
    if (sh->stopping) { ready_free(r); continue; }
    adopt(sh, l, r);
  }
}

void link_conn_closed(struct conn *c) {
  struct shard *sh = c->sh;
  struct link *l = link_of(c);
  if (!l) return;
  l->c = NULL;
  stat_set(&l->up, 0);
  while (l->down) { /* every shard forgets what the link taught it */
    struct pkt *m = l->down;
    l->down = m->next;
    shard_send_ctrl(sh, rmsg(m)->to, m);
  }
  wake_dialler(l, c->close_reason);
}

void link_deliver(struct shard *sh, struct pkt *p) {
  struct link *l = &sh->srv->region->links[rmsg(p)->link];
  if (!l->c || l->c->state != CS_ESTABLISHED) {
    STAT_DROP_PKT(&sh->stats, mesh_link_down, p);
    pkt_free(sh, p);
    return;
  }
  stat_bump(&l->pkts, 1);
  stat_bump(&l->bytes, p->len);
  STAT_INC(&sh->stats, fwd_out);
  conn_queue_packet(l->c, p);
}

void region_link_note_drop(struct conn *c) {
  struct link *l = link_of(c);
  if (l) stat_bump(&l->drops, 1);
}

/* PeerPresent / PeerGone from the other node: a forwarder change on the
 * key's owner. */
static void presence(struct conn *c, const struct derp_frame *f, bool present) {
  struct shard *sh = c->sh;
  struct link *l = link_of(c);
  if (!l || f->len < DERP_KEY_LEN) return;
  struct pkt *m = pkt_alloc(sh, DERP_KEY_LEN);
  if (!m) {
    /* A lost change would leave the key's forwarders wrong until the link
     * drops: drop it now (everything learned through it goes), and the
     * redial brings a fresh snapshot. */
    conn_close(c, CLOSE_nomem, "mesh presence: out of memory; redialling for a fresh view");
    return;
  }
  m->kind = present ? MSG_FWD_ADD : MSG_FWD_DEL;
  memcpy(m->data, f->payload, DERP_KEY_LEN);
  m->len = DERP_KEY_LEN;
  m->hash = key_hash(sh->srv, (const derp_key *)m->data);
  memset(m->dst.b, 0, sizeof m->dst.b);
  rmsg(m)->link = (uint8_t)l->idx;
  rmsg(m)->from = (uint16_t)sh->id;
  shard_send_ctrl(sh, owner_of(sh->srv, m->hash), m);
}

/* Health and Restarting from the node: said in the log, at most one line
 * per link per NOTE_MS (a node that sends them in a loop must not flood the
 * log); the line counts those not said since the last. */
#define NOTE_MS 10000
static void note_frame(struct shard *sh, struct link *l, const struct derp_frame *f) {
  if (l->note_ms && sh->now_ms - l->note_ms < NOTE_MS) {
    l->notes_quiet++;
    return;
  }
  char more[64] = "";
  if (l->notes_quiet) snprintf(more, sizeof more, " (and %u more not logged)", l->notes_quiet);
  if (f->type == DERP_FRAME_HEALTH) {
    /* The node's text, up to 200 bytes, with anything outside printable
     * ASCII (a newline would forge a log line) as \xNN. */
    char text[200 * 4 + 1];
    size_t o = 0;
    for (uint32_t i = 0; i < f->len && i < 200; i++) {
      uint8_t ch = f->payload[i];
      if (ch >= 0x20 && ch < 0x7f && ch != '\\') text[o++] = (char)ch;
      else o += (size_t)snprintf(text + o, sizeof text - o, "\\x%02x", ch);
    }
    text[o] = 0;
    log_info("mesh: link to %s: the node sent Health: \"%s\"%s", l->e.label, text, more);
  }
  else
    log_info("mesh: link to %s: the node sent Restarting%s", l->e.label, more);
  l->note_ms = sh->now_ms;
  l->notes_quiet = 0;
}

int link_frame(struct conn *c, const struct derp_frame *f) {
  c->link_ping_out = 0; /* any frame shows the node is alive */
  struct link *hl = link_of(c);
  if (hl && !atomic_load_explicit(&hl->heard, memory_order_relaxed)) atomic_store(&hl->heard, true);
  switch (f->type) {
  case DERP_FRAME_PEER_PRESENT: presence(c, f, true); return 0;
  case DERP_FRAME_PEER_GONE: presence(c, f, false); return 0;
  case DERP_FRAME_PING: {
    struct pkt *m = pkt_alloc(c->sh, DERP_FRAME_HDR_LEN + 8);
    if (m) {
      m->len = (uint32_t)derp_enc_ping(m->data, m->cap, DERP_FRAME_PONG, f->payload);
      conn_queue_ctrl(c, m);
    }
    return 0;
  }
  case DERP_FRAME_RESTARTING:
  case DERP_FRAME_HEALTH:
    if (hl) note_frame(c->sh, hl, f);
    return 0;
  default:
    return 0; /* KeepAlive, Pong, RecvPacket for our server key: nothing to do */
  }
}

/* ---- start and stop (main thread) ----------------------------------------- */

int region_links_setup(struct server *s, const struct mesh_entry *e, int n);
int region_links_setup(struct server *s, const struct mesh_entry *e, int n) {
  struct region *rg = s->region;
  rg->links = calloc((size_t)(n ? n : 1), sizeof *rg->links);
  if (!rg->links) return -1;
  for (int i = 0; i < n; i++) {
    struct link *l = &rg->links[i];
    l->srv = s;
    l->idx = i;
    l->shard = i % s->nshards;
    link_lookups[i].max = REGION_LINK_LOOKUPS;
    l->e = e[i];
    l->evfd = eventfd(0, EFD_CLOEXEC);
    if (l->evfd < 0) return -1;
    rg->nlinks = i + 1;
  }
  return 0;
}

/* An entry naming -hostname on -a's port is this node, dialled or not: a
 * node that cannot reach itself (no hairpin route to its public name, -derp
 * false, a certificate still to come) would otherwise hold a link that is
 * down for good. Other entries are told by the server key they answer with. */
static bool own_name(const struct server *s, const struct mesh_entry *e) {
  return e->port == s->cfg.listen_port && strcasecmp(e->name, s->cfg.hostname) == 0;
}

void region_start(struct server *s) {
  struct region *rg = s->region;
  for (int i = 0; i < rg->nlinks; i++) {
    struct link *l = &rg->links[i];
    if (own_name(s, &l->e)) {
      log_info("mesh: -mesh-with %s is this node (its -hostname and port): not dialled", l->e.label);
      atomic_store(&l->self, true);
      continue;
    }
    int r = pthread_create(&l->thread, NULL, link_main, l);
    if (r != 0) log_error("mesh: link to %s: cannot start its dialler: %s", l->e.label, strerror(r));
    else l->started = true;
  }
}

/* After the shards are joined: wake every dialler; one in its TCP connect
 * (the name lookup included) stops at once, one in the TLS or DERP handshake
 * finishes it (DIAL_TIMEOUT_MS at most), and each then sees `stopping`. A
 * `ready` handed over too late is freed by region_free. One deadline for
 * all: a dialler stuck past it (a wait in libderp that overran its
 * deadline) is left running, and then nothing it reads may be freed:
 * region_leaked tells main.c to keep the server and the region. */
void region_stop(struct server *s) {
  struct region *rg = s->region;
  for (int i = 0; i < rg->nlinks; i++) {
    uint64_t one = 1;
    if (rg->links[i].started && write(rg->links[i].evfd, &one, sizeof one) < 0)
      log_error("mesh: waking a dialler: %s", strerror(errno));
  }
  int64_t end = join_now_ns() + (DIAL_TIMEOUT_MS + 1000) * 1000000LL;
  for (int i = 0; i < rg->nlinks; i++) {
    struct link *l = &rg->links[i];
    if (!l->started) continue;
    int64_t left_ms = (end - join_now_ns()) / 1000000;
    if (join_within(l->thread, left_ms > 0 ? left_ms : 0) != 0) {
      log_warn("mesh: link to %s: dialler did not stop; leaving it", l->e.label);
      pthread_detach(l->thread);
      rg->leaked = true;
    }
    l->started = false;
  }
}

bool region_leaked(const struct server *s) { return s->region && s->region->leaked; }

void region_links_free(struct region *rg);
void region_links_free(struct region *rg) {
  if (rg->leaked) return; /* a dialler may still run: keep what it uses */
  for (int i = 0; i < rg->nlinks; i++) {
    ready_free(atomic_exchange(&rg->links[i].ready, NULL));
    if (rg->links[i].evfd >= 0) close(rg->links[i].evfd);
  }
  free(rg->links);
}

size_t region_varz_cap(const struct server *s) {
  const struct region *rg = s->region;
  /* Per series: its two comment lines, then a line per link (a label of up
   * to sizeof label, the name, a number). */
  return rg ? 5 * (256 + (size_t)rg->nlinks * (sizeof rg->links[0].e.label + 64)) : 0;
}

size_t region_render_varz(char *out, size_t cap, struct server *s) {
  struct region *rg = s->region;
  size_t n = 0;
  if (!rg || rg->nlinks == 0) return 0;
  static const struct { const char *name, *type, *help; size_t off; } m[] = {
      {"derpd_mesh_link_up", "gauge", "1 while the outbound mesh link is connected", offsetof(struct link, up)},
      {"derpd_mesh_link_dials", "counter", "connection attempts of the outbound mesh link", offsetof(struct link, dials)},
      {"derpd_mesh_link_queue_drops", "counter", "ForwardPackets dropped: the link's queue was full", offsetof(struct link, drops)},
      {"derpd_mesh_link_packets", "counter", "ForwardPackets queued on the link", offsetof(struct link, pkts)},
      {"derpd_mesh_link_bytes", "counter", "ForwardPacket bytes queued on the link", offsetof(struct link, bytes)},
  };
  for (size_t k = 0; k < sizeof m / sizeof m[0] && n < cap; k++) {
    n += (size_t)snprintf(out + n, cap - n, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name,
                          m[k].type);
    for (int i = 0; i < rg->nlinks && n < cap; i++) {
      if (atomic_load_explicit(&rg->links[i].self, memory_order_relaxed)) continue;
      const _Atomic int64_t *v = (const _Atomic int64_t *)(const void *)((const char *)&rg->links[i] + m[k].off);
      n += (size_t)snprintf(out + n, cap - n, "%s{peer=\"%s\"} %lld\n", m[k].name, rg->links[i].e.label,
                            (long long)atomic_load_explicit(v, memory_order_relaxed));
    }
  }
  return n < cap ? n : cap;
}
