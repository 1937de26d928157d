/* expvar.c: /debug/vars in derper's shape, Go's expvar tree (see expvar.h),
 * made from the /debug/varz page so that the two never disagree.
 *
 * tsweb names a Prometheus series after its expvar: the variable's name (a
 * map's name and "_" before each key), with a leading "counter_" or "gauge_"
 * of a key taken off; a label map's keys become a label, a histogram's become
 * buckets. This file runs that backwards for the variables derper publishes
 * (a fixed list below), and puts every other series under "derpd".
 * Pure text in, text out: it reads no counter itself and touches no shard
 * state, so a test feeds it any page. */
#include "server/operations/expvar.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/operations/metrics.h"

/* One sample line of the page: name{labels} value. */
struct sample {
  const char *name, *labels, *val; /* labels: inside the braces, NULL if none */
  size_t nlen, llen, vlen;
  bool used;                       /* claimed by derper's tree */
};

#define HIST_FAMS 16

struct page {
  struct sample *s;
  size_t n;
  const char *hist[HIST_FAMS]; /* the families typed histogram, in the page */
  size_t hist_len[HIST_FAMS], nhist;
};

static bool eq(const char *a, size_t an, const char *b) { return strlen(b) == an && memcmp(a, b, an) == 0; }

/* The page's sample lines, in order, and its histograms; malformed lines
 * and the per-shard and per-link series are skipped. */
static void parse(struct page *pg, const char *t, size_t len, size_t cap) {
  struct sample *out = pg->s;
  size_t n = 0;
  for (size_t i = 0; i < len && n < cap;) {
    const char *l = t + i, *e = memchr(l, '\n', len - i);
    size_t ll = e ? (size_t)(e - l) : len - i;
    i += ll + 1;
    static const char ht[] = " histogram";
    if (ll > 7 + sizeof ht - 1 && memcmp(l, "# TYPE ", 7) == 0 && memcmp(l + ll - (sizeof ht - 1), ht, sizeof ht - 1) == 0 &&
        pg->nhist < HIST_FAMS) {
      pg->hist[pg->nhist] = l + 7;
      pg->hist_len[pg->nhist++] = ll - 7 - (sizeof ht - 1);
    }
    if (ll == 0 || l[0] == '#') continue;
    struct sample s = {.name = l};
    const char *sp = memchr(l, ' ', ll), *br = memchr(l, '{', ll);
    if (!sp) continue;
    if (br && br < sp) {
      const char *cb = NULL; /* the closing brace outside quotes */
      bool q = false;
      for (const char *p = br + 1; p < l + ll && !cb; p++) {
        if (q && *p == '\\') p++;
        else if (*p == '"') q = !q;
        else if (!q && *p == '}') cb = p;
      }
      if (!cb || cb + 1 >= l + ll || cb[1] != ' ') continue;
      s.nlen = (size_t)(br - l);
      s.labels = br + 1;
      s.llen = (size_t)(cb - br - 1);
      sp = cb + 1;
    } else {
      s.nlen = (size_t)(sp - l);
    }
    s.val = sp + 1;
    s.vlen = (size_t)(l + ll - s.val);
    /* Per-shard and per-link series: never in the tree, and most of a big
     * page's lines (every lookup below walks the samples). */
    if (s.labels && (memmem(s.labels, s.llen, "shard=", 6) || memmem(s.labels, s.llen, "peer=", 5))) continue;
    out[n++] = s;
  }
  pg->n = n;
}

/* Is fam (fl bytes) a histogram on the page? */
static bool is_hist(const struct page *pg, const char *fam, size_t fl) {
  for (size_t i = 0; i < pg->nhist; i++)
    if (pg->hist_len[i] == fl && memcmp(pg->hist[i], fam, fl) == 0) return true;
  return false;
}

/* A label's value (still escaped as Prometheus escapes it: \\ \" \n, which
 * JSON reads the same) and whether the sample has more than one label. */
static bool first_label(const struct sample *s, const char **v, size_t *vl) {
  const char *q = memchr(s->labels, '"', s->llen);
  if (!q) return false;
  const char *p = q + 1, *end = s->labels + s->llen;
  while (p < end && *p != '"') p += *p == '\\' ? 2 : 1;
  *v = q + 1;
  *vl = (size_t)(p - q - 1);
  return true;
}

static bool multi_label(const struct sample *s) {
  bool q = false;
  for (size_t i = 0; i < s->llen; i++) {
    if (q && s->labels[i] == '\\') i++;
    else if (s->labels[i] == '"') q = !q;
    else if (!q && s->labels[i] == ',') return true;
  }
  return false;
}

