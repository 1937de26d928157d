/* http.h: the HTTP/1.1 front door of a connection, before it speaks DERP.
 *
 * Parses one request head incrementally (on Node's http-parser, Debian's
 * libhttp-parser) with hard bounds: at most HTTP_MAX_HEAD bytes of request
 * line + headers, and a fixed small copy of only the headers derpd acts on;
 * everything else is parsed and forgotten. Then routes it and builds the
 * reply. Owns no socket and no connection: the caller feeds bytes and writes
 * the reply. The request body is never read (derpd's routes have none). */
#ifndef DERPD_HTTP_H
#define DERPD_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD 8192   /* request line + headers; more gets 431 */
#define HTTP_MAX_PATH 256    /* longer gets 414 */
#define HTTP_MAX_CHALLENGE 64
#define HTTP_WS_KEY_MAX 128  /* a longer Sec-WebSocket-Key is invalid (and cut in the 400's echo) */
#define HTTP_ECHO_MAX 128    /* Connection / Sec-WebSocket-Version values kept to quote in a refusal */
#define HTTP_MAX_QUERY 256   /* query string kept (for /debug/'s debugkey); longer is cut */

enum http_upgrade { HTTP_UP_NONE = 0, HTTP_UP_DERP, HTTP_UP_WEBSOCKET, HTTP_UP_OTHER };

struct http_req {
  http_parser parser;
  uint32_t head_bytes;            /* bytes of the head consumed so far */
  bool done;                      /* head complete */
  int error_status;               /* 0, or the 4xx/5xx to answer with before closing */
  const char *error_reason;       /* static text for logs and counters */
  const char *error_text;         /* Go's statusError text for the reply ("missing required
                                     Host header"), or NULL: the bare status (see http_req_error_reply) */
  /* What derpd keeps of the request. */
  uint8_t method;                 /* enum http_method from http_parser.h */
  uint8_t http_minor;             /* HTTP/1.x (major is always 1 once parsed) */
  char path[HTTP_MAX_PATH + 1];   /* path without the query string */
  uint16_t path_len;
  enum http_upgrade upgrade;      /* the first Upgrade value, as Go's Header.Get reads it */
  bool fast_start;                /* Derp-Fast-Start: 1 */
  bool has_challenge;             /* X-Tailscale-Challenge present and valid */
  char challenge[HTTP_MAX_CHALLENGE + 1];
  /* WebSocket, as derper routes it and coder/websocket's Accept checks it. */
  bool ws_proto_route;            /* the first Sec-WebSocket-Protocol value contains "derp" */
  char ws_proto[5];               /* the first protocol token equal to "derp" in any case, as sent */
  char ws_key[HTTP_WS_KEY_MAX + 1];   /* the first Sec-WebSocket-Key, white space trimmed */
  uint8_t ws_key_count;           /* Sec-WebSocket-Key header lines (up to 255) */
  bool ws_key_long;               /* the first key did not fit ws_key */
  bool ws_version_seen;           /* ws_version holds the first Sec-WebSocket-Version */
  char ws_version[HTTP_ECHO_MAX + 1];
  bool origin_seen;               /* origin holds the first Origin value */
  bool origin_long;               /* ... cut: longer than HTTP_ECHO_MAX (then not checked) */
  char origin[HTTP_ECHO_MAX + 1];
  bool conn_seen;                 /* conn_first holds the first Connection value */
  char conn_first[HTTP_ECHO_MAX + 1];
  bool conn_upgrade;              /* some Connection token is "upgrade" (any case) */
  bool conn_close;                /* Connection: close */
  /* Go's net/http rules, which derper's server applies before any route. */
  uint8_t host_count;             /* Host header lines (up to 255) */
  bool host_bad;                  /* the Host value has a byte httpguts.ValidHostHeader refuses */
  bool name_space;                /* a header name with a space in it: "invalid header name" */
  bool ideal_node;                /* Ideal-Node: names the client's ideal node (not us) */
  bool forwarded;                 /* X-Forwarded-For present (/debug/ refuses it) */
  char query[HTTP_MAX_QUERY + 1]; /* the query string: after '?', before '#' */
  uint16_t query_len;
  bool query_cut;                 /* longer than HTTP_MAX_QUERY: query holds the start */
  /* Header being parsed: which one (if any) we keep, and a bounded copy. */
  uint8_t cur_field;              /* internal: index of the header we are collecting */
  bool in_value;
  char field[40]; uint8_t field_len; bool field_long;
  char value[HTTP_MAX_CHALLENGE * 2]; uint16_t value_len; bool value_long;
  struct { uint8_t st, k, pend[3], npend, need; char spell[8]; } tok; /* internal: token match */
  uint8_t sub_k;                  /* internal: "derp" matched so far in the first protocol value */
  bool host_any, host_ws;         /* internal: Host value bytes seen, white space after them */
  bool in_query;                  /* internal: the URL reached '?' */
  uint8_t first_seen;             /* internal: Derp-Fast-Start, X-Tailscale-Challenge, Ideal-Node
                                     already seen (bits 1, 2, 4): Go's Header.Get reads the first */
  bool in_fragment;               /* internal: the URL reached '#'; rest is ignored */
};

