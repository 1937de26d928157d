/* http_internal.h: what the three parts of the HTTP module share (parser,
 * replies, router); nothing outside src/server/protocol/http_*.c includes it. */
#ifndef DERPD_HTTP_INTERNAL_H
#define DERPD_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/protocol/http.h"

#define TEXT_PLAIN "text/plain; charset=utf-8"
#define TEXT_HTML "text/html; charset=utf-8"
#define NOSNIFF "X-Content-Type-Options: nosniff\r\n"

/* Bounded appender: once anything fails to fit, the result is unusable. */
struct sbuf { char *p; size_t cap, len; bool over; };

void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A whole non-upgrade reply; HEAD gets the same head without the body. */
void http_reply_whole(struct http_reply *out, bool head_only, int status, const char *ctype,
                      const char *extra, const char *body);
/* Go's http.Error: plain text, nosniff, the message and a newline. */
void http_reply_go_error(struct http_reply *out, bool head_only, int status, const char *extra,
                         const char *msg);

/* One of the UTF-8 forms of Go's unicode.IsSpace beyond ASCII; n is 2 or 3. */
bool http_utf8_is_space(const uint8_t *b, size_t n);

#endif
