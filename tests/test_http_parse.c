/* test_http_parse.c: the HTTP front door's request-head parser
 * (src/server/protocol/http_parse.c): incremental parsing with its bounds and
 * exact hand-over of trailing bytes, Go's host and header rules; and the
 * answers' bytes (http_reply.c). */
#include "http_test.h"

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

/* Repeated headers: derper reads the first value (Go's Header.Get). */
Test(http_parse, repeated_headers_first_wins) {
  struct http_req r;
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nDerp-Fast-Start: 1\r\nDerp-Fast-Start: 0\r\n\r\n");
  cr_assert(r.fast_start);
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nDerp-Fast-Start: 0\r\nDerp-Fast-Start: 1\r\n\r\n");
  cr_assert(!r.fast_start);
  parse_ok(&r, "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: first\r\n"
               "X-Tailscale-Challenge: second\r\n\r\n");
  cr_assert(r.has_challenge);
  cr_assert_str_eq(r.challenge, "first");
  parse_ok(&r, "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: ok\r\n"
               "X-Tailscale-Challenge: bad!\r\n\r\n");
  cr_assert(r.has_challenge && strcmp(r.challenge, "ok") == 0);
  parse_ok(&r, "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: bad!\r\n"
               "X-Tailscale-Challenge: ok\r\n\r\n");
  cr_assert(!r.has_challenge);
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nIdeal-Node:\r\nIdeal-Node: derp2\r\n\r\n");
  cr_assert(!r.ideal_node, "an empty first value");
  parse_ok(&r, "GET /derp HTTP/1.1\r\nHost: x\r\nIdeal-Node: derp2\r\nIdeal-Node:\r\n\r\n");
  cr_assert(r.ideal_node);
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
      /* Go's ParseRequestURI: neither origin-form, "*" nor absolute-form. */
      {"GET *@evil.example HTTP/1.1\r\nHost: a\r\n\r\n", 400, NULL},
      {"GET *x HTTP/1.1\r\n\r\n", 400, NULL}, /* before the Host checks */
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
      "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "GET http://a/derp HTTP/1.1\r\nHost: a\r\n\r\n",
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
