/* bootstrap_dns.c: derper's /bootstrap-dns (see bootstrap_dns.h): the lists,
 * their resolution on a thread of their own, the published result, and the
 * answer to a request. */
#include "server/operations/bootstrap_dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <sodium.h>

#include "server/log.h"
#include "server/operations/debug_access.h"
#include "server/operations/metrics.h"
#include "server/protocol/http.h"
#include "server/thread_join.h"

#define REFRESH_S (10 * 60) /* derper: every 10 minutes */

/* ---- Go's text forms ---------------------------------------------------------- */

void bdns_ip_string(int family, const uint8_t *a, char out[BDNS_IP_MAX]) {
  static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
  if (family == AF_INET6 && memcmp(a, mapped, 12) == 0) { family = AF_INET; a += 12; }
  if (family == AF_INET) {
    snprintf(out, BDNS_IP_MAX, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    return;
  }
  /* netip's string6: the longest run of two or more zero groups (the first
   * of equals) becomes "::". */
  unsigned g[8];
  for (int i = 0; i < 8; i++) g[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
  int zs = -1, ze = -1;
  for (int i = 0; i < 8; i++) {
    int j = i;
    while (j < 8 && g[j] == 0) j++;
    if (j - i >= 2 && j - i > ze - zs) { zs = i; ze = j; }
  }
  size_t o = 0;
  for (int i = 0; i < 8; i++) {
    if (i == zs) {
      out[o++] = ':';
      out[o++] = ':';
      i = ze;
      if (i >= 8) break;
    } else if (i > 0) {
      out[o++] = ':';
    }
    o += (size_t)snprintf(out + o, BDNS_IP_MAX - o, "%x", g[i]);
  }
  out[o] = 0;
}

/* A growable buffer; on out of memory it stops growing and says so. */
struct buf { char *p; size_t len, cap; bool oom; };

static void put_bytes(struct buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { b->oom = true; return; }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void put_str(struct buf *b, const char *s) { put_bytes(b, s, strlen(s)); }

/* encoding/json's string: HTML-safe escapes, invalid UTF-8 as U+FFFD. */
static void put_json_string(struct buf *b, const char *str) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *s = (const uint8_t *)str;
  size_t n = strlen(str);
  put_bytes(b, "\"", 1);
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    if (c < 0x80) {
      const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\b' ? "\\b" : c == '\f' ? "\\f"
                    : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
      if (e) put_str(b, e);
      else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
        char u[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
        put_str(b, u);
      } else {
        put_bytes(b, (const char *)&c, 1);
      }
      i++;
      continue;
    }
    uint32_t r;
    size_t l = http_utf8_decode(s + i, n - i, &r);
    if (l == 0) { put_str(b, "\\ufffd"); i++; continue; }
    if (r == 0x2028 || r == 0x2029) put_str(b, r == 0x2028 ? "\\u2028" : "\\u2029");
    else put_bytes(b, (const char *)s + i, l);
    i += l;
  }
  put_bytes(b, "\"", 1);
}

/* ---- What a refresh finds --------------------------------------------------------- */

struct bdns_name {
  char *name;
  char (*ips)[BDNS_IP_MAX];
  int nips;
  double percent;       /* [0, 1]: the share of clients an unpublished name is for */
};

/* One list resolved: immutable once published. */
struct bdns_set {
  struct bdns_name *v;  /* sorted by name (strcmp, as encoding/json sorts map keys) */
  size_t n;
  char *json;           /* the published list: the whole map, MarshalIndent'ed */
  size_t json_len;
};

static void set_free(struct bdns_set *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    free(s->v[i].name);
    free(s->v[i].ips);
  }
  free(s->v);
  free(s->json);
  free(s);
}

static struct bdns_name *set_find(const struct bdns_set *s, const char *name) {
  if (!s) return NULL;
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->v[i].name, name) == 0) return &s->v[i];
  return NULL;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const struct bdns_name *)a)->name, ((const struct bdns_name *)b)->name);
}

