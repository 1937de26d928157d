/* test_bootstrap_dns.c: /bootstrap-dns (src/server/operations/bootstrap_dns.c)
 * with made-up lookups: derper's bodies byte for byte (MarshalIndent, net.IP
 * text, encoding/json's escapes), the lists' rules (NAME/TXTNAME, failures
 * left out, the last good TXT record), the answer to ?q= for published and
 * unpublished names with derper's counters, the rollout percentage per
 * client address (Go's PCG), and the names asked for. Expected values come
 * from Go 1.23 (the toolchain derper v1.78.3 was built with). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "server/log.h"
#include "server/operations/bootstrap_dns.h"
#include "server/operations/metrics.h"

/* A made-up DNS: "NAME=ip,ip;NAME2=..." and TXT "NAME=rec|rec;...". */
struct fake { const char *a, *txt; int ip_calls, txt_calls; };

static int fake_find(const char *db, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  for (const char *p = db; p && *p;) {
    const char *end = strchr(p, ';');
    size_t el = end ? (size_t)(end - p) : strlen(p);
    if (el > nl && p[nl] == '=' && memcmp(p, name, nl) == 0) {
      snprintf(out, cap, "%.*s", (int)(el - nl - 1), p + nl + 1);
      return 0;
    }
    p = end ? end + 1 : NULL;
  }
  return -1;
}

static int fake_ip(void *ctx, const char *name, char (*ips)[BDNS_IP_MAX], int max, char *why, size_t wl) {
  struct fake *f = ctx;
  f->ip_calls++;
  char v[512];
  if (fake_find(f->a, name, v, sizeof v) < 0) {
    snprintf(why, wl, "no such host");
    return -1;
  }
  int n = 0;
  for (char *t = strtok(v, ","); t && n < max; t = strtok(NULL, ",")) {
    uint8_t a[16];
    if (inet_pton(AF_INET, t, a) == 1) bdns_ip_string(AF_INET, a, ips[n++]);
    else if (inet_pton(AF_INET6, t, a) == 1) bdns_ip_string(AF_INET6, a, ips[n++]);
  }
  return n;
}

static int fake_txt(void *ctx, const char *name, char (*recs)[BDNS_TXT_MAX], int max, char *why, size_t wl) {
  struct fake *f = ctx;
  f->txt_calls++;
  char v[512];
  if (fake_find(f->txt, name, v, sizeof v) < 0) {
    snprintf(why, wl, "no such host");
    return -1;
  }
  int n = 0;
  for (char *t = strtok(v, "|"); t && n < max; t = strtok(NULL, "|")) snprintf(recs[n++], BDNS_TXT_MAX, "%s", t);
  return n;
}

static struct stats st;
static const uint8_t PEER[16] = {[10] = 0xff, [11] = 0xff, 198, 51, 100, 10};

static void setup(void) {
  cr_assert_geq(sodium_init(), 0);
  memset(&st, 0, sizeof st);
  log_set_level(LOG_ERROR); /* the names that fail on purpose */
}

/* The body for query q (NULL: none), as a NUL-terminated string ("" for an empty body). */
static char *ask(struct bootstrap_dns *b, const uint8_t peer[16], const char *q) {
  size_t n;
  char *body = bootstrap_dns_answer(b, &st, peer, q, q ? strlen(q) : 0, false, &n);
  cr_assert_neq(n, SIZE_MAX);
  if (!body) {
    cr_assert_eq(n, 0);
    return strdup("");
  }
  cr_assert_eq(strlen(body), n);
  return body;
}

static void assert_ask(struct bootstrap_dns *b, const char *q, const char *want) {
  char *got = ask(b, PEER, q);
  cr_assert_str_eq(got, want, "q=%s", q ? q : "(none)");
  free(got);
}

static int64_t stat(enum stat_scalar i) { return atomic_load(&st.v[i]); }

Test(bootstrap_dns, no_names_empty_body, .init = setup) {
  struct fake f = {0};
  struct bdns_lookup lk = {fake_ip, fake_txt, &f};
  struct bootstrap_dns *b = bootstrap_dns_new("", NULL, &lk);
  cr_assert_not_null(b);
  cr_assert_eq(bootstrap_dns_start(b), 0); /* nothing to resolve: no thread */
  bootstrap_dns_refresh(b);
  cr_assert_eq(f.ip_calls, 0);
  assert_ask(b, NULL, "");
  assert_ask(b, "q=example.com", "");
  cr_assert_eq(stat(STAT_bdns_unpub_misses), 1);
  cr_assert_eq(bootstrap_dns_queried(b), 1);
  bootstrap_dns_free(b);
}

/* The published list: names sorted, a tab per level, each name once (the
 * last lookup wins), names that fail left out; all failing is "null". */
