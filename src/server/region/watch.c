/* watch.c: watchers (mesh peers that sent WatchConns) and what they are told.
 *
 * A watcher W lives on its conn's shard Sw, in a slot of that shard's table.
 * Presence about key K is known only on owner(K), so every shard S keeps a
 * subscription per watcher: a set of keys that changed since W was last told
 * (coalesced: one entry per key, however often it churned) and a few credits.
 * S turns dirty keys into PeerPresent / PeerGone frames with the key's state
 * at that moment, packs up to PRESENCE_BATCH of them into one MSG_PRESENCE
 * and sends it to Sw, spending a credit; Sw queues it on W's conn, and once
 * it is written (conn_send.c, sent) returns the credit. So:
 *  - no update is lost: a key stays dirty until a frame with its latest state
 *    is sent, and the control messages travel by shard_send_ctrl (never dropped);
 *  - order per key holds: one entry per key, the frame carries the state at
 *    the time it is made, and the ring S -> Sw is FIFO;
 *  - memory is bounded: a set holds at most the keys present now plus those
 *    the watcher still believes present (a key that came and went unseen is
 *    forgotten); in flight at most PRESENCE_CREDITS batches per (S, W);
 *  - a watcher that stops reading stops the credits, not the shards; its
 *    write timeout (30 s for mesh peers) cuts it.
 * The snapshot at WatchConns is the same mechanism: every present key is
 * marked dirty, as "not known to the watcher". A second WatchConns on the
 * same conn asks for the snapshot again, as derper's addWatcher gives it:
 * every present key marked dirty once more (at most one a second per
 * watcher: one that comes sooner is remembered and made when the second is
 * up, however many came meanwhile).
 * Limits: WATCH_SLOTS per shard, WATCH_TOOLS per node for watchers that are
 * not this region's nodes (operators' tools, monitors); WATCH_PEER_SLOTS of
 * each shard's slots are kept for the nodes (a watcher whose key is the
 * server key one of our links met: region_is_peer), so leaked or looping
 * tools with the mesh key can never lock a sibling out of the region. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "server/log.h"
#include "server/region/region_internal.h"

#define PRESENCE_BATCH 256   /* frames per MSG_PRESENCE (14 KiB) */
#define PRESENCE_CREDITS 2   /* MSG_PRESENCE in flight per (shard, watcher) */
#define PRESENT_FRAME_LEN (DERP_FRAME_HDR_LEN + DERP_KEY_LEN + 16 + 2 + 1)

enum { SLOT_EMPTY = 0, SLOT_LIVE, SLOT_TOMB };

struct dirty_ent {
  derp_key key;
  uint64_t hash;
  uint8_t state;       /* SLOT_* */
  uint8_t was_present; /* what the watcher was last told (or would be, unseen) */
};

/* This shard's side of one watcher. */
struct wsub {
  struct stats *st;            /* its shard's: derpd_watch_dirty_slots follows cap */
  uint16_t wshard, slot;
  uint32_t gen;
  uint8_t credits;
  bool queued;                 /* on the shard's flush list */
  struct dirty_ent *tab;
  uint32_t cap, live, used;    /* used = live + tombstones */
  uint32_t cursor;
};

/* A watcher on this shard. */
struct watcher {
  struct conn *c;              /* NULL = slot free */
  uint32_t gen;
  struct pkt *unsub;           /* a MSG_WATCH_UNSUB per shard, made with the
                                  MSG_WATCH_SUBs: the end is never lost */
  int64_t snap_ms;             /* when its last snapshot was asked for */
  bool resnap_due;             /* asked again within the second: made at the tick */
  bool tool;                   /* not one of the region's nodes: counts to WATCH_TOOLS */
};

struct watch_shard {
  struct wsub **subs;
  uint32_t nsubs, subs_cap;
  struct wsub **flush;         /* subs with dirty keys and credits to spend */
  uint32_t nflush;
  struct watcher w[WATCH_SLOTS];
  uint32_t next_gen;
};

/* ---- the dirty set: open addressing, tombstones ---------------------------- */

/* Probing starts from the hash's high half: the low bits pick the owner
 * shard (owner_of), so on one shard they are alike and would cluster. */