/* {"name": ["ip", ...], ...} with a tab per level, or null for no names
 * (derper marshals a nil map). */
static void put_map(struct buf *b, const struct bdns_name *v, size_t n) {
  if (n == 0) { put_str(b, "null"); return; }
  put_str(b, "{\n");
  for (size_t i = 0; i < n; i++) {
    put_str(b, "\t");
    put_json_string(b, v[i].name);
    put_str(b, ": [\n");
    for (int j = 0; j < v[i].nips; j++) {
      put_str(b, "\t\t\"");
      put_str(b, v[i].ips[j]);
      put_str(b, j + 1 < v[i].nips ? "\",\n" : "\"\n");
    }
    put_str(b, i + 1 < n ? "\t],\n" : "\t]\n");
  }
  put_str(b, "}");
}

/* strconv.Atoi within 0..100 (a sign, leading zeros; nothing else). */
static bool txt_percent(const char *s, int *out) {
  const char *p = s;
  bool neg = false;
  if (*p == '+' || *p == '-') neg = *p++ == '-';
  if (!*p) return false;
  long v = 0;
  for (; *p; p++) {
    if (*p < '0' || *p > '9') return false;
    if (v <= 1000) v = v * 10 + (*p - '0'); /* past 100 it is out of range anyway */
  }
  if (neg) v = -v;
  if (v < 0 || v > 100) return false;
  *out = (int)v;
  return true;
}

struct bootstrap_dns {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  struct bdns_set *pub, *unpub;   /* the current results (mu) */
  char *pub_list, *unpub_list;    /* the flags ("" none) */
  struct bdns_lookup lookup;
  uint64_t queried[1024];         /* SipHash of each name asked for, open addressing (mu) */
  int nqueried;
  uint8_t qkey[crypto_shorthash_KEYBYTES];
  pthread_t thread;
  bool running, stop;             /* (mu) */
};

/* derper's resolveList: each entry is NAME or NAME/TXTNAME; a name that does
 * not resolve is logged and left out; the percentage is 1 without TXTNAME,
 * else the last TXT record that reads as 0..100 (none: 0). */
static struct bdns_set *resolve_list(struct bootstrap_dns *b, const char *list, bool shuffle) {
  struct bdns_set *s = calloc(1, sizeof *s);
  char *copy = strdup(list);
  size_t cap = 1;
  for (const char *p = list; *p; p++) cap += *p == ',';
  if (!s || !copy || !(s->v = calloc(cap, sizeof *s->v))) goto oom;
  char ips[BDNS_ADDRS_MAX][BDNS_IP_MAX], txts[BDNS_TXTS_MAX][BDNS_TXT_MAX], why[256];
  for (char *ent = copy, *next; ent; ent = next) {
    next = strchr(ent, ',');
    if (next) *next++ = 0;
    char *txt = strchr(ent, '/');
    if (txt) *txt++ = 0;
    int n = b->lookup.ip(b->lookup.ctx, ent, ips, BDNS_ADDRS_MAX, why, sizeof why);
    if (n <= 0) {
      log_warn("bootstrap DNS: lookup \"%s\": %s", ent, n < 0 ? why : "no addresses");
      continue;
    }
    struct bdns_name *e = set_find(s, ent);
    if (!e) {
      e = &s->v[s->n];
      if (!(e->name = strdup(ent))) goto oom;
      s->n++;
    }
    free(e->ips);
    if (!(e->ips = malloc((size_t)n * sizeof *e->ips))) { e->nips = 0; goto oom; }
    memcpy(e->ips, ips, (size_t)n * sizeof *ips);
    e->nips = n;
    if (!txt || !txt[0]) { e->percent = 1; continue; } /* NAME or NAME/: all clients (derper) */
    int k = b->lookup.txt(b->lookup.ctx, txt, txts, BDNS_TXTS_MAX, why, sizeof why);
    if (k < 0) {
      log_warn("bootstrap DNS: lookup \"%s\": %s", txt, why);
      continue;
    }
    for (int i = 0; i < k; i++) {
      int v;
      if (txt_percent(txts[i], &v)) e->percent = v / 100.0;
    }
  }
  free(copy);
  if (shuffle) /* derper shuffles each name's addresses, so clients do not all prefer IPv6 */
    for (size_t i = 0; i < s->n; i++)
      for (int j = s->v[i].nips - 1; j > 0; j--) {
        int r = (int)randombytes_uniform((uint32_t)j + 1);
        char t[BDNS_IP_MAX];
        memcpy(t, s->v[i].ips[j], sizeof t);
        memcpy(s->v[i].ips[j], s->v[i].ips[r], sizeof t);
        memcpy(s->v[i].ips[r], t, sizeof t);
      }
  qsort(s->v, s->n, sizeof *s->v, cmp_name);
  return s;
oom:
  free(copy);
  set_free(s);
  log_warn("bootstrap DNS: out of memory resolving the list");
  return NULL;
}