Test(bootstrap_dns, published_map, .init = setup) {
  struct fake f = {.a = "b.example=2001:db8::1;a.example=192.0.2.1;c.example=::ffff:192.0.2.9", .txt = ""};
  struct bdns_lookup lk = {fake_ip, fake_txt, &f};
  struct bootstrap_dns *b = bootstrap_dns_new("c.example,b.example,nope.example,,a.example", NULL, &lk);
  bootstrap_dns_refresh(b);
  assert_ask(b, NULL, "{\n\t\"a.example\": [\n\t\t\"192.0.2.1\"\n\t],\n\t\"b.example\": [\n\t\t\"2001:db8::1\"\n\t],"
                      "\n\t\"c.example\": [\n\t\t\"192.0.2.9\"\n\t]\n}");
  /* ?q= for a published name: the same list, counted as a hit. */
  assert_ask(b, "q=b.example", "{\n\t\"a.example\": [\n\t\t\"192.0.2.1\"\n\t],\n\t\"b.example\": [\n\t\t\"2001:db8::1\"\n\t],"
                              "\n\t\"c.example\": [\n\t\t\"192.0.2.9\"\n\t]\n}");
  cr_assert_eq(stat(STAT_bdns_pub_hits), 1);
  bootstrap_dns_free(b);

  struct bootstrap_dns *none = bootstrap_dns_new("nope.example,", NULL, &lk);
  bootstrap_dns_refresh(none);
  assert_ask(none, NULL, "null");
  bootstrap_dns_free(none);
}

/* Every address of a name, in the order the lookup gave (shuffled for the
 * published list each refresh, as derper does). */
Test(bootstrap_dns, shuffled_addresses, .init = setup) {
  struct fake f = {.a = "x=10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6"};
  struct bdns_lookup lk = {fake_ip, fake_txt, &f};
  struct bootstrap_dns *b = bootstrap_dns_new("x", NULL, &lk);
  bool moved = false;
  for (int i = 0; i < 20 && !moved; i++) {
    bootstrap_dns_refresh(b);
    char *body = ask(b, PEER, NULL);
    for (int k = 1; k <= 6; k++) {
      char ip[16];
      snprintf(ip, sizeof ip, "\"10.0.0.%d\"", k);
      cr_assert(strstr(body, ip), "%s lacks %s", body, ip);
    }
    moved = strstr(body, "\"10.0.0.1\",\n\t\t\"10.0.0.2\",\n\t\t\"10.0.0.3\",\n\t\t\"10.0.0.4\",\n\t\t\"10.0.0.5\"") == NULL;
    free(body);
  }
  cr_assert(moved, "20 refreshes, never shuffled");
  bootstrap_dns_free(b);
}

/* Unpublished names: never in the list; answered alone to ?q=NAME for the
 * clients inside the TXT percentage. */
Test(bootstrap_dns, unpublished, .init = setup) {
  struct fake f = {.a = "pub=192.0.2.1;all=192.0.2.2;half=192.0.2.3;none=192.0.2.4;gone=192.0.2.5;bad=192.0.2.6;"
                        "slash=192.0.2.7",
                   .txt = "half.pct=50;none.pct=abc|0;bad.pct=101|+1x|-1"};
  struct bdns_lookup lk = {fake_ip, fake_txt, &f};
  struct bootstrap_dns *b =
      bootstrap_dns_new("pub", "all,half/half.pct,none/none.pct,gone/missing.pct,bad/bad.pct,slash/", &lk);
  bootstrap_dns_refresh(b);
  static const char list[] = "{\n\t\"pub\": [\n\t\t\"192.0.2.1\"\n\t]\n}";
  assert_ask(b, NULL, list);
  assert_ask(b, "q=all", "{\n\t\"all\": [\n\t\t\"192.0.2.2\"\n\t]\n}");
  assert_ask(b, "x=1&q=%61ll&q=pub", "{\n\t\"all\": [\n\t\t\"192.0.2.2\"\n\t]\n}"); /* the first q, unescaped */
  /* NAME/ (no TXT name after the slash): every client, as bare NAME (derper's strings.Cut). */
  assert_ask(b, "q=slash", "{\n\t\"slash\": [\n\t\t\"192.0.2.7\"\n\t]\n}");
  cr_assert_eq(stat(STAT_bdns_unpub_hits), 3);
  /* 0%: no TXT value 0..100 (or the TXT lookup failed): never answered. */
  assert_ask(b, "q=none", list);
  assert_ask(b, "q=gone", list);
  assert_ask(b, "q=bad", list);
  cr_assert_eq(stat(STAT_bdns_unpub_hits), 6);
  cr_assert_eq(stat(STAT_bdns_unpub_pct_misses), 3);
  cr_assert_eq(stat(STAT_bdns_unpub_misses), 3, "then, not published either: a miss (derper)");
  /* 50%: PEER 198.51.100.10 draws 0.739 (Go's PCG over its 16 bytes): out. */
  assert_ask(b, "q=half", list);
  cr_assert_eq(stat(STAT_bdns_unpub_pct_misses), 4);
  /* 203.0.113.77 draws 0.414: in. */
  static const uint8_t in[16] = {[10] = 0xff, [11] = 0xff, 203, 0, 113, 77};
  char *got = ask(b, in, "q=half");
  cr_assert_str_eq(got, "{\n\t\"half\": [\n\t\t\"192.0.2.3\"\n\t]\n}");
  free(got);
  /* Not named: the list; a bare q= or a pair with ';' is no query. */
  assert_ask(b, "q=nothing", list);
  assert_ask(b, "q=", list);
  assert_ask(b, "q;=all", list);
  cr_assert_eq(stat(STAT_bdns_unpub_misses), 5); /* half (outside), nothing */
  cr_assert_eq(bootstrap_dns_queried(b), 7); /* all, slash, none, gone, bad, half, nothing */
  bootstrap_dns_free(b);
}

