/* http.c: owns the HTTP/1.1 front door (see http.h): the bounded incremental
 * request-head parser on top of libhttp-parser, the router that turns a head
 * into a complete reply (Sec-WebSocket-Accept comes from lib/wsaccept.c). */
#include "server/protocol/http.h"

#include "lib/wsaccept.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- Request head parsing ------------------------------------------------ */

/* The headers derpd keeps; everything else is parsed and dropped. */
enum { H_NONE = 0, H_UPGRADE, H_FAST_START, H_CHALLENGE, H_WS_PROTO, H_WS_KEY, H_CONNECTION,
       H_IDEAL_NODE, H_FORWARDED };

static const struct { const char *name; uint8_t id; } kept_headers[] = {
    {"upgrade", H_UPGRADE},
    {"derp-fast-start", H_FAST_START},
    {"x-tailscale-challenge", H_CHALLENGE},
    {"sec-websocket-protocol", H_WS_PROTO},
    {"sec-websocket-key", H_WS_KEY},
    {"connection", H_CONNECTION},
    {"ideal-node", H_IDEAL_NODE},
    {"x-forwarded-for", H_FORWARDED},
};

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* Trim optional whitespace in place; returns the new start, *len updated. */
static const char *trim(const char *s, size_t *len) {
  size_t n = *len;
  while (n && is_ows(*s)) { s++; n--; }
  while (n && is_ows(s[n - 1])) n--;
  *len = n;
  return s;
}

/* Does the comma-separated list s[0..n) contain tok (case-insensitively)? */
static bool list_has_token(const char *s, size_t n, const char *tok) {
  size_t tl = strlen(tok);
  while (n) {
    const char *comma = memchr(s, ',', n);
    size_t el = comma ? (size_t)(comma - s) : n;
    size_t tn = el;
    const char *t = trim(s, &tn);
    if (tn == tl && strncasecmp(t, tok, tl) == 0) return true;
    if (!comma) break;
    s += el + 1;
    n -= el + 1;
  }
  return false;
}

