/* relay.c: what established clients' frames mean, and where packets go.
 *
 * Owns the shard's peer table (key -> its connections). Every key lives on
 * exactly one shard, owner(key) = key_hash(key) mod nshards, so "is B here?"
 * is asked only on B's owner: a SendPacket to a key owned elsewhere is copied
 * once into a pool buffer laid out as the outgoing RecvPacket and pushed onto
 * the ring to that shard, which looks B up and queues it. Control messages
 * about a key (PeerGone) travel the same way on the control rings.
 * Duplicate keys (derper's "last writer is active"): all conns of a key stay
 * registered; the newest is active until another of them sends a frame, and
 * when the active one goes, the one derper would pick takes over: the last
 * still connected of its send history (the set's first conn, every conn
 * from the third on, and every one that sent a frame; dup_successor). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/log.h"
#include "server/region/region.h"
#include "server/server.h"

uint64_t key_hash(const struct server *s, const derp_key *k) {
  uint8_t out[8];
  crypto_shorthash(out, k->b, DERP_KEY_LEN, s->hash_key);
  uint64_t h;
  memcpy(&h, out, sizeof h);
  return h ? h : 1;
}

/* ---- peer table ---------------------------------------------------------- */

void peer_table_init(struct peer_table *t) {
  t->mask = 255;
  t->count = 0;
  t->buckets = calloc(t->mask + 1, sizeof *t->buckets);
  if (!t->buckets) abort(); /* start-up allocation */
}

static void peer_free(struct peer *p) {
  hashset_free(&p->sent_to);
  free(p);
}

void peer_table_free(struct peer_table *t) {
  for (uint32_t i = 0; t->buckets && i <= t->mask; i++)
    for (struct peer *p = t->buckets[i], *n; p; p = n) { n = p->hnext; peer_free(p); }
  free(t->buckets);
  t->buckets = NULL;
}

/* The chain index uses the hash bits above those that chose the shard's
 * residue, so one shard's keys still spread over all its buckets. */
static uint32_t bucket(const struct peer_table *t, uint64_t h) { return (uint32_t)(h >> 32) & t->mask; }

/* k NULL: by hash alone, for the keys a hashset remembers (see hashset.h). */
static struct peer *peer_find(struct peer_table *t, const derp_key *k, uint64_t h) {
  for (struct peer *p = t->buckets[bucket(t, h)]; p; p = p->hnext)
    if (p->hash == h && (!k || memcmp(p->key.b, k->b, DERP_KEY_LEN) == 0)) return p;
  return NULL;
}

struct peer *relay_peer(struct shard *sh, const derp_key *k, uint64_t h) { return peer_find(&sh->peers, k, h); }

static void peer_table_grow(struct peer_table *t) {
  uint32_t nmask = t->mask * 2 + 1;
  struct peer **nb = calloc(nmask + 1, sizeof *nb);
  if (!nb) return; /* stay at this size: chains get longer, nothing breaks */
  for (uint32_t i = 0; i <= t->mask; i++) {
    for (struct peer *p = t->buckets[i], *n; p; p = n) {
      n = p->hnext;
      uint32_t b = (uint32_t)(p->hash >> 32) & nmask;
      p->hnext = nb[b];
      nb[b] = p;
    }
  }
  free(t->buckets);
  t->buckets = nb;
  t->mask = nmask;
}

static void peer_unlink(struct peer_table *t, struct peer *p) {
  struct peer **pp = &t->buckets[bucket(t, p->hash)];
  while (*pp != p) pp = &(*pp)->hnext;
  *pp = p->hnext;
  t->count--;
}

/* ---- registration and duplicates --------------------------------------- */

static void conns_push(struct peer *p, struct conn *c) {
  c->pnext = p->conns;
  if (c->pnext) c->pnext->pprev = &c->pnext;
  c->pprev = &p->conns;
  p->conns = c;
}

static void conns_unlink(struct conn *c) {
  *c->pprev = c->pnext;
  if (c->pnext) c->pnext->pprev = c->pprev;
  c->pnext = NULL;
  c->pprev = NULL;
}

/* After the active conn of a duplicate set left: derper's pick, the last
 * of its sendHistory still connected (the conns with dup_hist are in that
 * order, most recent first); the only conn left when one remains. */
