/* debug_access.c: the /debug/ access rules (see debug_access.h): CIDR lists,
 * the Tailscale ranges, the debugkey query parameter and key file. Pure but
 * for debug_key_matches, which reads the key file. */
#include "server/operations/debug_access.h"

#include "lib/pctdecode.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* A numeric IPv4 or IPv6 address into 16 bytes; *v4 tells which. */
static bool parse_addr16(const char *s, size_t n, uint8_t out[16], bool *v4) {
  char buf[INET6_ADDRSTRLEN + 1];
  if (n == 0 || n >= sizeof buf) return false;
  memcpy(buf, s, n);
  buf[n] = 0;
  if (inet_pton(AF_INET, buf, out + 12) == 1) {
    memcpy(out, v4mapped, 12);
    *v4 = true;
    return true;
  }
  *v4 = false;
  return inet_pton(AF_INET6, buf, out) == 1;
}

int debug_cidr_parse(const char *s, size_t n, struct debug_cidr *out) {
  const char *slash = memchr(s, '/', n);
  size_t al = slash ? (size_t)(slash - s) : n;
  bool v4;
  if (!parse_addr16(s, al, out->addr, &v4)) return -1;
  unsigned max = v4 ? 32 : 128, len = max;
  if (slash) {
    const char *p = slash + 1, *end = s + n;
    if (p == end || end - p > 3) return -1;
    len = 0;
    for (; p < end; p++) {
      if (*p < '0' || *p > '9') return -1;
      len = len * 10 + (unsigned)(*p - '0');
    }
    if (len > max) return -1;
  }
  out->bits = (uint8_t)(v4 ? 96 + len : len);
  for (unsigned i = out->bits; i < 128; i++) out->addr[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
  return 0;
}

static int errf(char *err, size_t errlen, const char *fmt, const char *s, size_t n) {
  if (errlen) snprintf(err, errlen, fmt, (int)(n > 64 ? 64 : n), s);
  return -1;
}

int debug_allow_add(struct debug_access *a, const char *list, char *err, size_t errlen) {
  int have = a ? a->nallow : 0;
  const char *s = list;
  for (;;) {
    const char *comma = strchr(s, ',');
    size_t n = comma ? (size_t)(comma - s) : strlen(s);
    while (n && (*s == ' ' || *s == '\t')) { s++; n--; }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    struct debug_cidr c;
    if (debug_cidr_parse(s, n, &c) < 0)
      return errf(err, errlen, "\"%.*s\" is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an address", s, n);
    if (have >= DEBUG_ALLOW_MAX) {
      if (errlen) snprintf(err, errlen, "more than %d CIDRs", DEBUG_ALLOW_MAX);
      return -1;
    }
    if (a) a->allow[a->nallow++] = c;
    have++;
    if (!comma) return 0;
    s = comma + 1;
  }
}

int debug_access_env(struct debug_access *a, const char *allow_ip, const char *key_path, char *err,
                     size_t errlen) {
  int rc = 0;
  a->has_env_ip = false;
  a->key_path[0] = 0;
  if (allow_ip && allow_ip[0]) {
    bool v4;
    a->has_env_ip = parse_addr16(allow_ip, strlen(allow_ip), a->env_ip, &v4);
    if (!a->has_env_ip)
      rc = errf(err, errlen, "TS_ALLOW_DEBUG_IP=\"%.*s\" is not an IP address: ignored", allow_ip,
                strlen(allow_ip));
  }
  if (key_path && key_path[0]) {
    size_t n = strlen(key_path);
    if (n < sizeof a->key_path) memcpy(a->key_path, key_path, n + 1);
    else rc = errf(err, errlen, "TS_DEBUG_KEY_PATH=\"%.*s...\" is too long: ignored", key_path, n);
  }
  return rc;
}

static bool is_v4(const uint8_t a[16]) { return memcmp(a, v4mapped, 12) == 0; }

/* An IPv6 prefix does not hold IPv4 peers (::/0 is "any IPv6"), as in Go's
 * netip; a prefix written as IPv4 (stored v4-mapped) holds only them. */
bool debug_cidr_contains(const struct debug_cidr *c, const uint8_t addr[16]) {
  if ((c->bits >= 96 && is_v4(c->addr)) != is_v4(addr)) return false;
  unsigned full = c->bits / 8, rest = c->bits % 8;
  if (memcmp(c->addr, addr, full) != 0) return false;
  if (!rest) return true;
  uint8_t mask = (uint8_t)(0xff00u >> rest);
  return (addr[full] & mask) == c->addr[full];
}

static bool is_loopback(const uint8_t a[16]) {
  static const uint8_t v6lo[16] = {[15] = 1};
  return is_v4(a) ? a[12] == 127 : memcmp(a, v6lo, 16) == 0;
}

/* net/tsaddr.IsTailscaleIP: the CGNAT range Tailscale assigns from, less the
 * block ChromeOS uses for its VMs; the Tailscale ULA range for IPv6. */
static bool is_tailscale(const uint8_t a[16]) {
  if (is_v4(a)) {
    bool cgnat = a[12] == 100 && (a[13] & 0xc0) == 64;          /* 100.64.0.0/10 */
    bool chromeos = a[12] == 100 && a[13] == 115 && (a[14] & 0xfe) == 92; /* 100.115.92.0/23 */
    return cgnat && !chromeos;
  }
  static const uint8_t ula[6] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0}; /* fd7a:115c:a1e0::/48 */
  return memcmp(a, ula, 6) == 0;
}

