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
enum { H_NONE = 0, H_UPGRADE, H_FAST_START, H_CHALLENGE, H_WS_PROTO, H_WS_KEY, H_WS_VERSION,
       H_CONNECTION, H_IDEAL_NODE, H_FORWARDED, H_HOST, H_ORIGIN };

static const struct { const char *name; uint8_t id; } kept_headers[] = {
    {"upgrade", H_UPGRADE},
    {"derp-fast-start", H_FAST_START},
    {"x-tailscale-challenge", H_CHALLENGE},
    {"sec-websocket-protocol", H_WS_PROTO},
    {"sec-websocket-key", H_WS_KEY},
    {"sec-websocket-version", H_WS_VERSION},
    {"connection", H_CONNECTION},
    {"ideal-node", H_IDEAL_NODE},
    {"x-forwarded-for", H_FORWARDED},
    {"host", H_HOST},
    {"origin", H_ORIGIN},
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

/* ---- Go's white space and case, a byte at a time ---------------------------- */

/* The UTF-8 forms of the runes Go's unicode.IsSpace takes beyond ASCII (what
 * strings.TrimSpace trims): U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028,
 * U+2029, U+202F, U+205F, U+3000. n is 2 or 3. */
static bool utf8_is_space(const uint8_t *b, size_t n) {
  if (n == 2) return b[0] == 0xc2 && (b[1] == 0x85 || b[1] == 0xa0);
  if (b[0] == 0xe1) return b[1] == 0x9a && b[2] == 0x80;
  if (b[0] == 0xe3) return b[1] == 0x80 && b[2] == 0x80;
  if (b[0] != 0xe2) return false;
  if (b[1] == 0x80) return b[2] <= 0x8a || b[2] == 0xa8 || b[2] == 0xa9 || b[2] == 0xaf;
  return b[1] == 0x81 && b[2] == 0x9f;
}

/* One token of a comma-separated header value, matched against a lowercase
 * ASCII word as coder/websocket's headerTokens + strings.EqualFold do: the
 * token is trimmed with strings.TrimSpace (Unicode spaces too) and compared in
 * any case (no letter of "upgrade" or "derp" has a non-ASCII case fold). The
 * value arrives in pieces, so a multi-byte space may straddle two calls. */
enum { TM_LEAD, TM_WORD, TM_TRAIL, TM_FAIL };

static void tok_reset(struct http_req *r) {
  r->tok.st = TM_LEAD;
  r->tok.k = 0;
  r->tok.npend = 0;
}

/* A non-space character c (-1: not ASCII) of the token. */
static void tok_char(struct http_req *r, const char *word, int c) {
  uint8_t k = r->tok.k;
  bool next = (r->tok.st == TM_LEAD || r->tok.st == TM_WORD) && word[k] && c >= 0 &&
              (c | 0x20) == word[k] && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
  if (!next) { r->tok.st = TM_FAIL; return; }
  r->tok.st = TM_WORD;
  if (k < sizeof r->tok.spell) r->tok.spell[k] = (char)c;
  r->tok.k = (uint8_t)(k + 1);
}

static void tok_space(struct http_req *r, const char *word) {
  if (r->tok.st == TM_WORD) r->tok.st = word[r->tok.k] ? TM_FAIL : TM_TRAIL;
}

/* A pending multi-byte character is complete (or broken): space or not. */
static void tok_flush_pend(struct http_req *r, const char *word) {
  if (!r->tok.npend) return;
  bool space = r->tok.npend == r->tok.need && utf8_is_space(r->tok.pend, r->tok.npend);
  r->tok.npend = 0;
  if (space) tok_space(r, word);
  else tok_char(r, word, -1);
}

/* The token ended (a comma or the end of the value): did it match? */
static bool tok_end(struct http_req *r, const char *word) {
  tok_flush_pend(r, word);
  bool hit = (r->tok.st == TM_WORD && !word[r->tok.k]) || r->tok.st == TM_TRAIL;
  tok_reset(r);
  return hit;
}

static void tok_hit(struct http_req *r) {
  if (r->cur_field == H_CONNECTION) {
    r->conn_upgrade = true;
  } else if (!r->ws_proto[0]) { /* H_WS_PROTO: the first one, spelled as sent */
    memcpy(r->ws_proto, r->tok.spell, 4);
    r->ws_proto[4] = 0;
  }
}

static void tok_feed(struct http_req *r, const char *word, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint8_t b = p[i];
    if (r->tok.npend) {
      if ((b & 0xc0) == 0x80 && r->tok.npend < r->tok.need) {
        r->tok.pend[r->tok.npend++] = b;
        if (r->tok.npend == r->tok.need) tok_flush_pend(r, word);
        continue;
      }
      tok_flush_pend(r, word); /* broken sequence: not a space; b is read on its own */
    }
    if (b == ',') {
      if (tok_end(r, word)) tok_hit(r);
    } else if (b == ' ' || b == '\t') {
      tok_space(r, word);
    } else if (b == 0xc2 || b == 0xe1 || b == 0xe2 || b == 0xe3) {
      r->tok.pend[0] = b;
      r->tok.npend = 1;
      r->tok.need = b == 0xc2 ? 2 : 3;
    } else {
      tok_char(r, word, b < 0x80 ? b : -1);
    }
  }
}

