/* http_route.c: what a parsed request head gets (see http.h): derper's routes
 * (/derp and its upgrade or WebSocket, /generate_204, the home page, probes,
 * the port-80 helper), coder/websocket's handshake checks and Go's url.Parse
 * errors for Origin. Sec-WebSocket-Accept comes from lib/wsaccept.c. */
#include "server/protocol/http.h"
#include "server/protocol/http_internal.h"

#include "lib/wsaccept.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static void route_derp_upgrade(const struct http_req *r, const char *key_hex, struct http_reply *out) {
  struct sbuf b = {out->buf, sizeof out->buf, 0, false};
  out->status = 101;
  out->action = HTTP_ACT_DERP;
  if (r->fast_start) { out->len = 0; return; } /* client already knows our key */
  sb_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                "Derp-Version: 2\r\nDerp-Public-Key: %s\r\n\r\n", key_hex);
  out->len = b.over ? 0 : b.len;
}

/* strings.TrimSpace, Unicode spaces included. */
static const char *go_trim_space(const char *s, size_t *len) {
  const uint8_t *p = (const uint8_t *)s;
  size_t n = *len;
  for (;;) {
    if (n && (p[0] == ' ' || (p[0] >= '\t' && p[0] <= '\r'))) { p++; n--; continue; }
    if (n >= 2 && http_utf8_is_space(p, 2)) { p += 2; n -= 2; continue; }
    if (n >= 3 && http_utf8_is_space(p, 3)) { p += 3; n -= 3; continue; }
    break;
  }
  for (;;) {
    if (n && (p[n - 1] == ' ' || (p[n - 1] >= '\t' && p[n - 1] <= '\r'))) { n--; continue; }
    if (n >= 2 && http_utf8_is_space(p + n - 2, 2)) { n -= 2; continue; }
    if (n >= 3 && http_utf8_is_space(p + n - 3, 3)) { n -= 3; continue; }
    break;
  }
  *len = n;
  return (const char *)p;
}

/* base64.StdEncoding.DecodeString(k) gives exactly 16 bytes: 22 characters
 * of the alphabet and "==" (the last character's spare bits may be set: Go's
 * StdEncoding is not Strict). */
