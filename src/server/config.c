/* config.c: owns derpd's command line (see config.h): defaults, Go flag-package
 * syntax with derper's flag names, per-flag validation, Go duration parsing,
 * and the usage text. Parsing only: nothing is opened or started here. */
#include "server/config.h"
#include "server/acme/acme_config.h"
#include "server/operations/debug_access.h"
#include "server/admission/wire.h"
#include "server/protocol/http.h"
#include "server/transport/ktls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DEFAULT_PORT 443
#define DEV_PORT 3340
/* Timers take milliseconds as int in places; a day is more than any sane value. */
#define MAX_DURATION_MS (24LL * 3600 * 1000)

void config_defaults(struct config *c) {
  memset(c, 0, sizeof *c);
  c->listen_port = DEFAULT_PORT;
  strcpy(c->hostname, "derp.example.com");
  c->tcp_write_timeout_ms = 2000;
  c->handshake_timeout_ms = 10000;
  c->keepalive_ms = 60000;
  c->recv_bufs = 256;
  c->recv_buf_size = 16384;
  c->queue_depth = 0; /* auto: config_ring_depths() */
  c->batch_wait_us = 100;
  c->batch_events = 32;
  c->mesh_max_remote = 1000000;
  c->http_port = 80;
  c->metrics_port = -1;
  c->ktls_mode = KTLS_AUTO;
  strcpy(c->acme_directory, CONFIG_ACME_DIRECTORY_DEFAULT);
  c->verify_client_url_fail_open = true;
  strcpy(c->tailscaled_socket, CONFIG_TAILSCALED_SOCKET);
  c->admission_workers = 32;
  c->admission_queue = 4096;
  c->stun = true;
  c->stun_port = 3478;
  c->accept_limit = INFINITY;
  c->accept_burst = INT64_MAX;
  c->tcp_keepalive_ms = 10 * 60 * 1000;
  c->tcp_user_timeout_ms = 15000;
  c->derp = true;
  strcpy(c->secrets_prefix, "prod/derp");
  /* derper's default: os.UserCacheDir()/tailscale/derper-certs. */
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (xdg && xdg[0] == '/')
    snprintf(c->certdir, sizeof c->certdir, "%s/tailscale/derper-certs", xdg);
  else if (home && home[0])
    snprintf(c->certdir, sizeof c->certdir, "%s/.cache/tailscale/derper-certs", home);
  /* derper's defaultMeshPSKFile: the first of these that exists, else ""
   * (so an explicit -mesh-psk-file "" means no key, as there). */
  char in_home[sizeof c->mesh_psk_file];
  snprintf(in_home, sizeof in_home, "%s/keys/derp-mesh.key", home ? home : "");
  const char *cands[] = {"/home/derp/keys/derp-mesh.key", home && home[0] ? in_home : NULL};
  for (size_t i = 0; i < 2 && !c->mesh_psk_file[0]; i++)
    if (cands[i] && access(cands[i], F_OK) == 0) snprintf(c->mesh_psk_file, sizeof c->mesh_psk_file, "%s", cands[i]);
}

/* ---- Go durations ---------------------------------------------------------- */

static const struct { const char *name; uint64_t ns; } dur_units[] = {
    {"ns", 1ULL}, {"us", 1000ULL}, {"\xc2\xb5s", 1000ULL} /* U+00B5 */,
    {"\xce\xbcs", 1000ULL} /* U+03BC */, {"ms", 1000000ULL}, {"s", 1000000000ULL},
    {"m", 60000000000ULL}, {"h", 3600000000000ULL},
};

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static uint64_t dur_unit(const char *u, size_t n) {
  for (size_t i = 0; i < sizeof dur_units / sizeof dur_units[0]; i++)
    if (strlen(dur_units[i].name) == n && memcmp(dur_units[i].name, u, n) == 0)
      return dur_units[i].ns;
  return 0;
}

/* One "<int>[.<frac>]<unit>" component in nanoseconds; -1 on error. */
static int64_t dur_component(const char **sp) {
  const char *s = *sp;
  uint64_t ip = 0, frac = 0, scale = 1;
  bool digits = false;
  for (; is_digit(*s); s++, digits = true) {
    if (ip > (UINT64_MAX - 9) / 10) return -1;
    ip = ip * 10 + (uint64_t)(*s - '0');
  }
  if (*s == '.') {
    /* Digits beyond 18 cannot change a millisecond result: drop them. */
    for (s++; is_digit(*s); s++, digits = true)
      if (scale < 1000000000000000000ULL) { frac = frac * 10 + (uint64_t)(*s - '0'); scale *= 10; }
  }
  if (!digits) return -1;
  const char *u = s;
  while (*s && !is_digit(*s) && *s != '.') s++;
  uint64_t unit = dur_unit(u, (size_t)(s - u));
  if (!unit || ip > (uint64_t)INT64_MAX / unit) return -1;
  uint64_t v = ip * unit + (uint64_t)((long double)frac * (long double)unit / (long double)scale);
  if (v > (uint64_t)INT64_MAX) return -1;
  *sp = s;
  return (int64_t)v;
}

/* Nanoseconds; -1 on error. */
static int64_t parse_duration_ns(const char *s) {
  if (!s) return -1;
  if (*s == '+') s++; /* Go accepts a sign; negative durations make no sense here */
  if (strcmp(s, "0") == 0) return 0;
  if (!*s) return -1;
  uint64_t total = 0;
  while (*s) {
    int64_t v = dur_component(&s);
    if (v < 0) return -1;
    total += (uint64_t)v;
    if (total > (uint64_t)INT64_MAX) return -1;
  }
  return (int64_t)total;
}

/* Rounded up, so a nonzero duration never turns into 0 ("disabled"). */
int64_t config_parse_duration_ms(const char *s) {
  int64_t ns = parse_duration_ns(s);
  return ns < 0 ? -1 : (int64_t)(((uint64_t)ns + 999999) / 1000000);
}