/* strings.ToLower(v) == word, for a lowercase ASCII word without 'i' (derper
 * compares the Upgrade value so): ASCII letters lowered, and U+212A KELVIN
 * SIGN, which Go lowers to 'k'. */
static bool go_lower_equal(const char *v, size_t n, const char *word) {
  size_t j = 0;
  for (size_t i = 0; i < n; j++) {
    char c = v[i];
    if ((unsigned char)c == 0xe2 && i + 2 < n && (unsigned char)v[i + 1] == 0x84 &&
        (unsigned char)v[i + 2] == 0xaa) {
      c = 'k';
      i += 3;
    } else {
      if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
      i++;
    }
    if (!word[j] || c != word[j]) return false;
  }
  return !word[j];
}

/* httpguts.ValidHostHeader's bytes: RFC 3986 host and port characters. */
static bool valid_host_byte(uint8_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return c && strchr("!$%&()*+,-.:;=[]'_~", c) != NULL;
}

/* A Host value a piece at a time: Go trims the spaces around it, then every
 * byte must be a host byte (so one inside it is not). */
static void host_feed(struct http_req *r, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] == ' ' || p[i] == '\t') {
      if (r->host_any) r->host_ws = true;
      continue;
    }
    if (r->host_ws || !valid_host_byte(p[i])) r->host_bad = true;
    r->host_any = true;
  }
}

/* A header value is complete: keep what derpd acts on. An overflowed value
 * is never valid, so it reads as absent or as "something else". */
