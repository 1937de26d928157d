/* test_http.c: the HTTP front door (src/server/protocol/http.c): incremental head
 * parsing with its bounds and exact hand-over of trailing bytes, every route
 * and status, and the WebSocket accept computation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/protocol/http.h"

static const char KEY[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* Feed s in one go; expect DONE having consumed exactly the head. */
static void parse_ok(struct http_req *r, const char *s) {
  size_t used = 0, n = strlen(s);
  http_req_init(r);
  enum http_feed_status st = http_req_feed(r, (const uint8_t *)s, n, &used);
  cr_assert_eq(st, HTTP_FEED_DONE, "status %d for %s (err %d)", st, s, r->error_status);
  cr_assert_eq(used, n);
}

static int parse_err(const char *s, size_t n) {
  struct http_req r;
  size_t used;
  http_req_init(&r);
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)s, n, &used), HTTP_FEED_ERROR, "input %s", s);
  return r.error_status;
}

static const struct http_site SITE = {.key_hex = KEY};

/* Route a request for a site and return the reply (as a NUL-terminated string in out). */
static void route_site(const char *s, const struct http_site *site, bool debug, struct http_reply *out) {
  struct http_req r;
  parse_ok(&r, s);
  http_route(&r, site, debug, out);
  cr_assert(out->len < sizeof out->buf);
  out->buf[out->len] = 0;
}

static void route(const char *s, bool debug, struct http_reply *out) { route_site(s, &SITE, debug, out); }

static bool has(const struct http_reply *o, const char *needle) {
  return strstr(o->buf, needle) != NULL;
}

static const char *body_of(const struct http_reply *o) {
  const char *e = strstr(o->buf, "\r\n\r\n");
  cr_assert(e);
  return e + 4;
}

/* ---- parsing ---- */

Test(http_parse, basic_fields) {
  struct http_req r;
  parse_ok(&r, "GET /derp?x=1&y=2 HTTP/1.1\r\nHost: a\r\nUPGRADE: Derp\r\nderp-fast-start: 1\r\n"
               "X-Tailscale-Challenge: ts_abc-1.2:3\r\nConnection: keep-alive, Close\r\n\r\n");
  cr_assert_eq(r.method, HTTP_GET);
  cr_assert_str_eq(r.path, "/derp");
  cr_assert_eq(r.path_len, 5);
  cr_assert_eq(r.upgrade, HTTP_UP_DERP);
  cr_assert(r.fast_start);
  cr_assert(r.has_challenge);
  cr_assert_str_eq(r.challenge, "ts_abc-1.2:3");
  cr_assert(r.conn_close);
}

/* What /debug/'s access rules read: the raw query string (bounded) and
 * whether X-Forwarded-For came at all. */
