/* wire.c: admission's pure parts (see wire.h): the verifier URL, the request
 * bytes, and the controller's answer read as Go's encoding/json reads it.
 * No I/O, no allocation; every input is bounded by its caller. */
#include "server/admission/wire.h"

#include "lib/pctdecode.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>


/* ---- the URL ------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *why) {
  if (errlen) snprintf(err, errlen, "%s", why);
  return -1;
}

/* Bytes a request line or a header cannot carry. */
static bool line_safe(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) return false;
  return true;
}

int adm_url_parse(const char *s, struct adm_url *u, char *err, size_t errlen) {
  memset(u, 0, sizeof *u);
  const char *sep = strstr(s, "://");
  if (!sep) return fail(err, errlen, "want http://host[:port]/path or https://...");
  size_t sl = (size_t)(sep - s);
  if (sl == 4 && strncasecmp(s, "http", 4) == 0) u->tls = false;
  else if (sl == 5 && strncasecmp(s, "https", 5) == 0) u->tls = true;
  else return fail(err, errlen, "the scheme must be http or https");
  const char *a = sep + 3;
  size_t al = strcspn(a, "/?#");
  const char *rest = a + al;
  /* userinfo@host: the last '@' of the authority (Go's rule). */
  const char *at = NULL;
  for (const char *p = a; p < a + al; p++)
    if (*p == '@') at = p;
  if (at) {
    char ui[384];
    if (derp_pct_decode(a, (size_t)(at - a), false, ui, sizeof ui - 1) < 0) return fail(err, errlen, "bad user:password in URL");
    /* A user without a password: Go's SetBasicAuth(user, "") sends "user:". */
    if (!memchr(a, ':', (size_t)(at - a))) strcat(ui, ":");
    if (sodium_base64_ENCODED_LEN(strlen(ui), sodium_base64_VARIANT_ORIGINAL) > sizeof u->basic)
      return fail(err, errlen, "user:password too long");
    sodium_bin2base64(u->basic, sizeof u->basic, (const unsigned char *)ui, strlen(ui),
                      sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(ui, sizeof ui);
    al -= (size_t)(at + 1 - a);
    a = at + 1;
  }
  if (al == 0) return fail(err, errlen, "no host in URL");
  if (al >= sizeof u->authority) return fail(err, errlen, "host too long");
  if (!line_safe(a, al)) return fail(err, errlen, "bad character in host");
  const char *hs = a, *he, *port = NULL;
  if (a[0] == '[') {
    const char *rb = memchr(a, ']', al);
    if (!rb) return fail(err, errlen, "missing ']' in host");
    hs = a + 1;
    he = rb;
    if (rb + 1 < a + al) {
      if (rb[1] != ':') return fail(err, errlen, "bad host");
      port = rb + 2;
    }
    uint8_t buf[16];
    char v6[64];
    if ((size_t)(he - hs) >= sizeof v6) return fail(err, errlen, "bad IPv6 address");
    memcpy(v6, hs, (size_t)(he - hs));
    v6[he - hs] = 0;
    if (inet_pton(AF_INET6, v6, buf) != 1) return fail(err, errlen, "bad IPv6 address");
  } else {
    const char *colon = memchr(a, ':', al);
    he = colon ? colon : a + al;
    if (colon) port = colon + 1;
    if (colon && memchr(colon + 1, ':', (size_t)(a + al - colon - 1)))
      return fail(err, errlen, "IPv6 addresses go in brackets: http://[::1]:8080/");
  }
  if (he == hs) return fail(err, errlen, "no host in URL");
  if ((size_t)(he - hs) >= sizeof u->host) return fail(err, errlen, "host name too long");
  memcpy(u->host, hs, (size_t)(he - hs));
  u->host[he - hs] = 0;
  u->port = u->tls ? 443 : 80;
  if (port && port < a + al) {
    unsigned long v = 0;
    for (const char *p = port; p < a + al; p++) {
      if (*p < '0' || *p > '9' || v > 65535) return fail(err, errlen, "bad port in URL");
      v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535) return fail(err, errlen, "bad port in URL");
    u->port = (uint16_t)v;
  }
  /* Go sends the host as written, but an empty port (host:) goes. */
  size_t hl = port && port == a + al ? al - 1 : al;
  memcpy(u->authority, a, hl);
  u->authority[hl] = 0;
  size_t tl = strcspn(rest, "#");
  if (!line_safe(rest, tl)) return fail(err, errlen, "bad character in path (escape it: %20)");
  if (tl + 2 > sizeof u->target) return fail(err, errlen, "path too long");
  if (tl == 0 || rest[0] != '/') u->target[0] = '/';
  memcpy(u->target + strlen(u->target), rest, tl);
  return 0;
}

/* ---- redirects ------------------------------------------------------------- */

enum adm_redirect adm_redirect_kind(int status) {
  switch (status) {
  case 301: case 302: case 303: return ADM_REDIRECT_GET;
  case 307: case 308: return ADM_REDIRECT_SAME;
  default: return ADM_REDIRECT_NONE;
  }
}

/* RFC 3986 5.2.4 on p[0..n) (a path that starts with '/'), into out (cap
 * bytes, NUL-terminated): "." and ".." segments go, as Go's resolvePath. 0 or
 * -1 if it does not fit. */
static int remove_dots(const char *p, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1; /* p[i] == '/' */
    while (j < n && p[j] != '/') j++;
    size_t sl = j - i - 1;
    const char *seg = p + i + 1;
    bool last = j >= n;
    if (sl == 1 && seg[0] == '.') {
      if (last) out[o++] = '/';
    } else if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
      while (o > 0 && out[o - 1] != '/') o--; /* drop the last segment */
      if (o > 0) o--;                           /* and its slash */
      if (last) out[o++] = '/';
    } else {
      if (o + 1 + sl >= cap) return -1;
      out[o++] = '/';
      memcpy(out + o, seg, sl);
      o += sl;
    }
    if (o + 1 >= cap) return -1;
    i = j;
  }
  if (o == 0) out[o++] = '/';
  out[o] = 0;
  return 0;
}