void bootstrap_dns_refresh(struct bootstrap_dns *b) {
  struct bdns_set *pub = NULL, *unpub = NULL;
  if (b->pub_list[0] && (pub = resolve_list(b, b->pub_list, true))) {
    struct buf j = {0};
    put_map(&j, pub->v, pub->n);
    if (j.oom) { /* derper too keeps the old values when it cannot marshal */
      free(j.p);
      set_free(pub);
      pub = NULL;
    } else {
      pub->json = j.p;
      pub->json_len = j.len;
    }
  }
  if (b->unpub_list[0]) unpub = resolve_list(b, b->unpub_list, false);
  pthread_mutex_lock(&b->mu);
  struct bdns_set *old_pub = pub ? b->pub : NULL, *old_unpub = unpub ? b->unpub : NULL;
  if (pub) b->pub = pub;
  if (unpub) b->unpub = unpub;
  pthread_mutex_unlock(&b->mu);
  set_free(old_pub);
  set_free(old_unpub);
}

/* ---- The system's lookups ------------------------------------------------------ */

static int sys_ip(void *ctx, const char *name, char (*ips)[BDNS_IP_MAX], int max, char *why, size_t wl) {
  (void)ctx;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int rc = getaddrinfo(name, NULL, &hints, &res);
  if (rc != 0) {
    snprintf(why, wl, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    return -1;
  }
  int n = 0;
  for (struct addrinfo *a = res; a && n < max; a = a->ai_next) {
    if (a->ai_family == AF_INET)
      bdns_ip_string(AF_INET, (const uint8_t *)&((struct sockaddr_in *)a->ai_addr)->sin_addr, ips[n]);
    else if (a->ai_family == AF_INET6)
      bdns_ip_string(AF_INET6, ((struct sockaddr_in6 *)a->ai_addr)->sin6_addr.s6_addr, ips[n]);
    else
      continue;
    bool dup = false;
    for (int i = 0; i < n && !dup; i++) dup = strcmp(ips[i], ips[n]) == 0;
    if (!dup) n++;
  }
  freeaddrinfo(res);
  return n;
}

static int sys_txt(void *ctx, const char *name, char (*recs)[BDNS_TXT_MAX], int max, char *why, size_t wl) {
  (void)ctx;
  struct __res_state st;
  memset(&st, 0, sizeof st);
  if (res_ninit(&st) != 0) {
    snprintf(why, wl, "resolver: cannot read its configuration");
    return -1;
  }
  static _Thread_local unsigned char ans[16384];
  int len = res_nquery(&st, name, ns_c_in, ns_t_txt, ans, sizeof ans);
  if (len < 0) {
    snprintf(why, wl, "%s", hstrerror(st.res_h_errno));
    res_nclose(&st);
    return -1;
  }
  res_nclose(&st);
  if (len > (int)sizeof ans) len = (int)sizeof ans;
  ns_msg msg;
  if (ns_initparse(ans, len, &msg) < 0) {
    snprintf(why, wl, "unreadable answer");
    return -1;
  }
  int n = 0, count = ns_msg_count(msg, ns_s_an);
  for (int i = 0; i < count && n < max; i++) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) break;
    if (ns_rr_type(rr) != ns_t_txt) continue;
    const unsigned char *d = ns_rr_rdata(rr), *end = d + ns_rr_rdlen(rr);
    size_t o = 0;
    bool cut = false;
    while (d < end) { /* <length><bytes>, joined */
      size_t sl = *d++;
      if (sl > (size_t)(end - d)) sl = (size_t)(end - d);
      size_t k = sl < BDNS_TXT_MAX - 1 - o ? sl : BDNS_TXT_MAX - 1 - o;
      cut |= k < sl;
      memcpy(recs[n] + o, d, k);
      o += k;
      d += sl;
    }
    recs[n][o] = 0;
    if (cut) recs[n][0] = 'x'; /* cut short: never a percentage */
    n++;
  }
  return n;
}