static struct conn *dup_successor(const struct peer *p) {
  if (p->nconns == 1) return p->conns;
  for (struct conn *c = p->conns; c; c = c->pnext)
    if (c->dup_hist) return c;
  return NULL; /* cannot happen: all but the set's second conn are in it */
}

void relay_register(struct conn *c) {
  struct shard *sh = c->sh;
  struct peer_table *t = &sh->peers;
  struct peer *p = peer_find(t, &c->key, c->key_hash);
  bool was_present = p && p->active;
  if (!p) {
    p = calloc(1, sizeof *p);
    if (!p) { conn_close(c, CLOSE_nomem, "peer"); return; }
    region_count_key(sh, &c->key, c->key_hash, +1);
    p->key = c->key;
    p->hash = c->key_hash;
    if (t->count >= t->mask + 1) peer_table_grow(t);
    uint32_t b = bucket(t, p->hash);
    p->hnext = t->buckets[b];
    t->buckets[b] = p;
    t->count++;
  }
  /* derper's sendHistory: a new duplicate set starts with the one that was
   * there; a third conn and later ones join it as they come. */
  if (p->nconns == 1) p->conns->dup_hist = 1;
  c->dup_hist = p->nconns >= 2;
  conns_push(p, c);
  p->nconns++;
  p->active = c; /* the newest connection wins until another one writes */
  c->peer = p;
  if (p->nconns == 2) { STAT_INC(&sh->stats, dup_keys); STAT_ADD(&sh->stats, dup_conns, 2); }
  else if (p->nconns > 2) STAT_INC(&sh->stats, dup_conns);
  if (p->nconns > 1) STAT_INC(&sh->stats, dup_total);
  STAT_INC(&sh->stats, clients_accepted);
  STAT_INC(&sh->stats, cur_conns);
  c->reg_ms = (uint32_t)sh->now_ms;
  if (c->not_ideal) STAT_INC(&sh->stats, notideal);
  watch_note(sh, &p->key, p->hash, was_present);
}

/* False if the control ring to the owner was full and m was dropped. */
static bool send_key_msg(struct shard *sh, struct pkt *m) {
  int o = owner_of(sh->srv, m->hash);
  if (o == sh->id) {
    relay_send_to_key(sh, m);
  } else if (!shard_push_ctrl(sh, o, m)) {
    STAT_INC(&sh->stats, ctrl_drops);
    pkt_free(sh, m);
    return false;
  }
  return true;
}

/* PeerGone(key about, reason) for the holder of the key hashed to_hash.
 * PeerGone(disconnected) comes in bursts (a client that talked to thousands
 * of keys leaves; a node leaves the region and with it all its keys) and
 * must not be lost to a full ring: it waits in the outbox (up to
 * OUTBOX_GONE_MAX waiting, then dropped and counted). A stopping node
 * sends none: its clients hear Restarting, not that the clients it closed
 * first, or the remote keys its links dropped, are gone (derper, stopping,
 * says nothing). PeerGone(not here) answers a sender's packets, limited per
 * sender, and may be dropped. */
void relay_peer_gone(struct shard *sh, uint64_t to_hash, const derp_key *about, uint8_t reason) {
  if (reason == DERP_PEER_GONE_DISCONNECTED && atomic_load_explicit(&sh->srv->stopping, memory_order_relaxed))
    return;
  int owner = owner_of(sh->srv, to_hash);
  if (reason == DERP_PEER_GONE_DISCONNECTED && owner != sh->id && sh->outbox_n >= OUTBOX_GONE_MAX) {
    STAT_INC(&sh->stats, ctrl_drops);
    return;
  }
  struct pkt *m = pkt_alloc(sh, DERP_FRAME_HDR_LEN + DERP_KEY_LEN + 1);
  if (!m) return;
  m->len = (uint32_t)derp_enc_peer_gone(m->data, m->cap, about, reason);
  m->kind = MSG_FRAME_TO_KEY;
  m->not_here = reason == DERP_PEER_GONE_NOT_HERE;
  m->hash = to_hash;
  if (m->not_here) send_key_msg(sh, m);
  else shard_send_ctrl(sh, owner, m);
}