/* A histogram as tsweb's JSON: cumulative buckets by bound, then sum, count. */
static void put_hist(struct out *o, struct page *pg, const char *fam) {
  size_t fl = strlen(fam);
  bool first = true;
  put(o, "{");
  for (size_t i = 0; i < pg->n; i++) {
    struct sample *s = &pg->s[i];
    if (s->nlen <= fl || memcmp(s->name, fam, fl) != 0) continue;
    const char *suf = s->name + fl;
    size_t sl = s->nlen - fl;
    const char *v;
    size_t vl;
    if (eq(suf, sl, "_bucket") && s->labels && first_label(s, &v, &vl))
      put(o, "%s\"%.*s\": %.*s", first ? "" : ", ", (int)vl, v, (int)s->vlen, s->val);
    else if (eq(suf, sl, "_sum") || eq(suf, sl, "_count"))
      put(o, "%s\"%.*s\": %.*s", first ? "" : ", ", (int)sl - 1, suf + 1, (int)s->vlen, s->val);
    else continue;
    s->used = true;
    first = false;
  }
  put(o, "}");
}

/* The value of expvar `key` (in a map whose series start with `prefix`):
 * false if the page has no such series (derper would not publish it). */
static bool put_var(struct out *o, struct page *pg, const char *prefix, const char *key, bool comma) {
  char fam[128];
  const char *k = key;
  if (strncmp(k, "counter_", 8) == 0) k += 8;
  else if (strncmp(k, "gauge_", 6) == 0) k += 6;
  bool str = strcmp(k, "version") == 0; /* tsweb's version{version="x"} 1, in any map */
  snprintf(fam, sizeof fam, "%s%s", str ? "" : prefix, k);
  size_t fl = strlen(fam), found = 0, labelled = 0, multi = 0;
  bool hist = is_hist(pg, fam, fl);
  for (size_t i = 0; i < pg->n; i++) {
    const struct sample *s = &pg->s[i];
    if (s->nlen == fl && memcmp(s->name, fam, fl) == 0) {
      found++;
      labelled += s->labels != NULL;
      multi += s->labels && multi_label(s);
    }
  }
  if (!found && !hist) return false;
  put(o, "%s\"%s\": ", comma ? ",\n  " : "", key);
  if (hist) {
    put_hist(o, pg, fam);
    return true;
  }
  /* A label map is an object; v1.80's two-label family is v1.78's total. */
  bool obj = labelled && !str && multi < found;
  long long sum = 0;
  bool first = true;
  if (obj) put(o, "{");
  for (size_t i = 0; i < pg->n; i++) {
    struct sample *s = &pg->s[i];
    if (s->nlen != fl || memcmp(s->name, fam, fl) != 0) continue;
    s->used = true;
    const char *v;
    size_t vl;
    bool lab = s->labels && first_label(s, &v, &vl);
    if (str) { /* one JSON value whatever the page holds */
      if (first && lab) put(o, "\"%.*s\"", (int)vl, v), first = false;
    } else if (obj) {
      if (lab && !multi_label(s)) put(o, "%s\"%.*s\": %.*s", first ? "" : ", ", (int)vl, v, (int)s->vlen, s->val), first = false;
    } else if (labelled) {
      if (s->labels) sum += strtoll(s->val, NULL, 10);
    } else if (first) {
      put(o, "%.*s", (int)s->vlen, s->val), first = false;
    }
  }
  if (obj) put(o, "}");
  else if (str && first) put(o, "\"\"");
  else if (labelled && !str) put(o, "%lld", sum);
  return true;
}

/* derper's "derp" map (Server.ExpVar), v1.78 and later, in expvar's order. */
static const char *const derp_keys[] = {
    "accepts", "average_queue_duration_ms", "bytes_received", "bytes_sent",
    "counter_buffered_write_frames", "counter_mesh_update_batch_size", "counter_mesh_update_loop_count",
    "counter_packets_dropped_reason", "counter_packets_dropped_type", "counter_packets_received_kind",
    "counter_tcp_rtt", "counter_total_dup_client_conns", "gauge_clients_local", "gauge_clients_remote",
    "gauge_clients_total", "gauge_current_connections", "gauge_current_dup_client_conns",
    "gauge_current_dup_client_keys", "gauge_current_file_descriptors", "gauge_current_home_connections",
    "gauge_current_notideal_connections", "gauge_memstats_sys0", "gauge_watchers", "got_ping", "home_moves_in",
    "home_moves_out", "multiforwarder_created", "multiforwarder_deleted", "packet_forwarder_delete_other_value",
    "packets_dropped", "packets_forwarded_in", "packets_forwarded_out", "packets_received", "packets_sent",
    "peer_gone_disconnected_frames", "peer_gone_not_here_frames", "rate_limit_per_client_burst_bytes",
    "rate_limit_per_client_bytes_per_second", "rate_limit_per_client_waited", "sclient_write_timeouts",
    "sent_pong", "unknown_frames", "version",
};