/* ---- The thread --------------------------------------------------------------------- */

struct bootstrap_dns *bootstrap_dns_new(const char *published, const char *unpublished,
                                        const struct bdns_lookup *lookup) {
  struct bootstrap_dns *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->pub_list = strdup(published ? published : "");
  b->unpub_list = strdup(unpublished ? unpublished : "");
  if (!b->pub_list || !b->unpub_list) {
    free(b->pub_list);
    free(b->unpub_list);
    free(b);
    return NULL;
  }
  b->lookup = lookup ? *lookup : (struct bdns_lookup){sys_ip, sys_txt, NULL};
  pthread_mutex_init(&b->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&b->cond, &ca);
  pthread_condattr_destroy(&ca);
  randombytes_buf(b->qkey, sizeof b->qkey);
  return b;
}

static void *refresh_loop(void *arg) {
  struct bootstrap_dns *b = arg;
  pthread_setname_np(pthread_self(), "bootstrap-dns");
  pthread_mutex_lock(&b->mu);
  while (!b->stop) {
    pthread_mutex_unlock(&b->mu);
    bootstrap_dns_refresh(b);
    pthread_mutex_lock(&b->mu);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += REFRESH_S;
    while (!b->stop && pthread_cond_timedwait(&b->cond, &b->mu, &t) != ETIMEDOUT) {}
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

int bootstrap_dns_start(struct bootstrap_dns *b) {
  if (!b->pub_list[0] && !b->unpub_list[0]) return 0;
  if (pthread_create(&b->thread, NULL, refresh_loop, b) != 0) return -1;
  b->running = true;
  return 0;
}

void bootstrap_dns_free(struct bootstrap_dns *b) {
  if (!b) return;
  if (b->running) {
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    if (join_within(b->thread, 2000) != 0) {
      /* A lookup hangs (the resolver's own timeouts): the process is
       * ending, so leave b to the thread rather than free it under it. */
      log_warn("bootstrap DNS: a lookup is still running; not waiting for it");
      pthread_detach(b->thread);
      return;
    }
  }
  set_free(b->pub);
  set_free(b->unpub);
  free(b->pub_list);
  free(b->unpub_list);
  pthread_cond_destroy(&b->cond);
  pthread_mutex_destroy(&b->mu);
  free(b);
}

/* ---- Answers ------------------------------------------------------------------------ */

double bdns_pcg_float64(uint64_t seed1, uint64_t seed2) {
  /* math/rand/v2's PCG: a 128-bit LCG, then DXSM. */
  const uint64_t mul_hi = 2549297995355413924ULL, mul_lo = 4865540595714422341ULL;
  const uint64_t inc_hi = 6364136223846793005ULL, inc_lo = 1442695040888963407ULL;
  uint64_t shi = seed1, slo = seed2;
  unsigned __int128 m = (unsigned __int128)slo * mul_lo;
  uint64_t hi = (uint64_t)(m >> 64) + shi * mul_lo + slo * mul_hi;
  unsigned __int128 lo = (unsigned __int128)(uint64_t)m + inc_lo;
  hi += inc_hi + (uint64_t)(lo >> 64);
  uint64_t l = (uint64_t)lo;
  hi ^= hi >> 32;
  hi *= 0xda942042e4dd58b5ULL;
  hi ^= hi >> 48;
  hi *= l | 1;
  return (double)(hi << 11 >> 11) / 9007199254740992.0; /* Float64: 53 bits / 2^53 */
}

static bool is_loopback(const uint8_t a[16]) {
  static const uint8_t v6[16] = {[15] = 1}, mapped[12] = {[10] = 0xff, [11] = 0xff};
  return memcmp(a, v6, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
}

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

bool bdns_percent_match(const uint8_t peer[16], double percent, double draw) {
  if (percent == 0) return false;
  if (percent == 1) return true;
  if (is_loopback(peer)) return draw < 0.5; /* derper: "for local testing" */
  return percent > bdns_pcg_float64(le64(peer), le64(peer + 8));
}

/* derper's bootstrapLookupMap: the names asked for, forgotten past 500. */
static void queried_add(struct bootstrap_dns *b, const char *q, size_t n) {
  uint64_t h;
  crypto_shorthash((unsigned char *)&h, (const unsigned char *)q, n, b->qkey);
  h |= 1; /* 0 marks a free slot */
  size_t mask = sizeof b->queried / sizeof b->queried[0] - 1, i = h & mask;
  while (b->queried[i] && b->queried[i] != h) i = (i + 1) & mask;
  if (b->queried[i]) return;
  b->queried[i] = h;
  if (++b->nqueried > BDNS_QUERIED_MAX) {
    memset(b->queried, 0, sizeof b->queried);
    b->nqueried = 0;
  }
}

int64_t bootstrap_dns_queried(struct bootstrap_dns *b) {
  pthread_mutex_lock(&b->mu);
  int n = b->nqueried;
  pthread_mutex_unlock(&b->mu);
  return n;
}

char *bootstrap_dns_answer(struct bootstrap_dns *b, struct stats *st, const uint8_t peer[16],
                           const char *query, size_t query_len, bool query_cut, size_t *len) {
  char q[257];
  int ql = query && !query_cut ? debug_query_value(query, query_len, "q", q, sizeof q) : -1;
  struct buf out = {0};
  pthread_mutex_lock(&b->mu);
  if (ql > 0 && (size_t)ql == strlen(q)) { /* a NUL (%00) in q names nothing derpd has */
    queried_add(b, q, (size_t)ql);
    const struct bdns_name *u = set_find(b->unpub, q);
    if (u && u->nips > 0) {
      STAT_INC(st, bdns_unpub_hits);
      double draw = randombytes_random() / 4294967296.0;
      if (bdns_percent_match(peer, u->percent, draw)) { /* only that name, not the list */
        put_map(&out, u, 1);
        pthread_mutex_unlock(&b->mu);
        goto done;
      }
      STAT_INC(st, bdns_unpub_pct_misses);
    }
    const struct bdns_name *p = set_find(b->pub, q);
    /* A published name always has addresses: derper's published_misses stays 0. */
    if (p) STAT_INC(st, bdns_pub_hits);
    else STAT_INC(st, bdns_unpub_misses);
  } else if (ql > 0) {
    queried_add(b, q, (size_t)ql);
    STAT_INC(st, bdns_unpub_misses);
  }
  if (b->pub && b->pub->json) put_bytes(&out, b->pub->json, b->pub->json_len);
  pthread_mutex_unlock(&b->mu);
done:
  if (out.oom) {
    free(out.p);
    *len = SIZE_MAX;
    return NULL;
  }
  *len = out.len;
  return out.p;
}
