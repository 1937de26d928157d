/* transport_ktls.c: a TLS conn whose record keys are in the kernel.
 *
 * The switch itself happens in transport_tls.c (it owns the SSL); once both
 * directions are in the kernel the SSL is freed and the conn runs here: like
 * plain TCP, bytes read are plaintext DERP (or HTTP) and frames go out as they
 * are (the kernel seals them), so a relayed packet is copied once, as on
 * plain TCP, and an idle conn holds no TLS state at all (xp_state is NULL).
 *
 * What the kernel hands back: a plain recv returns application data only; a
 * record of any other type fails it with EIO (Documentation/networking/
 * tls.rst), so the recv_error hook reads that one record with a control
 * message (ktls_recv_record) and acts on ktls_classify's verdict:
 *  - close_notify: answer with ours, close cleanly (eof; counted in
 *    derpd_ktls_close_notify);
 *  - KeyUpdate (TLS 1.3): derpd does not re-key (the new secret would have
 *    to be kept per conn, and kernels before 6.14 cannot take a new RX key
 *    at all): close_notify, close as ktls_key_update;
 *  - any other fatal alert: close as tls_alert, the alert in the log;
 *  - NewSessionTicket, HelloRequest, warnings: ignored, read on, but only
 *    KTLS_IGNORED_MAX per connection (then closed as tls_error);
 *  - anything else: close as tls_error.
 * EBADMSG (a record failed authentication) and EMSGSIZE (record too big)
 * close as tls_error. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server/transport/ktls.h"
#include "server/server.h"

/* One record's plaintext (TLS caps it at 16 KiB); used within one call. */
static _Thread_local uint8_t rec_buf[16384];

static const char *alert_name(uint8_t d) {
  switch (d) {
  case 10: return "unexpected_message";
  case 20: return "bad_record_mac";
  case 22: return "record_overflow";
  case 40: return "handshake_failure";
  case 42: return "bad_certificate";
  case 43: return "unsupported_certificate";
  case 44: return "certificate_revoked";
  case 45: return "certificate_expired";
  case 46: return "certificate_unknown";
  case 47: return "illegal_parameter";
  case 48: return "unknown_ca";
  case 50: return "decode_error";
  case 51: return "decrypt_error";
  case 70: return "protocol_version";
  case 80: return "internal_error";
  case 90: return "user_canceled";
  case 109: return "missing_extension";
  case 112: return "unrecognized_name";
  }
  return "alert";
}

int ktls_recv_error(struct conn *c, int res, uint16_t version, bool tx_kernel) {
  if (res == -EBADMSG) {
    conn_close(c, CLOSE_tls, "kTLS: a record failed authentication");
    return 1;
  }
  if (res == -EMSGSIZE) {
    conn_close(c, CLOSE_tls, "kTLS: record too big");
    return 1;
  }
  if (res != -EIO) return 0;
  uint8_t type = 0;
  long n = ktls_recv_record(c->fd, rec_buf, sizeof rec_buf, &type);
  if (n == -EAGAIN || n == -EWOULDBLOCK) return 1; /* nothing held back after all */
  if (n < 0) {
    conn_close(c, n == -EBADMSG ? CLOSE_tls : CLOSE_read_error, strerror((int)-n));
    return 1;
  }
  if (n == 0) {
    conn_close(c, CLOSE_eof, NULL);
    return 1;
  }
  struct ktls_verdict v;
  char d[96];
  switch (ktls_classify(type, rec_buf, (size_t)n, version, &v)) {
  case KTLS_ACT_DATA:
    conn_input(c, rec_buf, (size_t)n); /* closes the conn itself if it must */
    return 1;
  case KTLS_ACT_IGNORE:
    if (!ktls_may_ignore(c->ktls_ignored)) {
      snprintf(d, sizeof d, "kTLS: more than %d records with no data (last: %s)", KTLS_IGNORED_MAX,
               v.why);
      conn_close(c, CLOSE_tls, d);
      return 1;
    }
    c->ktls_ignored++;
    return 1;
  case KTLS_ACT_CLOSE:
    STAT_INC(&c->sh->stats, ktls_close_notify);
    /* Ours back once what is queued before it is out (the transport's
     * goodbye), then the close; a reply queued already goes first. */
    if (!c->close_after_send) conn_close_after_send(c, CLOSE_eof);
    return 1;
  case KTLS_ACT_KEY_UPDATE:
    /* Our TX keys are still the peer's RX keys until we update them, so a
     * close_notify under them is still read. */
    if (tx_kernel) ktls_send_alert(c->fd, 1, 0);
    conn_close(c, CLOSE_ktls_key_update, "peer sent KeyUpdate; derpd does not re-key under kTLS");
    return 1;
  case KTLS_ACT_ALERT:
    snprintf(d, sizeof d, "%s alert %s (%u)", v.alert_level == 2 ? "fatal" : "warning",
             alert_name(v.alert_desc), v.alert_desc);
    conn_close(c, CLOSE_tls_alert, d);
    return 1;
  case KTLS_ACT_ERROR:
    snprintf(d, sizeof d, "kTLS: %s (record type %u)", v.why, type);
    conn_close(c, CLOSE_tls, d);
    return 1;
  }
  return 0;
}

/* ---- the transport, once both keys are in the kernel --------------------- */

struct ktls_transport {
  struct transport xp; /* first: c->xp points here */
  uint16_t version;    /* TLS_1_2_VERSION / TLS_1_3_VERSION, for ktls_classify */
};

static int k_recv_error(struct conn *c, int res) {
  const struct ktls_transport *k = (const struct ktls_transport *)c->xp;
  return ktls_recv_error(c, res, k->version, true);
}

/* close_notify through the kernel: a small control record on a socket with
 * no send in flight (best effort: a full socket buffer loses it). */
static int k_goodbye(struct conn *c) {
  ktls_send_alert(c->fd, 1, 0);
  return 0;
}

#define KTLS_TRANSPORT(v)                                                              \
  {{.name = "ktls", .mode = XP_KTLS, .recv_error = k_recv_error, .goodbye = k_goodbye}, \
   (v)} /* recv, wrap: as they are */
static const struct ktls_transport ktls12 = KTLS_TRANSPORT(TLS_1_2_VERSION);
static const struct ktls_transport ktls13 = KTLS_TRANSPORT(TLS_1_3_VERSION);

const struct transport *transport_ktls(uint16_t version) {
  return version == TLS_1_3_VERSION ? &ktls13.xp : &ktls12.xp;
}
