/* region.h: this node's part in a region of meshed DERP nodes.
 *
 * A region is several nodes that share a mesh key; each dials every other
 * (-mesh-with) as a client with that key and WatchConns, so each learns
 * which keys live where and forwards packets for keys it does not hold.
 * The pieces, one file each:
 *   watch.c    watchers: a mesh peer's WatchConns, the snapshot and every
 *              change after it, coalesced per key, flow-controlled by credits
 *   forward.c  the remote table (key -> links that forward for it, derper's
 *              multiForwarder), ForwardPacket out, PeerGone when a key
 *              leaves the region, ClosePeer
 *   link.c     outbound links: a dialler thread per -mesh-with entry (DNS,
 *              TCP, TLS and the DERP handshake block, so never on a shard),
 *              then the link conn runs on its shard like any other conn
 *   mesh_config.c  -mesh-with and mesh key parsing (pure; unit-tested)
 *
 * Ownership follows the shards: presence about key K is produced on
 * owner(K), forwarders for K are kept on owner(K), a watcher lives on its own
 * owner shard, a link's conn on the shard it was given at start. Shards talk
 * through control messages on the control rings (shard_send_ctrl: never
 * dropped, held in order when a ring is full); the routing facts ride in the
 * pkt's `dst` bytes (struct rmsg). */
#ifndef DERPD_REGION_H
#define DERPD_REGION_H

#include <stdbool.h>
#include <stdint.h>

#include "derp/frame.h"
#include "derp/key.h"
#include "derp/meshkey.h"
#include "server/server.h"

#define REGION_MAX_LINKS 64   /* -mesh-with entries */
#define REGION_LINK_LOOKUPS 2 /* a link's name lookups at once: the one its dial waits for, one abandoned */
#define WATCH_SLOTS 64        /* watchers per shard */
#define WATCH_PEER_SLOTS 16   /* of those, kept for the region's nodes */
#define WATCH_TOOLS 256       /* watchers per node that are not its region's nodes */
#define FWD_MAX 8             /* forwarders kept in order per key (more: a bitmask of links) */
#define MESH_WRITE_TIMEOUT_MS 30000 /* derper's write timeout for mesh peers (inbound) */
#define LINK_WRITE_TIMEOUT_MS 5000  /* derper's for its own mesh client's ForwardPacket */


/* The routing facts of a region control message, in pkt->dst. */
struct rmsg {
  uint32_t gen;      /* watcher or link generation */
  uint16_t slot;     /* watcher slot on its shard */
  uint16_t from;     /* sending shard */
  uint8_t link;      /* link index */
  uint8_t pad;
  uint16_t to;       /* target shard, in a list of messages made ahead */
};
_Static_assert(sizeof(struct rmsg) <= sizeof(derp_key), "rmsg fits in pkt->dst");
static inline struct rmsg *rmsg(struct pkt *p) { return (struct rmsg *)(void *)p->dst.b; }

/* One -mesh-with entry. */
struct mesh_entry {
  char label[300];    /* the entry as written, for logs and metrics */
  char name[256];     /* TLS name (SNI, verification) and the entry as written */
  char dial[256];     /* host to connect to (name, or the part after '/') */
  uint16_t port;
  bool tls;           /* https (derper's only form) or http:// (derpd's own) */
};

/* mesh_config.c. Parses a comma-separated -mesh-with list: host, host:port,
 * name/dialaddr[:port], [v6]:port, http://host:port, https://host[:port].
 * 0 with *n entries, or -1 with err. */
int mesh_with_parse(const char *list, struct mesh_entry *out, int max, int *n, char *err,
                    size_t errlen);
/* Drops every entry written the same as an earlier one (derper would dial
 * it twice; derpd's per-link series would repeat, and Prometheus refuses a
 * scrape with a repeated series). Returns how many are kept, in order. */
int mesh_with_drop_repeats(struct mesh_entry *e, int n);

struct link;

