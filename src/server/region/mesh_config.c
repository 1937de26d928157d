/* mesh_config.c: the -mesh-with list, parsed without touching anything:
 * derper's forms plus derpd's http:// one
 * (the mesh key itself is libderp's: derp/meshkey.h). Pure, so unit tests
 * cover every form. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/region/region.h"

#define DEFAULT_MESH_PORT 443

static int fail(char *err, size_t errlen, const char *entry, size_t n, const char *why) {
  snprintf(err, errlen, "-mesh-with entry \"%.*s\": %s", (int)(n > 128 ? 128 : n), entry, why);
  return -1;
}

/* "host", "host:port", "[v6]" or "[v6]:port" into host and port; with
 * bare_v6, also an unbracketed v6 address (two colons or more: no port). */
static int split_host_port(const char *s, size_t n, char *host, size_t hcap, uint16_t *port,
                           uint16_t defport, bool bare_v6) {
  const char *colon = NULL;
  size_t hl;
  const char *h = s;
  if (n && s[0] == '[') {
    const char *rb = memchr(s, ']', n);
    if (!rb) return -1;
    h = s + 1;
    hl = (size_t)(rb - h);
    if ((size_t)(rb + 1 - s) < n) {
      if (rb[1] != ':') return -1;
      colon = rb + 1;
    }
  } else {
    colon = memchr(s, ':', n);
    if (colon && memchr(colon + 1, ':', n - (size_t)(colon + 1 - s))) { /* bare v6 */
      if (!bare_v6) return -1;
      colon = NULL;
    }
    hl = colon ? (size_t)(colon - s) : n;
  }
  if (hl == 0 || hl >= hcap) return -1;
  memcpy(host, h, hl);
  host[hl] = 0;
  *port = defport;
  if (colon) {
    size_t pl = n - (size_t)(colon + 1 - s);
    if (pl == 0 || pl > 5) return -1;
    long v = 0;
    for (size_t i = 0; i < pl; i++) {
      if (!isdigit((unsigned char)colon[1 + i])) return -1;
      v = v * 10 + (colon[1 + i] - '0');
    }
    if (v < 1 || v > 65535) return -1;
    *port = (uint16_t)v;
  }
  return 0;
}

static int parse_entry(const char *s, size_t n, struct mesh_entry *e, char *err, size_t errlen) {
  memset(e, 0, sizeof *e);
  e->tls = true;
  if (n >= sizeof e->label) return fail(err, errlen, s, n, "too long");
  for (size_t i = 0; i < n; i++)
    if (s[i] == '"' || s[i] == '\\' || isspace((unsigned char)s[i]) || !isprint((unsigned char)s[i]))
      return fail(err, errlen, s, n, "bad character");
  memcpy(e->label, s, n);
  const char *p = s;
  size_t m = n;
  if (m >= 7 && strncmp(p, "http://", 7) == 0) {
    e->tls = false;
    p += 7, m -= 7;
  } else if (m >= 8 && strncmp(p, "https://", 8) == 0) {
    p += 8, m -= 8;
  }
  if (m && p[m - 1] == '/') m--; /* "https://host/" */
  if (m >= 5 && strncmp(p + m - 5, "/derp", 5) == 0) m -= 5; /* a pasted URL */
  if (m == 0) return fail(err, errlen, s, n, "empty host");
  const char *slash = memchr(p, '/', m);
  if (slash) {
    /* derper's name[:port]/dialhost: TLS name and port, then the host to
     * connect to on that port (derper dials dialhost at the name's port,
     * a bare IPv6 address included: net.JoinHostPort); derpd also takes
     * name/dialhost:port and name/[v6]:port. */
    size_t nl = (size_t)(slash - p);
    if (memchr(slash + 1, '/', m - nl - 1)) /* derper: "too many components in host tuple" */
      return fail(err, errlen, s, n, "more than one '/' (want name/dialaddr)");
    uint16_t name_port;
    if (split_host_port(p, nl, e->name, sizeof e->name, &name_port, e->tls ? DEFAULT_MESH_PORT : 80, false) < 0)
      return fail(err, errlen, s, n, "bad name before '/' (want name or name:port)");
    if (split_host_port(slash + 1, m - nl - 1, e->dial, sizeof e->dial, &e->port, name_port, true) < 0)
      return fail(err, errlen, s, n, "bad dial address after '/' (want host or host:port)");
    return 0;
  }
  if (split_host_port(p, m, e->dial, sizeof e->dial, &e->port, e->tls ? DEFAULT_MESH_PORT : 80, false) < 0)
    return fail(err, errlen, s, n, "want host, host:port, name/dialaddr, or http://host:port");
  snprintf(e->name, sizeof e->name, "%s", e->dial);
  return 0;
}

int mesh_with_parse(const char *list, struct mesh_entry *out, int max, int *n, char *err,
                    size_t errlen) {
  *n = 0;
  for (const char *s = list; s && *s;) {
    const char *comma = strchr(s, ',');
    size_t len = comma ? (size_t)(comma - s) : strlen(s);
    while (len && isspace((unsigned char)*s)) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    if (len) {
      if (*n >= max) {
        snprintf(err, errlen, "-mesh-with: more than %d entries", max);
        return -1;
      }
      if (parse_entry(s, len, &out[*n], err, errlen) < 0) return -1;
      (*n)++;
    }
    s = comma ? comma + 1 : NULL;
  }
  return 0;
}

int mesh_with_drop_repeats(struct mesh_entry *e, int n) {
  int kept = 0;
  for (int i = 0; i < n; i++) {
    bool seen = false;
    for (int j = 0; j < kept && !seen; j++) seen = strcmp(e[j].label, e[i].label) == 0;
    if (!seen && kept != i) e[kept] = e[i];
    kept += !seen;
  }
  return kept;
}
