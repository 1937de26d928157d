/* conn_internal.h: what conn.c and conn_send.c, the two halves of a
 * connection, share and nobody else calls. Owning shard only. */
#ifndef DERPD_CONN_INTERNAL_H
#define DERPD_CONN_INTERNAL_H

#include <stdbool.h>

struct conn;

/* conn.c: free a closed conn with no op in flight (ops == 0). */
void conn_destroy(struct conn *c);
/* conn_send.c: give the send in flight back; count_drops: its frames were
 * not written (the conn is going). */
void conn_release_send(struct conn *c, bool count_drops);

#endif
