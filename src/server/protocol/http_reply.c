/* http_reply.c: the bytes of derpd's HTTP answers (see http.h): status lines
 * and heads as Go's net/http writes them, whole replies, Go's http.Error and
 * its own 400s, and Go's %q for values echoed back. Knows no route. */
#include "server/protocol/http.h"
#include "server/protocol/http_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

void sb_printf(struct sbuf *b, const char *fmt, ...) {
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

const char http_browser_headers[] =
    "Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"
    "Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'self'; block-all-mixed-content; object-src 'none'\r\n"
    "X-Frame-Options: DENY\r\n" NOSNIFF;

/* A whole non-upgrade reply; HEAD gets the same head without the body. */
void http_reply_whole(struct http_reply *out, bool head_only, int status, const char *ctype,
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
void http_reply_go_error(struct http_reply *out, bool head_only, int status, const char *extra,
                        const char *msg) {
  char hdr[256], body[1600];
  snprintf(hdr, sizeof hdr, NOSNIFF "%s", extra ? extra : "");
  snprintf(body, sizeof body, "%s\n", msg);
  http_reply_whole(out, head_only, status, TEXT_PLAIN, hdr, body);
}

void http_error_reply(int status, struct http_reply *out) {
  memset(out, 0, offsetof(struct http_reply, buf));
  char body[64];
  snprintf(body, sizeof body, "%s\n", reason_phrase(status));
  http_reply_whole(out, false, status, TEXT_PLAIN, NULL, body);
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