static void notify_gone(struct shard *sh, struct peer *p) {
  for (uint32_t i = 0; i < p->sent_to.cap; i++)
    if (p->sent_to.h[i]) relay_peer_gone(sh, p->sent_to.h[i], &p->key, DERP_PEER_GONE_DISCONNECTED);
}

void relay_unregister(struct conn *c) {
  struct shard *sh = c->sh;
  struct peer *p = c->peer;
  if (!p) return;
  conns_unlink(c);
  c->peer = NULL;
  if (p->nconns == 2) { STAT_ADD(&sh->stats, dup_keys, -1); STAT_ADD(&sh->stats, dup_conns, -2); }
  else if (p->nconns > 2) STAT_ADD(&sh->stats, dup_conns, -1);
  p->nconns--;
  STAT_ADD(&sh->stats, cur_conns, -1);
  if (c->preferred) STAT_ADD(&sh->stats, cur_home, -1);
  if (c->not_ideal) STAT_ADD(&sh->stats, notideal, -1);
  if (p->nconns > 0) {
    if (p->active == c) p->active = dup_successor(p);
    return;
  }
  p->active = NULL;
  if (!forward_keep_contacts(sh, &p->key, p->hash, &p->sent_to)) notify_gone(sh, p);
  STAT_ADD(&sh->stats, sent_to_keys, -(int64_t)p->sent_to.n);
  derp_key k = p->key;
  uint64_t h = p->hash;
  peer_unlink(&sh->peers, p);
  peer_free(p);
  region_count_key(sh, &k, h, -1);
  watch_note(sh, &k, h, true);
}

/* ---- who a peer sent to (for PeerGone) ---------------------------------- */

/* Adds the key hashed h to a PeerGone set (at most SENT_TO_MAX keys); true
 * if it was added. */
bool relay_hashset_add(struct shard *sh, struct hashset *set, uint64_t h) {
  enum hashset_add_result r = hashset_add(set, h, SENT_TO_MAX);
  if (r == HASHSET_FULL) STAT_INC(&sh->stats, sent_to_full);
  return r == HASHSET_ADDED;
}

/* p's key moved here from another node of the region: the keys of set,
 * who heard from it or sent to it there, hear PeerGone when it leaves. */
void relay_keep_contacts(struct shard *sh, struct peer *p, const struct hashset *set) {
  for (uint32_t i = 0; i < set->cap; i++)
    if (set->h[i] && relay_hashset_add(sh, &p->sent_to, set->h[i])) STAT_INC(&sh->stats, sent_to_keys);
}

/* Remember that the key hashed h (a connected client that received packets
 * from p) must hear PeerGone when p leaves. Only confirmed receivers get here
 * (MSG_SAW from their owner), so garbage destinations cost nothing. */
static void note_sent_to(struct shard *sh, struct peer *p, uint64_t h) {
  if (p->last_dst == h) return;
  p->last_dst = h;
  if (relay_hashset_add(sh, &p->sent_to, h)) STAT_INC(&sh->stats, sent_to_keys);
}

/* ---- delivery ------------------------------------------------------------ */

/* On owner(src): the receiver hashed rh got packets from the sender hashed
 * src_hash. false: no such sender here or in the region (it left, or its
 * PeerPresent has not come yet): nothing will tell rh when it goes. */
static bool saw(struct shard *sh, uint64_t src_hash, uint64_t rh) {
  struct peer *peer = peer_find(&sh->peers, NULL, src_hash);
  if (peer) note_sent_to(sh, peer, rh);
  else return forward_note_contact(sh, src_hash, rh); /* the sender is elsewhere in the region */
  return true;
}

/* The report cache's key for (sender tag, receiver conn). */
static uint64_t *seen_slot(struct shard *sh, const struct conn *r, uint64_t tag, uint64_t *pair) {
  *pair = (tag ^ (r->id * 0x9E3779B97F4A7C15ull)) | 1;
  return &sh->saw_cache[(*pair ^ (*pair >> 29)) & 4095];
}

/* r's shard: the next packet from the sender tagged tag is reported again. */
static void forget_seen(struct shard *sh, struct conn *r, uint64_t tag) {
  uint64_t pair, *slot = seen_slot(sh, r, tag, &pair);
  if (*slot == pair) *slot = 0;
  if (r->last_src_tag == tag) r->last_src_tag = 0;
}