/* The names asked for are forgotten once there are more than 500. */
Test(bootstrap_dns, queried_domains, .init = setup) {
  struct fake f = {0};
  struct bdns_lookup lk = {fake_ip, fake_txt, &f};
  struct bootstrap_dns *b = bootstrap_dns_new("", "", &lk);
  for (int i = 0; i < 500; i++) {
    char q[32];
    snprintf(q, sizeof q, "q=n%d.example", i);
    free(ask(b, PEER, q));
    free(ask(b, PEER, q)); /* twice: counted once */
  }
  cr_assert_eq(bootstrap_dns_queried(b), 500);
  free(ask(b, PEER, "q=one-more"));
  cr_assert_eq(bootstrap_dns_queried(b), 0);
  free(ask(b, PEER, "q=n1.example"));
  cr_assert_eq(bootstrap_dns_queried(b), 1);
  bootstrap_dns_free(b);
}

/* encoding/json's escapes in a name (HTML-safe, invalid UTF-8 as U+FFFD). */
Test(bootstrap_dns, json_escapes, .init = setup) {
  struct fake f = {.a = "a<b>&\"\\\x01\xe2\x80\xa8\xff\x7f=::1"};
  struct bdns_lookup lk = {fake_ip, fake_txt, &f};
  struct bootstrap_dns *b = bootstrap_dns_new("a<b>&\"\\\x01\xe2\x80\xa8\xff\x7f", NULL, &lk);
  bootstrap_dns_refresh(b);
  assert_ask(b, NULL, "{\n\t\"a\\u003cb\\u003e\\u0026\\\"\\\\\\u0001\\u2028\\ufffd\x7f\": [\n\t\t\"::1\"\n\t]\n}");
  bootstrap_dns_free(b);
}

/* net.IP's String(), as Go 1.23 prints each. */
Test(bootstrap_dns, ip_text) {
  static const struct { const char *in, *want; } t[] = {
      {"::", "::"}, {"::1", "::1"}, {"1::", "1::"}, {"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
      {"2001:0:0:1:0:0:0:1", "2001:0:0:1::1"}, {"::ffff:1.2.3.4", "1.2.3.4"}, {"::1.2.3.4", "::102:304"},
      {"fe80::1:0:0:0", "fe80::1:0:0:0"}, {"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"},
      {"1:0:3:4:5:6:7:8", "1:0:3:4:5:6:7:8"}, {"FD7A:115C:A1E0::1", "fd7a:115c:a1e0::1"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    uint8_t a[16];
    char out[BDNS_IP_MAX];
    cr_assert_eq(inet_pton(AF_INET6, t[i].in, a), 1);
    bdns_ip_string(AF_INET6, a, out);
    cr_assert_str_eq(out, t[i].want, "%s", t[i].in);
  }
  char out[BDNS_IP_MAX];
  bdns_ip_string(AF_INET, (const uint8_t[]){255, 0, 10, 1}, out);
  cr_assert_str_eq(out, "255.0.10.1");
}

/* Go's rand.New(rand.NewPCG(le64(ip[:8]), le64(ip[8:]))).Float64(). */
Test(bootstrap_dns, pcg_as_go) {
  static const struct { const char *ip; double want; } t[] = {
      {"::ffff:1.2.3.4", 0.068657977083725119}, {"::ffff:100.64.0.1", 0.1326417960005104},
      {"2001:db8::1", 0.17365074425987426}, {"::ffff:203.0.113.77", 0.41394766311788178},
      {"fd7a:115c:a1e0::1", 0.599420438188912}, {"::ffff:198.51.100.10", 0.73899080937023232},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    uint8_t a[16];
    cr_assert_eq(inet_pton(AF_INET6, t[i].ip, a), 1);
    uint64_t s1 = 0, s2 = 0;
    for (int k = 7; k >= 0; k--) { s1 = s1 << 8 | a[k]; s2 = s2 << 8 | a[8 + k]; }
    cr_assert_eq(bdns_pcg_float64(s1, s2), t[i].want, "%s: %.17g", t[i].ip, bdns_pcg_float64(s1, s2));
    cr_assert(bdns_percent_match(a, t[i].want + 1e-9, 0.9));
    cr_assert(!bdns_percent_match(a, t[i].want, 0.0));
  }
  uint8_t lo[16] = {[15] = 1}, lo4[16] = {[10] = 0xff, [11] = 0xff, 127, 0, 0, 9};
  cr_assert(bdns_percent_match(lo, 0.01, 0.49) && !bdns_percent_match(lo, 0.99, 0.5), "loopback: a coin");
  cr_assert(bdns_percent_match(lo4, 0.01, 0.2));
  cr_assert(!bdns_percent_match(lo, 0, 0.0) && bdns_percent_match(lo, 1, 0.99));
}
