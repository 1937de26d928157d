/* http_parse.c: the request head (see http.h): the bounded incremental parser
 * on libhttp-parser, the few headers derpd keeps, and Go's net/http request
 * rules (Host, header names, versions). Builds no reply and routes nothing:
 * http_route.c decides what a parsed head gets. */
#include "server/protocol/http.h"
#include "server/protocol/http_internal.h"

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
bool http_utf8_is_space(const uint8_t *b, size_t n) {
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
  bool space = r->tok.npend == r->tok.need && http_utf8_is_space(r->tok.pend, r->tok.npend);
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
    if (r->first_seen & 1) break;
    r->first_seen |= 1;
    r->fast_start = !lng && n == 1 && v[0] == '1';
    break;
  case H_CHALLENGE:
    if (r->first_seen & 2) break;
    r->first_seen |= 2;
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
  case H_IDEAL_NODE: /* derper: a non-empty first value marks the client "not ideal" */
    if (r->first_seen & 4) break;
    r->first_seen |= 4;
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
  } else if (r->path[0] != '/' && strcmp(r->path, "*") != 0 && !strstr(r->path, "://") &&
             p->method != HTTP_CONNECT) {
    /* Go's url.ParseRequestURI: origin-form, "*" or absolute-form only
     * (`GET *@evil.example` would otherwise reach the port-80 redirect). */
    r->error_reason = "http_bad_target";
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