Test(http_parse, query_and_forwarded) {
  struct http_req r;
  parse_ok(&r, "GET /debug/varz HTTP/1.1\r\nHost: a\r\n\r\n");
  cr_assert(!r.in_query && r.query_len == 0 && !r.forwarded && !r.query_cut);
  parse_ok(&r, "GET /debug/varz? HTTP/1.1\r\nHost: x\r\nx-forwarded-for: ,\r\n\r\n");
  cr_assert(r.in_query && r.query_len == 0 && r.forwarded);
  cr_assert_str_eq(r.path, "/debug/varz");
  parse_ok(&r, "GET /a?b=c?d#e?f=g HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert_str_eq(r.path, "/a");
  cr_assert_str_eq(r.query, "b=c?d");
  parse_ok(&r, "GET /a#b?c HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert_str_eq(r.path, "/a");
  cr_assert(!r.in_query && r.query_len == 0);
  /* A query longer than kept: its start, and the cut flag. */
  char req[HTTP_MAX_QUERY + 128];
  int n = snprintf(req, sizeof req, "GET /debug/?debugkey=%0*d HTTP/1.1\r\nHost: x\r\n\r\n", HTTP_MAX_QUERY, 7);
  cr_assert(n > 0 && (size_t)n < sizeof req);
  parse_ok(&r, req);
  cr_assert(r.query_cut);
  cr_assert_eq(r.query_len, HTTP_MAX_QUERY);
  cr_assert_eq(strncmp(r.query, "debugkey=000", 12), 0);
  /* A huge X-Forwarded-For still counts. */
  char big[2048];
  snprintf(big, sizeof big, "GET /debug/ HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %01500d\r\n\r\n", 1);
  parse_ok(&r, big);
  cr_assert(r.forwarded);
}

Test(http_parse, upgrade_values) {
  static const struct { const char *v; enum http_upgrade up; } t[] = {
      {"DERP", HTTP_UP_DERP}, {"derp", HTTP_UP_DERP}, {"dErP", HTTP_UP_DERP},
      {"WebSocket", HTTP_UP_WEBSOCKET}, {"websocket", HTTP_UP_WEBSOCKET},
      {"h2c", HTTP_UP_OTHER}, {"derpx", HTTP_UP_OTHER}, {"websocket, x", HTTP_UP_OTHER},
      {"websoc\xe2\x84\xaa" "et", HTTP_UP_WEBSOCKET}, /* U+212A: Go's strings.ToLower makes it 'k' */
      {"\xe2\x84\xaa", HTTP_UP_OTHER}, {"websocket\xc2\xa0", HTTP_UP_OTHER}, /* no TrimSpace */
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char req[256];
    struct http_req r;
    snprintf(req, sizeof req, "GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", t[i].v);
    parse_ok(&r, req);
    cr_assert_eq(r.upgrade, t[i].up, "%s", t[i].v);
  }
  /* Too long an Upgrade value is just "something else". */
  char req[512], v[300];
  memset(v, 'd', sizeof v - 1);
  v[sizeof v - 1] = 0;
  snprintf(req, sizeof req, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: %s\r\n\r\n", v);
  struct http_req r;
  parse_ok(&r, req);
  cr_assert_eq(r.upgrade, HTTP_UP_OTHER);
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert_eq(r.upgrade, HTTP_UP_NONE);
  cr_assert(!r.fast_start && !r.has_challenge && !r.conn_close && !r.ws_proto_route && !r.ws_proto[0]);
  /* derper reads the first Upgrade header (Header.Get). */
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nUpgrade: DERP\r\n\r\n");
  cr_assert_eq(r.upgrade, HTTP_UP_OTHER);
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n\r\n");
  cr_assert_eq(r.upgrade, HTTP_UP_WEBSOCKET);
}

Test(http_parse, fast_start_only_one) {
  struct http_req r;
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nDerp-Fast-Start: 0\r\n\r\n");
  cr_assert(!r.fast_start);
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nDerp-Fast-Start: 11\r\n\r\n");
  cr_assert(!r.fast_start);
}

Test(http_parse, ideal_node) {
  struct http_req r;
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nIdeal-Node: derp2\r\n\r\n");
  cr_assert(r.ideal_node);
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nIdeal-Node:   \r\n\r\n");
  cr_assert(!r.ideal_node, "an empty value is no hint (derper)");
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert(!r.ideal_node);
}

Test(http_parse, challenge_validity) {
  static const struct { const char *v; bool ok; } t[] = {
      {"abc", true}, {"A-Z_a.z:0", true},
      {"1234567890123456789012345678901234567890123456789012345678901234", true}, /* 64 */
      {"12345678901234567890123456789012345678901234567890123456789012345", false}, /* 65 */
      {"a b", false}, {"a/b", false}, {"<script>", false}, {"", false},
      {"1234567890123456789012345678901234567890123456789012345678901234567890"
       "1234567890123456789012345678901234567890123456789012345678901234567890", false},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char req[512];
    struct http_req r;
    snprintf(req, sizeof req, "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: %s\r\n\r\n", t[i].v);
    parse_ok(&r, req);
    cr_assert_eq(r.has_challenge, t[i].ok, "%s", t[i].v);
    if (t[i].ok) cr_assert_str_eq(r.challenge, t[i].v);
  }
}

/* derper routes to WebSocket when the first Sec-WebSocket-Protocol value
 * contains "derp" (case-sensitive); coder/websocket then picks the first
 * token of all values equal to "derp" in any case, trimmed as TrimSpace does. */
Test(http_parse, ws_protocol_list) {
  static const struct { const char *hdrs; bool route; const char *sel; } t[] = {
      {"Sec-WebSocket-Protocol: derp\r\n", true, "derp"},
      {"Sec-WebSocket-Protocol: chat, derp\r\n", true, "derp"},
      {"Sec-WebSocket-Protocol: DERP ,x\r\n", false, "DERP"},
      {"Sec-WebSocket-Protocol: derpy\r\n", true, ""},
      {"Sec-WebSocket-Protocol: chat\r\n", false, ""},
      {"Sec-WebSocket-Protocol: x\r\nSec-WebSocket-Protocol: derp\r\n", false, "derp"},
      {"Sec-WebSocket-Protocol: derpx\r\nSec-WebSocket-Protocol: Derp, derp\r\n", true, "Derp"},
      {"Sec-WebSocket-Protocol: a,\xc2\xa0" "derp\xe3\x80\x80 \t,b\r\n", true, "derp"},
      {"Sec-WebSocket-Protocol: de rp, d\xc2" "erp, derp\xc2\r\n", true, ""},
      {"Sec-WebSocket-Protocol: dderp\r\n", true, ""},
      {"Sec-WebSocket-Protocol:\r\nSec-WebSocket-Protocol: derp\r\n", false, "derp"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char req[256];
    struct http_req r;
    snprintf(req, sizeof req, "GET /derp HTTP/1.1\r\nHost: x\r\n%s\r\n", t[i].hdrs);
    parse_ok(&r, req);
    cr_assert_eq(r.ws_proto_route, t[i].route, "%zu: %s", i, t[i].hdrs);
    cr_assert_str_eq(r.ws_proto, t[i].sel, "%zu: %s", i, t[i].hdrs);
  }
}

/* The same values split at every byte: a space of two or three bytes may
 * straddle two pieces. */
Test(http_parse, ws_protocol_split) {
  static const char req[] = "GET /derp HTTP/1.1\r\nHost: x\r\nConnection: keep-alive,\xe2\x80\x8aUpgrade\xc2\x85\r\n"
                            "Sec-WebSocket-Protocol: x,\xe2\x80\x8a" "DeRp\xc2\x85,derp\r\n\r\n";
  size_t n = sizeof req - 1;
  for (size_t cut = 0; cut <= n; cut++) {
    struct http_req r;
    size_t u1 = 0, u2 = 0;
    http_req_init(&r);
    enum http_feed_status st = http_req_feed(&r, (const uint8_t *)req, cut, &u1);
    if (st != HTTP_FEED_DONE) st = http_req_feed(&r, (const uint8_t *)req + u1, n - u1, &u2);
    cr_assert_eq(st, HTTP_FEED_DONE, "cut %zu", cut);
    cr_assert_str_eq(r.ws_proto, "DeRp", "cut %zu", cut);
    cr_assert(r.ws_proto_route, "cut %zu", cut); /* the last token has "derp" */
    cr_assert(r.conn_upgrade, "cut %zu", cut);
  }
}

Test(http_parse, connection_tokens) {
  static const struct { const char *hdrs; bool up; const char *first; } t[] = {
      {"Connection: Upgrade\r\n", true, "Upgrade"},
      {"Connection: keep-alive, UPGRADE\r\n", true, "keep-alive, UPGRADE"},
      {"Connection: close\r\nConnection: upgrade\r\n", true, "close"},
      {"Connection: upgrades\r\n", false, "upgrades"},
      {"Connection: up grade\r\n", false, "up grade"},
      {"", false, ""},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char req[256];
    struct http_req r;
    snprintf(req, sizeof req, "GET /derp HTTP/1.1\r\nHost: x\r\n%s\r\n", t[i].hdrs);
    parse_ok(&r, req);
    cr_assert_eq(r.conn_upgrade, t[i].up, "%s", t[i].hdrs);
    cr_assert_str_eq(r.conn_first, t[i].first, "%s", t[i].hdrs);
  }
}

/* Go's net/http, before any handler: Host is required from HTTP/1.1 on, at
 * most once, and made of host bytes; a header name may not hold a space. */
Test(http_parse, go_host_rules) {
  static const struct { const char *req; int status; const char *text; } t[] = {
      {"GET / HTTP/1.1\r\n\r\n", 400, "missing required Host header"},
      {"GET /derp HTTP/1.1\r\nUpgrade: DERP\r\n\r\n", 400, "missing required Host header"},
      {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "missing required Host header"}, /* "Host " */
      {"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, NULL}, /* too many: a plain 400 */
      {"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, NULL},
      {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "malformed Host header"},
      {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "malformed Host header"},
      {"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400, "malformed Host header"},
      {"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", 400, "malformed Host header"},
      {"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 400, "malformed Host header"}, /* folded: "a b" */
      {"GET / HTTP/1.0\r\nHost: a\"b\r\n\r\n", 400, "malformed Host header"},
      {"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400, "invalid header name"},
      {"GET / HTTP/1.1\r\nX A: b\r\n\r\n", 400, "missing required Host header"}, /* Host first */
      {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "unsupported protocol version"},
      {"GET / HTTP/2.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, NULL}, /* read error first */
      {"GET / HTTP/0.9\r\n\r\n", 505, "unsupported protocol version"},
      {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, NULL},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct http_req r;
    size_t used;
    http_req_init(&r);
    cr_assert_eq(http_req_feed(&r, (const uint8_t *)t[i].req, strlen(t[i].req), &used), HTTP_FEED_ERROR,
                 "%s", t[i].req);
    cr_assert_eq(r.error_status, t[i].status, "%s: %d", t[i].req, r.error_status);
    if (t[i].text) cr_assert_str_eq(r.error_text ? r.error_text : "(none)", t[i].text, "%s", t[i].req);
    else cr_assert_null(r.error_text, "%s: %s", t[i].req, r.error_text);
  }
  static const char *const ok[] = {
      "GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET / HTTP/1.1\r\nHOST: [::1]:80\r\n\r\n",
      "GET / HTTP/1.1\r\nHost:  a.b-c_d~e!$&'()*+,;=%:9 \t\r\n\r\n", "CONNECT a:1 HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.2\r\nHost: a\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nX-A: \xff\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    struct http_req r;
    parse_ok(&r, ok[i]);
  }
}

/* The replies to those: Go's server writes them itself, without a length. */
Test(http_reply, go_errors) {
  static const struct { const char *req; const char *want; } t[] = {
      {"GET / HTTP/1.1\r\n\r\n",
       "HTTP/1.1 400 Bad Request: missing required Host header\r\nContent-Type: text/plain; charset=utf-8\r\n"
       "Connection: close\r\n\r\n400 Bad Request: missing required Host header"},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
       "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
       "400 Bad Request"},
      {"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
       "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
       "400 Bad Request"},
      {"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
       "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version\r\nContent-Type: text/plain; "
       "charset=utf-8\r\nConnection: close\r\n\r\n505 HTTP Version Not Supported: unsupported protocol version"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct http_req r;
    struct http_reply o;
    size_t used;
    http_req_init(&r);
    cr_assert_eq(http_req_feed(&r, (const uint8_t *)t[i].req, strlen(t[i].req), &used), HTTP_FEED_ERROR);
    http_req_error_reply(&r, &o);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE);
    cr_assert(o.len < sizeof o.buf);
    o.buf[o.len] = 0;
    cr_assert_str_eq(o.buf, t[i].want);
  }
  /* derpd's own bounds answer the same way. */
  struct http_reply o;
  char big[HTTP_MAX_HEAD + 64];
  int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX: %0*d", HTTP_MAX_HEAD, 0);
  struct http_req r;
  size_t used;
  http_req_init(&r);
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)big, (size_t)n, &used), HTTP_FEED_ERROR);
  http_req_error_reply(&r, &o);
  o.buf[o.len] = 0;
  cr_assert_str_eq(o.buf, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; "
                          "charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large");
}

static const char FULL_REQ[] =
    "GET /derp?q=1&debugkey=s%20k#frag HTTP/1.1\r\nHost: derp.example.com\r\nConnection: Upgrade\r\n"
    "Upgrade: DERP\r\nDerp-Fast-Start: 1\r\nX-Tailscale-Challenge: abc123\r\nSec-WebSocket-Key: k\r\n"
    "User-Agent: test\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n";

Test(http_parse, every_split_point) {
  size_t n = strlen(FULL_REQ);
  struct http_req ref;
  parse_ok(&ref, FULL_REQ);
  for (size_t cut = 0; cut <= n; cut++) {
    struct http_req r;
    size_t u1 = 0, u2 = 0;
    http_req_init(&r);
    enum http_feed_status s1 = http_req_feed(&r, (const uint8_t *)FULL_REQ, cut, &u1);
    if (cut < n) {
      cr_assert_eq(s1, HTTP_FEED_MORE, "cut %zu", cut);
      cr_assert_eq(u1, cut);
      cr_assert_eq(http_req_feed(&r, (const uint8_t *)FULL_REQ + cut, n - cut, &u2), HTTP_FEED_DONE);
    } else {
      cr_assert_eq(s1, HTTP_FEED_DONE);
    }
    cr_assert_eq(u1 + u2, n, "cut %zu", cut);
    cr_assert_str_eq(r.path, ref.path);
    cr_assert_eq(r.upgrade, ref.upgrade);
    cr_assert_eq(r.fast_start, ref.fast_start);
    cr_assert_str_eq(r.challenge, ref.challenge);
    cr_assert_str_eq(r.ws_key, ref.ws_key);
    cr_assert_str_eq(r.query, "q=1&debugkey=s%20k");
    cr_assert(r.forwarded);
  }
}

Test(http_parse, byte_at_a_time) {
  struct http_req r;
  size_t n = strlen(FULL_REQ), used;
  http_req_init(&r);
  for (size_t i = 0; i < n; i++) {
    enum http_feed_status st = http_req_feed(&r, (const uint8_t *)FULL_REQ + i, 1, &used);
    cr_assert_eq(used, 1);
    cr_assert_eq(st, i + 1 == n ? HTTP_FEED_DONE : HTTP_FEED_MORE, "byte %zu", i);
  }
  cr_assert(r.fast_start && r.has_challenge);
  cr_assert_eq(r.head_bytes, n);
}

/* The DERP stream behind the head must be left for the caller, with or
 * without Connection: Upgrade (http-parser treats those two differently). */
Test(http_parse, trailing_bytes_unconsumed) {
  static const char *heads[] = {
      FULL_REQ,
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nDerp-Fast-Start: 1\r\n\r\n",
      "GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
      "GET / HTTP/1.0\n\n",
  };
  static const uint8_t tail[] = {0x02, 0x00, 0x00, 0x00, 0x48, 'G', 'E', 'T', ' ', 0xff, 0, '\r', '\n'};
  for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
    size_t hl = strlen(heads[i]);
    uint8_t buf[1024];
    memcpy(buf, heads[i], hl);
    memcpy(buf + hl, tail, sizeof tail);
    for (size_t cut = 0; cut <= hl; cut++) {
      struct http_req r;
      size_t u1 = 0, u2 = 0;
      http_req_init(&r);
      enum http_feed_status st = http_req_feed(&r, buf, cut, &u1);
      if (st != HTTP_FEED_DONE) st = http_req_feed(&r, buf + u1, hl + sizeof tail - u1, &u2);
      cr_assert_eq(st, HTTP_FEED_DONE, "head %zu cut %zu", i, cut);
      cr_assert_eq(u1 + u2, hl, "head %zu cut %zu: used %zu", i, cut, u1 + u2);
    }
  }
}

Test(http_parse, feed_after_done_consumes_nothing) {
  struct http_req r;
  size_t used = 99;
  parse_ok(&r, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 18, &used), HTTP_FEED_DONE);
  cr_assert_eq(used, 0);
}

Test(http_parse, huge_header_line_bounded) {
  const size_t chunk = 64 * 1024, total = 16u << 20;
  uint8_t *buf = malloc(chunk);
  cr_assert(buf);
  memset(buf, 'a', chunk);
  struct http_req r;
  size_t used, consumed = 0;
  http_req_init(&r);
  const char *start = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ";
  enum http_feed_status st = http_req_feed(&r, (const uint8_t *)start, strlen(start), &used);
  cr_assert_eq(st, HTTP_FEED_MORE);
  consumed += used;
  for (size_t off = 0; off < total && st == HTTP_FEED_MORE; off += chunk) {
    st = http_req_feed(&r, buf, chunk, &used);
    consumed += used;
  }
  free(buf);
  cr_assert_eq(st, HTTP_FEED_ERROR);
  cr_assert_eq(r.error_status, 431);
  cr_assert_str_eq(r.error_reason, "http_head_too_large");
  cr_assert_leq(consumed, HTTP_MAX_HEAD + chunk);
  cr_assert_leq(r.head_bytes, HTTP_MAX_HEAD);
  /* Once failed, it stays failed. */
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)"\r\n\r\n", 4, &used), HTTP_FEED_ERROR);
}

Test(http_parse, many_headers_bounded) {
  struct http_req r;
  size_t used;
  http_req_init(&r);
  enum http_feed_status st = http_req_feed(&r, (const uint8_t *)"GET / HTTP/1.1\r\nHost: x\r\n", 16, &used);
  for (int i = 0; i < 10000 && st == HTTP_FEED_MORE; i++)
    st = http_req_feed(&r, (const uint8_t *)"A: b\r\n", 6, &used);
  cr_assert_eq(st, HTTP_FEED_ERROR);
  cr_assert_eq(r.error_status, 431);
}

Test(http_parse, head_exactly_max_ok) {
  char *req = malloc(HTTP_MAX_HEAD + 1);
  const char *pre = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
  size_t pl = strlen(pre);
  memcpy(req, pre, pl);
  memset(req + pl, 'v', HTTP_MAX_HEAD - pl - 4);
  memcpy(req + HTTP_MAX_HEAD - 4, "\r\n\r\n", 5);
  struct http_req r;
  parse_ok(&r, req);
  /* One byte more does not fit. */
  req = realloc(req, HTTP_MAX_HEAD + 2);
  memmove(req + pl + 1, req + pl, HTTP_MAX_HEAD - pl + 1);
  req[pl] = 'v';
  cr_assert_eq(parse_err(req, HTTP_MAX_HEAD + 1), 431);
  free(req);
}

Test(http_parse, long_path_414) {
  char req[1024];
  char path[HTTP_MAX_PATH + 2];
  memset(path, 'p', sizeof path - 1);
  path[0] = '/';
  path[sizeof path - 1] = 0; /* HTTP_MAX_PATH + 1 chars */
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
  cr_assert_eq(parse_err(req, strlen(req)), 414);
  /* Exactly HTTP_MAX_PATH is fine, and a long query string does not count. */
  path[HTTP_MAX_PATH] = 0;
  snprintf(req, sizeof req, "GET %s?%s HTTP/1.1\r\nHost: x\r\n\r\n", path, path);
  struct http_req r;
  parse_ok(&r, req);
  cr_assert_eq(r.path_len, HTTP_MAX_PATH);
}

Test(http_parse, garbage_400) {
  static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
  struct http_req r;
  size_t used;
  http_req_init(&r);
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)tls, sizeof tls - 1, &used), HTTP_FEED_ERROR);
  cr_assert_eq(r.error_status, 400);
  cr_assert_str_eq(r.error_reason, "http_bad_request");
  static const char bad[] = "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n";
  cr_assert_eq(parse_err(bad, sizeof bad - 1), 400);
  cr_assert_eq(parse_err("SSH-2.0-OpenSSH\r\n", 17), 400);
}

