/* debug_access.h: who may read /debug/: derper's rules (tsweb.AllowDebugAccess)
 * plus derpd's --debug-allow.
 *
 * Pure decisions on what the HTTP layer saw; no sockets, no conns. In order:
 *  1. A GET whose query has debugkey=K, with TS_DEBUG_KEY_PATH set and K equal
 *     to that file's contents with surrounding white space trimmed (compared in
 *     constant time; the file is read at each such request, as derper does, so
 *     a new key counts at once): allowed, whatever comes next.
 *  2. Any X-Forwarded-For header: refused (behind a proxy the peer address is
 *     the proxy's, not the client's).
 *  3. The peer address is loopback (127.0.0.0/8, ::1), a Tailscale address
 *     (100.64.0.0/10 except ChromeOS's 100.115.92.0/23, fd7a:115c:a1e0::/48),
 *     equal to TS_ALLOW_DEBUG_IP, or inside a --debug-allow CIDR: allowed.
 * Everything else is refused. Addresses are 16 bytes, IPv4 as v4-mapped IPv6. */
#ifndef DERPD_DEBUG_ACCESS_H
#define DERPD_DEBUG_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEBUG_ALLOW_MAX 32     /* --debug-allow CIDRs */
#define DEBUG_KEY_MAX 256      /* longest debugkey compared (query value and file) */

struct debug_cidr {
  uint8_t addr[16];            /* network address, host bits zero; IPv4 v4-mapped */
  uint8_t bits;                /* prefix length over the 128 bits (IPv4: 96 + len) */
};

struct debug_access {
  struct debug_cidr allow[DEBUG_ALLOW_MAX];
  int nallow;
  bool has_env_ip;             /* TS_ALLOW_DEBUG_IP set to a valid address */
  uint8_t env_ip[16];
  char key_path[1024];         /* TS_DEBUG_KEY_PATH; "" = none */
};

/* What the HTTP layer saw of one request. */
struct debug_request {
  const uint8_t *peer;         /* 16 bytes */
  bool get;                    /* method GET (debugkey counts for GET only) */
  bool forwarded;              /* an X-Forwarded-For header came */
  const char *query;           /* raw query string, after '?' and before '#' */
  size_t query_len;
  bool query_cut;              /* longer than the HTTP layer keeps: no key in it counts */
};

/* "a.b.c.d/n", "v6/n", or a bare address (a host prefix). 0, or -1. */
int debug_cidr_parse(const char *s, size_t n, struct debug_cidr *out);
/* Append "CIDR[,CIDR...]" to a->allow. 0, or -1 with the reason in err (a
 * bad entry, or more than DEBUG_ALLOW_MAX in all). a may be NULL: check only. */
int debug_allow_add(struct debug_access *a, const char *list, char *err, size_t errlen);
/* The environment's part: TS_ALLOW_DEBUG_IP and TS_DEBUG_KEY_PATH values (NULL
 * or "" = unset). -1 with err if the IP does not parse (it is then ignored,
 * as derper never matches it) or the path is too long. */
int debug_access_env(struct debug_access *a, const char *allow_ip, const char *key_path, char *err,
                     size_t errlen);
bool debug_cidr_contains(const struct debug_cidr *c, const uint8_t addr[16]);
/* Rule 3 alone: loopback, Tailscale, TS_ALLOW_DEBUG_IP, --debug-allow. */
bool debug_addr_trusted(const struct debug_access *a, const uint8_t addr[16]);
/* The first value of `name` in query string q[0..n), decoded as Go's
 * url.ParseQuery does ('&' separates, a pair holding ';' is skipped, '+' is a
 * space, %XX). Its length, written NUL-terminated to out; -1 if absent or
 * longer than cap - 1 (a pair that fails to decode is skipped). */
int debug_query_value(const char *q, size_t n, const char *name, char *out, size_t cap);
/* Does key[0..klen) equal the file's contents with white space trimmed? A
 * missing file, an empty key or one over DEBUG_KEY_MAX never matches. */
bool debug_key_matches(const char *path, const char *key, size_t klen);
bool debug_access_allowed(const struct debug_access *a, const struct debug_request *r);

#endif
