/* debug_http.h: /debug/ on derpd's listeners: who may see it (the rules of
 * debug_access.c applied to a conn's address and request), which routes each
 * listener serves, and the pages, rendered on the shard that took the request
 * and queued as its reply. */
#ifndef DERPD_DEBUG_HTTP_H
#define DERPD_DEBUG_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "server/operations/debug_access.h"
#include "server/operations/procstats.h"

struct conn;
struct http_req;
struct http_reply;
struct server;

/* What the operations layer keeps for the process's life: read-only once the
 * shards run. */
struct debug_state {
  struct debug_access access;
  struct proc_start start;     /* process start facts (uptime, start time, RSS at start) */
  struct bootstrap_dns *bdns;  /* /bootstrap-dns (bootstrap_dns.c): its own lock */
};

/* At start, before the shards: the process start facts, the access rules
 * from --debug-allow and the environment (a bad TS_ALLOW_DEBUG_IP is logged and ignored, as derper never
 * matches it), the bootstrap DNS lists and their thread. Sets s->debug. 0,
 * or -1 with err (out of memory, bad flag, no thread). */
int debug_state_init(struct server *s, char *err, size_t errlen);
void debug_state_free(struct server *s);

/* May this request on c see /debug/? */
bool debug_http_allowed(const struct conn *c, const struct http_req *req);
/* Route a complete request for the listener c came in on, with the access
 * rules applied (http_route / http_route_port80 do the rest). */
void debug_route(struct conn *c, const struct http_req *req, struct http_reply *out);
/* An HTTP_ACT_DEBUG reply: render the page and queue it, then close. */
void debug_reply(struct conn *c, const struct http_req *req, const struct http_reply *r);
/* An HTTP_ACT_BOOTSTRAP_DNS reply: derper's answer, queued, then close. */
void bootstrap_dns_reply(struct conn *c, const struct http_req *req);

#endif
