/* forward.c: keys held elsewhere in the region, and packets sent to them.
 *
 * Owns each shard's remote table: for a key K owned by this shard, the links
 * whose node said K is present there, in the order they said so. The first
 * is used until it goes (derper's multiForwarder: a key seen on two nodes
 * during a move keeps one path, so packets stay in order). A local client
 * always wins: forward_out runs only when K has no connection here.
 *
 * Packets: forward_out rebuilds the RecvPacket that relay.c made as a
 * ForwardPacket (src, dst, payload) and sends it to the link's shard on the
 * data ring (link.c queues it on the link's conn). K's entry remembers its
 * local contacts, by hash (core/hashset.h): the keys that sent to K, and
 * (through relay.c's MSG_SAW) the keys that got packets from K. When K
 * leaves the region (its last
 * forwarder goes and no local conn has it) they get PeerGone(K): derper v1.78
 * tells the receivers (peerGoneWatchers), and clients that only sent to K
 * need it as much, so both are told.
 *
 * Control messages (MSG_FWD_ADD / MSG_FWD_DEL from a link's shard,
 * MSG_LINK_DOWN to every shard, MSG_CLOSE_PEER) arrive through region_ctrl. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"
#include "server/region/region_internal.h"

struct remote {
  struct remote *hnext;
  uint64_t hash;
  derp_key key;
  uint8_t nfwd;
  uint8_t fwd[FWD_MAX];      /* link indexes, first registered first */
  uint64_t more;             /* links past FWD_MAX that have K too (bit = link index):
                                promoted into fwd[] as those go, so K is not taken
                                for gone while a node still has it */
  struct hashset contacts;   /* local keys that sent to K or got packets from it */
  uint64_t last_contact;     /* the last one added: skips the set for repeats */
};
_Static_assert(REGION_MAX_LINKS <= 64, "a link index is a bit of remote.more");

struct fwd_shard {
  struct remote **buckets;
  uint32_t mask, count;
  uint32_t max;              /* -mesh-max-remote-keys' share for this shard */
  bool full;                 /* refusing since the last log line */
};


static uint32_t bucket(const struct fwd_shard *t, uint64_t h) { return (uint32_t)(h >> 32) & t->mask; }

/* k NULL: by hash alone, for MSG_SAW's sender (see hashset.h). */
static struct remote *remote_find(struct fwd_shard *t, const derp_key *k, uint64_t h) {
  if (!t->buckets) return NULL;
  for (struct remote *r = t->buckets[bucket(t, h)]; r; r = r->hnext)
    if (r->hash == h && (!k || memcmp(r->key.b, k->b, DERP_KEY_LEN) == 0)) return r;
  return NULL;
}

static void grow(struct fwd_shard *t) {
  uint32_t nmask = t->buckets ? t->mask * 2 + 1 : 255;
  struct remote **nb = calloc(nmask + 1, sizeof *nb);
  if (!nb) return; /* longer chains, nothing breaks */
  for (uint32_t i = 0; t->buckets && i <= t->mask; i++) {
    for (struct remote *r = t->buckets[i], *n; r; r = n) {
      n = r->hnext;
      uint32_t b = (uint32_t)(r->hash >> 32) & nmask;
      r->hnext = nb[b];
      nb[b] = r;
    }
  }
  free(t->buckets);
  t->buckets = nb;
  t->mask = nmask;
}

static struct remote *remote_add(struct fwd_shard *t, const derp_key *k, uint64_t h) {
  if (!t->buckets || t->count >= t->mask + 1) grow(t);
  if (!t->buckets) return NULL;
  struct remote *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->key = *k;
  r->hash = h;
  uint32_t b = bucket(t, h);
  r->hnext = t->buckets[b];
  t->buckets[b] = r;
  t->count++;
  return r;
}

static void remote_unlink(struct fwd_shard *t, struct remote *r) {
  struct remote **pp = &t->buckets[bucket(t, r->hash)];
  while (*pp != r) pp = &(*pp)->hnext;
  *pp = r->hnext;
  t->count--;
  hashset_free(&r->contacts);
  free(r);
  if (t->full && t->count < t->max - t->max / 8) {
    t->full = false;
    log_info("region: remote keys back under -mesh-max-remote-keys; new ones accepted again");
  }
}