Test(http_parse, bad_versions) {
  int s = parse_err("GET / HTTP/2.0\r\n\r\n", 18);
  cr_assert_eq(s, 505);
  s = parse_err("GET /\r\n\r\n", 9); /* HTTP/0.9 */
  cr_assert(s == 505 || s == 400, "%d", s);
  struct http_req r;
  parse_ok(&r, "GET / HTTP/1.0\r\n\r\n");
  cr_assert_eq(r.http_minor, 0);
  /* Go's server takes any HTTP/1.x (as 1.1 and up). */
  parse_ok(&r, "GET / HTTP/1.2\r\nHost: x\r\n\r\n");
  cr_assert_eq(r.http_minor, 2);
}

/* ---- routes ---- */

Test(http_route, derp_upgrade_101) {
  struct http_reply o;
  route("GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: DERP\r\n\r\n", false, &o);
  cr_assert_eq(o.action, HTTP_ACT_DERP);
  cr_assert_eq(o.status, 101);
  char want[512];
  snprintf(want, sizeof want, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
           "Derp-Version: 2\r\nDerp-Public-Key: %s\r\n\r\n", KEY);
  cr_assert_str_eq(o.buf, want);
  /* Lowercase upgrade, and no Connection: Upgrade, still works (as derper). */
  route("GET /derp HTTP/1.1\r\nHost: x\r\nupgrade: derp\r\n\r\n", false, &o);
  cr_assert_eq(o.action, HTTP_ACT_DERP);
  cr_assert_str_eq(o.buf, want);
}