static bool challenge_ok(const char *s, size_t n) {
  if (n == 0 || n > HTTP_MAX_CHALLENGE) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

/* A header value is complete: keep what derpd acts on. An overflowed value
 * is never valid, so it reads as absent or as "something else". */
static void apply_header(struct http_req *r) {
  size_t n = r->value_len;
  const char *v = trim(r->value, &n);
  bool lng = r->value_long;
  switch (r->cur_field) {
  case H_UPGRADE:
    if (!lng && n == 4 && strncasecmp(v, "derp", 4) == 0) r->upgrade = HTTP_UP_DERP;
    else if (!lng && n == 9 && strncasecmp(v, "websocket", 9) == 0) r->upgrade = HTTP_UP_WEBSOCKET;
    else r->upgrade = HTTP_UP_OTHER;
    break;
  case H_FAST_START:
    r->fast_start = !lng && n == 1 && v[0] == '1';
    break;
  case H_CHALLENGE:
    r->has_challenge = !lng && challenge_ok(v, n);
    if (r->has_challenge) { memcpy(r->challenge, v, n); r->challenge[n] = 0; }
    else r->challenge[0] = 0;
    break;
  case H_WS_PROTO:
    r->ws_proto_derp = !lng && list_has_token(v, n, "derp");
    break;
  case H_WS_KEY:
    if (!lng && n <= HTTP_WS_KEY_MAX) { memcpy(r->ws_key, v, n); r->ws_key[n] = 0; }
    else r->ws_key[0] = 0;
    break;
  case H_IDEAL_NODE: /* derper: any non-empty value marks the client "not ideal" */
    r->ideal_node = lng || n > 0;
    break;
  case H_CONNECTION:
    /* A long Connection value may still say close; a bounded look is enough. */
    if (list_has_token(v, n, "close")) r->conn_close = true;
    break;
  case H_FORWARDED:
    r->forwarded = true; /* whatever it says */
    break;
  default:
    break;
  }
}

static uint8_t lookup_field(const struct http_req *r) {
  if (r->field_long) return H_NONE;
  for (size_t i = 0; i < sizeof kept_headers / sizeof kept_headers[0]; i++)
    if (strlen(kept_headers[i].name) == r->field_len &&
        memcmp(kept_headers[i].name, r->field, r->field_len) == 0)
      return kept_headers[i].id;
  return H_NONE;
}

static void end_value(struct http_req *r) {
  if (r->in_value && r->cur_field != H_NONE) apply_header(r);
  r->in_value = false;
  r->cur_field = H_NONE;
  r->field_len = 0;
  r->field_long = false;
  r->value_len = 0;
  r->value_long = false;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  struct http_req *r = p->data;
  for (size_t i = 0; i < len && !r->in_fragment; i++) {
    if (at[i] == '#') { r->in_fragment = true; break; }
    if (r->in_query) {
      if (r->query_len < HTTP_MAX_QUERY) r->query[r->query_len++] = at[i];
      else r->query_cut = true;
      continue;
    }
    if (at[i] == '?') { r->in_query = true; continue; }
    if (r->path_len >= HTTP_MAX_PATH) {
      r->error_status = 414;
      r->error_reason = "http_uri_too_long";
      return -1;
    }
    r->path[r->path_len++] = at[i];
  }
  r->path[r->path_len] = 0;
  r->query[r->query_len] = 0;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  struct http_req *r = p->data;
  if (r->in_value) end_value(r);
  for (size_t i = 0; i < len; i++) {
    if (r->field_len >= sizeof r->field) { r->field_long = true; break; }
    char c = at[i];
    r->field[r->field_len++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  struct http_req *r = p->data;
  if (!r->in_value) { r->in_value = true; r->cur_field = lookup_field(r); }
  if (r->cur_field == H_NONE) return 0;
  size_t room = sizeof r->value - r->value_len;
  if (len > room) { r->value_long = true; len = room; }
  memcpy(r->value + r->value_len, at, len);
  r->value_len = (uint16_t)(r->value_len + len);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  struct http_req *r = p->data;
  end_value(r);
  if (p->http_major != 1 || p->http_minor > 1) {
    r->error_status = 505;
    r->error_reason = "http_bad_version";
    return -1;
  }
  r->method = (uint8_t)p->method;
  return 1; /* never read a body: derpd's routes have none */
}

/* Pausing here makes execute return exactly the head's length, so the bytes
 * behind it (a fast-start client's ClientInfo) stay with the caller. */
static int on_message_complete(http_parser *p) {
  struct http_req *r = p->data;
  r->done = true;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

void http_req_init(struct http_req *r) {
  memset(r, 0, sizeof *r);
  http_parser_init(&r->parser, HTTP_REQUEST);
  r->parser.data = r;
}

static enum http_feed_status fail(struct http_req *r, int status, const char *reason) {
  if (!r->error_status) { r->error_status = status; r->error_reason = reason; }
  return HTTP_FEED_ERROR;
}

enum http_feed_status http_req_feed(struct http_req *r, const uint8_t *p, size_t n, size_t *used) {
  *used = 0;
  if (r->done) return HTTP_FEED_DONE;
  if (r->error_status) return HTTP_FEED_ERROR;
  /* Never hand the parser more than the head may still grow by: this is what
   * bounds a huge header line, whatever http-parser's own limit is. */
  size_t room = HTTP_MAX_HEAD - r->head_bytes;
  size_t take = n < room ? n : room;
  size_t got = http_parser_execute(&r->parser, &settings, (const char *)p, take);
  r->head_bytes += (uint32_t)got;
  *used = got;
  enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
  if (r->done && (e == HPE_OK || e == HPE_PAUSED)) return HTTP_FEED_DONE;
  if (e != HPE_OK) return fail(r, 400, "http_bad_request");
  if (r->head_bytes >= HTTP_MAX_HEAD) return fail(r, 431, "http_head_too_large");
  return HTTP_FEED_MORE;
}

/* ---- Replies -------------------------------------------------------------- */

static const char *reason_phrase(int status) {
  switch (status) {
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 204: return "No Content";
  case 302: return "Found";
  case 400: return "Bad Request";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 414: return "URI Too Long";
  case 426: return "Upgrade Required";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

/* Bounded appender: once anything fails to fit, the result is unusable. */
struct sbuf { char *p; size_t cap, len; bool over; };

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
  if (b->over) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (k < 0 || (size_t)k >= b->cap - b->len) { b->over = true; return; }
  b->len += (size_t)k;
}

/* Status line and headers; extra is preformatted "Name: v\r\n" lines or NULL.
 * No Content-Length on 204: RFC 9110 forbids it there. */
static void write_head(struct sbuf *b, int status, const char *ctype, size_t body_len,
                       const char *extra) {
  sb_printf(b, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
  if (ctype) sb_printf(b, "Content-Type: %s\r\n", ctype);
  if (status != 204) sb_printf(b, "Content-Length: %zu\r\n", body_len);
  if (extra) sb_printf(b, "%s", extra);
  sb_printf(b, "Connection: close\r\n\r\n");
}

size_t http_reply_head(char *out, size_t cap, int status, const char *content_type, size_t body_len) {
  struct sbuf b = {out, cap, 0, false};
  write_head(&b, status, content_type, body_len, NULL);
  return b.over ? 0 : b.len;
}

#define TEXT_PLAIN "text/plain; charset=utf-8"

/* A whole non-upgrade reply; HEAD gets the same head without the body. */
static void reply(struct http_reply *out, bool head_only, int status, const char *ctype,
                  const char *extra, const char *body) {
  struct sbuf b = {out->buf, sizeof out->buf, 0, false};
  size_t bl = body ? strlen(body) : 0;
  write_head(&b, status, ctype, bl, extra);
  if (!head_only && bl) sb_printf(&b, "%s", body);
  out->status = status;
  out->action = HTTP_ACT_CLOSE;
  /* Every caller's text is far below HTTP_REPLY_MAX; never send a cut reply. */
  out->len = b.over ? 0 : b.len;
}

void http_error_reply(int status, struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  char body[64];
  snprintf(body, sizeof body, "%s\n", reason_phrase(status));
  reply(out, false, status, TEXT_PLAIN, NULL, body);
}

static void route_derp_upgrade(const struct http_req *r, const char *key_hex, struct http_reply *out) {
  struct sbuf b = {out->buf, sizeof out->buf, 0, false};
  out->status = 101;
  out->action = HTTP_ACT_DERP;
  if (r->fast_start) { out->len = 0; return; } /* client already knows our key */
  sb_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                "Derp-Version: 2\r\nDerp-Public-Key: %s\r\n\r\n", key_hex);
  out->len = b.over ? 0 : b.len;
}

static void route_websocket(const struct http_req *r, struct http_reply *out) {
  struct sbuf b = {out->buf, sizeof out->buf, 0, false};
  char acc[DERP_WS_ACCEPT_LEN + 1];
  derp_ws_accept(r->ws_key, acc);
  sb_printf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: derp\r\n\r\n", acc);
  out->status = 101;
  out->action = HTTP_ACT_WEBSOCKET;
  out->len = b.over ? 0 : b.len;
}

static void route_derp(const struct http_req *r, const char *key_hex, struct http_reply *out) {
  /* As derper: the Upgrade header decides, not the method. */
  if (r->upgrade == HTTP_UP_DERP) { route_derp_upgrade(r, key_hex, out); return; }
  if (r->upgrade == HTTP_UP_WEBSOCKET && r->ws_proto_derp && r->ws_key[0]) {
    route_websocket(r, out);
    return;
  }
  reply(out, r->method == HTTP_HEAD, 426, TEXT_PLAIN, NULL, "DERP requires connection upgrade");
}

static void route_generate_204(const struct http_req *r, struct http_reply *out) {
  /* Sized for the longest valid challenge (HTTP_MAX_CHALLENGE). */
  char extra[256];
  snprintf(extra, sizeof extra,
           "Cache-Control: no-cache, no-store, must-revalidate, no-transform, max-age=0\r\n"
           "%s%.*s%s",
           r->has_challenge ? "X-Tailscale-Response: response " : "", HTTP_MAX_CHALLENGE,
           r->has_challenge ? r->challenge : "", r->has_challenge ? "\r\n" : "");
  reply(out, true, 204, NULL, extra, NULL);
}

static const char home_page[] =
    "<html><body>\n<h1>DERP</h1>\n"
    "<p>This is a Tailscale DERP server (derpd).</p>\n"
    "<p>It relays encrypted packets between Tailscale nodes that cannot reach each other "
    "directly. See <a href=\"https://tailscale.com/kb/1232/derp-servers\">DERP servers</a>.</p>\n"
    "</body></html>\n";

static bool route_debug(const struct http_req *r, bool allowed, struct http_reply *out) {
  static const struct { const char *path; enum http_debug_page page; } pages[] = {
      {"/debug/", HTTP_DEBUG_INDEX}, {"/debug/varz", HTTP_DEBUG_VARZ}, {"/debug/vars", HTTP_DEBUG_VARS}};
  if (strncmp(r->path, "/debug/", 7) != 0) return false;
  bool head = r->method == HTTP_HEAD;
  /* Refuse before matching, so outsiders cannot probe which pages exist. */
  if (!allowed) { reply(out, head, 403, TEXT_PLAIN, NULL, "forbidden\n"); return true; }
  for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
    if (strcmp(r->path, pages[i].path) == 0) {
      out->action = HTTP_ACT_DEBUG;
      out->debug_page = pages[i].page;
      out->status = 200;
      out->len = 0;
      return true;
    }
  }
  reply(out, head, 404, TEXT_PLAIN, NULL, "not found\n");
  return true;
}

/* derper's port-80 helper (tsweb.Port80Handler behind /generate_204): the
 * captive-portal check and /debug as on the main port, 400 for methods
 * other than GET/HEAD, and a redirect to https for the rest, /derp included.
 * The query string is not carried over (derpd keeps only the path). */
void http_route_port80(const struct http_req *r, const char *fqdn, uint16_t https_port,
                       bool debug_allowed, struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  bool head = r->method == HTTP_HEAD;
  if (strcmp(r->path, "/generate_204") == 0 || strncmp(r->path, "/debug", 6) == 0) {
    http_route(r, "", debug_allowed, out);
    return;
  }
  if (r->method != HTTP_GET && !head) {
    reply(out, false, 400, TEXT_PLAIN, NULL, "Use HTTPS\n");
    return;
  }
  const char *path = strcmp(r->path, "/") == 0 && debug_allowed ? "/debug/" : r->path;
  char port[8] = "";
  if (https_port != 443) snprintf(port, sizeof port, ":%u", https_port);
  char loc[HTTP_MAX_PATH + 400];
  snprintf(loc, sizeof loc, "Location: https://%.255s%s%s\r\n", fqdn, port, path);
  reply(out, head, 302, NULL, loc, NULL);
}

void http_route(const struct http_req *r, const char *server_key_hex, bool debug_allowed,
                struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  bool head = r->method == HTTP_HEAD;
  bool get_or_head = r->method == HTTP_GET || head;
  const char *path = r->path;
  if (strcmp(path, "/derp") == 0) {
    route_derp(r, server_key_hex, out);
  } else if (strcmp(path, "/derp/probe") == 0 || strcmp(path, "/derp/latency-check") == 0) {
    if (get_or_head)
      reply(out, head, 200, NULL, "Access-Control-Allow-Origin: *\r\n", NULL);
    else
      reply(out, false, 405, TEXT_PLAIN, "Allow: GET, HEAD\r\n", "bogus probe method\n");
  } else if (strcmp(path, "/generate_204") == 0) {
    route_generate_204(r, out);
  } else if (strcmp(path, "/") == 0) {
    reply(out, head, 200, "text/html; charset=utf-8", NULL, home_page);
  } else if (strcmp(path, "/robots.txt") == 0) {
    reply(out, head, 200, TEXT_PLAIN, NULL, "User-agent: *\nDisallow: /\n");
  } else if (strcmp(path, "/bootstrap-dns") == 0) {
    /* What derper answers without -bootstrap-dns-names (derpd resolves no
     * names): 200, JSON type, empty body; a client's DNS fallback then asks
     * another DERP server. */
    reply(out, head, 200, "application/json", NULL, NULL);
  } else if (!route_debug(r, debug_allowed, out)) {
    reply(out, head, 404, TEXT_PLAIN, NULL, "not found\n");
  }
}