/* An absolute URL's target with its dot segments removed (Go resolves them
 * in an absolute Location too). */
static int parse_absolute(const char *s, struct adm_url *out, char *err, size_t errlen) {
  if (adm_url_parse(s, out, err, errlen) < 0) return -1;
  char t[sizeof out->target];
  size_t pl = strcspn(out->target, "?");
  if (remove_dots(out->target, pl, t, sizeof t) < 0) return fail(err, errlen, "Location too long");
  size_t tl = strlen(t), ql = strlen(out->target + pl);
  if (tl + ql >= sizeof t) return fail(err, errlen, "Location too long");
  memcpy(t + tl, out->target + pl, ql + 1);
  memcpy(out->target, t, tl + ql + 1);
  return 0;
}

int adm_url_resolve(const struct adm_url *base, const char *loc, size_t len, struct adm_url *out, char *err,
                    size_t errlen) {
  char buf[sizeof out->target + 16];
  if (len >= sizeof buf - 8) return fail(err, errlen, "Location too long");
  size_t pre = strcspn(loc, "/?#:");
  if (pre < len && loc[pre] == ':') { /* a scheme: absolute */
    memcpy(buf, loc, len);
    buf[len] = 0;
    return parse_absolute(buf, out, err, errlen);
  }
  if (len >= 2 && loc[0] == '/' && loc[1] == '/') {
    snprintf(buf, sizeof buf, "%s:%.*s", base->tls ? "https" : "http", (int)len, loc);
    return parse_absolute(buf, out, err, errlen);
  }
  size_t rl = 0;
  while (rl < len && loc[rl] != '#') rl++;
  if (!line_safe(loc, rl)) return fail(err, errlen, "bad character in Location");
  *out = *base;
  const char *bq = strchr(base->target, '?');
  size_t bpath = bq ? (size_t)(bq - base->target) : strlen(base->target);
  size_t qpos = 0;
  while (qpos < rl && loc[qpos] != '?') qpos++;
  if (rl == 0) return 0; /* base itself, without the fragment it never had */
  /* The merged path (before dot removal), then loc's query. */
  size_t m = 0;
  if (loc[0] == '?') {
    memcpy(buf, base->target, bpath);
    m = bpath;
  } else if (loc[0] == '/') {
    memcpy(buf, loc, qpos);
    m = qpos;
  } else {
    size_t dir = bpath;
    while (dir > 0 && base->target[dir - 1] != '/') dir--;
    if (dir + qpos >= sizeof buf) return fail(err, errlen, "Location too long");
    memcpy(buf, base->target, dir);
    memcpy(buf + dir, loc, qpos);
    m = dir + qpos;
  }
  if (remove_dots(buf, m, out->target, sizeof out->target) < 0) return fail(err, errlen, "Location too long");
  size_t tl = strlen(out->target);
  if (tl + (rl - qpos) >= sizeof out->target) return fail(err, errlen, "Location too long");
  memcpy(out->target + tl, loc + qpos, rl - qpos);
  out->target[tl + rl - qpos] = 0;
  return 0;
}