Test(http_route, derp_fast_start_no_reply) {
  struct http_reply o;
  route("GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Fast-Start: 1\r\n\r\n", false, &o);
  cr_assert_eq(o.action, HTTP_ACT_DERP);
  cr_assert_eq(o.len, 0);
}

Test(http_route, derp_without_upgrade_426) {
  static const char *reqs[] = {
      "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nUpgrade: DERP\r\n\r\n", /* the first counts */
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: derp, websocket\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    struct http_reply o;
    route(reqs[i], false, &o);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE);
    cr_assert_eq(o.status, 426);
    cr_assert(has(&o, "HTTP/1.1 426 Upgrade Required\r\n"));
    cr_assert(has(&o, "Connection: close\r\n"));
    cr_assert(has(&o, "X-Content-Type-Options: nosniff\r\n"));
    cr_assert(has(&o, "Content-Length: 33\r\n"));
    cr_assert_str_eq(body_of(&o), "DERP requires connection upgrade\n"); /* http.Error's */
  }
}

/* derper: without "derp" in the first Sec-WebSocket-Protocol value, an
 * Upgrade: websocket request is a DERP upgrade (very old clients sent it). */
Test(http_route, websocket_without_derp_is_derp) {
  static const char *reqs[] = {
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nSec-WebSocket-Protocol: DERP\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: chat\r\n"
      "Sec-WebSocket-Protocol: derp\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    struct http_reply o;
    route(reqs[i], false, &o);
    cr_assert_eq(o.action, HTTP_ACT_DERP, "%s", reqs[i]);
    cr_assert(has(&o, "Upgrade: DERP\r\n"));
  }
}

