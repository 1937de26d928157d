/* http_test.h: what test_http_parse.c and test_http_route.c share: a
 * server key, a site, and helpers that parse a whole head and route it. */
#ifndef DERPD_TESTS_HTTP_TEST_H
#define DERPD_TESTS_HTTP_TEST_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/protocol/http.h"

static const char KEY[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* Feed s in one go; expect DONE having consumed exactly the head. */
static inline void parse_ok(struct http_req *r, const char *s) {
  size_t used = 0, n = strlen(s);
  http_req_init(r);
  enum http_feed_status st = http_req_feed(r, (const uint8_t *)s, n, &used);
  cr_assert_eq(st, HTTP_FEED_DONE, "status %d for %s (err %d)", st, s, r->error_status);
  cr_assert_eq(used, n);
}

static inline int parse_err(const char *s, size_t n) {
  struct http_req r;
  size_t used;
  http_req_init(&r);
  cr_assert_eq(http_req_feed(&r, (const uint8_t *)s, n, &used), HTTP_FEED_ERROR, "input %s", s);
  return r.error_status;
}

static const struct http_site SITE = {.key_hex = KEY};

/* Route a request for a site and return the reply (as a NUL-terminated string in out). */
static inline void route_site(const char *s, const struct http_site *site, bool debug, struct http_reply *out) {
  struct http_req r;
  parse_ok(&r, s);
  http_route(&r, site, debug, out);
  cr_assert(out->len < sizeof out->buf);
  out->buf[out->len] = 0;
}

static inline void route(const char *s, bool debug, struct http_reply *out) { route_site(s, &SITE, debug, out); }

static inline bool has(const struct http_reply *o, const char *needle) {
  return strstr(o->buf, needle) != NULL;
}

static inline const char *body_of(const struct http_reply *o) {
  const char *e = strstr(o->buf, "\r\n\r\n");
  cr_assert(e);
  return e + 4;
}

#endif