static void put_map(struct out *o, struct page *pg, bool comma, const char *name, const char *prefix,
                    const char *const *keys, size_t nkeys) {
  put(o, "%s\"%s\": {\n  ", comma ? ",\n  " : "", name);
  bool any = false;
  for (size_t i = 0; i < nkeys; i++) any |= put_var(o, pg, prefix, keys[i], any);
  put(o, "}");
}

/* Every series derper's tree did not take, flat as derpd's own: a label's
 * value joins the name with "_". Histograms and the per-shard and per-link
 * series stay on /debug/varz. */
static void put_rest(struct out *o, struct page *pg) {
  put(o, ",\n  \"derpd\": {");
  bool first = true;
  for (size_t i = 0; i < pg->n; i++) {
    const struct sample *s = &pg->s[i];
    if (s->used) continue;
    bool part = false; /* of a histogram */
    static const char *const sufs[] = {"_bucket", "_sum", "_count"};
    for (int k = 0; k < 3 && !part; k++) {
      size_t sl = strlen(sufs[k]);
      if (s->nlen > sl && memcmp(s->name + s->nlen - sl, sufs[k], sl) == 0)
        part = is_hist(pg, s->name, s->nlen - sl);
    }
    if (part) continue;
    put(o, "%s\n    \"%.*s", first ? "" : ",", (int)s->nlen, s->name);
    for (size_t j = 0; s->labels && j < s->llen; j++) { /* each label value, after "_" */
      if (s->labels[j] != '"') continue;
      size_t e = j + 1;
      while (e < s->llen && s->labels[e] != '"') e += s->labels[e] == '\\' ? 2 : 1;
      put(o, "_%.*s", (int)(e - j - 1), s->labels + j + 1);
      j = e;
    }
    put(o, "\": %.*s", (int)s->vlen, s->val);
    first = false;
  }
  put(o, "\n  }");
}

size_t expvar_render(char *buf, size_t cap, const char *varz, size_t vlen) {
  struct out o = {buf, cap, 0};
  size_t lines = 1;
  for (size_t i = 0; i < vlen; i++) lines += varz[i] == '\n';
  struct page pg = {.s = malloc(lines * sizeof *pg.s)};
  if (!pg.s) return 0;
  parse(&pg, varz, vlen, lines);
  put(&o, "{\n  ");
  static const char *const top_before[] = {
      "counter_bootstrap_dns_published_hits", "counter_bootstrap_dns_published_misses",
      "counter_bootstrap_dns_queried_domains", "counter_bootstrap_dns_requests",
      "counter_bootstrap_dns_unpublished_hits", "counter_bootstrap_dns_unpublished_misses",
      "counter_bootstrap_dns_unpublished_percent_misses", "counter_uptime_sec"};
  bool any = false;
  for (size_t i = 0; i < sizeof top_before / sizeof *top_before; i++)
    any |= put_var(&o, &pg, "", top_before[i], any);
  put_map(&o, &pg, any, "derp", "derp_", derp_keys, sizeof derp_keys / sizeof *derp_keys);
  put_var(&o, &pg, "", "derp_websocket_accepts", true);
  static const char *const tls_maps[] = {"derper_tls_request_version", "gauge_derper_tls_active_version"};
  static const char *const stun_keys[] = {"counter_addrfamily", "counter_requests"};
  static const char *const tls_keys[] = {"counter_accepted_connections", "counter_rejected_connections"};
  for (size_t i = 0; i < 2; i++) /* derper publishes these two always, {} until a TLS request */
    if (!put_var(&o, &pg, "", tls_maps[i], true)) put(&o, ",\n  \"%s\": {}", tls_maps[i]);
  put_var(&o, &pg, "", "process_start_unix_time", true);
  put_map(&o, &pg, true, "stun", "stun_", stun_keys, 2);
  put_map(&o, &pg, true, "tls_listener", "tls_listener_", tls_keys, 2);
  put_var(&o, &pg, "", "version", true);
  put_rest(&o, &pg); /* last: it takes what the tree above left */
  put(&o, "\n}\n");
  free(pg.s);
  return o.len;
}