static uint32_t ds_home(uint64_t h, uint32_t cap) { return (uint32_t)(h >> 32) & (cap - 1); }

static struct dirty_ent *ds_find(struct wsub *s, const derp_key *k, uint64_t h, struct dirty_ent **free_slot) {
  *free_slot = NULL;
  if (!s->cap) return NULL;
  for (uint32_t i = 0, j = ds_home(h, s->cap); i < s->cap; i++, j = (j + 1) & (s->cap - 1)) {
    struct dirty_ent *e = &s->tab[j];
    if (e->state == SLOT_EMPTY) {
      if (!*free_slot) *free_slot = e;
      return NULL;
    }
    if (e->state == SLOT_TOMB) {
      if (!*free_slot) *free_slot = e;
    } else if (e->hash == h && memcmp(e->key.b, k->b, DERP_KEY_LEN) == 0) {
      return e;
    }
  }
  return NULL;
}

#define DS_MIN_CAP 64

static bool ds_rehash(struct wsub *s, uint32_t ncap) {
  struct dirty_ent *nt = calloc(ncap, sizeof *nt);
  if (!nt) return false;
  STAT_ADD(s->st, watch_slots, (int64_t)ncap - (int64_t)s->cap);
  for (uint32_t i = 0; i < s->cap; i++) {
    struct dirty_ent *e = &s->tab[i];
    if (e->state != SLOT_LIVE) continue;
    uint32_t j = ds_home(e->hash, ncap);
    while (nt[j].state != SLOT_EMPTY) j = (j + 1) & (ncap - 1);
    nt[j] = *e;
  }
  free(s->tab);
  s->tab = nt;
  s->cap = ncap;
  s->used = s->live;
  s->cursor = 0;
  return true;
}

/* Marks k dirty. false: out of memory growing the set (logged by the
 * caller; this watcher misses this change of k). */
static bool ds_mark(struct wsub *s, const derp_key *k, uint64_t h, bool was_present, bool now_present) {
  struct dirty_ent *slot;
  struct dirty_ent *e = ds_find(s, k, h, &slot);
  if (e) {
    /* Came and went before the watcher heard of it: nothing to tell. */
    if (!e->was_present && !now_present) {
      e->state = SLOT_TOMB;
      s->live--;
    }
    return true;
  }
  if (!was_present && !now_present) return true;
  if ((s->used + 1) * 4 > s->cap * 3) {
    uint32_t ncap = s->cap ? s->cap : DS_MIN_CAP;
    while ((s->live + 1) * 2 > ncap) ncap *= 2;
    if (!ds_rehash(s, ncap)) return false;
    ds_find(s, k, h, &slot);
  }
  if (slot->state == SLOT_EMPTY) s->used++;
  slot->key = *k;
  slot->hash = h;
  slot->state = SLOT_LIVE;
  slot->was_present = was_present;
  s->live++;
  return true;
}

/* ---- subscriptions (every shard) ------------------------------------------ */

static void want_flush(struct watch_shard *ws, struct wsub *s) {
  if (s->queued || !s->live || !s->credits) return;
  s->queued = true;
  ws->flush[ws->nflush++] = s; /* flush has room for every sub */
}

static struct wsub *sub_find(struct watch_shard *ws, uint16_t wshard, uint16_t slot, uint32_t gen, uint32_t *idx) {
  for (uint32_t i = 0; i < ws->nsubs; i++) {
    struct wsub *s = ws->subs[i];
    if (s->wshard == wshard && s->slot == slot && s->gen == gen) {
      if (idx) *idx = i;
      return s;
    }
  }
  return NULL;
}

static void sub_free(struct wsub *s) {
  STAT_ADD(s->st, watch_slots, -(int64_t)s->cap);
  free(s->tab);
  free(s);
}

static struct pkt *region_msg(struct shard *sh, enum msg_kind kind, uint32_t len) {
  struct pkt *m = pkt_alloc(sh, len);
  if (!m) return NULL;
  m->kind = (uint8_t)kind;
  m->len = 0;
  memset(m->dst.b, 0, sizeof m->dst.b);
  rmsg(m)->from = (uint16_t)sh->id;
  return m;
}