/* K is in no forwarder's list any more: if no local conn holds it either,
 * it left the region; whoever here sent to it hears PeerGone. */
/* (Not while this node stops: relay_peer_gone sends no PeerGone then.) */
static void gone_from_region(struct shard *sh, struct remote *r) {
  struct peer *p = relay_peer(sh, &r->key, r->hash);
  if (p && p->active) { /* it moved here: its contacts hear when it leaves this node */
    relay_keep_contacts(sh, p, &r->contacts);
    return;
  }
  for (uint32_t i = 0; i < r->contacts.cap; i++)
    if (r->contacts.h[i]) relay_peer_gone(sh, r->contacts.h[i], &r->key, DERP_PEER_GONE_DISCONNECTED);
}

/* derper's client gauges, by key: local (a conn here), remote (forwarders
 * and no conn here), total (either). Called on owner(K) whenever K gains or
 * loses its local peer entry (local_delta) or its first / last forwarder
 * (remote_delta), after the change. */
static void count_key(struct shard *sh, bool local_before, bool remote_before, bool local_after,
                      bool remote_after) {
  STAT_ADD(&sh->stats, cur_clients, (int)local_after - (int)local_before);
  STAT_ADD(&sh->stats, clients_remote,
           (int)(remote_after && !local_after) - (int)(remote_before && !local_before));
  STAT_ADD(&sh->stats, clients_total,
           (int)(local_after || remote_after) - (int)(local_before || remote_before));
}

void region_count_key(struct shard *sh, const derp_key *k, uint64_t h, int local_delta) {
  struct remote *r = remote_find(region_fwd(sh), k, h);
  bool remote = r && r->nfwd;
  count_key(sh, local_delta < 0, remote, local_delta > 0, remote);
}

static void add_forwarder(struct shard *sh, const derp_key *k, uint64_t h, uint8_t link) {
  struct fwd_shard *t = region_fwd(sh);
  struct remote *r = remote_find(t, k, h);
  if (!r && t->count >= t->max) {
    STAT_INC(&sh->stats, remote_refused);
    if (!t->full) {
      t->full = true;
      log_warn("shard %d: %u remote keys, its share of -mesh-max-remote-keys: keys that mesh "
               "peers announce from now on are unreachable from here until some go "
               "(derpd_mesh_remote_refused counts them)", sh->id, t->count);
    }
    return;
  }
  if (!r && !(r = remote_add(t, k, h))) {
    log_error("shard %d: out of memory for a remote key", sh->id);
    return;
  }
  for (uint8_t i = 0; i < r->nfwd; i++)
    if (r->fwd[i] == link) return; /* a repeated PeerPresent (a dup conn there) */
  if (r->nfwd == FWD_MAX) {        /* seen on more nodes than fwd[] holds: kept aside */
    r->more |= 1ull << link;
    return;
  }
  r->fwd[r->nfwd++] = link;
  if (r->nfwd == 1) {
    struct peer *p = relay_peer(sh, k, h);
    count_key(sh, p != NULL, false, p != NULL, true);
  } else if (r->nfwd == 2) {
    STAT_INC(&sh->stats, multifwd_created);
  }
}

