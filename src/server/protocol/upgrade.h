/* upgrade.h: from accepted socket to registered DERP client (see upgrade.c). */
#ifndef DERPD_UPGRADE_H
#define DERPD_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct hs_state;

struct hs_state *upgrade_new(void);
void upgrade_free(struct conn *c);
/* Bytes while the conn is in CS_HTTP or CS_CLIENT_INFO. */
int upgrade_input(struct conn *c, const uint8_t *p, size_t n);
/* CS_MOVING with no op in flight: establish here or hand off to the owner. */
void upgrade_move(struct conn *c);
/* On the owner: feed bytes that came behind ClientInfo, free handshake state. */
void upgrade_finish(struct conn *c);
/* The admission verdict for a conn waiting in CS_CLIENT_INFO (admission/):
 * admit moves it on, else it is closed (admission_denied) with detail. */
void upgrade_admission_done(struct conn *c, bool admit, const char *detail);
/* A failed check that ended past the conn's handshake deadline: no verdict;
 * closed as the deadline closes it (handshake_timeout). */
void upgrade_admission_expired(struct conn *c);
/* Static detail for the pending close of a failed HTTP request, or NULL. */
const char *upgrade_detail(const struct conn *c);
/* Set that detail (static text) for a close that waits for a reply or alert. */
void upgrade_set_detail(struct conn *c, const char *static_text);

#endif