/* Every key present here, dirty for s: told (a new snapshot: should a key
 * leave before its frame is made, the watcher hears PeerGone) or not (the
 * first one). false if the set could not grow for some. */
static bool mark_present(struct shard *sh, struct wsub *s, bool told) {
  struct peer_table *t = &sh->peers;
  bool ok = true;
  for (uint32_t b = 0; b <= t->mask; b++)
    for (struct peer *p = t->buckets[b]; p; p = p->hnext)
      if (p->active && !ds_mark(s, &p->key, p->hash, told, true)) ok = false;
  return ok;
}

/* A watcher appeared: everything present here is news to it. */
static void on_sub(struct shard *sh, struct pkt *m) {
  struct watch_shard *ws = region_watch(sh);
  struct rmsg *r = rmsg(m);
  struct wsub *s = calloc(1, sizeof *s);
  if (s && ws->nsubs == ws->subs_cap) {
    uint32_t ncap = ws->subs_cap ? ws->subs_cap * 2 : 8;
    struct wsub **a = realloc(ws->subs, ncap * sizeof *a);
    struct wsub **f = a ? realloc(ws->flush, ncap * sizeof *f) : NULL;
    if (a) ws->subs = a;
    if (f) { ws->flush = f; ws->subs_cap = ncap; }
  }
  if (!s || ws->nsubs == ws->subs_cap) {
    /* Out of memory: this watcher will not hear of this shard's keys. */
    free(s);
    log_error("shard %d: out of memory for a watcher's subscription; it misses this shard's keys", sh->id);
    pkt_free(sh, m);
    return;
  }
  s->st = &sh->stats;
  s->wshard = r->from;
  s->slot = r->slot;
  s->gen = r->gen;
  s->credits = PRESENCE_CREDITS;
  ws->subs[ws->nsubs++] = s;
  if (!mark_present(sh, s, false))
    log_error("shard %d: out of memory for a watcher's snapshot; some keys are not told", sh->id);
  want_flush(ws, s);
  pkt_free(sh, m);
}

/* The watcher asked again: everything present here, once more. */
static void on_resnap(struct shard *sh, struct pkt *m) {
  struct watch_shard *ws = region_watch(sh);
  struct rmsg *r = rmsg(m);
  struct wsub *s = sub_find(ws, r->from, r->slot, r->gen, NULL);
  if (s) {
    if (!mark_present(sh, s, true))
      log_error("shard %d: out of memory for a watcher's new snapshot; some keys are not told again", sh->id);
    want_flush(ws, s);
  }
  pkt_free(sh, m);
}

static void on_unsub(struct shard *sh, struct pkt *m) {
  struct watch_shard *ws = region_watch(sh);
  struct rmsg *r = rmsg(m);
  uint32_t i;
  struct wsub *s = sub_find(ws, r->from, r->slot, r->gen, &i);
  if (s) {
    ws->subs[i] = ws->subs[--ws->nsubs];
    for (uint32_t j = 0; j < ws->nflush; j++)
      if (ws->flush[j] == s) { ws->flush[j] = ws->flush[--ws->nflush]; break; }
    sub_free(s);
  }
  pkt_free(sh, m);
}

static void on_ack(struct shard *sh, struct pkt *m) {
  struct watch_shard *ws = region_watch(sh);
  struct rmsg *r = rmsg(m);
  struct wsub *s = sub_find(ws, r->from, r->slot, r->gen, NULL);
  if (s) {
    s->credits++;
    want_flush(ws, s);
  }
  pkt_free(sh, m);
}

/* derper's flags: regular only when no other bit applies. */
uint8_t watch_flags(const struct conn *c) {
  uint8_t f = 0;
  if (c->is_mesh) f |= DERP_PEER_PRESENT_MESH;
  if (c->is_prober) f |= DERP_PEER_PRESENT_PROBER;
  if (c->not_ideal) f |= DERP_PEER_PRESENT_NOT_IDEAL;
  return f ? f : DERP_PEER_PRESENT_REGULAR;
}

static size_t put_present(uint8_t *o, const derp_key *k, const struct conn *c) {
  return derp_enc_peer_present(o, PRESENT_FRAME_LEN, k, c->addr.sin6_addr.s6_addr, ntohs(c->addr.sin6_port),
                               watch_flags(c));
}