/* ---- requests ------------------------------------------------------------ */

static size_t done(int n, size_t cap) { return n > 0 && (size_t)n < cap ? (size_t)n : 0; }

size_t adm_format_body(char *out, size_t cap, const derp_key *k, const char *ip) {
  char key[DERP_KEY_STRLEN];
  derp_key_format(k, key);
  return done(snprintf(out, cap, "{\"NodePublic\":\"%s\",\"Source\":\"%s\"}", key, ip), cap);
}

size_t adm_format_post(char *out, size_t cap, const struct adm_url *u, const char *body, size_t blen) {
  int n = snprintf(out, cap,
                   "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: derpd\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                   u->target, u->authority, blen, u->basic[0] ? "Authorization: Basic " : "",
                   u->basic, u->basic[0] ? "\r\n" : "");
  size_t h = done(n, cap);
  if (h == 0 || h + blen >= cap) return 0;
  memcpy(out + h, body, blen);
  out[h + blen] = 0;
  return h + blen;
}

size_t adm_format_get(char *out, size_t cap, const struct adm_url *u) {
  return done(snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: derpd\r\n%s%s%s\r\n", u->target,
                       u->authority, u->basic[0] ? "Authorization: Basic " : "", u->basic,
                       u->basic[0] ? "\r\n" : ""),
              cap);
}

size_t adm_format_whois(char *out, size_t cap, const derp_key *k) {
  char hex[DERP_KEY_HEXLEN + 1];
  derp_key_hex(k, hex);
  /* url.QueryEscape("nodekey:...") escapes the colon. */
  return done(snprintf(out, cap,
                       "GET /localapi/v0/whois?addr=nodekey%%3A%s HTTP/1.1\r\nHost: %s\r\n"
                       "User-Agent: derpd\r\nTailscale-Cap: %d\r\n\r\n",
                       hex, ADM_LOCALAPI_HOST, ADM_TAILSCALE_CAP),
              cap);
}

/* ---- the answer: Go's scanner (encoding/json/scanner.go) and its decoding
 * into struct{ Allow bool } ------------------------------------------------ */

struct scan {
  const uint8_t *p;
  size_t n, i;
};

enum { S_OK = 1, S_MORE = 0, S_BAD = -1 };

static bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_dig(uint8_t c) { return c >= '0' && c <= '9'; }

static void skip_ws(struct scan *s) {
  while (s->i < s->n && is_ws(s->p[s->i])) s->i++;
}

/* A string at s->i (the opening quote). With key, its decoded text up to
 * 8 bytes goes there, *klen its full decoded length (a \u escape of a
 * non-ASCII rune counts as 0xff: it can never match an ASCII name). */