#define UNSAW_PER_SEC 1024

/* The receiver hashed rh: forget that it got packets from the sender
 * tagged tag (bounded: UNSAW_PER_SEC). */
static void unsaw(struct shard *sh, uint64_t rh, uint64_t tag) {
  if (sh->now_ms - sh->unsaw_ms >= 1000) {
    sh->unsaw_ms = sh->now_ms;
    sh->unsaw_tokens = UNSAW_PER_SEC;
  }
  if (sh->unsaw_tokens == 0) return; /* the pair stays reported: at worst, one PeerGone missed */
  sh->unsaw_tokens--;
  struct peer *p = peer_find(&sh->peers, NULL, rh);
  for (struct conn *c = p ? p->conns : NULL; c; c = c->pnext) forget_seen(sh, c, tag);
}

/* Tell the sender's owner that receiver r got packet p, once per (sender,
 * r) while the shard's cache remembers it; the common case (the same sender
 * as last time) costs one compare. When this shard owns the sender too (one
 * shard, or both keys here) it notes it at once; else a MSG_SAW carries the
 * two hashes, so neither side hashes a key again. */
static void report_seen(struct shard *sh, struct conn *r, struct pkt *p) {
  const uint8_t *src = p->data + DERP_FRAME_HDR_LEN;
  uint64_t tag;
  memcpy(&tag, src, sizeof tag);
  if (tag == r->last_src_tag) return;
  r->last_src_tag = tag;
  uint64_t pair, *slot = seen_slot(sh, r, tag, &pair);
  if (*slot == pair) return;
  *slot = pair;
  if (!p->src_hash) { /* a ForwardPacket's sender */
    derp_key sk;
    memcpy(sk.b, src, DERP_KEY_LEN);
    p->src_hash = key_hash(sh->srv, &sk);
  }
  if (owner_of(sh->srv, p->src_hash) == sh->id) {
    if (!saw(sh, p->src_hash, r->key_hash)) unsaw(sh, r->key_hash, tag);
    return;
  }
  struct pkt *m = pkt_alloc(sh, 0);
  if (m) {
    m->kind = MSG_SAW;
    m->hash = p->src_hash;
    m->src_hash = r->key_hash;
    memcpy(m->dst.b, &tag, sizeof tag); /* for a MSG_UNSAW back */
    if (send_key_msg(sh, m)) return;
  }
  /* Not told: forget that it was, so the next packet of the pair tries
   * again (else r would never hear PeerGone about this sender). */
  *slot = 0;
  r->last_src_tag = 0;
}

/* derper's PeerGone(not here) limit: 1 token a second, at most 3 held.
 * *ms: when tokens were last added; false if none is left. */
static bool take_not_here_token(int64_t now, int64_t *ms, uint8_t *tokens) {
  int64_t refill = (now - *ms) / 1000;
  if (refill > 0) {
    *tokens = (uint8_t)(*tokens + refill > 3 ? 3 : *tokens + refill);
    *ms += refill * 1000;
  }
  if (*tokens == 0) return false;
  (*tokens)--;
  return true;
}

/* The limit per sender, applied where the PeerGone is made, before it takes
 * room in a ring; the sender's shard applies it exactly per connection
 * (relay_send_to_key), as derper does. A slot, picked by the keyed hash of
 * the sender's key, holds one sender: another one that finds it taken is let
 * through to that exact limit (each PeerGone answers one packet of its own,
 * so nothing is amplified), and takes the slot over once it has been still
 * long enough to be full again. Shared tokens cost 70 of 200 senders their
 * PeerGone (a helper's test against derper). */
static bool not_here_allowed(struct shard *sh, uint64_t src_hash) {
  __typeof__(sh->nothere_rl[0]) *e = &sh->nothere_rl[src_hash & 255];
  if (e->hash != src_hash) {
    if (e->tokens < 3 && sh->now_ms - e->ms < 3000) return true;
    e->hash = src_hash;
    e->tokens = 3;
    e->ms = sh->now_ms;
  }
  return take_not_here_token(sh->now_ms, &e->ms, &e->tokens);
}