/* One MSG_PRESENCE from s's dirty keys, in the state they are in now: the
 * frames in it (0: every dirty key had come and gone unseen), or -1 when out
 * of memory (the keys stay dirty; tried again at the next change, ack or
 * tick: region_watch_tick). */
static int flush_sub(struct shard *sh, struct wsub *s) {
  /* Sized for what it can carry: a churn batch is often one frame, and a
   * full batch would take the 64 KiB class every time. */
  uint32_t most = s->live < PRESENCE_BATCH ? s->live : PRESENCE_BATCH;
  struct pkt *m = region_msg(sh, MSG_PRESENCE, most * PRESENT_FRAME_LEN);
  if (!m) return -1;
  uint32_t n = 0, gone = 0;
  /* From the cursor, one slot at a time. */
  uint32_t j = s->cursor;
  for (uint32_t i = 0; i < s->cap && s->live && n < PRESENCE_BATCH; i++, j = (j + 1) & (s->cap - 1)) {
    struct dirty_ent *e = &s->tab[j];
    if (e->state != SLOT_LIVE) continue;
    struct peer *p = relay_peer(sh, &e->key, e->hash);
    uint8_t *o = m->data + m->len;
    if (p && p->active) {
      m->len += (uint32_t)put_present(o, &e->key, p->active);
      n++;
    } else if (e->was_present) {
      m->len += (uint32_t)derp_enc_peer_gone(o, PRESENT_FRAME_LEN, &e->key, DERP_PEER_GONE_DISCONNECTED);
      n++;
      gone++;
    }
    e->state = SLOT_TOMB;
    s->live--;
  }
  s->cursor = j; /* the next batch starts past what this one took */
  /* A set that held a snapshot keeps its size for good unless shrunk, and
   * every later change would scan and clear all of it: all told, it goes
   * back to the smallest size; nearly all told, to what it holds. */
  if (s->live == 0 && s->cap > DS_MIN_CAP) {
    STAT_ADD(s->st, watch_slots, -(int64_t)s->cap);
    free(s->tab);
    s->tab = NULL;
    s->cap = s->used = s->cursor = 0;
  } else if (s->live == 0 && s->cap) { /* all told: start clean */
    memset(s->tab, 0, s->cap * sizeof *s->tab);
    s->used = 0;
    s->cursor = 0;
  } else if (s->cap > DS_MIN_CAP && (uint64_t)s->live * 8 < s->cap) {
    uint32_t ncap = DS_MIN_CAP;
    while (s->live * 2 > ncap) ncap *= 2;
    ds_rehash(s, ncap); /* out of memory: stays as it is */
  }
  if (n == 0) { pkt_free(sh, m); return 0; }
  STAT_ADD(&sh->stats, presence_frames, n);
  STAT_ADD(&sh->stats, peer_gone_disc, gone); /* derper's sendPeerGone counts a watcher's too */
  hist_observe(&sh->stats.ops, HIST_mesh_batch, n);
  struct rmsg *r = rmsg(m);
  r->slot = s->slot;
  r->gen = s->gen;
  s->credits--;
  shard_send_ctrl(sh, s->wshard, m);
  return (int)n;
}

/* Every tick: a sub with dirty keys and credits but not queued is one whose
 * batch could not be allocated. Nothing else may come to queue it (a quiet
 * shard, no batch in flight to be acked), and its watcher would miss those
 * keys for good; this queues it again. At most a few hundred subs a shard. */
static void resnap(struct shard *sh, struct watch_shard *ws, int i);

void region_watch_tick(struct shard *sh) {
  struct watch_shard *ws = region_watch(sh);
  for (uint32_t i = 0; i < ws->nsubs; i++) want_flush(ws, ws->subs[i]);
  for (int i = 0; i < WATCH_SLOTS; i++)
    if (ws->w[i].c && ws->w[i].resnap_due && sh->now_ms - ws->w[i].snap_ms >= 1000) resnap(sh, ws, i);
}

