/* transport_plain.c: plain TCP. Wire bytes are plaintext DERP (or HTTP), and
 * frames go out as they are: the send batch's iovecs point straight at the
 * packet buffers, so relayed bytes are copied once (recv buffer -> packet). */
#include "server/server.h"

static int plain_recv(struct conn *c, const uint8_t *p, size_t n) { return conn_input(c, p, n); }
static int plain_wrap(struct conn *c, struct send_ctx *ctx) { (void)c; (void)ctx; return 0; }
static void plain_destroy(struct conn *c) { (void)c; }

const struct transport transport_plain = {
    .name = "plain",
    .mode = XP_PLAIN,
    .recv = plain_recv,
    .wrap = plain_wrap,
    .destroy = plain_destroy,
};