static int64_t parse_duration_us(const char *s) {
  int64_t ns = parse_duration_ns(s);
  return ns < 0 ? -1 : (int64_t)(((uint64_t)ns + 999) / 1000);
}

/* ---- Flag values ----------------------------------------------------------- */

struct perr { char *buf; size_t len; };

static int errf(struct perr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int errf(struct perr *e, const char *fmt, ...) {
  if (e->len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->len, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* A huge value is cut in the message so that the reason still fits. */
static int bad_value(struct perr *e, const char *name, const char *val, const char *why) {
  const char *more = strlen(val) > 64 ? "..." : "";
  return errf(e, "invalid value \"%.64s%s\" for flag -%s: %s", val, more, name, why);
}

/* Go's strconv.ParseBool. */
static int parse_bool(const char *s, bool *out) {
  static const char *t[] = {"1", "t", "T", "true", "TRUE", "True"};
  static const char *f[] = {"0", "f", "F", "false", "FALSE", "False"};
  for (size_t i = 0; i < 6; i++) {
    if (strcmp(s, t[i]) == 0) { *out = true; return 0; }
    if (strcmp(s, f[i]) == 0) { *out = false; return 0; }
  }
  return -1;
}

/* Go's ParseInt(s, 0, ...): optional sign, 0x/0o-style prefixes, no spaces. */
static int parse_int(const char *s, long long *out) {
  if (!*s || *s == ' ' || *s == '\t') return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 0);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

/* Go's ParseFloat as the flag package uses it: "1.5", "2e3", "inf", "+Inf"... */
static int parse_float(const char *s, double *out) {
  if (!*s || *s == ' ' || *s == '\t') return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || isnan(v) || (errno == ERANGE && isinf(v))) return -1;
  *out = v;
  return 0;
}

static bool is_pow2(long long v) { return v > 0 && (v & (v - 1)) == 0; }

static int copy_str(struct perr *e, const char *name, const char *val, char *dst, size_t cap) {
  size_t n = strlen(val);
  if (n >= cap) return bad_value(e, name, val, "too long");
  memcpy(dst, val, n + 1);
  return 0;
}

/* "host:port", ":port" or "[v6]:port" into host (hcap bytes; stored without
 * brackets) and *port. */
static int parse_addr(struct perr *e, const char *name, const char *val, char *host_out,
                      size_t hcap, int *port_out) {
  const char *colon, *host = val;
  size_t hl;
  if (val[0] == '[') {
    const char *rb = strchr(val, ']');
    if (!rb || rb[1] != ':') return bad_value(e, name, val, "want [host]:port");
    host = val + 1;
    hl = (size_t)(rb - host);
    colon = rb + 1;
  } else {
    colon = strrchr(val, ':');
    if (!colon) return bad_value(e, name, val, "missing port in address");
    hl = (size_t)(colon - val);
    if (memchr(val, ':', hl)) return bad_value(e, name, val, "too many colons in address (use [v6]:port)");
  }
  const char *p = colon + 1;
  long port = 0;
  size_t pl = strlen(p);
  bool digits = pl <= 5;
  for (size_t i = 0; i < pl && digits; i++) digits = is_digit(p[i]);
  if (digits) { /* "" is port 0, as Go's Listen takes it */
    for (size_t i = 0; i < pl; i++) port = port * 10 + (p[i] - '0');
  } else if (strcasecmp(p, "https") == 0 || strcasecmp(p, "http") == 0) {
    port = p[4] ? 443 : 80; /* Go knows these without /etc/services */
  } else { /* another service name, as Go's Listen resolves it */
    const struct servent *se = pl < 32 ? getservbyname(p, "tcp") : NULL;
    if (!se) return bad_value(e, name, val, "port must be a number 0..65535 or a service name (https)");
    port = ntohs((uint16_t)se->s_port);
  }
  if (port > 65535) return bad_value(e, name, val, "port must be a number 0..65535");
  if (hl >= hcap) return bad_value(e, name, val, "host too long");
  memcpy(host_out, host, hl);
  host_out[hl] = 0;
  *port_out = (int)port;
  return 0;
}

/* ---- The flag table -------------------------------------------------------- */

enum kind { K_BOOL, K_COUNT, K_STRING, K_ADDR, K_METRICS_ADDR, K_DURATION, K_INT, K_INT64, K_RATE, K_KTLS,
            K_CIDRS, K_HELP };
/* DUR_NEG_OFF: a negative duration ("-1s") turns the thing off (stored as -1).
 * DUR_US: stored in microseconds, at most 1 s (short waits). */
enum { INT_POW2 = 1, DUR_ZERO_OK = 1, INT_ZERO_AUTO = 2, DUR_NEG_OFF = 2, DUR_US = 4 };

struct flag {
  const char *name;
  enum kind kind;
  size_t off;           /* field in struct config */
  size_t cap;           /* K_STRING: buffer size */
  long long lo, hi;     /* K_INT: range */
  int opts;             /* INT_POW2, INT_ZERO_AUTO (0 = auto, beside lo..hi) / DUR_ZERO_OK, DUR_NEG_OFF */
};

#define F(field) offsetof(struct config, field)
static const struct flag flags[] = {
    {"a", K_ADDR, 0, 0, 0, 0, 0},
    {"c", K_STRING, F(key_path), sizeof ((struct config *)0)->key_path, 0, 0, 0},
    {"dev", K_BOOL, F(dev), 0, 0, 0, 0},
    {"certmode", K_STRING, F(certmode), sizeof ((struct config *)0)->certmode, 0, 0, 0},
    {"certdir", K_STRING, F(certdir), sizeof ((struct config *)0)->certdir, 0, 0, 0},
    {"acme-directory", K_STRING, F(acme_directory), sizeof ((struct config *)0)->acme_directory, 0, 0, 0},
    {"acme-ca-file", K_STRING, F(acme_ca_file), sizeof ((struct config *)0)->acme_ca_file, 0, 0, 0},
    {"acme-email", K_STRING, F(acme_email), sizeof ((struct config *)0)->acme_email, 0, 0, 0},
    {"acme-eab-kid", K_STRING, F(acme_eab_kid), sizeof ((struct config *)0)->acme_eab_kid, 0, 0, 0},
    {"acme-eab-key", K_STRING, F(acme_eab_key), sizeof ((struct config *)0)->acme_eab_key, 0, 0, 0},
    {"acme-ip-certs", K_BOOL, F(acme_ip_certs), 0, 0, 0, 0},
    {"ace", K_BOOL, F(ace), 0, 0, 0, 0},
    {"http-port", K_INT, F(http_port), 0, -1, 65535, 0},
    {"ktls", K_KTLS, F(ktls_mode), 0, 0, 0, 0},
    {"mesh-psk-file", K_STRING, F(mesh_psk_file), sizeof ((struct config *)0)->mesh_psk_file, 0, 0, 0},
    {"mesh-with", K_STRING, F(mesh_with), sizeof ((struct config *)0)->mesh_with, 0, 0, 0},
    {"mesh-max-remote-keys", K_INT, F(mesh_max_remote), 0, 1, 1 << 26, 0},
    {"hostname", K_STRING, F(hostname), sizeof ((struct config *)0)->hostname, 0, 0, 0},
    {"verify-client-url", K_STRING, F(verify_client_url), sizeof ((struct config *)0)->verify_client_url, 0, 0, 0},
    {"verify-client-url-fail-open", K_BOOL, F(verify_client_url_fail_open), 0, 0, 0, 0},
    {"verify-clients", K_BOOL, F(verify_clients), 0, 0, 0, 0},
    {"socket", K_STRING, F(tailscaled_socket), sizeof ((struct config *)0)->tailscaled_socket, 0, 0, 0},
    {"admission-workers", K_INT, F(admission_workers), 0, 1, 1024, 0},
    {"admission-queue", K_INT, F(admission_queue), 0, 1, 1 << 20, 0},
    {"tcp-write-timeout", K_DURATION, F(tcp_write_timeout_ms), 0, 0, 0, DUR_ZERO_OK},
    {"tcp-keepalive-time", K_DURATION, F(tcp_keepalive_ms), 0, 0, 0, DUR_ZERO_OK | DUR_NEG_OFF},
    {"tcp-user-timeout", K_DURATION, F(tcp_user_timeout_ms), 0, 0, 0, DUR_ZERO_OK},
    {"stun", K_BOOL, F(stun), 0, 0, 0, 0},
    {"stun-port", K_INT, F(stun_port), 0, 0, 65535, 0},
    {"stun-generic", K_BOOL, F(stun_generic), 0, 0, 0, 0},
    {"accept-connection-limit", K_RATE, F(accept_limit), 0, 0, 0, 0},
    {"accept-connection-burst", K_INT64, F(accept_burst), 0, 0, INT64_MAX, 0},
    {"rate-config", K_STRING, F(rate_config), sizeof ((struct config *)0)->rate_config, 0, 0, 0},
    {"handshake-timeout", K_DURATION, F(handshake_timeout_ms), 0, 0, 0, 0},
    {"keepalive-interval", K_DURATION, F(keepalive_ms), 0, 0, 0, 0},
    {"shards", K_INT, F(shards), 0, 0, 1024, 0},
    {"max-conns", K_INT, F(max_conns), 0, 0, 1 << 24, 0},
    {"recv-bufs", K_INT, F(recv_bufs), 0, 1, 32768, INT_POW2},
    {"recv-buf-size", K_INT, F(recv_buf_size), 0, 1024, 1048576, 0},
    {"queue-depth", K_INT, F(queue_depth), 0, 64, 1048576, INT_POW2 | INT_ZERO_AUTO},
    {"batch-wait", K_DURATION, F(batch_wait_us), 0, 0, 0, DUR_ZERO_OK | DUR_US},
    {"batch-events", K_INT, F(batch_events), 0, 1, 4096, 0},
    {"debug-allow", K_CIDRS, F(debug_allow), sizeof ((struct config *)0)->debug_allow, 0, 0, 0},
    {"metrics-listen", K_METRICS_ADDR, 0, 0, 0, 0, 0},
    {"version", K_BOOL, F(version), 0, 0, 0, 0},
    {"derp", K_BOOL, F(derp), 0, 0, 0, 0},
    {"home", K_STRING, F(home), sizeof ((struct config *)0)->home, 0, 0, 0},
    {"bootstrap-dns-names", K_STRING, F(bootstrap_dns), sizeof ((struct config *)0)->bootstrap_dns, 0, 0, 0},
    {"unpublished-bootstrap-dns-names", K_STRING, F(unpublished_dns),
     sizeof ((struct config *)0)->unpublished_dns, 0, 0, 0},
    {"secrets-url", K_STRING, F(secrets_url), sizeof ((struct config *)0)->secrets_url, 0, 0, 0},
    {"secrets-path-prefix", K_STRING, F(secrets_prefix), sizeof ((struct config *)0)->secrets_prefix, 0, 0, 0},
    {"secrets-cache-dir", K_STRING, F(secrets_cache), sizeof ((struct config *)0)->secrets_cache, 0, 0, 0},
    {"v", K_COUNT, F(verbose), 0, 0, 0, 0},
    {"verbose", K_COUNT, F(verbose), 0, 0, 0, 0},
    {"h", K_HELP, 0, 0, 0, 0, 0},
    {"help", K_HELP, 0, 0, 0, 0, 0},
};
#undef F

static const struct flag *find_flag(const char *name, size_t n) {
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if (strlen(flags[i].name) == n && memcmp(flags[i].name, name, n) == 0) return &flags[i];
  return NULL;
}

static int set_int(struct perr *e, const struct flag *f, const char *val, struct config *c) {
  long long v;
  char why[96];
  if (parse_int(val, &v) < 0) return bad_value(e, f->name, val, "parse error");
  if (v == 0 && (f->opts & INT_ZERO_AUTO)) {
    *(int *)((char *)c + f->off) = 0;
    return 0;
  }
  bool pow2_bad = (f->opts & INT_POW2) && !is_pow2(v);
  if (v < f->lo || v > f->hi || pow2_bad) {
    snprintf(why, sizeof why, "must be %s%lld..%lld", (f->opts & INT_POW2) ? "a power of two in " : "in ",
             f->lo, f->hi);
    return bad_value(e, f->name, val, why);
  }
  if (f->kind == K_INT64) *(int64_t *)((char *)c + f->off) = v;
  else *(int *)((char *)c + f->off) = (int)v;
  return 0;
}

static int set_rate(struct perr *e, const struct flag *f, const char *val, struct config *c) {
  double v;
  if (parse_float(val, &v) < 0) return bad_value(e, f->name, val, "parse error");
  if (v < 0) return bad_value(e, f->name, val, "must be 0 or more (+Inf: no limit)");
  *(double *)((char *)c + f->off) = v;
  return 0;
}

static int set_duration(struct perr *e, const struct flag *f, const char *val, struct config *c) {
  if ((f->opts & DUR_NEG_OFF) && val[0] == '-' && config_parse_duration_ms(val + 1) >= 0) {
    *(int64_t *)((char *)c + f->off) = config_parse_duration_ms(val + 1) ? -1 : 0;
    return 0;
  }
  if (f->opts & DUR_US) { /* short waits: µs, at most 1 s */
    int64_t us = parse_duration_us(val);
    if (us < 0) return bad_value(e, f->name, val, "want a duration like 50us or 1ms");
    if (us > 1000000) return bad_value(e, f->name, val, "must be at most 1s");
    *(int64_t *)((char *)c + f->off) = us;
    return 0;
  }
  int64_t ms = config_parse_duration_ms(val);
  if (ms < 0 && val[0] == '-' && config_parse_duration_ms(val + 1) >= 0)
    return bad_value(e, f->name, val, "must not be negative");
  if (ms < 0) return bad_value(e, f->name, val, "want a duration like 500ms, 2s or 1m30s");
  if (ms == 0 && !(f->opts & DUR_ZERO_OK)) return bad_value(e, f->name, val, "must be positive");
  if (ms > MAX_DURATION_MS) return bad_value(e, f->name, val, "must be at most 24h");
  *(int64_t *)((char *)c + f->off) = ms;
  return 0;
}

/* --debug-allow: a list, and a repeated flag adds to it. */
static int add_cidrs(struct perr *e, const struct flag *f, const char *val, struct config *c) {
  char why[160];
  char *list = (char *)c + f->off;
  size_t have = strlen(list), n = strlen(val);
  if (debug_allow_add(NULL, val, why, sizeof why) < 0) return bad_value(e, f->name, val, why);
  if (have + 1 + n >= f->cap) return bad_value(e, f->name, val, "too long in all");
  if (have) list[have++] = ',';
  memcpy(list + have, val, n + 1);
  if (debug_allow_add(NULL, list, why, sizeof why) < 0) return bad_value(e, f->name, val, why);
  return 0;
}

/* Boolean-like flags: val is NULL when given bare ("-dev"). */
static int set_bool(struct perr *e, const struct flag *f, const char *val, struct config *c) {
  bool b = true;
  if (val && parse_bool(val, &b) < 0)
    return errf(e, "invalid boolean value \"%s\" for -%s: parse error", val, f->name);
  if (f->kind == K_COUNT) {
    int *cnt = (int *)((char *)c + f->off);
    *cnt = b ? *cnt + 1 : 0; /* -v -v is more verbose; -v=false resets */
  } else {
    *(bool *)((char *)c + f->off) = b;
  }
  return 0;
}

static int set_value(struct perr *e, const struct flag *f, const char *val, struct config *c) {
  switch (f->kind) {
  case K_STRING: return copy_str(e, f->name, val, (char *)c + f->off, f->cap);
  case K_ADDR: {
    int port;
    if (parse_addr(e, f->name, val, c->listen_host, sizeof c->listen_host, &port) < 0) return -1;
    c->listen_port = (uint16_t)port;
    return 0;
  }
  case K_METRICS_ADDR:
    return parse_addr(e, f->name, val, c->metrics_host, sizeof c->metrics_host, &c->metrics_port);
  case K_DURATION: return set_duration(e, f, val, c);
  case K_INT:
  case K_INT64: return set_int(e, f, val, c);
  case K_RATE: return set_rate(e, f, val, c);
  case K_CIDRS: return add_cidrs(e, f, val, c);
  case K_KTLS: {
    enum ktls_mode m;
    if (ktls_mode_parse(val, &m) < 0) return bad_value(e, f->name, val, "want auto, off or require");
    *(int *)((char *)c + f->off) = (int)m;
    return 0;
  }
  default: return set_bool(e, f, val, c);
  }
}

/* ---- Derived settings --------------------------------------------------------- */

/* Ring depths per ordered shard pair. Up to RING_FULL_SHARDS shards every
 * pair gets the full depths; beyond, a shard's inbound slots are capped (a
 * pair carries 1/(n-1) of a shard's cross traffic), with floors that still
 * hold several loop turns of one pair's burst. Rings: n*(n-1) per kind, so at
 * 64 shards the full depths would be 4032 * 48 KiB = 189 MiB. */
#define RING_FULL_SHARDS 16
#define DATA_DEPTH_FULL 4096
#define DATA_DEPTH_MIN 1024
#define DATA_SLOTS_PER_SHARD 65536 /* inbound data slots of one shard, n > 16 */
#define CTRL_DEPTH_FULL 1024       /* control and handoff rings alike */
#define CTRL_DEPTH_MIN 256
#define CTRL_SLOTS_PER_SHARD 16384

/* The largest power of two <= x, within lo..hi (powers of two). */
static uint32_t pow2_floor_in(uint32_t x, uint32_t lo, uint32_t hi) {
  uint32_t p = 1;
  while (p <= x / 2) p *= 2;
  return p < lo ? lo : p > hi ? hi : p;
}

void config_ring_depths(int n, int queue_depth, uint32_t *data, uint32_t *ctrl) {
  uint32_t peers = n > 1 ? (uint32_t)n - 1 : 1;
  if (n <= RING_FULL_SHARDS) {
    *data = DATA_DEPTH_FULL;
    *ctrl = CTRL_DEPTH_FULL;
  } else {
    *data = pow2_floor_in(DATA_SLOTS_PER_SHARD / peers, DATA_DEPTH_MIN, DATA_DEPTH_FULL);
    *ctrl = pow2_floor_in(CTRL_SLOTS_PER_SHARD / peers, CTRL_DEPTH_MIN, CTRL_DEPTH_FULL);
  }
  if (queue_depth > 0) *data = (uint32_t)queue_depth;
}

/* ---- derper's other flags ------------------------------------------------------ */

/* -home as derper v1.82 reads it: "", "blank", or a URL whose scheme is
 * http or https, in any case (Go's url.Parse)
 * (derpd also refuses control bytes: the URL goes into a Location header).
 * The setec flags of derper v1.82: -secrets-url would fetch the mesh key from
 * a setec server, which derpd cannot; the other two only matter with it. */
static int check_derper_flags(struct config *c, struct perr *e) {
  c->home_mode = HTTP_HOME_DEFAULT;
  if (strcmp(c->home, "blank") == 0) {
    c->home_mode = HTTP_HOME_BLANK;
  } else if (strncasecmp(c->home, "http:", 5) == 0 || strncasecmp(c->home, "https:", 6) == 0) {
    for (const unsigned char *p = (const unsigned char *)c->home; *p; p++)
      if (*p < 0x20 || *p == 0x7f) return bad_value(e, "home", c->home, "control character in the URL");
    c->home_mode = HTTP_HOME_REDIRECT;
  } else if (c->home[0]) {
    return bad_value(e, "home", c->home, "want \"blank\" or an http:// or https:// URL to redirect to");
  }
  if (c->secrets_url[0])
    return errf(e, "-secrets-url (a setec server for the mesh key) is not supported by derpd: "
                   "use -mesh-psk-file");
  if (c->ace)
    return errf(e, "-ace (derper v1.90's experimental embedded ACE server) is not supported by derpd");
  c->notes[0] = 0;
  if (strcmp(c->secrets_prefix, "prod/derp") != 0 || c->secrets_cache[0])
    snprintf(c->notes, sizeof c->notes, "-secrets-path-prefix and -secrets-cache-dir have no effect "
                                        "without -secrets-url (setec), which derpd does not support");
  return 0;
}

/* ---- Parsing ----------------------------------------------------------------- */

/* One argument at argv[*i] (Go's flag.parseOne): 0 ok, 1 help, -1 error. */
static int parse_one(struct config *c, int argc, char **argv, int *i, bool *addr_set, struct perr *e) {
  const char *s = argv[*i];
  const char *name = s + (s[1] == '-' ? 2 : 1);
  if (!*name || *name == '-' || *name == '=') return errf(e, "bad flag syntax: %s", s);
  const char *eq = strchr(name, '=');
  size_t nl = eq ? (size_t)(eq - name) : strlen(name);
  const struct flag *f = find_flag(name, nl);
  if (!f) return errf(e, "flag provided but not defined: -%.*s", (int)nl, name);
  if (f->kind == K_HELP) return 1;
  const char *val = eq ? eq + 1 : NULL;
  if (!val && f->kind != K_BOOL && f->kind != K_COUNT) {
    if (*i + 1 >= argc) return errf(e, "flag needs an argument: -%s", f->name);
    val = argv[++*i];
  }
  if (f->kind == K_ADDR) *addr_set = true;
  return set_value(e, f, val, c);
}

int config_parse(struct config *c, int argc, char **argv, FILE *out, char *err, size_t errlen) {
  struct perr e = {err, errlen};
  bool addr_set = false;
  if (errlen) err[0] = 0;
  int i = 1;
  for (; i < argc; i++) {
    const char *s = argv[i];
    if (strcmp(s, "--") == 0) { i++; break; }
    if (s[0] != '-' || s[1] == 0) break; /* a non-flag argument */
    int rc = parse_one(c, argc, argv, &i, &addr_set, &e);
    if (rc == 1) {
      config_usage(out, argc > 0 ? argv[0] : "derpd");
      return 1;
    }
    if (rc < 0) return -1;
  }
  if (i < argc) {
    /* "-stun false": Go's flag package reads a boolean's value only after '='. */
    const char *prev = i > 1 && argv[i - 1][0] == '-' ? argv[i - 1] + 1 + (argv[i - 1][1] == '-') : NULL;
    const struct flag *pf = prev && !strchr(prev, '=') ? find_flag(prev, strlen(prev)) : NULL;
    static const char *const bools[] = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"};
    bool word = false;
    for (size_t k = 0; k < sizeof bools / sizeof bools[0]; k++) word |= strcmp(argv[i], bools[k]) == 0;
    if (pf && pf->kind == K_BOOL && word)
      return errf(&e, "unexpected argument \"%s\": a boolean flag takes its value after '=': -%s=%s", argv[i],
                  pf->name, argv[i]);
    return errf(&e, "unexpected argument \"%s\": derpd takes flags only", argv[i]);
  }
  /* As derper: -version is read once every flag parsed, before anything else. */
  if (c->version) {
    fprintf(out, "%s\n", DERPD_VERSION);
    return 1;
  }
  if (check_derper_flags(c, &e) < 0) return -1;
  /* -dev moves the default listen port to 3340; an explicit -a wins here, where
   * derper's -dev overrides -a (docs/operations.md, "Moving from derper"). */
  if (c->dev && !addr_set) { c->listen_host[0] = 0; c->listen_port = DEV_PORT; }
  if (c->certmode[0] && strcmp(c->certmode, "manual") != 0 && strcmp(c->certmode, "selfsigned") != 0 &&
      strcmp(c->certmode, "letsencrypt") != 0 && strcmp(c->certmode, "gcp") != 0)
    return bad_value(&e, "certmode", c->certmode, "want manual, selfsigned, letsencrypt or gcp");
  /* gcp is ACME against Google's CA, as derper; --acme-directory still
   * points it elsewhere (a test CA). */
  if (strcmp(c->certmode, "gcp") == 0 && strcmp(c->acme_directory, CONFIG_ACME_DIRECTORY_DEFAULT) == 0)
    strcpy(c->acme_directory, CONFIG_ACME_DIRECTORY_GCP);
  /* derper v1.78 serves TLS when the port is 443 or -certmode is manual, and
   * its -certmode defaults to letsencrypt: so port 443 without -certmode is
   * letsencrypt, any other port without it plain HTTP, as here. derpd also
   * serves TLS on any port when -certmode is given (derper: only for manual;
   * an explicit letsencrypt elsewhere is plain HTTP there; docs/operations.md). */
  bool certmode_given = c->certmode[0] != 0;
  c->tls = c->listen_port == 443 || certmode_given;
  if (c->tls && !certmode_given) {
    strcpy(c->certmode, "letsencrypt");
    c->certmode_defaulted = true;
  }
  /* derper v1.102: certificates for the server's addresses, from Let's
   * Encrypt over http-01 (acme/acme_ipcert.h). */
  if (c->acme_ip_certs && strcmp(c->certmode, "letsencrypt") != 0)
    return errf(&e, "-acme-ip-certs needs -certmode letsencrypt%s", c->tls ? "" : " (TLS)");
  if (c->acme_ip_certs && c->http_port < 0)
    return errf(&e, "-acme-ip-certs needs -http-port: the CA checks an address over http-01 on port 80");
  if (config_acme(c) && acme_config_check(c, !certmode_given, err, errlen) < 0) return -1;
  if (!config_acme(c) && (c->acme_email[0] || c->acme_eab_kid[0] || c->acme_eab_key[0])) {
    size_t n = strlen(c->notes);
    snprintf(c->notes + n, sizeof c->notes - n, "%s-acme-email and -acme-eab-* have no effect without "
             "-certmode letsencrypt or gcp", n ? "; " : "");
  }
  if (c->tls && !c->certdir[0])
    return errf(&e, "TLS needs -certdir (no $HOME or $XDG_CACHE_HOME for the default)");
  if (c->tls && c->http_port > 0 && c->http_port == c->listen_port)
    return errf(&e, "-http-port %d is -a's port: the port-80 helper needs one of its own (-1 for none)", c->http_port);
  if (!c->tls && c->ktls_mode == KTLS_REQUIRE)
    return errf(&e, "--ktls=require needs TLS (port 443 or -certmode)");
  if (c->verify_client_url[0]) {
    struct adm_url u;
    char why[128];
    if (adm_url_parse(c->verify_client_url, &u, why, sizeof why) < 0)
      return bad_value(&e, "verify-client-url", c->verify_client_url, why);
  }
  /* derper's default key file: as root, without -dev. */
  if (!c->key_path[0] && !c->dev && getuid() == 0) {
    snprintf(c->key_path, sizeof c->key_path, "%s", CONFIG_ROOT_KEY_PATH);
    c->key_path_default = true;
  }
  /* derper: an empty -socket means tailscaled's default. */
  if (!c->tailscaled_socket[0]) strcpy(c->tailscaled_socket, CONFIG_TAILSCALED_SOCKET);
  /* The kernel's TCP_KEEPIDLE bound (Go would fail silently and keep 2h). */
  if (c->tcp_keepalive_ms > 32767 * 1000LL)
    return errf(&e, "invalid value for flag -tcp-keepalive-time: must be at most 32767s (9h6m7s)");
  return 0;
}

bool config_ip_literal(const char *s) {
  uint8_t a[16];
  return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

bool config_acme(const struct config *c) {
  return strcmp(c->certmode, "letsencrypt") == 0 || strcmp(c->certmode, "gcp") == 0;
}

void config_usage(FILE *out, const char *prog) {
  fprintf(out,
"Usage: %s [flags]\n"
"derpd: a DERP relay server, wire-compatible with Tailscale's derper.\n"
"Flags take Go syntax: -flag, --flag, -flag=value, -flag value (not for booleans).\n"
"\n"
"Listening:\n"
"  -a string\n"
"        listen address: \"host:port\", \":port\" or \"[::1]:port\"; the port\n"
"        may be a service name (\":https\"); no host: every address; a name:\n"
"        its first IPv4 address, as Go's Listen (default \":443\"; \":3340\"\n"
"        with -dev)\n"
"  -dev\n"
"        development mode: plain HTTP on :3340 unless -a is given, and an\n"
"        ephemeral key unless -c is given\n"
"  -hostname string\n"
"        the server's host name (default \"derp.example.com\", a placeholder\n"
"        letsencrypt refuses); with TLS, the certificate's name and the only\n"
"        SNI accepted\n"
"  -accept-connection-limit float\n"
"        new connections accepted per second, for the whole process; one\n"
"        over the limit is accepted and closed at once (default +Inf)\n"
"  -accept-connection-burst int\n"
"        connections that may come at once within the limit; as in derper\n"
"        the default means no limit: set it with the limit (default\n"
"        9223372036854775807)\n"
"  -rate-config string\n"
"        a JSON file limiting what each client may send, as derper v1.98+:\n"
"        {\"PerClientRateLimitBytesPerSec\": N, \"PerClientRateBurstBytes\": M}\n"
"        counted over DERP frames; a client over its rate is not read from\n"
"        until it is back within it (TCP pushes back; nothing is dropped);\n"
"        mesh peers are exempt; 0 = no limit; a burst under 65568 is raised\n"
"        to it. Read at start (an error stops derpd) and again on SIGHUP (an\n"
"        error keeps the limit in force) (default: none)\n"
"\n"
"STUN (UDP, on -a's host: all addresses, IPv4 and IPv6, if it has none):\n"
"  -stun\n"
"        answer Tailscale clients' STUN Binding Requests (default true)\n"
"  -stun-port int\n"
"        the UDP port for STUN; 0 = any free port (default 3478)\n"
"  -stun-generic\n"
"        also answer plain RFC 5389 Binding Requests, not only those of\n"
"        Tailscale clients (SOFTWARE \"tailnode\")\n"
"\n"
"TLS (served when the port is 443 or -certmode is given; TLS 1.2 minimum):\n"
"  -certmode string\n"
"        manual: load <certdir>/<hostname>.crt (chain, PEM) and .key, which\n"
"        must name -hostname (an IP -hostname without files: self-signed);\n"
"        selfsigned: the same files, generated once if missing (for dev and\n"
"        IP-only servers; the log shows the sha256 to pin); letsencrypt:\n"
"        the same files, obtained and renewed over ACME for -hostname (a DNS\n"
"        name that resolves here; challenges tls-alpn-01 on this port and\n"
"        http-01 on -http-port); gcp: as letsencrypt, from Google Trust\n"
"        Services (" CONFIG_ACME_DIRECTORY_GCP "),\n"
"        which needs -acme-eab-kid, -acme-eab-key and -acme-email. Without\n"
"        -certmode, port 443 serves TLS with letsencrypt and other ports\n"
"        plain HTTP, as derper (default \"letsencrypt\")\n"
"  -certdir string\n"
"        directory of the certificate files (default\n"
"        \"$HOME/.cache/tailscale/derper-certs\", or $XDG_CACHE_HOME's\n"
"        tailscale/derper-certs when set, as derper); SIGHUP reloads them.\n"
"        letsencrypt also keeps its ACME account key there (acme_account+key)\n"
"  -acme-directory string\n"
"        with -certmode letsencrypt or gcp, the ACME server's directory URL\n"
"        (default \"" CONFIG_ACME_DIRECTORY_DEFAULT "\")\n"
"  -acme-ca-file string\n"
"        with letsencrypt or gcp, PEM roots that verify the ACME server\n"
"        (a private or test CA); default: the system's roots\n"
"  -acme-email string\n"
"        with letsencrypt or gcp, the ACME account's contact address (the CA\n"
"        mails expiry and policy notices there); default: none\n"
"  -acme-eab-kid string\n"
"        with letsencrypt or gcp, the External Account Binding key ID the CA\n"
"        gave (for CAs that require one: gcp, or another via --acme-directory)\n"
"  -acme-eab-key string\n"
"        the External Account Binding HMAC key, base64url or base64\n"
"  -acme-ip-certs\n"
"        with letsencrypt, also a certificate for each of this server's IP\n"
"        addresses that clients dial without a DNS name (no SNI, or the\n"
"        address as SNI), asked for at the first such handshake (which\n"
"        fails; the client retries) and renewed; http-01 on -http-port.\n"
"        With an IP -hostname: an IP-only server (derper v1.102)\n"
"  -ace\n"
"        derper's experimental embedded ACE server: not supported\n"
"  -http-port int\n"
"        with TLS, a plain-HTTP helper on this port: /generate_204, ACME\n"
"        http-01 answers with letsencrypt, and a redirect to https for\n"
"        everything else; -1 = off (default 80)\n"
"  -ktls string\n"
"        kernel TLS: after each handshake hand the record keys to the kernel\n"
"        and relay plaintext on the socket. auto: where the kernel has it\n"
"        (TCP_ULP \"tls\"), else userspace TLS; off: always userspace;\n"
"        require: exit at start without it, and close connections that\n"
"        cannot switch (default \"auto\")\n"
"\n"
"Region (nodes that share a mesh key and forward to each other):\n"
"  -mesh-psk-file string\n"
"        file with the region's mesh key: 64 hex digits (up to 512 taken,\n"
"        with a warning: derper v1.86+ takes exactly 64); default\n"
"        /home/derp/keys/derp-mesh.key, else $HOME/keys/derp-mesh.key, when\n"
"        present; \"\" for none. With -dev, TAILSCALE_DERPER_MESH_KEY, when\n"
"        set, is the key instead. Clients with the key may watch, close and\n"
"        forward (mesh peers)\n"
"  -mesh-with string\n"
"        comma-separated nodes of this region to dial: host[:port]\n"
"        (https://host:port/derp), name[:port]/dialaddr[:port] (TLS name,\n"
"        then where to connect), or http://host:port (plain TCP, for tests and\n"
"        private networks). This node's own entry is found and skipped, so\n"
"        every node can use the same list\n"
"  -mesh-max-remote-keys int\n"
"        keys this node remembers as connected to other nodes, at most (a\n"
"        share per shard); PeerPresent for a new key beyond it is counted\n"
"        in derpd_mesh_remote_refused and that key is unreachable from here\n"
"        until there is room (default 1000000, about 140 MB)\n"
"\n"
"Admission (who may connect; mesh peers always may):\n"
"  -verify-client-url string\n"
"        admission controller: for each client, POST\n"
"        {\"NodePublic\":\"nodekey:<hex>\",\"Source\":\"<ip>\"} to this http(s)\n"
"        URL (5s timeout); the client is admitted only on 200 with\n"
"        {\"Allow\":true}. HTTPS verifies against the system roots\n"
"        (SSL_CERT_FILE, SSL_CERT_DIR as in Go)\n"
"  -verify-client-url-fail-open\n"
"        admit clients when the controller cannot be reached (connect\n"
"        error, TLS error, timeout); -verify-client-url-fail-open=false\n"
"        refuses them (default true)\n"
"  -verify-clients\n"
"        admit only nodes of the local tailscaled's tailnet (LocalAPI\n"
"        whois by node key); with -verify-client-url, both must agree\n"
"  -socket string\n"
"        tailscaled's LocalAPI socket for -verify-clients (default\n"
"        \"" CONFIG_TAILSCALED_SOCKET "\"; empty: that one)\n"
"  -admission-workers int\n"
"        checks run at once, each on its own thread; 1..1024 (default 32)\n"
"  -admission-queue int\n"
"        checks waiting for a worker; when full a client is refused,\n"
"        fail-open or not (default 4096)\n"
"\n"
"Identity:\n"
"  -c string\n"
"        key file: JSON {\"PrivateKey\": \"privkey:<hex>\"}, created (mode 0600)\n"
"        if missing; required unless -dev (as root, derper's default\n"
"        " CONFIG_ROOT_KEY_PATH ")\n"
"\n"
"Timeouts (Go durations: 500ms, 2s, 1m30s, 1h):\n"
"  -tcp-write-timeout duration\n"
"        drop a client that cannot take writes for this long; 0 disables\n"
"        (default 2s)\n"
"  -handshake-timeout duration\n"
"        time a new connection gets to finish HTTP and the DERP handshake\n"
"        (default 10s)\n"
"  -keepalive-interval duration\n"
"        how often idle clients get a KeepAlive frame, plus up to 5s of\n"
"        jitter (default 1m0s)\n"
"  -tcp-keepalive-time duration\n"
"        TCP keepalive: idle time before the first probe (then one every\n"
"        15s, 9 at most); 0 = 15s; negative = no TCP keepalive (default 10m0s)\n"
"  -tcp-user-timeout duration\n"
"        TCP_USER_TIMEOUT: a client whose data stays unacknowledged this\n"
"        long is dropped by the kernel; 0 = the kernel's default (default 15s)\n"
"\n"
"Performance:\n"
"  -shards int\n"
"        worker threads, each with its own event loop; 0 = one per CPU this\n"
"        process may run on (its affinity mask: taskset, cpusets) (default 0)\n"
"  -max-conns int\n"
"        most connections at once; 0 = derived from RLIMIT_NOFILE (default 0)\n"
"  -recv-bufs int\n"
"        receive buffers per shard, a power of two in 1..32768; the kernel\n"
"        gets 32 at first, more after it runs out (default 256)\n"
"  -recv-buf-size int\n"
"        bytes per receive buffer, 1024..1048576 (default 16384)\n"
"  -queue-depth int\n"
"        packets per inter-shard queue, a power of two in 64..1048576;\n"
"        0 = auto: 4096 up to 16 shards, then 65536/(shards-1) rounded\n"
"        down to a power of two, at least 1024 (default 0)\n"
"  -batch-wait duration\n"
"        a shard that sees a steady stream of work sleeps until this long\n"
"        has passed or -batch-events have completed, so one wake-up serves\n"
"        several packets: less CPU per packet at modest rates, at most this\n"
"        much more latency per hop; an idle shard still wakes at once for\n"
"        the first event; 0 = wake for every event (default 100us)\n"
"  -batch-events int\n"
"        completions that end such a sleep early, 1..4096 (default 32)\n"
"\n"
"Operations (/debug/: metrics at /debug/varz and /debug/vars):\n"
"  -debug-allow string\n"
"        CIDRs (or addresses) that may read /debug/, comma-separated; repeat\n"
"        to add more. Beside these: loopback, Tailscale addresses,\n"
"        $TS_ALLOW_DEBUG_IP, and ?debugkey= matching the file at\n"
"        $TS_DEBUG_KEY_PATH, as derper; any X-Forwarded-For is refused\n"
"  -metrics-listen string\n"
"        also serve /debug/ (and nothing else) as plain HTTP on this\n"
"        \"host:port\", e.g. a private interface for Prometheus; the same\n"
"        access rules apply there (default: none)\n"
"\n"
"derper's other flags:\n"
"  -version\n"
"        print the version and exit\n"
"  -derp\n"
"        serve DERP at /derp (default true); -derp=false answers 404 there\n"
"        and keeps the rest (bootstrap DNS, probes, STUN), as derper does for\n"
"        a server being decommissioned\n"
"  -home string\n"
"        what / (and every path without a route of its own) serves: empty\n"
"        for the default page, \"blank\" for an empty page, or an http:// or\n"
"        https:// URL to redirect to (derper v1.82)\n"
"  -bootstrap-dns-names string\n"
"        comma-separated host names to resolve every 10 minutes and serve\n"
"        at /bootstrap-dns (clients' DNS fallback)\n"
"  -unpublished-bootstrap-dns-names string\n"
"        comma-separated host names served at /bootstrap-dns only to a\n"
"        request that names one (?q=NAME), never in the list; NAME/TXTNAME\n"
"        rolls NAME out to the percentage (0..100) in TXTNAME's TXT record\n"
"  -secrets-url, -secrets-path-prefix, -secrets-cache-dir string\n"
"        derper v1.82's setec mesh key: not supported (-secrets-url is\n"
"        refused; the other two are accepted and do nothing)\n"
"\n"
"Other:\n"
"  -v, -verbose\n"
"        more logging; repeat for more\n"
"  -h, -help\n"
"        show this help\n",
          prog);
}