/* A packet for a key this shard owns (from this shard or a ring). */
void relay_deliver(struct shard *sh, struct pkt *p) {
  struct peer *peer = peer_find(&sh->peers, &p->dst, p->hash);
  if (peer && peer->active) {
    report_seen(sh, peer->active, p);
    conn_queue_packet(peer->active, p);
    return;
  }
  if (peer) {
    STAT_DROP_PKT(&sh->stats, dup_client, p);
  } else if (p->from_fwd) { /* one hop: never forwarded again */
    STAT_DROP_PKT(&sh->stats, unknown_dest_on_fwd, p);
    /* As derper: the node that forwarded a disco packet hears that the key
     * is not here, and drops its forwarder for it (link.c does the same). */
    if (p->disco && not_here_allowed(sh, p->via_hash))
      relay_peer_gone(sh, p->via_hash, &p->dst, DERP_PEER_GONE_NOT_HERE);
  } else if (forward_out(sh, p)) {
    return;
  } else {
    STAT_DROP_PKT(&sh->stats, unknown_dest, p);
    /* So the sender's disco stops waiting; a local sender, so its hash is known. */
    if (p->disco && not_here_allowed(sh, p->src_hash))
      relay_peer_gone(sh, p->src_hash, &p->dst, DERP_PEER_GONE_NOT_HERE);
  }
  pkt_free(sh, p);
}

void relay_send_to_key(struct shard *sh, struct pkt *m) {
  if (m->kind == MSG_SAW) {
    if (saw(sh, m->hash, m->src_hash)) {
      pkt_free(sh, m);
    } else { /* back to the receiver's owner (never a loop: UNSAW ends there) */
      m->kind = MSG_UNSAW;
      m->hash = m->src_hash;
      send_key_msg(sh, m);
    }
    return;
  }
  if (m->kind == MSG_UNSAW) {
    uint64_t tag;
    memcpy(&tag, m->dst.b, sizeof tag);
    unsaw(sh, m->hash, tag);
    pkt_free(sh, m);
    return;
  }
  struct peer *peer = peer_find(&sh->peers, NULL, m->hash);
  struct conn *c = peer ? peer->active : NULL;
  if (!c || (m->not_here && !take_not_here_token(sh->now_ms, &c->nothere_ms, &c->nothere_tokens))) {
    pkt_free(sh, m);
    return;
  }
  /* c hears the sender is gone: a packet from it later (the same key back)
   * is a new contact, to be reported again. */
  uint64_t tag;
  memcpy(&tag, m->data + DERP_FRAME_HDR_LEN, sizeof tag);
  forget_seen(sh, c, tag);
  bool not_here = m->not_here;
  if (!conn_queue_ctrl(c, m)) return; /* kind MSG_FRAME_TO_KEY: the PeerGone bound */
  if (not_here) STAT_INC(&sh->stats, peer_gone_nothere);
  else STAT_INC(&sh->stats, peer_gone_disc);
}

/* ---- frames from an established client ---------------------------------- */

static int on_send_packet(struct conn *c, const struct derp_frame *f) {
  struct shard *sh = c->sh;
  uint32_t plen = f->len - DERP_KEY_LEN;
  const uint8_t *payload = f->payload + DERP_KEY_LEN;
  struct pkt *p = pkt_alloc(sh, DERP_FRAME_HDR_LEN + DERP_KEY_LEN + plen);
  if (!p) { conn_close(c, CLOSE_nomem, "packet"); return -1; }
  memcpy(p->dst.b, f->payload, DERP_KEY_LEN);
  /* The frame the receiver gets, built once: header, our key, the payload. */
  derp_enc_recv_packet(p->data, p->cap, &c->key, payload, plen);
  p->kind = MSG_PKT;
  p->disco = derp_is_disco(payload, plen);
  p->hash = key_hash(sh->srv, &p->dst);
  p->src_hash = c->key_hash;
  STAT_INC(&sh->stats, pkts_recv);
  STAT_ADD(&sh->stats, bytes_recv, plen);
  if (p->disco) STAT_INC(&sh->stats, recv_disco);
  else STAT_INC(&sh->stats, recv_other);
  relay_route(sh, p);
  return 0;
}