bool debug_addr_trusted(const struct debug_access *a, const uint8_t addr[16]) {
  if (is_loopback(addr) || is_tailscale(addr)) return true;
  if (a->has_env_ip && memcmp(a->env_ip, addr, 16) == 0) return true;
  for (int i = 0; i < a->nallow; i++)
    if (debug_cidr_contains(&a->allow[i], addr)) return true;
  return false;
}

int debug_query_value(const char *q, size_t n, const char *name, char *out, size_t cap) {
  size_t name_len = strlen(name);
  char key[64];
  while (n) {
    const char *amp = memchr(q, '&', n);
    size_t pl = amp ? (size_t)(amp - q) : n;
    const char *eq = memchr(q, '=', pl);
    size_t kl = eq ? (size_t)(eq - q) : pl;
    /* Go (1.17 on) rejects a pair with a ';' and goes on with the next one. */
    if (pl && !memchr(q, ';', pl) && derp_pct_decode(q, kl, true, key, sizeof key) == (int)name_len &&
        memcmp(key, name, name_len) == 0) {
      int vl = eq ? derp_pct_decode(eq + 1, pl - kl - 1, true, out, cap) : derp_pct_decode("", 0, true, out, cap);
      if (vl >= 0) return vl;
      if (vl == -2) return -1;
    }
    if (!amp) break;
    q += pl + 1;
    n -= pl + 1;
  }
  return -1;
}

static bool is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Equal in time that depends on the lengths only. */
static bool ct_equal(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  size_t n = an < bn ? an : bn;
  unsigned d = an != bn;
  for (size_t i = 0; i < n; i++) d |= (unsigned)(a[i] ^ b[i]);
  return d == 0;
}

bool debug_key_matches(const char *path, const char *key, size_t klen) {
  if (!path[0] || klen == 0 || klen > DEBUG_KEY_MAX) return false;
  /* On a shard, for anyone's ?debugkey=: a FIFO or a device must not block
   * it, so non-blocking, and only a regular file counts. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return false;
  }
  uint8_t buf[DEBUG_KEY_MAX + 64];
  size_t got = 0;
  ssize_t r;
  while (got < sizeof buf && ((r = read(fd, buf + got, sizeof buf - got)) > 0 || (r < 0 && errno == EINTR)))
    if (r > 0) got += (size_t)r;
  close(fd);
  if (got == sizeof buf) return false; /* longer than any key compared */
  const uint8_t *p = buf;
  while (got && is_space(*p)) { p++; got--; }
  while (got && is_space(p[got - 1])) got--;
  return ct_equal(p, got, (const uint8_t *)key, klen);
}

bool debug_access_allowed(const struct debug_access *a, const struct debug_request *r) {
  if (r->get && r->query && !r->query_cut && a->key_path[0]) {
    char key[DEBUG_KEY_MAX + 1];
    int kl = debug_query_value(r->query, r->query_len, "debugkey", key, sizeof key);
    if (kl > 0 && debug_key_matches(a->key_path, key, (size_t)kl)) return true;
  }
  if (r->forwarded) return false;
  return debug_addr_trusted(a, r->peer);
}