struct region {
  char mesh_key[DERP_MESH_KEY_MAX + 1]; /* "" = no mesh key: nobody is a mesh peer */
  int nlinks;
  struct link *links;              /* nlinks of them (link.c) */
  _Atomic int ntools;              /* node-wide, for WATCH_TOOLS (watch.c) */
  bool leaked;                     /* a dialler did not stop (main thread only) */
};

/* Start-up (main thread): the mesh key from -mesh-psk-file / derper's
 * default paths / TAILSCALE_DERPER_MESH_KEY (-dev), and the links. 0, or -1
 * after logging why. */
int region_setup(struct server *s);
/* After the shards run: start the diallers. After the shards are joined:
 * stop and join them. */
void region_start(struct server *s);
void region_stop(struct server *s);
/* A dialler did not stop in time (region_stop): the server and the region
 * must stay allocated until the process exits. */
bool region_leaked(const struct server *s);
void region_free(struct server *s);
bool region_is_mesh_key(const struct region *r, const char *key);
/* A key (by key_hash) is the server key one of our links met when it last
 * connected: a node of this region (any thread). */
bool region_is_peer(const struct server *s, uint64_t key_hash);

/* Per shard (shard.c). */
int region_shard_init(struct shard *sh);
void region_shard_free(struct shard *sh);
void region_ctrl(struct shard *sh, struct pkt *m);   /* a MSG_WATCH_* .. MSG_CLOSE_PEER */
void region_end_turn(struct shard *sh);              /* send what watchers may take */
void region_tick(struct shard *sh);                  /* adopt links the diallers made */
size_t region_render_varz(char *out, size_t cap, struct server *s);
/* What region_render_varz may write at most. */
size_t region_varz_cap(const struct server *s);

/* watch.c. Key k changed on its owner shard: it has a conn now, or not. */
void watch_note(struct shard *sh, const derp_key *k, uint64_t h, bool was_present);
int watch_start(struct conn *c);                       /* WatchConns: 0 or -1 (closed) */
void watch_conn_closed(struct conn *c);
void watch_presence_written(struct shard *sh, struct pkt *p); /* a MSG_PRESENCE is on the wire: takes p */
uint8_t watch_flags(const struct conn *c);

/* forward.c. On owner(p->dst), no local receiver: true if a link took it. */
bool forward_out(struct shard *sh, struct pkt *p);
/* Key k (owned here) got (+1) or lost (-1) its local peer entry: derper's
 * client gauges follow (local, remote-only, total, all by key). */
void region_count_key(struct shard *sh, const derp_key *k, uint64_t h, int local_delta);
/* The local key hashed who_hash got packets from the remote key hashed h:
 * it hears PeerGone when that key leaves the region. false: h is not a
 * remote key (now). */
bool forward_note_contact(struct shard *sh, uint64_t h, uint64_t who_hash);
/* Key k's last local conn went: if a forwarder still has k, it moved within
 * the region and has not left. Then the keys of set (who must hear PeerGone
 * when k leaves) are kept with the forwarder and true is returned: derper
 * keeps one peerGoneWatchers set per key, wherever the key is. */
bool forward_keep_contacts(struct shard *sh, const derp_key *k, uint64_t h, const struct hashset *set);
int forward_close_peer(struct conn *c, const struct derp_frame *f);
void forward_free(struct shard *sh);

/* link.c */
void link_deliver(struct shard *sh, struct pkt *p);    /* MSG_FWD_PKT on the link's shard */
int link_frame(struct conn *c, const struct derp_frame *f);
void link_conn_closed(struct conn *c);
void region_link_note_drop(struct conn *c);              /* a link's queue dropped one */

/* relay.c helpers the region uses. */
struct peer *relay_peer(struct shard *sh, const derp_key *k, uint64_t h);
void relay_peer_gone(struct shard *sh, uint64_t to_hash, const derp_key *about, uint8_t reason);
bool relay_hashset_add(struct shard *sh, struct hashset *set, uint64_t h);
void relay_keep_contacts(struct shard *sh, struct peer *p, const struct hashset *set);
void relay_route(struct shard *sh, struct pkt *p);     /* to owner(p->dst), or drop */

#endif