enum http_feed_status {
  HTTP_FEED_MORE = 0,   /* need more bytes */
  HTTP_FEED_DONE = 1,   /* head complete: *used = bytes of the head in this input */
  HTTP_FEED_ERROR = -1, /* answer req->error_status (if not 0), then close */
};

void http_req_init(struct http_req *r);
/* Feed received bytes. Bytes after the head (the DERP stream of a fast-start
 * client) are not consumed: on DONE, input[*used..] belongs to the caller. */
enum http_feed_status http_req_feed(struct http_req *r, const uint8_t *p, size_t n, size_t *used);

enum http_action {
  HTTP_ACT_CLOSE = 0,        /* write reply, then close the connection */
  HTTP_ACT_DERP,             /* write reply (101, or nothing for fast start), then DERP */
  HTTP_ACT_WEBSOCKET,        /* write reply (101), then DERP inside WebSocket */
  HTTP_ACT_DEBUG,            /* a /debug/ path: the caller builds the body (http_reply_body) */
  HTTP_ACT_BOOTSTRAP_DNS,    /* /bootstrap-dns: the caller answers (operations/bootstrap_dns.c) */
};

enum http_debug_page { HTTP_DEBUG_NONE = 0, HTTP_DEBUG_INDEX, HTTP_DEBUG_VARZ, HTTP_DEBUG_VARS };

#define HTTP_REPLY_MAX 2048
struct http_reply {
  enum http_action action;
  enum http_debug_page debug_page;
  int status;
  size_t len;
  char buf[HTTP_REPLY_MAX];  /* the whole reply for non-debug routes */
};

/* -home (derper v1.82): what "/" and every path without a route of its own serve. */
enum http_home { HTTP_HOME_DEFAULT = 0, HTTP_HOME_BLANK, HTTP_HOME_REDIRECT };

/* The main port's settings, beside the request. */
struct http_site {
  const char *key_hex;       /* 64 lowercase hex of the server's public key */
  bool derp_disabled;        /* -derp=false: /derp answers 404 "derp server disabled" */
  enum http_home home;       /* -home */
  const char *home_url;      /* HTTP_HOME_REDIRECT: the http:// or https:// URL */
};

/* Route a complete request. debug_allowed: the peer may see /debug/ (and the
 * home page links it). */
void http_route(const struct http_req *r, const struct http_site *site, bool debug_allowed,
                struct http_reply *out);
/* Does this path get the home page (derper's "/" catch-all)? The caller
 * computes debug_allowed for it (the page links /debug/ for those allowed). */
bool http_path_is_home(const char *path);
/* The port-80 helper's routes (derpd serving TLS): /generate_204 and /debug/
 * as http_route, a redirect to https://fqdn[:https_port]/path for GET and
 * HEAD, 400 otherwise. Never the DERP upgrade. */
void http_route_port80(const struct http_req *r, const char *fqdn, uint16_t https_port,
                       bool debug_allowed, struct http_reply *out);
/* The reply to a request http_req_feed failed: Go's net/http error replies
 * ("HTTP/1.1 400 Bad Request: missing required Host header" ..., no
 * Content-Length, Connection: close), from req->error_status / error_text. */
void http_req_error_reply(const struct http_req *r, struct http_reply *out);
/* A plain error reply with this status (derpd's own: the metrics listener's 404). */
void http_error_reply(int status, struct http_reply *out);
/* Write the head of a reply with a body of body_len bytes to follow; returns the
 * head length, 0 if it does not fit. Always "Connection: close". extra: more
 * "Name: value\r\n" lines, or NULL. */
size_t http_reply_head(char *out, size_t cap, int status, const char *content_type, size_t body_len);
size_t http_reply_head_extra(char *out, size_t cap, int status, const char *content_type,
                             size_t body_len, const char *extra);
/* tsweb.AddBrowserHeaders: what derper adds to /, /robots.txt and /bootstrap-dns. */
extern const char http_browser_headers[];

/* A UTF-8 sequence at s (n bytes left) as Go's utf8.DecodeRune takes it:
 * its length and *rune, or 0 if invalid (overlong, surrogate, > U+10FFFF). */
size_t http_utf8_decode(const uint8_t *s, size_t n, uint32_t *rune);
/* Go's strconv.Quote of s[0..n) into out (cap bytes, NUL-terminated; cut short
 * with "..." before the closing quote if it does not fit); returns the length. */
size_t http_go_quote(char *out, size_t cap, const char *s, size_t n);

#endif