/* Removes link from r; frees r when nothing is left. */
static void del_forwarder(struct shard *sh, struct remote *r, uint8_t link) {
  uint8_t i = 0;
  if (r->more & (1ull << link)) { /* one of those past fwd[]: K stays */
    r->more &= ~(1ull << link);
    return;
  }
  while (i < r->nfwd && r->fwd[i] != link) i++;
  if (i == r->nfwd) {
    /* derper's removePktForwardOther: one forwarder, and not this link (a
     * move between nodes, or a repeated broadcast); harmless. */
    if (r->nfwd == 1) STAT_INC(&sh->stats, fwd_delete_other);
    return;
  }
  memmove(&r->fwd[i], &r->fwd[i + 1], (size_t)(r->nfwd - i - 1));
  r->nfwd--;
  if (r->more) { /* the oldest-numbered of those kept aside takes the free place */
    uint8_t l = (uint8_t)__builtin_ctzll(r->more);
    r->more &= r->more - 1;
    r->fwd[r->nfwd++] = l;
    return;
  }
  if (r->nfwd == 1) STAT_INC(&sh->stats, multifwd_deleted);
  if (r->nfwd) return;
  struct peer *p = relay_peer(sh, &r->key, r->hash);
  count_key(sh, p != NULL, true, p != NULL, false);
  gone_from_region(sh, r);
  remote_unlink(region_fwd(sh), r);
}

static bool has_forwarder(const struct remote *r, uint8_t link) {
  if (r->more & (1ull << link)) return true;
  for (uint8_t i = 0; i < r->nfwd; i++)
    if (r->fwd[i] == link) return true;
  return false;
}

/* Only the keys learned through link: to del_forwarder, any other one is a
 * PeerGone from a node that is not its forwarder (delete_other). */
static void link_down(struct shard *sh, uint8_t link) {
  struct fwd_shard *t = region_fwd(sh);
  for (uint32_t b = 0; t->buckets && b <= t->mask; b++) {
    for (struct remote *r = t->buckets[b], *n; r; r = n) {
      n = r->hnext;
      if (has_forwarder(r, link)) del_forwarder(sh, r, link);
    }
  }
}

bool forward_note_contact(struct shard *sh, uint64_t h, uint64_t who_hash) {
  struct remote *r = remote_find(region_fwd(sh), NULL, h);
  if (!r || !r->nfwd) return false;
  if (r->last_contact != who_hash) {
    r->last_contact = who_hash;
    relay_hashset_add(sh, &r->contacts, who_hash);
  }
  return true;
}

bool forward_keep_contacts(struct shard *sh, const derp_key *k, uint64_t h, const struct hashset *set) {
  struct remote *r = remote_find(region_fwd(sh), k, h);
  if (!r || !r->nfwd) return false;
  for (uint32_t i = 0; i < set->cap; i++)
    if (set->h[i]) relay_hashset_add(sh, &r->contacts, set->h[i]);
  return true;
}

/* p as a ForwardPacket: rewritten in place when its buffer has room for the
 * second key (always, but for a RecvPacket near its size class's top), so a
 * forwarded packet costs no buffer more than a local one; else copied. */
static struct pkt *as_forward_packet(struct shard *sh, struct pkt *p) {
  const uint32_t klen = DERP_KEY_LEN, hdr = DERP_FRAME_HDR_LEN;
  uint32_t plen = p->len - hdr - klen;
  uint32_t flen = hdr + 2 * klen + plen;
  if (p->cap >= flen) {
    memmove(p->data + hdr + 2 * klen, p->data + hdr + klen, plen);
    memcpy(p->data + hdr + klen, p->dst.b, klen);
    derp_frame_put_header(p->data, DERP_FRAME_FORWARD_PACKET, 2 * klen + plen);
    p->len = flen;
    return p;
  }
  struct pkt *f = pkt_alloc(sh, flen);
  if (!f) return NULL;
  derp_key sk;
  memcpy(sk.b, p->data + hdr, klen);
  derp_enc_forward_packet(f->data, f->cap, &sk, &p->dst, p->data + hdr + klen, plen);
  f->disco = p->disco;
  f->src_hash = p->src_hash;
  f->t_us = p->t_us; /* the queue wait counts from the packet's arrival */
  pkt_free(sh, p);
  return f;
}