#define WS_HEAD "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
#define WS_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define WS_OK WS_KEY "Sec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 13\r\n\r\n"
#define WS_TAIL "Sec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 13\r\n\r\n"
#define BAD_KEY(k) "WebSocket protocol violation: invalid Sec-WebSocket-Key " k ", must be a 16 byte base64 encoded string\n"

Test(http_route, websocket_accept_rfc6455) {
  struct http_reply o;
  route(WS_HEAD WS_OK, false, &o);
  cr_assert_eq(o.action, HTTP_ACT_WEBSOCKET);
  cr_assert_eq(o.status, 101);
  cr_assert_str_eq(o.buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                          "Sec-WebSocket-Protocol: derp\r\n\r\n");
  /* Any method with Upgrade: DERP, but a WebSocket handshake must be a GET. */
  route("POST /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\n\r\n", false, &o);
  cr_assert_eq(o.action, HTTP_ACT_DERP);
}

/* coder/websocket's verifyClientRequest, as derper answers it: each refusal
 * in its order, with its status, headers and http.Error text (compared with
 * derper v1.78.3, docs/operations.md). */
Test(http_route, websocket_refusals) {
  static const struct { const char *req; int status; const char *hdr; const char *body; } t[] = {
      {"GET /derp HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" WS_OK, 426, NULL,
       "WebSocket protocol violation: handshake request must be at least HTTP/1.1: \"HTTP/1.0\"\n"},
      {"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" WS_OK, 426,
       "Connection: Upgrade\r\nUpgrade: websocket\r\nConnection: close\r\n",
       "WebSocket protocol violation: Connection header \"\" does not contain Upgrade\n"},
      {"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, close\r\n" WS_OK,
       426, "X-Content-Type-Options: nosniff\r\nUpgrade: websocket\r\nConnection: close\r\n",
       "WebSocket protocol violation: Connection header \"keep-alive, close\" does not contain Upgrade\n"},
      {"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: \"upgrade\"\\\r\n" WS_OK, 426,
       NULL, "WebSocket protocol violation: Connection header \"\\\"upgrade\\\"\\\\\" does not contain Upgrade\n"},
      {"POST /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" WS_OK, 405, NULL,
       "WebSocket protocol violation: handshake request method is not GET but \"POST\"\n"},
      {WS_HEAD WS_KEY "Sec-WebSocket-Protocol: derp\r\n\r\n", 400, "Sec-WebSocket-Version: 13\r\n",
       "unsupported WebSocket protocol version (only 13 is supported): \"\"\n"},
      {WS_HEAD WS_KEY "Sec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400, "Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket protocol version (only 13 is supported): \"8\"\n"},
      {WS_HEAD WS_TAIL, 400, NULL, "WebSocket protocol violation: missing Sec-WebSocket-Key\n"},
      {WS_HEAD WS_KEY WS_KEY WS_TAIL, 400, NULL, "WebSocket protocol violation: multiple Sec-WebSocket-Key headers\n"},
      {WS_HEAD "Sec-WebSocket-Key: abc\r\n" WS_TAIL, 400, NULL, BAD_KEY("\"abc\"")},
      {WS_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" WS_TAIL, 400, NULL,
       BAD_KEY("\"dGhlIHNhbXBsZSBub25jZQ=\"")},
      {WS_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==a\r\n" WS_TAIL, 400, NULL,
       BAD_KEY("\"dGhlIHNhbXBsZSBub25jZQ==a\"")},
      {WS_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZS-ub25jZQ==\r\n" WS_TAIL, 400, NULL,
       BAD_KEY("\"dGhlIHNhbXBsZS-ub25jZQ==\"")},
      {WS_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ===\r\n" WS_TAIL, 400, NULL,
       BAD_KEY("\"dGhlIHNhbXBsZSBub25jZ===\"")},
      {WS_HEAD "Sec-WebSocket-Key: a\"b\xff\xc2\x85\r\n" WS_TAIL, 400, NULL, BAD_KEY("\"a\\\"b\\xff\"")},
      {WS_HEAD "Sec-WebSocket-Key: \xc2\x80\xe2\x80\x8b\xef\xbf\xbd\xf0\x9f\x94\x91\r\n" WS_TAIL, 400, NULL,
       BAD_KEY("\"\\u0080\\u200b\xef\xbf\xbd\xf0\x9f\x94\x91\"")},
      {WS_HEAD "Sec-WebSocket-Key:\r\n" WS_TAIL, 400, NULL, BAD_KEY("\"\"")},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    struct http_reply o;
    route(t[i].req, false, &o);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE, "%zu", i);
    cr_assert_eq(o.status, t[i].status, "%zu: %d", i, o.status);
    cr_assert(has(&o, "Content-Type: text/plain; charset=utf-8\r\n"), "%zu", i);
    cr_assert(has(&o, "X-Content-Type-Options: nosniff\r\n"), "%zu", i);
    if (t[i].hdr) cr_assert(has(&o, t[i].hdr), "%zu: no %s in %s", i, t[i].hdr, o.buf);
    cr_assert_str_eq(body_of(&o), t[i].body, "%zu", i);
  }
  /* HEAD: the same head, no body. */
  struct http_reply o;
  route("HEAD /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" WS_OK, false, &o);
  cr_assert_eq(o.status, 405);
  cr_assert(has(&o, "Content-Length: 77\r\n"));
  cr_assert_str_eq(body_of(&o), "");
}

/* The Origin check between verifyClientRequest and the 101: with derper's
 * pattern "*" only an Origin Go's url.Parse rejects is refused (403); the
 * texts are Go 1.23's, each case run through url.Parse. */
