/* transport_plain.c: plain TCP. Wire bytes are plaintext DERP (or HTTP), and
 * frames go out as they are: the send batch's iovecs point straight at the
 * packet buffers, so relayed bytes are copied once (recv buffer -> packet). */
#include "server/server.h"

/* No hooks: recv and wrap default to "bytes as they are" (conn.c). */
const struct transport transport_plain = {
    .name = "plain",
    .mode = XP_PLAIN,
};