void region_watch_end_turn(struct shard *sh) {
  struct watch_shard *ws = region_watch(sh);
  while (ws->nflush) {
    struct wsub *s = ws->flush[--ws->nflush];
    s->queued = false;
    int64_t batches = 0;
    while (s->live && s->credits) {
      int n = flush_sub(sh, s);
      if (n < 0) break;
      if (n > 0) batches++;
    }
    hist_observe(&sh->stats.ops, HIST_mesh_loops, batches);
  }
}

void watch_note(struct shard *sh, const derp_key *k, uint64_t h, bool was_present) {
  struct watch_shard *ws = region_watch(sh);
  if (!ws->nsubs) return;
  struct peer *p = relay_peer(sh, k, h);
  bool now = p && p->active;
  for (uint32_t i = 0; i < ws->nsubs; i++) {
    struct wsub *s = ws->subs[i];
    if (!ds_mark(s, k, h, was_present, now)) {
      log_error("shard %d: out of memory tracking a watcher's changes", sh->id);
      continue;
    }
    want_flush(ws, s);
  }
}

/* ---- watchers (the watcher's own shard) ----------------------------------- */

/* A message of `kind` about watcher (slot, gen) for every shard, as a list
 * (rmsg's `to` says the target); NULL when out of memory (none kept). */
static struct pkt *for_every_shard(struct shard *sh, enum msg_kind kind, uint16_t slot, uint32_t gen) {
  struct pkt *list = NULL;
  for (int t = 0; t < sh->srv->nshards; t++) {
    struct pkt *m = region_msg(sh, kind, 0);
    if (!m) {
      pkt_free_list(sh, list);
      return NULL;
    }
    rmsg(m)->slot = slot;
    rmsg(m)->gen = gen;
    rmsg(m)->to = (uint16_t)t;
    m->next = list;
    list = m;
  }
  return list;
}

static void send_all(struct shard *sh, struct pkt *list) {
  while (list) {
    struct pkt *m = list;
    list = m->next;
    shard_send_ctrl(sh, rmsg(m)->to, m);
  }
}

/* A second WatchConns: the snapshot again (derper's addWatcher sends one per
 * request). At most one a second per watcher, so a flood of these 5-byte
 * frames costs a message per shard a second, not per frame. */
static void resnap(struct shard *sh, struct watch_shard *ws, int i) {
  struct watcher *w = &ws->w[i];
  w->resnap_due = false;
  w->snap_ms = sh->now_ms;
  struct pkt *list = for_every_shard(sh, MSG_WATCH_RESNAP, (uint16_t)i, w->gen);
  if (!list) return; /* out of memory: the watcher has every change already */
  send_all(sh, list);
}

static int watch_again(struct shard *sh, struct watch_shard *ws, struct conn *c) {
  for (int i = 0; i < WATCH_SLOTS; i++) {
    struct watcher *w = &ws->w[i];
    if (w->c != c) continue;
    if (sh->now_ms - w->snap_ms < 1000) w->resnap_due = true; /* region_watch_tick makes it */
    else resnap(sh, ws, i);
    return 0;
  }
  return 0;
}

/* Tools watching from this shard. A node's link that came before our link
 * to that node met its key counted as a tool: it stops counting once the key
 * is known (checked here, on the rare WatchConns, not kept up to date). */
static uint32_t tools_here(struct shard *sh, struct watch_shard *ws) {
  uint32_t n = 0;
  for (int i = 0; i < WATCH_SLOTS; i++) {
    struct watcher *w = &ws->w[i];
    if (!w->c || !w->tool) continue;
    if (region_is_peer(sh->srv, w->c->key_hash)) {
      w->tool = false;
      atomic_fetch_sub(&sh->srv->region->ntools, 1);
    } else {
      n++;
    }
  }
  return n;
}