Test(http_route, websocket_origin) {
  static const struct { const char *origin, *body; } t[] = {
      {"http://[::1", "failed to parse Origin header \"http://[::1\": parse \"http://[::1\": missing ']' in host\n"},
      {"%zz", "failed to parse Origin header \"%zz\": parse \"%zz\": invalid URL escape \"%zz\"\n"},
      {"http://a b", "failed to parse Origin header \"http://a b\": parse \"http://a b\": invalid character \" \" in host name\n"},
      {"http://a:b", "failed to parse Origin header \"http://a:b\": parse \"http://a:b\": invalid port \":b\" after host\n"},
      {"http://[::1]x", "failed to parse Origin header \"http://[::1]x\": parse \"http://[::1]x\": invalid port \"x\" after host\n"},
      {"http://[::1]:80", NULL},
      {"http://[fe80::1%25en0]:8", NULL},
      {"http://[fe80::1%25%41]", NULL},
      {"http://[fe80::1%25%2F]", "failed to parse Origin header \"http://[fe80::1%25%2F]\": parse \"http://[fe80::1%25%2F]\": invalid URL escape \"%2F\"\n"},
      {"http://[fe80::1%25%20]", NULL},
      {"http://a%41", "failed to parse Origin header \"http://a%41\": parse \"http://a%41\": invalid URL escape \"%41\"\n"},
      {"http://a%C3%A9", NULL},
      {"http://a%2", "failed to parse Origin header \"http://a%2\": parse \"http://a%2\": invalid URL escape \"%2\"\n"},
      {"http://u@h", NULL},
      {"http://u:p%zz@h", "failed to parse Origin header \"http://u:p%zz@h\": parse \"http://u:p%zz@h\": invalid URL escape \"%zz\"\n"},
      {"http://u%3:p@h", "failed to parse Origin header \"http://u%3:p@h\": parse \"http://u%3:p@h\": invalid URL escape \"%3\"\n"},
      {"http://ué@h", "failed to parse Origin header \"http://ué@h\": parse \"http://ué@h\": net/url: invalid userinfo\n"},
      {"http://u@h@i", NULL},
      {"://x", "failed to parse Origin header \"://x\": parse \"://x\": missing protocol scheme\n"},
      {"a:b/c", NULL},
      {"a/b:c", NULL},
      {"x:y", NULL},
      {"*", NULL},
      {"http://h/p%zz", "failed to parse Origin header \"http://h/p%zz\": parse \"http://h/p%zz\": invalid URL escape \"%zz\"\n"},
      {"http://h/p#f%zz", "failed to parse Origin header \"http://h/p#f%zz\": parse \"http://h/p#f%zz\": invalid URL escape \"%zz\"\n"},
      {"http://h/p#f%41", NULL},
      {"http://h/%", "failed to parse Origin header \"http://h/%\": parse \"http://h/%\": invalid URL escape \"%\"\n"},
      {"1http://x", "failed to parse Origin header \"1http://x\": parse \"1http://x\": first path segment in URL cannot contain colon\n"},
      {"http://x\ty", "failed to parse Origin header \"http://x\\ty\": parse \"http://x\\ty\": net/url: invalid control character in URL\n"},
      {"http://h?q%zz", NULL},
      {"http:///a%zz", "failed to parse Origin header \"http:///a%zz\": parse \"http:///a%zz\": invalid URL escape \"%zz\"\n"},
      {"///a%zz", "failed to parse Origin header \"///a%zz\": parse \"///a%zz\": invalid URL escape \"%zz\"\n"},
      {"//a b", "failed to parse Origin header \"//a b\": parse \"//a b\": invalid character \" \" in host name\n"},
      {"http://é", NULL},
      {"http://a<b>", NULL},
      {"http://a\"b", NULL},
      {"null", NULL},
      {"https://derp.example.com", NULL},
      {"http://h:80:90", NULL},
      {"http://[::1]:", NULL},
      {"http://a/b?c#d#e%zz", "failed to parse Origin header \"http://a/b?c#d#e%zz\": parse \"http://a/b?c#d#e%zz\": invalid URL escape \"%zz\"\n"},
      {"HTTP://EXAMPLE.COM", NULL},
      {"http://a%25", NULL},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char req[1024];
    struct http_reply o;
    snprintf(req, sizeof req, WS_HEAD WS_KEY "Origin: %s\r\nOrigin: %%zz\r\n" WS_TAIL, t[i].origin);
    route(req, false, &o);
    if (!t[i].body) {
      cr_assert_eq(o.action, HTTP_ACT_WEBSOCKET, "%s: %s", t[i].origin, o.buf);
      continue;
    }
    cr_assert_eq(o.status, 403, "%s", t[i].origin);
    cr_assert(has(&o, "X-Content-Type-Options: nosniff\r\n"));
    cr_assert_str_eq(body_of(&o), t[i].body, "%s", t[i].origin);
  }
  /* An Origin longer than derpd keeps is not checked. */
  char req[1024], big[300];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = 0;
  big[0] = '%';
  struct http_reply o;
  snprintf(req, sizeof req, WS_HEAD WS_KEY "Origin: %s\r\n" WS_TAIL, big);
  route(req, false, &o);
  cr_assert_eq(o.action, HTTP_ACT_WEBSOCKET);
}

/* A key is trimmed as strings.TrimSpace trims (Unicode spaces too) to be
 * checked, but the Accept is computed over the header value (Go's
 * Header.Get), here 65 bytes: SHA-1 input over two blocks. */
Test(http_route, websocket_accept_key_with_spaces) {
  struct http_reply o;
  route(WS_HEAD "Sec-WebSocket-Key: \xe3\x80\x80" "dGhlIHNhbXBsZSBub25jZQ==\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0"
                "\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0\xc2\xa0"
                "\r\n" WS_TAIL, false, &o);
  cr_assert_eq(o.action, HTTP_ACT_WEBSOCKET, "%s", o.buf);
  /* python3: base64(sha1(key + GUID)) */
  cr_assert(has(&o, "Sec-WebSocket-Accept: XoWMEUrRh1EcFI5O6GAGFJ4qGBc=\r\n"), "%s", o.buf);
  /* Non-canonical last bits: Go's StdEncoding is not strict. */
  route(WS_HEAD "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" WS_TAIL, false, &o);
  cr_assert_eq(o.action, HTTP_ACT_WEBSOCKET);
  cr_assert(has(&o, "Sec-WebSocket-Accept: Zgw8jYXtqX5qJr7MJ1Q/MqzeSRI=\r\n"), "%s", o.buf);
  /* Longer than derpd keeps: invalid, and the quote says it was cut. */
  char req[1024], key[200];
  memset(key, 'A', sizeof key - 1);
  key[sizeof key - 1] = 0;
  snprintf(req, sizeof req, WS_HEAD "Sec-WebSocket-Key: %s\r\n" WS_TAIL, key);
  route(req, false, &o);
  cr_assert_eq(o.status, 400);
  cr_assert(has(&o, "AAAA...\", must be a 16 byte base64 encoded string\n"), "%s", o.buf);
}

/* The subprotocol is the client's first token equal to "derp" in any case,
 * echoed as sent; unless it is "derp" exactly, derper answers 101 and at
 * once closes with 1008 (no DERP: nothing else follows). */
Test(http_route, websocket_wrong_subprotocol_closes) {
  static const struct { const char *proto; const char *echo; } t[] = {
      {"derpx", NULL}, {"derpx\r\nSec-WebSocket-Protocol: DERP", "DERP"}, {"x-derp, Derp", "Derp"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char req[512], want[512];
    struct http_reply o;
    snprintf(req, sizeof req, WS_HEAD WS_KEY "Sec-WebSocket-Protocol: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
             t[i].proto);
    route(req, false, &o);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE, "%s", t[i].proto);
    cr_assert_eq(o.status, 101);
    int n = snprintf(want, sizeof want, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n%s%s%s\r\n"
                     "\x88\x28\x03\xf0" "client must speak the derp subprotocol",
                     t[i].echo ? "Sec-WebSocket-Protocol: " : "", t[i].echo ? t[i].echo : "",
                     t[i].echo ? "\r\n" : "");
    cr_assert_eq(o.len, (size_t)n, "%s", t[i].proto);
    cr_assert(memcmp(o.buf, want, (size_t)n) == 0, "%s: %s", t[i].proto, o.buf);
  }
}