static void apply_header(struct http_req *r) {
  size_t n = r->value_len;
  const char *v = trim(r->value, &n);
  bool lng = r->value_long;
  switch (r->cur_field) {
  case H_UPGRADE: /* derper reads the first value only (Header.Get) */
    if (r->upgrade != HTTP_UP_NONE) break;
    if (!lng && go_lower_equal(v, n, "derp")) r->upgrade = HTTP_UP_DERP;
    else if (!lng && go_lower_equal(v, n, "websocket")) r->upgrade = HTTP_UP_WEBSOCKET;
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
    if (tok_end(r, "derp")) tok_hit(r);
    if (r->sub_k <= 4) { r->ws_proto_route = r->sub_k == 4; r->sub_k = 5; } /* the first value */
    break;
  case H_WS_KEY:
    if (r->ws_key_count < UINT8_MAX) r->ws_key_count++;
    if (r->ws_key_count > 1) break;
    r->ws_key_long = lng || n > HTTP_WS_KEY_MAX;
    if (n > HTTP_WS_KEY_MAX) n = HTTP_WS_KEY_MAX;
    memcpy(r->ws_key, v, n);
    r->ws_key[n] = 0;
    break;
  case H_WS_VERSION:
    if (r->ws_version_seen) break;
    r->ws_version_seen = true;
    if (n > HTTP_ECHO_MAX) n = HTTP_ECHO_MAX;
    memcpy(r->ws_version, v, n);
    r->ws_version[n] = 0;
    break;
  case H_IDEAL_NODE: /* derper: any non-empty value marks the client "not ideal" */
    r->ideal_node = lng || n > 0;
    break;
  case H_CONNECTION:
    if (tok_end(r, "upgrade")) tok_hit(r);
    /* A long Connection value may still say close; a bounded look is enough. */
    if (list_has_token(v, n, "close")) r->conn_close = true;
    if (!r->conn_seen) {
      r->conn_seen = true;
      if (n > HTTP_ECHO_MAX) n = HTTP_ECHO_MAX;
      memcpy(r->conn_first, v, n);
      r->conn_first[n] = 0;
    }
    break;
  case H_FORWARDED:
    r->forwarded = true; /* whatever it says */
    break;
  case H_HOST:
    if (r->host_count < UINT8_MAX) r->host_count++;
    break;
  case H_ORIGIN:
    if (r->origin_seen) break;
    r->origin_seen = true;
    r->origin_long = lng || n > HTTP_ECHO_MAX;
    if (n > HTTP_ECHO_MAX) n = HTTP_ECHO_MAX;
    memcpy(r->origin, v, n);
    r->origin[n] = 0;
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
    char c = at[i];
    /* http-parser lets a space into a name; Go's server refuses the request
     * ("invalid header name"), after its Host checks. */
    if (c == ' ') r->name_space = true;
    if (r->field_len >= sizeof r->field) { r->field_long = true; continue; }
    r->field[r->field_len++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  return 0;
}

/* "derp" anywhere in the first Sec-WebSocket-Protocol value, case-sensitive
 * (derper's strings.Contains): r->sub_k is how much of it the last bytes match. */
static void sub_feed(struct http_req *r, const uint8_t *p, size_t n) {
  static const char w[] = "derp";
  for (size_t i = 0; i < n && r->sub_k < 4; i++)
    r->sub_k = p[i] == (uint8_t)w[r->sub_k] ? (uint8_t)(r->sub_k + 1) : p[i] == 'd' ? 1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  struct http_req *r = p->data;
  if (!r->in_value) {
    r->in_value = true;
    r->cur_field = lookup_field(r);
    tok_reset(r);
    r->host_any = r->host_ws = false;
  }
  const uint8_t *b = (const uint8_t *)at;
  switch (r->cur_field) {
  case H_NONE: return 0;
  case H_CONNECTION: tok_feed(r, "upgrade", b, len); break;
  case H_WS_PROTO:
    tok_feed(r, "derp", b, len);
    if (r->sub_k < 5) sub_feed(r, b, len);
    break;
  case H_HOST: if (r->host_count == 0) host_feed(r, b, len); break;
  default: break;
  }
  size_t room = sizeof r->value - r->value_len;
  if (len > room) { r->value_long = true; len = room; }
  memcpy(r->value + r->value_len, at, len);
  r->value_len = (uint16_t)(r->value_len + len);
  return 0;
}

/* Go's net/http (derper's server) refuses these before any handler runs, in
 * this order: the reply is Go's, see http_req_error_reply. */
static int go_request_checks(struct http_req *r, const http_parser *p) {
  const char *text = NULL;
  int status = 400;
  if (r->host_count > 1) {
    r->error_reason = "http_many_hosts"; /* readRequest: a plain 400 */
  } else if (p->http_major > 9 || p->http_minor > 9) {
    r->error_reason = "http_bad_version"; /* "HTTP/X.Y", one digit each: malformed */
  } else if (p->http_major != 1) {
    status = 505;
    text = "unsupported protocol version";
    r->error_reason = "http_bad_version";
  } else if (p->http_minor >= 1 && r->host_count == 0 && p->method != HTTP_CONNECT) {
    text = "missing required Host header";
    r->error_reason = "http_missing_host";
  } else if (r->host_count == 1 && r->host_bad) {
    text = "malformed Host header";
    r->error_reason = "http_bad_host";
  } else if (r->name_space) {
    text = "invalid header name";
    r->error_reason = "http_bad_header_name";
  } else {
    return 0;
  }
  r->error_status = status;
  r->error_text = text;
  return -1;
}

static int on_headers_complete(http_parser *p) {
  struct http_req *r = p->data;
  end_value(r);
  if (go_request_checks(r, p) < 0) return -1;
  r->method = (uint8_t)p->method;
  r->http_minor = (uint8_t)p->http_minor;
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
  case 301: return "Moved Permanently";
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

size_t http_reply_head_extra(char *out, size_t cap, int status, const char *content_type,
                             size_t body_len, const char *extra) {
  struct sbuf b = {out, cap, 0, false};
  write_head(&b, status, content_type, body_len, extra);
  return b.over ? 0 : b.len;
}

size_t http_reply_head(char *out, size_t cap, int status, const char *content_type, size_t body_len) {
  return http_reply_head_extra(out, cap, status, content_type, body_len, NULL);
}

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define TEXT_HTML "text/html; charset=utf-8"
#define NOSNIFF "X-Content-Type-Options: nosniff\r\n"

const char http_browser_headers[] =
    "Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"
    "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'self'; block-all-mixed-content; object-src 'none'\r\n"
    "X-Frame-Options: DENY\r\n" NOSNIFF;

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

/* Go's http.Error: plain text, nosniff, the message and a newline. */
static void reply_error(struct http_reply *out, bool head_only, int status, const char *extra,
                        const char *msg) {
  char hdr[256], body[1600];
  snprintf(hdr, sizeof hdr, NOSNIFF "%s", extra ? extra : "");
  snprintf(body, sizeof body, "%s\n", msg);
  reply(out, head_only, status, TEXT_PLAIN, hdr, body);
}

void http_error_reply(int status, struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  char body[64];
  snprintf(body, sizeof body, "%s\n", reason_phrase(status));
  reply(out, false, status, TEXT_PLAIN, NULL, body);
}

/* Go's server writes its own errors with no Content-Length and closes: the
 * status line and the body both say "400 Bad Request[: text]". */
void http_req_error_reply(const struct http_req *r, struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  int status = r->error_status ? r->error_status : 400;
  char what[128];
  snprintf(what, sizeof what, "%d %s%s%s", status, reason_phrase(status), r->error_text ? ": " : "",
           r->error_text ? r->error_text : "");
  struct sbuf b = {out->buf, sizeof out->buf, 0, false};
  sb_printf(&b, "HTTP/1.1 %s\r\nContent-Type: " TEXT_PLAIN "\r\nConnection: close\r\n\r\n%s", what, what);
  out->status = status;
  out->action = HTTP_ACT_CLOSE;
  out->len = b.over ? 0 : b.len;
}

/* ---- Go's %q ------------------------------------------------------------------ */

size_t http_utf8_decode(const uint8_t *s, size_t n, uint32_t *rune) {
  uint8_t c = s[0];
  size_t len;
  uint8_t lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) len = 2;
  else if (c >= 0xe0 && c <= 0xef) { len = 3; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
  else if (c >= 0xf0 && c <= 0xf4) { len = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
  else return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  uint32_t r = c & (0xff >> (len + 1));
  for (size_t i = 1; i < len; i++) r = (r << 6) | (s[i] & 0x3f);
  *rune = r;
  return len;
}

/* strconv.IsPrint for runes beyond ASCII, in part: the control, space,
 * format, private-use and non-character runes a header value is likely to
 * hold are not printable; every other valid rune is taken as printable (Go
 * also escapes unassigned code points, which this does not know). */
static bool rune_printable(uint32_t r) {
  if (r < 0xa0 || r == 0xa0 || r == 0xad || r == 0x61c || r == 0x1680 || r == 0x180e) return false;
  if ((r >= 0x2000 && r <= 0x200f) || (r >= 0x2028 && r <= 0x202f) || (r >= 0x205f && r <= 0x206f))
    return false;
  if (r == 0x3000 || r == 0xfeff || (r >= 0xfff9 && r <= 0xfffb) || r == 0xfffe || r == 0xffff)
    return false;
  if ((r >= 0xe000 && r <= 0xf8ff) || r >= 0xf0000) return false;
  return true;
}

size_t http_go_quote(char *out, size_t cap, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *s = (const uint8_t *)str;
  size_t o = 0;
  if (cap < 6) { if (cap) out[0] = 0; return 0; }
  out[o++] = '"';
  for (size_t i = 0; i < n;) {
    char e[16];
    size_t el = 0, adv = 1;
    uint8_t c = s[i];
    uint32_t r;
    size_t ul;
    if (c == '"' || c == '\\') { e[el++] = '\\'; e[el++] = (char)c; }
    else if (c >= 0x20 && c < 0x7f) e[el++] = (char)c;
    else if (c < 0x80) {
      const char *esc = c == '\a' ? "\\a" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == '\n' ? "\\n"
                      : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\v' ? "\\v" : NULL;
      if (esc) { memcpy(e, esc, 2); el = 2; }
      else { e[0] = '\\'; e[1] = 'x'; e[2] = hex[c >> 4]; e[3] = hex[c & 15]; el = 4; }
    } else if ((ul = http_utf8_decode(s + i, n - i, &r)) == 0) {
      e[0] = '\\'; e[1] = 'x'; e[2] = hex[c >> 4]; e[3] = hex[c & 15]; el = 4;
    } else {
      adv = ul;
      if (rune_printable(r)) { memcpy(e, s + i, ul); el = ul; }
      else el = (size_t)snprintf(e, sizeof e, r < 0x10000 ? "\\u%04x" : "\\U%08x", r);
    }
    if (o + el + 5 > cap) { /* room for ...", NUL */
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    memcpy(out + o, e, el);
    o += el;
    i += adv;
  }
  out[o++] = '"';
  out[o] = 0;
  return o;
}

/* ---- Routes ------------------------------------------------------------------- */

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
    if (n >= 2 && utf8_is_space(p, 2)) { p += 2; n -= 2; continue; }
    if (n >= 3 && utf8_is_space(p, 3)) { p += 3; n -= 3; continue; }
    break;
  }
  for (;;) {
    if (n && (p[n - 1] == ' ' || (p[n - 1] >= '\t' && p[n - 1] <= '\r'))) { n--; continue; }
    if (n >= 2 && utf8_is_space(p + n - 2, 2)) { n -= 2; continue; }
    if (n >= 3 && utf8_is_space(p + n - 3, 3)) { n -= 3; continue; }
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
  reply_error(out, r->method == HTTP_HEAD, status, extra, msg);
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
    reply_error(out, r->method == HTTP_HEAD, 403, NULL, msg);
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
  if (site->derp_disabled) { reply_error(out, head, 404, NULL, "derp server disabled"); return; }
  /* As derper: the Upgrade header decides, not the method. A WebSocket
   * upgrade needs "derp" somewhere in the first Sec-WebSocket-Protocol;
   * without it, Upgrade: websocket is taken for DERP (very old clients). */
  if (r->upgrade == HTTP_UP_WEBSOCKET && r->ws_proto_route) { route_websocket(r, out); return; }
  if (r->upgrade == HTTP_UP_WEBSOCKET || r->upgrade == HTTP_UP_DERP) {
    route_derp_upgrade(r, site->key_hex, out);
    return;
  }
  reply_error(out, head, 426, NULL, "DERP requires connection upgrade");
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

/* Go's http.Redirect of an absolute URL: Location with non-ASCII bytes
 * %-escaped, and for GET a short HTML body with the URL HTML-escaped. */
static void route_redirect(const struct http_req *r, const char *url, struct http_reply *out) {
  char loc[HTTP_REPLY_MAX / 2], esc[HTTP_REPLY_MAX / 2];
  struct sbuf l = {loc, sizeof loc, 0, false}, e = {esc, sizeof esc, 0, false};
  sb_printf(&l, "%sLocation: ", http_browser_headers);
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
  reply(out, !get, 302, get || head ? TEXT_HTML : NULL, loc, get || head ? body : NULL);
  if (l.over || e.over || bb.over) out->len = 0; /* config.c bounds the URL well below this */
}

static void route_home(const struct http_req *r, const struct http_site *site, bool debug_allowed,
                       struct http_reply *out) {
  bool head = r->method == HTTP_HEAD;
  if (site->home == HTTP_HOME_REDIRECT) { route_redirect(r, site->home_url, out); return; }
  if (site->home == HTTP_HOME_BLANK) { reply(out, head, 200, TEXT_HTML, http_browser_headers, NULL); return; }
  char page[1024];
  snprintf(page, sizeof page,
           "<html><body>\n<h1>DERP</h1>\n"
           "<p>This is a Tailscale DERP server (derpd).</p>\n"
           "<p>It relays encrypted packets between Tailscale nodes that cannot reach each other "
           "directly. See <a href=\"https://tailscale.com/kb/1232/derp-servers\">DERP servers</a>.</p>\n"
           "%s%s</body></html>\n",
           site->derp_disabled ? "<p>Status: <b>disabled</b> (this server relays nothing).</p>\n" : "",
           debug_allowed ? "<p>Debug info at <a href='/debug/'>/debug/</a>.</p>\n" : "");
  reply(out, head, 200, TEXT_HTML, http_browser_headers, page);
}

static bool route_debug(const struct http_req *r, bool allowed, struct http_reply *out) {
  static const struct { const char *path; enum http_debug_page page; } pages[] = {
      {"/debug/", HTTP_DEBUG_INDEX}, {"/debug/varz", HTTP_DEBUG_VARZ}, {"/debug/vars", HTTP_DEBUG_VARS}};
  bool head = r->method == HTTP_HEAD;
  if (strcmp(r->path, "/debug") == 0) { /* Go's ServeMux: the subtree's redirect */
    reply(out, head, 301, TEXT_HTML, "Location: /debug/\r\n",
          "<a href=\"/debug/\">Moved Permanently</a>.\n\n");
    return true;
  }
  if (strncmp(r->path, "/debug/", 7) != 0) return false;
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
  reply_error(out, head, 404, NULL, "404 page not found");
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
    static const struct http_site none = {.key_hex = ""};
    http_route(r, &none, debug_allowed, out);
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
  if (strcmp(path, "/derp") == 0) {
    route_derp(r, site, out);
  } else if (strcmp(path, "/derp/probe") == 0 || strcmp(path, "/derp/latency-check") == 0) {
    if (get_or_head)
      reply(out, head, 200, NULL, "Access-Control-Allow-Origin: *\r\n", NULL);
    else
      reply_error(out, false, 405, NULL, "bogus probe method");
  } else if (strcmp(path, "/generate_204") == 0) {
    route_generate_204(r, out);
  } else if (strcmp(path, "/robots.txt") == 0) {
    reply(out, head, 200, TEXT_PLAIN, http_browser_headers, "User-agent: *\nDisallow: /\n");
  } else if (strcmp(path, "/bootstrap-dns") == 0) {
    out->action = HTTP_ACT_BOOTSTRAP_DNS; /* the body is the resolver's (operations/) */
    out->status = 200;
  } else if (!route_debug(r, debug_allowed, out)) {
    route_home(r, site, debug_allowed, out);
  }
}