int watch_start(struct conn *c) {
  struct shard *sh = c->sh;
  struct watch_shard *ws = region_watch(sh);
  if (c->is_watcher) return watch_again(sh, ws, c);
  struct region *rg = sh->srv->region;
  bool tool = !region_is_peer(sh->srv, c->key_hash);
  int slot = -1;
  for (int i = 0; i < WATCH_SLOTS && slot < 0; i++)
    if (!ws->w[i].c) slot = i;
  if (slot >= 0 && tool && tools_here(sh, ws) >= WATCH_SLOTS - WATCH_PEER_SLOTS) slot = -1;
  if (slot < 0 || (tool && atomic_fetch_add(&rg->ntools, 1) >= WATCH_TOOLS)) {
    if (slot >= 0) atomic_fetch_sub(&rg->ntools, 1);
    conn_close(c, CLOSE_watchers_full, tool ? "too many watchers (other than this region's nodes)"
                                            : "too many watchers");
    return -1;
  }
  uint32_t gen = ++ws->next_gen;
  struct pkt *sub = for_every_shard(sh, MSG_WATCH_SUB, (uint16_t)slot, gen);
  struct pkt *unsub = sub ? for_every_shard(sh, MSG_WATCH_UNSUB, (uint16_t)slot, gen) : NULL;
  if (!unsub) { /* before any shard hears of it: nothing to undo */
    pkt_free_list(sh, sub);
    if (tool) atomic_fetch_sub(&rg->ntools, 1);
    conn_close(c, CLOSE_nomem, "WatchConns: the watcher's messages");
    return -1;
  }
  ws->w[slot].c = c;
  ws->w[slot].gen = gen;
  ws->w[slot].unsub = unsub;
  ws->w[slot].snap_ms = sh->now_ms;
  ws->w[slot].resnap_due = false;
  ws->w[slot].tool = tool;
  c->is_watcher = 1;
  STAT_INC(&sh->stats, watchers);
  send_all(sh, sub);
  return 0;
}

void watch_conn_closed(struct conn *c) {
  struct shard *sh = c->sh;
  struct watch_shard *ws = region_watch(sh);
  for (int i = 0; i < WATCH_SLOTS; i++) {
    if (ws->w[i].c != c) continue;
    ws->w[i].c = NULL;
    if (ws->w[i].tool) atomic_fetch_sub(&sh->srv->region->ntools, 1);
    STAT_ADD(&sh->stats, watchers, -1);
    send_all(sh, ws->w[i].unsub);
    ws->w[i].unsub = NULL;
    return;
  }
}

static void on_presence(struct shard *sh, struct pkt *m) {
  struct watch_shard *ws = region_watch(sh);
  struct rmsg *r = rmsg(m);
  struct watcher *w = r->slot < WATCH_SLOTS ? &ws->w[r->slot] : NULL;
  if (!w || !w->c || w->gen != r->gen || w->c->state != CS_ESTABLISHED) {
    pkt_free(sh, m); /* the watcher left; its subscriptions are being dropped */
    return;
  }
  conn_queue_ctrl_nodrop(w->c, m); /* kind stays MSG_PRESENCE: written -> ack */
}

/* The written batch itself becomes the ACK: nothing to allocate, so a
 * credit can never be lost (a lost one would silence this watcher for that
 * shard's keys for good). */
void watch_presence_written(struct shard *sh, struct pkt *p) {
  struct rmsg *r = rmsg(p);
  int to = r->from;
  p->kind = MSG_WATCH_ACK;
  p->len = 0;
  /* The subscription is found by (watcher shard, slot, gen): this shard. */
  r->from = (uint16_t)sh->id;
  shard_send_ctrl(sh, to, p);
}

void region_watch_ctrl(struct shard *sh, struct pkt *m) {
  switch (m->kind) {
  case MSG_WATCH_SUB: on_sub(sh, m); break;
  case MSG_WATCH_UNSUB: on_unsub(sh, m); break;
  case MSG_WATCH_RESNAP: on_resnap(sh, m); break;
  case MSG_PRESENCE: on_presence(sh, m); break;
  case MSG_WATCH_ACK: on_ack(sh, m); break;
  default: pkt_free(sh, m); break;
  }
}

struct watch_shard *region_watch_new(void) { return calloc(1, sizeof(struct watch_shard)); }

void region_watch_free(struct shard *sh, struct watch_shard *ws) {
  if (!ws) return;
  for (int i = 0; i < WATCH_SLOTS; i++) pkt_free_list(sh, ws->w[i].unsub); /* watchers at exit */
  for (uint32_t i = 0; i < ws->nsubs; i++) sub_free(ws->subs[i]);
  free(ws->subs);
  free(ws->flush);
  free(ws);
}