static bool ws_key_valid(const char *k, size_t n) {
  if (n != 24 || k[22] != '=' || k[23] != '=') return false;
  for (size_t i = 0; i < 22; i++) {
    char c = k[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/'))
      return false;
  }
  return true;
}

/* A refusal from coder/websocket's verifyClientRequest: http.Error with msg. */
static void ws_refuse(struct http_reply *out, const struct http_req *r, int status, const char *extra,
                      const char *fmt, const char *quoted) {
  char msg[1536];
  snprintf(msg, sizeof msg, fmt, quoted);
  http_reply_go_error(out, r->method == HTTP_HEAD, status, extra, msg);
}

/* ---- Go's url.Parse, for the errors it finds ------------------------------------- */

/* What coder/websocket's authenticateOrigin refuses, with derper's pattern
 * "*": only an Origin that url.Parse cannot parse. Each check below is
 * net/url's, in its order; *why gets Go's error text. */
enum url_mode { URL_OTHER, URL_HOST, URL_ZONE };

static bool is_hex(char c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static int hex_val(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* shouldEscape(c, encodeHost) */
static bool host_escapes(uint8_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return false;
  return !(c && strchr("!$&'()*+,;=:[]<>\"-_.~", c));
}

/* A piece of s quoted into why with a format around it; returns false. */
static bool url_fail(char *why, size_t cap, const char *fmt, const char *s, size_t n) {
  char q[64];
  http_go_quote(q, sizeof q, s, n);
  snprintf(why, cap, fmt, q);
  return false;
}

/* net/url's unescape: only its checks. */
static bool url_unescape_ok(const char *s, size_t n, enum url_mode m, char *why, size_t cap) {
  for (size_t i = 0; i < n;) {
    if (s[i] == '%') {
      if (i + 2 >= n || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
        return url_fail(why, cap, "invalid URL escape %s", s + i, n - i > 3 ? 3 : n - i);
      int v = hex_val(s[i + 1]) << 4 | hex_val(s[i + 2]);
      bool pct25 = memcmp(s + i, "%25", 3) == 0;
      if ((m == URL_HOST && hex_val(s[i + 1]) < 8 && !pct25) ||
          (m == URL_ZONE && !pct25 && v != ' ' && host_escapes((uint8_t)v)))
        return url_fail(why, cap, "invalid URL escape %s", s + i, 3);
      i += 3;
      continue;
    }
    if (m != URL_OTHER && (uint8_t)s[i] < 0x80 && host_escapes((uint8_t)s[i]))
      return url_fail(why, cap, "invalid character %s in host name", s + i, 1);
    i++;
  }
  return true;
}

static bool valid_optional_port(const char *p, size_t n) {
  if (n == 0) return true;
  if (p[0] != ':') return false;
  for (size_t i = 1; i < n; i++)
    if (p[i] < '0' || p[i] > '9') return false;
  return true;
}

static const char *mem_rchr(const char *s, size_t n, char c) {
  while (n--)
    if (s[n] == c) return s + n;
  return NULL;
}

static bool url_host_ok(const char *h, size_t n, char *why, size_t cap) {
  if (n && h[0] == '[') {
    const char *rb = mem_rchr(h, n, ']');
    if (!rb) { snprintf(why, cap, "missing ']' in host"); return false; }
    size_t i = (size_t)(rb - h);
    if (!valid_optional_port(rb + 1, n - i - 1))
      return url_fail(why, cap, "invalid port %s after host", rb + 1, n - i - 1);
    const char *zone = memmem(h, i, "%25", 3);
    if (zone) {
      size_t z = (size_t)(zone - h);
      return url_unescape_ok(h, z, URL_HOST, why, cap) && url_unescape_ok(zone, i - z, URL_ZONE, why, cap) &&
             url_unescape_ok(rb, n - i, URL_HOST, why, cap);
    }
  } else {
    const char *colon = mem_rchr(h, n, ':');
    if (colon && !valid_optional_port(colon, n - (size_t)(colon - h)))
      return url_fail(why, cap, "invalid port %s after host", colon, n - (size_t)(colon - h));
  }
  return url_unescape_ok(h, n, URL_HOST, why, cap);
}

static bool url_authority_ok(const char *a, size_t n, char *why, size_t cap) {
  const char *at = mem_rchr(a, n, '@');
  size_t hi = at ? (size_t)(at - a) + 1 : 0;
  if (!url_host_ok(a + hi, n - hi, why, cap)) return false;
  if (!at) return true;
  size_t ul = (size_t)(at - a);
  for (size_t i = 0; i < ul; i++) { /* validUserinfo: ASCII only */
    uint8_t c = (uint8_t)a[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          (c && strchr("-._:~!$&'()*+,;=%@", c)))) {
      snprintf(why, cap, "net/url: invalid userinfo");
      return false;
    }
  }
  const char *colon = memchr(a, ':', ul);
  if (!colon) return url_unescape_ok(a, ul, URL_OTHER, why, cap);
  size_t cl = (size_t)(colon - a);
  return url_unescape_ok(a, cl, URL_OTHER, why, cap) &&
         url_unescape_ok(colon + 1, ul - cl - 1, URL_OTHER, why, cap);
}

/* url.parse(u, false): true if it parses. */
static bool url_parse_ok(const char *u, size_t n, char *why, size_t cap) {
  for (size_t i = 0; i < n; i++)
    if ((uint8_t)u[i] < 0x20 || u[i] == 0x7f) {
      snprintf(why, cap, "net/url: invalid control character in URL");
      return false;
    }
  if (n == 1 && u[0] == '*') return true;
  size_t rs = 0; /* getScheme */
  bool scheme = false;
  for (size_t i = 0; i < n; i++) {
    char c = u[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) continue;
    if ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.') {
      if (i == 0) break;
      continue;
    }
    if (c == ':') {
      if (i == 0) { snprintf(why, cap, "missing protocol scheme"); return false; }
      scheme = true;
      rs = i + 1;
    }
    break;
  }
  const char *rest = u + rs;
  size_t rn = n - rs;
  const char *q = memchr(rest, '?', rn);
  if (q) rn = (size_t)(q - rest); /* a lone '?' at the end goes the same way */
  if (!(rn && rest[0] == '/')) {
    if (scheme) return true; /* opaque */
    const char *slash = memchr(rest, '/', rn);
    size_t seg = slash ? (size_t)(slash - rest) : rn;
    if (memchr(rest, ':', seg)) {
      snprintf(why, cap, "first path segment in URL cannot contain colon");
      return false;
    }
  }
  if ((scheme || !(rn >= 3 && memcmp(rest, "///", 3) == 0)) && rn >= 2 && memcmp(rest, "//", 2) == 0) {
    const char *a = rest + 2;
    const char *slash = memchr(a, '/', rn - 2);
    size_t an = slash ? (size_t)(slash - a) : rn - 2;
    if (!url_authority_ok(a, an, why, cap)) return false;
    rn -= 2 + an;
    rest = a + an;
  }
  return url_unescape_ok(rest, rn, URL_OTHER, why, cap);
}

/* url.Parse(s): NULL if it parses, else Go's error ("parse \"...\": ..."). */
static bool go_url_parse_error(const char *s, size_t n, char *err, size_t cap) {
  char why[160], q[HTTP_ECHO_MAX * 4 + 8];
  const char *hash = memchr(s, '#', n);
  size_t un = hash ? (size_t)(hash - s) : n;
  if (!url_parse_ok(s, un, why, sizeof why)) {
    http_go_quote(q, sizeof q, s, un);
  } else if (hash && hash + 1 < s + n && !url_unescape_ok(hash + 1, n - un - 1, URL_OTHER, why, sizeof why)) {
    http_go_quote(q, sizeof q, s, n); /* a bad fragment: the message names the whole URL */
  } else {
    return false;
  }
  snprintf(err, cap, "parse %s: %s", q, why);
  return true;
}

/* derper's websocket.Accept: coder/websocket's verifyClientRequest in its
 * order, then the 101. The subprotocol is the client's first token equal to
 * "derp" in any case, echoed as sent; if that is not exactly "derp" (or there
 * is none), derper still answers 101 and then closes with 1008. Between the
 * two, the Origin check: with derper's pattern "*" it refuses only an Origin
 * that Go's url.Parse rejects (403). */
static void route_websocket(const struct http_req *r, struct http_reply *out) {
  char q[HTTP_ECHO_MAX * 4 + 8];
  if (r->http_minor < 1) {
    ws_refuse(out, r, 426, NULL,
              "WebSocket protocol violation: handshake request must be at least HTTP/1.1: %s",
              "\"HTTP/1.0\"");
    return;
  }
  if (!r->conn_upgrade) {
    /* Go's server drops the handler's Connection header when it will close. */
    const char *extra = r->conn_close ? "Upgrade: websocket\r\n"
                                      : "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    http_go_quote(q, sizeof q, r->conn_first, strlen(r->conn_first));
    ws_refuse(out, r, 426, extra,
              "WebSocket protocol violation: Connection header %s does not contain Upgrade", q);
    return;
  }
  /* The Upgrade token check passes: r->upgrade is websocket to get here. */
  if (r->method != HTTP_GET) {
    const char *m = http_method_str((enum http_method)r->method);
    http_go_quote(q, sizeof q, m, strlen(m));
    ws_refuse(out, r, 405, NULL,
              "WebSocket protocol violation: handshake request method is not GET but %s", q);
    return;
  }
  if (strcmp(r->ws_version, "13") != 0) {
    http_go_quote(q, sizeof q, r->ws_version, strlen(r->ws_version));
    ws_refuse(out, r, 400, "Sec-WebSocket-Version: 13\r\n",
              "unsupported WebSocket protocol version (only 13 is supported): %s", q);
    return;
  }
  if (r->ws_key_count == 0) {
    ws_refuse(out, r, 400, NULL, "%sWebSocket protocol violation: missing Sec-WebSocket-Key", "");
    return;
  }
  if (r->ws_key_count > 1) {
    ws_refuse(out, r, 400, NULL, "%sWebSocket protocol violation: multiple Sec-WebSocket-Key headers",
              "");
    return;
  }
  size_t kn = strlen(r->ws_key);
  const char *k = go_trim_space(r->ws_key, &kn);
  if (r->ws_key_long || !ws_key_valid(k, kn)) {
    size_t ql = http_go_quote(q, sizeof q, k, kn);
    if (r->ws_key_long && ql >= 2 && ql + 3 < sizeof q) /* cut: say so */
      memcpy(q + ql - 1, "...\"", 5);
    ws_refuse(out, r, 400, NULL,
              "WebSocket protocol violation: invalid Sec-WebSocket-Key %s, must be a 16 byte "
              "base64 encoded string", q);
    return;
  }
  char perr[HTTP_ECHO_MAX * 4 + 256];
  if (r->origin[0] && !r->origin_long && go_url_parse_error(r->origin, strlen(r->origin), perr, sizeof perr)) {
    char msg[sizeof perr + sizeof q + 40];
    http_go_quote(q, sizeof q, r->origin, strlen(r->origin));
    snprintf(msg, sizeof msg, "failed to parse Origin header %s: %s", q, perr);
    http_reply_go_error(out, r->method == HTTP_HEAD, 403, NULL, msg);
    return;
  }
  struct sbuf b = {out->buf, sizeof out->buf, 0, false};
  char acc[DERP_WS_ACCEPT_LEN + 1];
  derp_ws_accept(r->ws_key, acc);
  sb_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\n", acc);
  if (r->ws_proto[0]) sb_printf(&b, "Sec-WebSocket-Protocol: %s\r\n", r->ws_proto);
  sb_printf(&b, "\r\n");
  out->status = 101;
  out->action = HTTP_ACT_WEBSOCKET;
  if (strcmp(r->ws_proto, "derp") != 0) {
    /* derper: c.Close(StatusPolicyViolation, ...), the only frame it sends. */
    static const char why[] = "client must speak the derp subprotocol";
    sb_printf(&b, "%c%c%c%c%s", 0x88, (int)(sizeof why - 1 + 2), 1008 >> 8, 1008 & 0xff, why);
    out->action = HTTP_ACT_CLOSE;
  }
  out->len = b.over ? 0 : b.len;
}

static void route_derp(const struct http_req *r, const struct http_site *site, struct http_reply *out) {
  bool head = r->method == HTTP_HEAD;
  if (site->derp_disabled) { http_reply_go_error(out, head, 404, NULL, "derp server disabled"); return; }
  /* As derper: the Upgrade header decides, not the method. A WebSocket
   * upgrade needs "derp" somewhere in the first Sec-WebSocket-Protocol;
   * without it, Upgrade: websocket is taken for DERP (very old clients). */
  if (r->upgrade == HTTP_UP_WEBSOCKET && r->ws_proto_route) { route_websocket(r, out); return; }
  if (r->upgrade == HTTP_UP_WEBSOCKET || r->upgrade == HTTP_UP_DERP) {
    route_derp_upgrade(r, site->key_hex, out);
    return;
  }
  http_reply_go_error(out, head, 426, NULL, "DERP requires connection upgrade");
}

static void route_generate_204(const struct http_req *r, struct http_reply *out) {
  /* Sized for the longest valid challenge (HTTP_MAX_CHALLENGE). */
  char extra[256];
  snprintf(extra, sizeof extra,
           "Cache-Control: no-cache, no-store, must-revalidate, no-transform, max-age=0\r\n"
           "%s%.*s%s",
           r->has_challenge ? "X-Tailscale-Response: response " : "", HTTP_MAX_CHALLENGE,
           r->has_challenge ? r->challenge : "", r->has_challenge ? "\r\n" : "");
  http_reply_whole(out, true, 204, NULL, extra, NULL);
}

/* Go's http.Redirect of an absolute URL: Location with non-ASCII bytes
 * %-escaped, and for GET a short HTML body with the URL HTML-escaped; with
 * tsweb's browser headers where derper's handler adds them (the home page's).
 * A URL too long for the reply once escaped (a port-80 path and query of
 * non-ASCII bytes) is a 400. */
static void route_redirect(const struct http_req *r, const char *url, bool browser, struct http_reply *out) {
  char loc[HTTP_REPLY_MAX / 2], esc[HTTP_REPLY_MAX / 2];
  struct sbuf l = {loc, sizeof loc, 0, false}, e = {esc, sizeof esc, 0, false};
  sb_printf(&l, "%sLocation: ", browser ? http_browser_headers : "");
  for (const uint8_t *p = (const uint8_t *)url; *p; p++) {
    if (*p >= 0x80) sb_printf(&l, "%%%x", *p);
    else sb_printf(&l, "%c", *p);
    switch (*p) {
    case '&': sb_printf(&e, "&amp;"); break;
    case '<': sb_printf(&e, "&lt;"); break;
    case '>': sb_printf(&e, "&gt;"); break;
    case '"': sb_printf(&e, "&#34;"); break;
    case '\'': sb_printf(&e, "&#39;"); break;
    default: sb_printf(&e, "%c", *p);
    }
  }
  sb_printf(&l, "\r\n");
  char body[HTTP_REPLY_MAX / 2];
  struct sbuf bb = {body, sizeof body, 0, false};
  sb_printf(&bb, "<a href=\"%s\">Found</a>.\n\n", esc);
  bool get = r->method == HTTP_GET, head = r->method == HTTP_HEAD;
  /* Go writes the body for GET only; HEAD gets GET's length, as everywhere. */
  if (l.over || e.over || bb.over) http_reply_whole(out, head, 400, NULL, NULL, NULL);
  else http_reply_whole(out, !get, 302, get || head ? TEXT_HTML : NULL, loc, get || head ? body : NULL);
}

static void route_home(const struct http_req *r, const struct http_site *site, bool debug_allowed,
                       struct http_reply *out) {
  bool head = r->method == HTTP_HEAD;
  if (site->home == HTTP_HOME_REDIRECT) { route_redirect(r, site->home_url, true, out); return; }
  if (site->home == HTTP_HOME_BLANK) { http_reply_whole(out, head, 200, TEXT_HTML, http_browser_headers, NULL); return; }
  char page[1024];
  snprintf(page, sizeof page,
           "<html><body>\n<h1>DERP</h1>\n"
           "<p>This is a Tailscale DERP server (derpd).</p>\n"
           "<p>It relays encrypted packets between Tailscale nodes that cannot reach each other "
           "directly. See <a href=\"https://tailscale.com/kb/1232/derp-servers\">DERP servers</a>.</p>\n"
           "%s%s</body></html>\n",
           site->derp_disabled ? "<p>Status: <b>disabled</b> (this server relays nothing).</p>\n" : "",
           debug_allowed ? "<p>Debug info at <a href='/debug/'>/debug/</a>.</p>\n" : "");
  http_reply_whole(out, head, 200, TEXT_HTML, http_browser_headers, page);
}

static bool route_debug(const struct http_req *r, bool allowed, struct http_reply *out) {
  static const struct { const char *path; enum http_debug_page page; } pages[] = {
      {"/debug/", HTTP_DEBUG_INDEX}, {"/debug/varz", HTTP_DEBUG_VARZ}, {"/debug/vars", HTTP_DEBUG_VARS}};
  bool head = r->method == HTTP_HEAD;
  if (strcmp(r->path, "/debug") == 0) { /* Go's ServeMux: the subtree's redirect */
    http_reply_whole(out, head, 301, TEXT_HTML, "Location: /debug/\r\n",
          "<a href=\"/debug/\">Moved Permanently</a>.\n\n");
    return true;
  }
  if (strncmp(r->path, "/debug/", 7) != 0) return false;
  /* Refuse before matching, so outsiders cannot probe which pages exist. */
  if (!allowed) { http_reply_go_error(out, head, 403, NULL, "debug access denied"); return true; } /* tsweb's */
  for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
    if (strcmp(r->path, pages[i].path) == 0) {
      out->action = HTTP_ACT_DEBUG;
      out->debug_page = pages[i].page;
      out->status = 200;
      out->len = 0;
      return true;
    }
  }
  http_reply_go_error(out, head, 404, NULL, "404 page not found");
  return true;
}

/* derper's port-80 helper (tsweb.Port80Handler behind /generate_204): the
 * captive-portal check and /debug as on the main port, 400 for methods
 * other than GET/HEAD, and a redirect to https for the rest, /derp included,
 * as Go's http.Redirect writes it, with the query string (derper's
 * RequestURI; one past HTTP_MAX_QUERY, which derpd keeps only in part, is
 * left off) and an IPv6 -hostname in brackets. */
void http_route_port80(const struct http_req *r, const char *fqdn, uint16_t https_port,
                       bool debug_allowed, struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  bool head = r->method == HTTP_HEAD;
  if (strcmp(r->path, "/generate_204") == 0 || strncmp(r->path, "/debug", 6) == 0) {
    static const struct http_site none = {.key_hex = ""};
    http_route(r, &none, debug_allowed, out);
    return;
  }
  if (r->method != HTTP_GET && !head) {
    http_reply_whole(out, false, 400, TEXT_PLAIN, NULL, "Use HTTPS\n");
    return;
  }
  if (r->path[0] != '/') { /* "*" or an absolute-form target: no path of ours to carry over */
    http_reply_whole(out, head, 400, NULL, NULL, NULL);
    return;
  }
  const char *path = strcmp(r->path, "/") == 0 && debug_allowed ? "/debug/" : r->path;
  char port[8] = "";
  if (https_port != 443) snprintf(port, sizeof port, ":%u", https_port);
  bool v6 = strchr(fqdn, ':') != NULL, query = r->query_len && !r->query_cut;
  char url[HTTP_MAX_PATH + HTTP_MAX_QUERY + 300];
  snprintf(url, sizeof url, "https://%s%.255s%s%s%s%s%s", v6 ? "[" : "", fqdn, v6 ? "]" : "", port, path,
           query ? "?" : "", query ? r->query : "");
  route_redirect(r, url, false, out);
}

/* The paths with routes of their own; everything else is derper's "/". */
static bool path_routed(const char *path) {
  static const char *const exact[] = {"/derp", "/derp/probe", "/derp/latency-check", "/generate_204",
                                      "/robots.txt", "/bootstrap-dns", "/debug"};
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strcmp(path, exact[i]) == 0) return true;
  return strncmp(path, "/debug/", 7) == 0;
}