void relay_route(struct shard *sh, struct pkt *p) {
  int o = owner_of(sh->srv, p->hash);
  if (o == sh->id) {
    relay_deliver(sh, p);
  } else if (shard_push_data(sh, o, p)) {
    STAT_INC(&sh->stats, xshard_pkts);
  } else {
    STAT_DROP_PKT(&sh->stats, shard_queue, p);
    pkt_free(sh, p);
  }
}

/* From a mesh peer: src, dst, payload. Delivered here only (from_fwd). */
static int on_forward_packet(struct conn *c, const struct derp_frame *f) {
  struct shard *sh = c->sh;
  uint32_t plen = f->len - 2 * DERP_KEY_LEN;
  const uint8_t *payload = f->payload + 2 * DERP_KEY_LEN;
  struct pkt *p = pkt_alloc(sh, DERP_FRAME_HDR_LEN + DERP_KEY_LEN + plen);
  if (!p) { conn_close(c, CLOSE_nomem, "packet"); return -1; }
  derp_key src;
  memcpy(src.b, f->payload, DERP_KEY_LEN);
  memcpy(p->dst.b, f->payload + DERP_KEY_LEN, DERP_KEY_LEN);
  derp_enc_recv_packet(p->data, p->cap, &src, payload, plen);
  p->kind = MSG_PKT;
  p->from_fwd = 1;
  p->via_hash = c->key_hash;
  p->disco = derp_is_disco(payload, plen);
  p->hash = key_hash(sh->srv, &p->dst);
  STAT_INC(&sh->stats, fwd_in);
  relay_route(sh, p);
  return 0;
}

static int on_ping(struct conn *c, const struct derp_frame *f) {
  struct shard *sh = c->sh;
  STAT_INC(&sh->stats, got_ping);
  struct pkt *m = pkt_alloc(sh, DERP_FRAME_HDR_LEN + 8);
  if (!m) return 0;
  m->len = (uint32_t)derp_enc_ping(m->data, m->cap, DERP_FRAME_PONG, f->payload);
  if (conn_queue_ctrl(c, m)) STAT_INC(&sh->stats, sent_pong); /* derper: enqueued */
  return 0;
}

#define HOME_MOVE_QUIET_MS 5000
static void on_note_preferred(struct conn *c, const struct derp_frame *f) {
  struct shard *sh = c->sh;
  bool pref = f->payload[0] != 0;
  if (pref == (bool)c->preferred) return;
  c->preferred = pref;
  STAT_ADD(&sh->stats, cur_home, pref ? 1 : -1);
  /* derper counts a move only 5 s or more after the connect: the
   * NotePreferred every client sends as it connects is no move. */
  if ((uint32_t)sh->now_ms - c->reg_ms <= HOME_MOVE_QUIET_MS) return;
  if (pref) STAT_INC(&sh->stats, home_moves_in);
  else STAT_INC(&sh->stats, home_moves_out);
}

/* derper's lastWriterIsActive: any frame a duplicate conn sends makes it
 * the one that receives, and the most recent in the send history. */
void relay_note_activity(struct conn *c) {
  struct peer *p = c->peer;
  if (!p || p->nconns < 2) return;
  p->active = c;
  c->dup_hist = 1;
  if (p->conns != c) {
    conns_unlink(c);
    conns_push(p, c);
  }
}

int relay_frame(struct conn *c, const struct derp_frame *f) {
  if (c->is_link) return link_frame(c, f);
  relay_note_activity(c);
  switch (f->type) {
  case DERP_FRAME_SEND_PACKET: return on_send_packet(c, f);
  case DERP_FRAME_PING: return on_ping(c, f);
  case DERP_FRAME_NOTE_PREFERRED: on_note_preferred(c, f); return 0;
  /* Mesh peers only: the frame reader rejects these from anyone else. */
  case DERP_FRAME_WATCH_CONNS: return watch_start(c);
  case DERP_FRAME_CLOSE_PEER: return forward_close_peer(c, f);
  case DERP_FRAME_FORWARD_PACKET: return on_forward_packet(c, f);
  default:
    return 0; /* Pong, a late ClientInfo, ...: nothing to do, as derper */
  }
}
