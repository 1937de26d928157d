/* conn_internal.h: what conn.c and conn_send.c, the two halves of a
 * connection, share and nobody else calls. Owning shard only. */
#ifndef DERPD_CONN_INTERNAL_H
#define DERPD_CONN_INTERNAL_H

#include <stdbool.h>

#include "server/operations/metrics.h"

struct conn;

/* conn.c: free a closed conn with no op in flight (ops == 0). */
void conn_destroy(struct conn *c);
/* conn_send.c: give the send in flight back; count_drops: its frames were
 * not written (the conn is going). */
void conn_release_send(struct conn *c, bool count_drops);
/* conn_send.c: the reason a conn with close_after_send ends with, whatever
 * ends it (its last words sent, or the peer gone first): the one given to
 * conn_close_after_send, else http_done (an HTTP reply's). */
enum close_reason conn_last_words_reason(const struct conn *c);

#endif
