/* test_http_route.c: derper's routes (src/server/protocol/http_route.c) for a
 * parsed head: every route and status, the WebSocket accept computation and
 * refusals, the home page settings, /debug, the port-80 helper. */
#include "http_test.h"

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
    cr_assert(has(&o, "\r\n\r\ndebug access denied\n"), "tsweb's body"); /* http.Error, as derper */
    cr_assert(has(&o, "X-Content-Type-Options: nosniff\r\n"));
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

static void route80_as(const char *fqdn, const char *s, bool debug, uint16_t port, struct http_reply *out) {
  struct http_req r;
  parse_ok(&r, s);
  http_route_port80(&r, fqdn, port, debug, out);
}

static void route80(const char *s, bool debug, uint16_t port, struct http_reply *out) {
  route80_as("derp.example.net", s, debug, port, out);
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
  /* The query carried over, as derper's RequestURI; Go's body for GET. */
  route80("HEAD /x?y=1 HTTP/1.1\r\nHost: x\r\n\r\n", false, 8443, &o);
  cr_assert_eq(o.status, 302);
  cr_assert(has(&o, "Location: https://derp.example.net:8443/x?y=1\r\n"));
  route80("GET /x?a=1&b=2 HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert(has(&o, "Location: https://derp.example.net/x?a=1&b=2\r\n"));
  cr_assert_str_eq(body_of(&o), "<a href=\"https://derp.example.net/x?a=1&amp;b=2\">Found</a>.\n\n");
  /* An IPv6 -hostname in brackets, or the URL is not one. */
  route80_as("2001:db8::1", "GET /y HTTP/1.1\r\nHost: x\r\n\r\n", false, 8443, &o);
  cr_assert(has(&o, "Location: https://[2001:db8::1]:8443/y\r\n"));
  /* A path and query of non-ASCII bytes too long once escaped: 400, not a cut URL. */
  char big[1024] = "GET /";
  for (int i = 0; i < 250; i++) strcat(big, "\xc3");
  strcat(big, "?");
  for (int i = 0; i < 250; i++) strcat(big, "\xc3");
  strcat(big, " HTTP/1.1\r\nHost: x\r\n\r\n");
  route80(big, false, 443, &o);
  cr_assert_eq(o.status, 400);
  cr_assert(!has(&o, "Location:"));
  route80("GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert(has(&o, "Location: https://derp.example.net/\r\n"));
  route80("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true, 443, &o);
  cr_assert(has(&o, "Location: https://derp.example.net/debug/\r\n"));
  route80("POST /derp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 400);
  cr_assert_str_eq(body_of(&o), "Use HTTPS\n");
  /* A target with no path of ours ("*", absolute-form) is not carried into
   * a Location, where `*@evil.example` would read as another host. */
  route80("GET * HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 400);
  cr_assert(!has(&o, "Location:"));
  route80("GET http://evil.example/x HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 400);
  route80("GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", false, 443, &o);
  cr_assert_eq(o.status, 403);
  route80("GET /debug/varz HTTP/1.1\r\nHost: x\r\n\r\n", true, 443, &o);
  cr_assert_eq(o.action, HTTP_ACT_DEBUG);
}