static int scan_string(struct scan *s, char *key, size_t *klen) {
  size_t i = s->i + 1, kl = 0;
  while (i < s->n) {
    uint8_t c = s->p[i];
    if (c == '"') {
      s->i = i + 1;
      if (klen) *klen = kl;
      return S_OK;
    }
    if (c < 0x20) return S_BAD;
    if (c == '\\') {
      if (i + 1 >= s->n) return S_MORE;
      uint8_t e = s->p[i + 1];
      static const char simple[] = "\"\\/bfnrt";
      if (e == 'u') {
        unsigned v = 0;
        for (int j = 0; j < 4; j++) {
          if (i + 2 + (size_t)j >= s->n) return S_MORE;
          int h = derp_hex_digit((char)s->p[i + 2 + j]);
          if (h < 0) return S_BAD;
          v = v * 16 + (unsigned)h;
        }
        c = v < 0x80 ? (uint8_t)v : 0xff;
        i += 6;
      } else if (e && strchr(simple, e)) {
        static const char map[] = "\"\\/\b\f\n\r\t";
        c = (uint8_t)map[strchr(simple, e) - simple];
        i += 2;
      } else {
        return S_BAD;
      }
    } else {
      i++;
    }
    if (key && kl < 8) key[kl] = (char)c;
    kl++;
  }
  return S_MORE;
}

/* A number inside a container: always followed by a delimiter, so the end
 * of the buffer means more is needed. Grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
static int scan_number(struct scan *s) {
  size_t i = s->i;
  const uint8_t *p = s->p;
#define NEED(x) do { if (i >= s->n) return S_MORE; if (!(x)) return S_BAD; } while (0)
  if (p[i] == '-') i++;
  NEED(is_dig(p[i]));
  if (p[i] == '0') i++;
  else while (i < s->n && is_dig(p[i])) i++;
  if (i >= s->n) return S_MORE;
  if (p[i] == '.') {
    i++;
    NEED(is_dig(p[i]));
    while (i < s->n && is_dig(p[i])) i++;
    if (i >= s->n) return S_MORE;
  }
  if (p[i] == 'e' || p[i] == 'E') {
    i++;
    if (i < s->n && (p[i] == '+' || p[i] == '-')) i++;
    NEED(is_dig(p[i]));
    while (i < s->n && is_dig(p[i])) i++;
    if (i >= s->n) return S_MORE;
  }
#undef NEED
  s->i = i;
  return S_OK;
}

static int scan_literal(struct scan *s, const char *lit) {
  size_t l = strlen(lit);
  for (size_t j = 0; j < l; j++) {
    if (s->i + j >= s->n) return S_MORE;
    if (s->p[s->i + j] != (uint8_t)lit[j]) return S_BAD;
  }
  s->i += l;
  return S_OK;
}

/* What the value at depth 1 after an "Allow" key was. */
enum { V_OTHER, V_TRUE, V_FALSE, V_NULL };

/* One scalar value (not an object or array) at s->i. */
static int scan_scalar(struct scan *s, int *kind) {
  uint8_t c = s->p[s->i];
  *kind = V_OTHER;
  if (c == '"') return scan_string(s, NULL, NULL);
  if (c == '-' || is_dig(c)) return scan_number(s);
  if (c == 't') { *kind = V_TRUE; return scan_literal(s, "true"); }
  if (c == 'f') { *kind = V_FALSE; return scan_literal(s, "false"); }
  if (c == 'n') { *kind = V_NULL; return scan_literal(s, "null"); }
  return S_BAD;
}

#define MAX_DEPTH ADM_ANSWER_MAX /* deeper cannot fit in the 4 KiB anyway */

static enum adm_answer bad(const char **why, const char *w) {
  *why = w;
  return ADM_ANSWER_BAD;
}