bool forward_out(struct shard *sh, struct pkt *p) {
  struct remote *r = remote_find(region_fwd(sh), &p->dst, p->hash);
  if (!r || !r->nfwd) return false;
  assert(p->src_hash); /* a local sender's packet: ForwardPackets are never forwarded */
  if (r->last_contact != p->src_hash) {
    r->last_contact = p->src_hash;
    relay_hashset_add(sh, &r->contacts, p->src_hash);
  }
  struct pkt *f = as_forward_packet(sh, p);
  if (!f) { /* the key is in the region: no room to queue is a mesh_queue drop, not unknown_dest */
    STAT_DROP_PKT(&sh->stats, mesh_queue, p);
    pkt_free(sh, p);
    return true;
  }
  f->kind = MSG_FWD_PKT;
  memset(f->dst.b, 0, sizeof f->dst.b);
  rmsg(f)->link = r->fwd[0];
  int o = region_link_shard(sh->srv, rmsg(f)->link);
  if (o == sh->id) {
    link_deliver(sh, f);
  } else if (!shard_push_data(sh, o, f)) {
    STAT_DROP_PKT(&sh->stats, shard_queue, f);
    pkt_free(sh, f);
  }
  return true;
}

/* ClosePeer from a mesh peer: every conn of the key, on its owner. */
int forward_close_peer(struct conn *c, const struct derp_frame *f) {
  struct shard *sh = c->sh;
  struct pkt *m = pkt_alloc(sh, 0);
  if (!m) return 0;
  m->kind = MSG_CLOSE_PEER;
  m->len = 0;
  memcpy(m->dst.b, f->payload, DERP_KEY_LEN);
  m->hash = key_hash(sh->srv, &m->dst);
  shard_send_ctrl(sh, owner_of(sh->srv, m->hash), m);
  return 0;
}

static void close_peer(struct shard *sh, struct pkt *m) {
  char key[DERP_KEY_STRLEN];
  derp_key_format(&m->dst, key);
  struct peer *p = relay_peer(sh, &m->dst, m->hash);
  /* Within the shard's log budget: a mesh peer sending ClosePeer in a loop
   * must not flood the log. */
  if (!p) {
    if (shard_log_allowed(sh)) log_info("shard %d: ClosePeer %s: no such client here; ignored", sh->id, key);
    pkt_free(sh, m);
    return;
  }
  if (shard_log_allowed(sh))
    log_info("shard %d: ClosePeer %s: closing %u connection%s", sh->id, key, p->nconns, p->nconns == 1 ? "" : "s");
  /* Ended in order, as derper's Close does (TLS close_notify, a WebSocket
   * close); each conn unlinks itself from p once its goodbye is written
   * (a stuck one at its write timeout). */
  for (struct conn *c = p->conns; c; c = c->pnext)
    if (!c->close_after_send) conn_close_after_send(c, CLOSE_close_peer);
  pkt_free(sh, m);
}

void region_fwd_ctrl(struct shard *sh, struct pkt *m) {
  switch (m->kind) {
  case MSG_FWD_ADD:
    add_forwarder(sh, (const derp_key *)m->data, m->hash, rmsg(m)->link);
    STAT_INC(&sh->stats, presence_in);
    break;
  case MSG_FWD_DEL: {
    struct remote *r = remote_find(region_fwd(sh), (const derp_key *)m->data, m->hash);
    if (r) del_forwarder(sh, r, rmsg(m)->link);
    else if (relay_peer(sh, (const derp_key *)m->data, m->hash)) /* local only: derper's nil entry */
      STAT_INC(&sh->stats, fwd_delete_other);
    STAT_INC(&sh->stats, presence_in);
    break;
  }
  case MSG_LINK_DOWN: link_down(sh, rmsg(m)->link); break;
  case MSG_CLOSE_PEER: close_peer(sh, m); return;
  default: break;
  }
  pkt_free(sh, m);
}

struct fwd_shard *region_fwd_new(uint32_t max_keys) {
  struct fwd_shard *t = calloc(1, sizeof *t);
  if (t) t->max = max_keys ? max_keys : 1;
  return t;
}

void region_fwd_free(struct fwd_shard *t) {
  if (!t) return;
  for (uint32_t b = 0; t->buckets && b <= t->mask; b++)
    for (struct remote *r = t->buckets[b], *n; r; r = n) {
      n = r->hnext;
      hashset_free(&r->contacts);
      free(r);
    }
  free(t->buckets);
  free(t);
}
