/* fuzz_http.c: libFuzzer target for the HTTP request head parser and router
 * (server/protocol/http.c): every byte a client sends before the DERP upgrade,
 * and the /debug/ access rules' reading of it (the query's debugkey,
 * operations/debug_access.c).
 *
 * Input: byte 0 is the chunk size (1..256), byte 1 whether the peer is on
 * loopback (debug pages allowed) and, in its other bits, the site's settings
 * (-derp, -home). A finished head is routed both ways (main port and port-80
 * helper); a parse error gets its error reply (Go's form). Replies must fit
 * their buffer and carry a status line; the kept header copies stay NUL
 * terminated within their arrays, and a Go %q of any bytes is bounded. */
#include <string.h>

#include "fuzz.h"
#include "server/operations/debug_access.h"
#include "server/protocol/http.h"

static void check_reply(const struct http_reply *rep) {
  FUZZ_CHECK(rep->len <= sizeof rep->buf);
  if (rep->action != HTTP_ACT_DEBUG && rep->action != HTTP_ACT_BOOTSTRAP_DNS &&
      !(rep->action == HTTP_ACT_DERP && rep->len == 0))
    FUZZ_CHECK(rep->len >= 12 && memcmp(rep->buf, "HTTP/1.1 ", 9) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t chunk = (size_t)data[0] + 1;
  bool loopback = data[1] & 1;
  static const struct http_site sites[] = {
      {.key_hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
      {.key_hex = "", .derp_disabled = true, .home = HTTP_HOME_BLANK},
      {.key_hex = "", .home = HTTP_HOME_REDIRECT, .home_url = "https://example.com/a?b=<\"&'>\xc3\xa9"},
      {.key_hex = "", .derp_disabled = true},
  };
  const struct http_site *site = &sites[(data[1] >> 1) & 3];
  static struct http_req r; /* large: keep it off the stack */
  static struct http_reply rep;
  http_req_init(&r);
  const uint8_t *p = data + 2;
  size_t left = size - 2;
  enum http_feed_status st = HTTP_FEED_MORE;
  while (left > 0 && st == HTTP_FEED_MORE) {
    size_t n = left < chunk ? left : chunk, used = 0;
    st = http_req_feed(&r, p, n, &used);
    FUZZ_CHECK(st != HTTP_FEED_DONE || used <= n);
    p += n;
    left -= n;
  }
  FUZZ_CHECK(r.path_len <= HTTP_MAX_PATH && r.path[r.path_len] == '\0');
  FUZZ_CHECK(memchr(r.challenge, '\0', sizeof r.challenge) != NULL);
  FUZZ_CHECK(memchr(r.ws_key, '\0', sizeof r.ws_key) != NULL);
  FUZZ_CHECK(memchr(r.ws_version, '\0', sizeof r.ws_version) != NULL);
  FUZZ_CHECK(memchr(r.conn_first, '\0', sizeof r.conn_first) != NULL);
  FUZZ_CHECK(memchr(r.ws_proto, '\0', sizeof r.ws_proto) != NULL);
  {
    char q[64];
    size_t ql = http_go_quote(q, sizeof q, (const char *)data, size);
    FUZZ_CHECK(ql < sizeof q && q[ql] == '\0' && q[0] == '"' && q[ql - 1] == '"');
  }
  FUZZ_CHECK(r.query_len <= HTTP_MAX_QUERY && r.query[r.query_len] == '\0');
  if (r.in_query) {
    char key[DEBUG_KEY_MAX + 1];
    int kl = debug_query_value(r.query, r.query_len, "debugkey", key, sizeof key);
    FUZZ_CHECK(kl < (int)sizeof key && (kl < 0 || key[kl] == '\0'));
    /* No key file, an outside address: only X-Forwarded-For and the
     * address decide, and they refuse. */
    static const struct debug_access none;
    static const uint8_t outside[16] = {[10] = 0xff, [11] = 0xff, 192, 0, 2, 1};
    struct debug_request dr = {outside, r.method == HTTP_GET, r.forwarded, r.query, r.query_len,
                               r.query_cut};
    FUZZ_CHECK(!debug_access_allowed(&none, &dr));
  }
  if (st == HTTP_FEED_DONE) {
    http_route(&r, site, loopback, &rep);
    check_reply(&rep);
    http_route_port80(&r, "derp.example.com", 8443, loopback, &rep);
    check_reply(&rep);
  } else if (st == HTTP_FEED_ERROR && r.error_status != 0) {
    FUZZ_CHECK(r.error_status >= 400 && r.error_status < 600);
    http_req_error_reply(&r, &rep);
    check_reply(&rep);
  }
  return 0;
}