enum adm_answer adm_answer_read(const uint8_t *p, size_t n, bool eof, const char **why) {
  struct scan s = {p, n, 0};
  const char *dummy;
  if (!why) why = &dummy;
  *why = NULL;
  enum adm_answer more = eof ? bad(why, "the answer ended before its JSON value did") : ADM_ANSWER_MORE;
  skip_ws(&s);
  if (s.i >= s.n) return eof ? bad(why, "empty answer") : ADM_ANSWER_MORE;
  if (p[s.i] != '{') {
    /* Go: null leaves Allow false without an error; anything else that is
     * not an object is an UnmarshalTypeError (or a syntax error). */
    if (p[s.i] == 'n') {
      int r = scan_literal(&s, "null");
      if (r == S_MORE) return more;
      if (r == S_OK) {
        *why = "null answer";
        return ADM_ANSWER_DENY;
      }
    }
    return bad(why, "the answer is not a JSON object");
  }
  /* The object, iteratively: stack[d] is '{' or '['. */
  uint8_t stack[MAX_DEPTH];
  int depth = 0;
  bool allow = false, type_error = false, is_allow_key = false;
  enum { WANT_VALUE, WANT_KEY_OR_END, WANT_KEY, WANT_COLON, WANT_VALUE_OR_END, WANT_COMMA_OR_END } st;
  stack[depth++] = '{';
  s.i++;
  st = WANT_KEY_OR_END;
  for (;;) {
    skip_ws(&s);
    if (s.i >= s.n) return more;
    uint8_t c = p[s.i];
    switch (st) {
    case WANT_KEY_OR_END:
    case WANT_KEY:
      if (c == '}' && st == WANT_KEY_OR_END) goto close;
      if (c != '"') return bad(why, "invalid JSON: want an object key");
      {
        char key[8];
        size_t kl = 0;
        int r = scan_string(&s, key, &kl);
        if (r == S_MORE) return more;
        if (r == S_BAD) return bad(why, "invalid JSON string");
        is_allow_key = depth == 1 && kl == 5 && strncasecmp(key, "allow", 5) == 0;
      }
      st = WANT_COLON;
      continue;
    case WANT_COLON:
      if (c != ':') return bad(why, "invalid JSON: want ':'");
      s.i++;
      st = WANT_VALUE;
      continue;
    case WANT_VALUE_OR_END:
      if (c == ']') goto close;
      /* fall through */
    case WANT_VALUE:
      if (c == '{' || c == '[') {
        if (depth == 1 && is_allow_key) type_error = true;
        if (depth >= MAX_DEPTH) return bad(why, "JSON nested too deeply");
        stack[depth++] = c;
        s.i++;
        st = c == '{' ? WANT_KEY_OR_END : WANT_VALUE_OR_END;
        continue;
      }
      {
        int kind, r = scan_scalar(&s, &kind);
        if (r == S_MORE) return more;
        if (r == S_BAD) return bad(why, "invalid JSON value");
        if (depth == 1 && is_allow_key) {
          if (kind == V_TRUE || kind == V_FALSE) allow = kind == V_TRUE;
          else if (kind == V_OTHER) type_error = true; /* null: no change */
        }
      }
      st = WANT_COMMA_OR_END;
      continue;
    case WANT_COMMA_OR_END:
      if (c == ',') {
        s.i++;
        st = stack[depth - 1] == '{' ? WANT_KEY : WANT_VALUE;
        continue;
      }
      if ((c == '}' && stack[depth - 1] == '{') || (c == ']' && stack[depth - 1] == '[')) goto close;
      return bad(why, "invalid JSON: want ',' or the end of the object");
    }
  close:
    s.i++;
    if (--depth == 0) break;
    st = WANT_COMMA_OR_END;
  }
  if (type_error) return bad(why, "Allow is not a boolean");
  if (!allow) *why = "Allow is not true";
  return allow ? ADM_ANSWER_ALLOW : ADM_ANSWER_DENY;
}