bool http_path_is_home(const char *path) { return !path_routed(path); }

void http_route(const struct http_req *r, const struct http_site *site, bool debug_allowed,
                struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  bool head = r->method == HTTP_HEAD;
  bool get_or_head = r->method == HTTP_GET || head;
  const char *path = r->path;
  if (strcmp(path, "*") == 0) {
    http_reply_whole(out, head, 400, NULL, NULL, NULL); /* Go's ServeMux, for any method */
  } else if (strcmp(path, "/derp") == 0) {
    route_derp(r, site, out);
  } else if (strcmp(path, "/derp/probe") == 0 || strcmp(path, "/derp/latency-check") == 0) {
    if (get_or_head)
      http_reply_whole(out, head, 200, NULL, "Access-Control-Allow-Origin: *\r\n", NULL);
    else
      http_reply_go_error(out, false, 405, NULL, "bogus probe method");
  } else if (strcmp(path, "/generate_204") == 0) {
    route_generate_204(r, out);
  } else if (strcmp(path, "/robots.txt") == 0) {
    http_reply_whole(out, head, 200, TEXT_PLAIN, http_browser_headers, "User-agent: *\nDisallow: /\n");
  } else if (strcmp(path, "/bootstrap-dns") == 0) {
    out->action = HTTP_ACT_BOOTSTRAP_DNS; /* the body is the resolver's (operations/) */
    out->status = 200;
  } else if (!route_debug(r, debug_allowed, out)) {
    route_home(r, site, debug_allowed, out);
  }
}