Test(http_route, probes) {
  static const char *paths[] = {"/derp/probe", "/derp/latency-check"};
  for (size_t i = 0; i < 2; i++) {
    char req[128];
    struct http_reply o;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
    route(req, false, &o);
    cr_assert_eq(o.status, 200);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE);
    cr_assert(has(&o, "Access-Control-Allow-Origin: *\r\n"));
    cr_assert(has(&o, "Content-Length: 0\r\n"));
    cr_assert_str_eq(body_of(&o), "");
    snprintf(req, sizeof req, "HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
    route(req, false, &o);
    cr_assert_eq(o.status, 200);
    snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", paths[i]);
    route(req, false, &o);
    cr_assert_eq(o.status, 405);
    cr_assert(has(&o, "HTTP/1.1 405 Method Not Allowed\r\n"));
    cr_assert(has(&o, "X-Content-Type-Options: nosniff\r\n"));
    cr_assert_str_eq(body_of(&o), "bogus probe method\n");
  }
}

Test(http_route, generate_204) {
  struct http_reply o;
  route("GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: ts_xyz.1\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 204);
  cr_assert(has(&o, "HTTP/1.1 204 No Content\r\n"));
  cr_assert(has(&o, "Cache-Control: no-cache, no-store, must-revalidate, no-transform, max-age=0\r\n"));
  cr_assert(has(&o, "X-Tailscale-Response: response ts_xyz.1\r\n"));
  cr_assert(has(&o, "Connection: close\r\n"));
  cr_assert_str_eq(body_of(&o), "");
  /* The longest valid challenge comes back whole. */
  route("GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: "
        "1234567890123456789012345678901234567890123456789012345678901234\r\n\r\n", false, &o);
  cr_assert(has(&o, "X-Tailscale-Response: response "
                    "1234567890123456789012345678901234567890123456789012345678901234\r\nConnection: close\r\n\r\n"));
  route("GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: bad/one\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 204);
  cr_assert(!has(&o, "X-Tailscale-Response"));
  route("GET /generate_204 HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert(!has(&o, "X-Tailscale-Response"));
}

/* The body is the resolver's (operations/bootstrap_dns.c); the head is
 * derper's: JSON, browser headers, Connection: close. */
Test(http_route, bootstrap_dns) {
  struct http_reply o;
  route("GET /bootstrap-dns?q=controlplane.tailscale.com HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert(o.status == 200 && o.action == HTTP_ACT_BOOTSTRAP_DNS && o.len == 0);
  route("POST /bootstrap-dns HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false, &o);
  cr_assert_eq(o.action, HTTP_ACT_BOOTSTRAP_DNS, "any method, as derper");
  char head[1024];
  size_t n = http_reply_head_extra(head, sizeof head, 200, "application/json", 12, http_browser_headers);
  cr_assert_gt(n, 0);
  head[n] = 0;
  static const char *const want[] = {"HTTP/1.1 200 OK\r\n", "Content-Type: application/json\r\n",
                                     "Content-Length: 12\r\n", "Connection: close\r\n\r\n",
                                     "X-Frame-Options: DENY\r\n"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) cr_assert(strstr(head, want[i]), "no %s", want[i]);
}

/* tsweb.AddBrowserHeaders, on derper's "/", /robots.txt and /bootstrap-dns. */
static void assert_browser_headers(const struct http_reply *o) {
  static const char *const want[] = {
      "Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n",
      "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri "
      "'self'; block-all-mixed-content; object-src 'none'\r\n",
      "X-Frame-Options: DENY\r\n", "X-Content-Type-Options: nosniff\r\n"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) cr_assert(has(o, want[i]), "no %s in %s", want[i], o->buf);
}

Test(http_route, home_and_robots) {
  struct http_reply o;
  route("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 200);
  cr_assert(has(&o, "Content-Type: text/html; charset=utf-8\r\n"));
  cr_assert(has(&o, "<h1>DERP</h1>"));
  cr_assert(!has(&o, "/debug/") && !has(&o, "disabled"));
  assert_browser_headers(&o);
  char cl[64];
  snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body_of(&o)));
  cr_assert(has(&o, cl));
  route("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, &o); /* who may see /debug/ gets a link */
  cr_assert(has(&o, "<a href='/debug/'>/debug/</a>"));
  route("GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 200);
  cr_assert(has(&o, "Content-Type: text/plain; charset=utf-8\r\n"));
  assert_browser_headers(&o);
  cr_assert_str_eq(body_of(&o), "User-agent: *\nDisallow: /\n");
}

Test(http_route, head_has_no_body) {
  struct http_reply o;
  route("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 200);
  cr_assert_str_eq(body_of(&o), "");
  cr_assert(!has(&o, "Content-Length: 0\r\n")); /* the length of the GET body */
  route("HEAD /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert(has(&o, "Content-Length: 26\r\n"));
  cr_assert_str_eq(body_of(&o), "");
  route("HEAD /derp HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 426);
  cr_assert(has(&o, "Content-Length: 33\r\n"));
  cr_assert_str_eq(body_of(&o), "");
}

/* -derp=false: /derp is derper's 404 whatever it asks; the rest is served,
 * and the home page says the server is disabled. */
Test(http_route, derp_disabled) {
  static const struct http_site off = {.key_hex = KEY, .derp_disabled = true};
  static const char *reqs[] = {
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nDerp-Fast-Start: 1\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: derp\r\nSec-WebSocket-Version: 13\r\n\r\n",
      "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    struct http_reply o;
    route_site(reqs[i], &off, false, &o);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE, "%zu", i);
    cr_assert_eq(o.status, 404);
    cr_assert(has(&o, "X-Content-Type-Options: nosniff\r\n"));
    cr_assert_str_eq(body_of(&o), "derp server disabled\n");
  }
  struct http_reply o;
  route_site("GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n", &off, false, &o);
  cr_assert_eq(o.status, 200);
  route_site("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &off, false, &o);
  cr_assert_eq(o.status, 200);
  cr_assert(has(&o, "Status: <b>disabled</b>"));
}

/* -home (derper v1.82): blank, or a redirect as Go's http.Redirect writes it;
 * on "/" and on every other path without a route. */
Test(http_route, home_settings) {
  static const struct http_site blank = {.key_hex = KEY, .home = HTTP_HOME_BLANK};
  static const struct http_site redir = {.key_hex = KEY, .home = HTTP_HOME_REDIRECT,
                                         .home_url = "https://example.com/a?b=<\"&'>\xc3\xa9"};
  struct http_reply o;
  route_site("GET /anything HTTP/1.1\r\nHost: x\r\n\r\n", &blank, true, &o);
  cr_assert_eq(o.status, 200);
  cr_assert(has(&o, "Content-Type: text/html; charset=utf-8\r\nContent-Length: 0\r\n"));
  assert_browser_headers(&o);
  cr_assert_str_eq(body_of(&o), "");
  static const char loc[] = "Location: https://example.com/a?b=<\"&'>%c3%a9\r\n";
  static const char body[] = "<a href=\"https://example.com/a?b=&lt;&#34;&amp;&#39;&gt;\xc3\xa9\">Found</a>.\n\n";
  route_site("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &redir, false, &o);
  cr_assert_eq(o.status, 302);
  cr_assert(has(&o, "HTTP/1.1 302 Found\r\nContent-Type: text/html; charset=utf-8\r\n"));
  cr_assert(has(&o, loc), "%s", o.buf);
  assert_browser_headers(&o);
  cr_assert_str_eq(body_of(&o), body);
  route_site("HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n", &redir, false, &o);
  cr_assert_eq(o.status, 302);
  cr_assert(has(&o, loc) && has(&o, "Content-Type: text/html"));
  cr_assert_str_eq(body_of(&o), "");
  route_site("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &redir, false, &o);
  cr_assert_eq(o.status, 302);
  cr_assert(has(&o, loc) && !has(&o, "\r\nContent-Type:") && has(&o, "Content-Length: 0\r\n"));
  cr_assert_str_eq(body_of(&o), "");
  /* The other routes do not change. */
  route_site("GET /robots.txt HTTP/1.1\r\nHost: x\r\n\r\n", &redir, false, &o);
  cr_assert_eq(o.status, 200);
}

Test(http_route, debug_pages) {
  static const struct { const char *path; enum http_debug_page page; } t[] = {
      {"/debug/", HTTP_DEBUG_INDEX}, {"/debug/varz", HTTP_DEBUG_VARZ}, {"/debug/vars", HTTP_DEBUG_VARS}};
  for (size_t i = 0; i < 3; i++) {
    char req[128];
    struct http_reply o;
    snprintf(req, sizeof req, "GET %s?x HTTP/1.1\r\nHost: x\r\n\r\n", t[i].path);
    route(req, false, &o);
    cr_assert_eq(o.status, 403);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE);
    cr_assert(has(&o, "forbidden"));
    route(req, true, &o);
    cr_assert_eq(o.action, HTTP_ACT_DEBUG);
    cr_assert_eq(o.debug_page, t[i].page);
  }
  struct http_reply o;
  route("GET /debug/other HTTP/1.1\r\nHost: x\r\n\r\n", true, &o);
  cr_assert_eq(o.status, 404);
  cr_assert_str_eq(body_of(&o), "404 page not found\n"); /* http.NotFound */
  route("GET /debug/other HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 403);
}

/* derper's mux sends every path without a route of its own to "/". */
Test(http_route, other_paths_get_the_home_page) {
  static const char *paths[] = {"/nope", "/derp/", "/derpx", "/derp/probe/x", "/generate_204/", "/debugx",
                                "/robots.txt/"};
  struct http_reply home;
  route("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, &home);
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    char req[128];
    struct http_reply o;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
    route(req, false, &o);
    cr_assert_eq(o.status, 200, "%s", paths[i]);
    cr_assert_str_eq(o.buf, home.buf, "%s", paths[i]);
    cr_assert(http_path_is_home(paths[i]));
  }
  static const char *routed[] = {"/derp", "/derp/probe", "/derp/latency-check", "/generate_204", "/robots.txt",
                                 "/bootstrap-dns", "/debug", "/debug/", "/debug/x"};
  for (size_t i = 0; i < sizeof routed / sizeof routed[0]; i++) cr_assert(!http_path_is_home(routed[i]));
  /* "/debug" is the /debug/ subtree's: Go's ServeMux redirects it. */
  struct http_reply o;
  route("GET /debug HTTP/1.1\r\nHost: x\r\n\r\n", false, &o);
  cr_assert_eq(o.status, 301);
  cr_assert(has(&o, "Location: /debug/\r\n"));
  cr_assert_str_eq(body_of(&o), "<a href=\"/debug/\">Moved Permanently</a>.\n\n");
}

Test(http_reply, errors) {
  static const int codes[] = {400, 414, 431, 505};
  for (size_t i = 0; i < 4; i++) {
    struct http_reply o;
    http_error_reply(codes[i], &o);
    o.buf[o.len] = 0;
    char line[64];
    snprintf(line, sizeof line, "HTTP/1.1 %d ", codes[i]);
    cr_assert_eq(strncmp(o.buf, line, strlen(line)), 0, "%s", o.buf);
    cr_assert_eq(o.status, codes[i]);
    cr_assert_eq(o.action, HTTP_ACT_CLOSE);
    cr_assert(has(&o, "Connection: close\r\n"));
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body_of(&o)));
    cr_assert(has(&o, cl));
  }
}

Test(http_reply, head_builder) {
  char buf[256];
  size_t n = http_reply_head(buf, sizeof buf, 200, "text/plain", 1234);
  cr_assert_gt(n, 0);
  buf[n] = 0;
  cr_assert_str_eq(buf, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n"
                        "Connection: close\r\n\r\n");
  cr_assert_eq(http_reply_head(buf, 20, 200, "text/plain", 1), 0);
}

static void route80(const char *s, bool debug, uint16_t port, struct http_reply *out) {
  struct http_req r;
  parse_ok(&r, s);
  http_route_port80(&r, "derp.example.net", port, debug, out);
}

Test(http_route, port80_helper) {
  struct http_reply o;
  route80("GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: abc\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 204);
  cr_assert(has(&o, "X-Tailscale-Response: response abc\r\n"));
  /* /derp is never served here: a redirect, whatever the headers. */
  route80("GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 302);
  cr_assert_eq(o.action, HTTP_ACT_CLOSE);
  cr_assert(has(&o, "Location: https://derp.example.net/derp\r\n"));
  route80("HEAD /x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n", false, 8443, &o);
  cr_assert_eq(o.status, 302);
  cr_assert(has(&o, "Location: https://derp.example.net:8443/x\r\n"));
  route80("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert(has(&o, "Location: https://derp.example.net/\r\n"));
  route80("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, 443, &o);
  cr_assert(has(&o, "Location: https://derp.example.net/debug/\r\n"));
  route80("POST /derp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 400);
  cr_assert_str_eq(body_of(&o), "Use HTTPS\n");
  route80("GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 403);
  route80("GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", true, 443, &o);
  cr_assert_eq(o.action, HTTP_ACT_DEBUG);
}
