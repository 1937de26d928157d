/* transport_tls.c: TLS 1.2/1.3 in userspace (BoringSSL) over io_uring I/O.
 *
 * The SSL object never touches the socket: its one BIO (both directions) is
 * ours. Reads take ciphertext straight from the receive buffer the shard got
 * from the kernel (no copy into a memory BIO; BoringSSL copies what it needs
 * into its own record buffer, which it frees when empty); writes append
 * records to a per-conn output buffer. So:
 *
 *  - recv: point the BIO at the received bytes, drive the handshake, then
 *    SSL_read until the BIO is empty, passing plaintext to conn_input. Records
 *    made along the way (handshake flights, alerts, KeyUpdate answers) are
 *    queued as wire pkts (conn_queue_wire), ahead of anything not yet wrapped.
 *  - wrap: SSL_write the batch's frames, coalesced into full 16 KiB records,
 *    and hand the output buffer to the send; it is freed when the send ends
 *    (sent), so an idle conn holds no buffer at all.
 *
 * Per conn: struct tls_conn plus BoringSSL's SSL object (handshake config shed
 * once done, buffers released when empty: a few KiB when idle). All of it is
 * heap owned by the conn, with no thread affinity: it moves with the conn to
 * the owner shard. The bytes after ClientInfo in one receive are unwrapped
 * before the move and ride along as plaintext (upgrade.c).
 *
 * kTLS (srv->ktls): the switch happens here, in two steps (rules in ktls.h,
 * ktls_rx_step / ktls_tx_step):
 *  1. RX, in the receive completion that finished the handshake. Handshake
 *     reads are single-shot, so no read is in flight and every byte not yet
 *     read is still in the socket. Everything the SSL already holds has been
 *     decrypted by then (the SSL_read loop runs until the BIO is empty, an
 *     HTTP request sent right behind Finished included); if part of a record
 *     is left in the SSL, those bytes left the socket and the conn stays in
 *     userspace TLS (fallback). Otherwise TCP_ULP "tls" and TLS_RX go in, and
 *     the conn takes transport_tls_krx: reads are plaintext from then on.
 *  2. TX, as soon as no userspace-sealed record is queued or in flight: at
 *     once if the wire queue is empty and no send runs (TLS 1.3, usually),
 *     else at the next wrap (TLS 1.2: the server's Finished is still queued
 *     when the handshake ends). A wrap only ever sees a batch of plaintext
 *     frames with no send in flight and no wire pkt ahead of it (conn_flush),
 *     so the first wrap after step 1 always installs; rec_seq is taken then
 *     from SSL_get_write_sequence. Until then nothing is sealed at all: no
 *     wrap ran, and with RX in the kernel the SSL makes no records of its own.
 *     Then the SSL and this state are freed and the conn runs on
 *     transport_ktls (transport_ktls.c).
 * A refused TCP_ULP or RX key leaves the socket as it was: fallback to
 * userspace TLS (--ktls=require: close). A refused TX key, with RX already in
 * the kernel: close (ktls_error), as the conn cannot go back. */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "server/transport/ktls.h"
#include "server/log.h"
#include "server/server.h"
#include "server/transport/tls.h"
#include "server/protocol/upgrade.h"

#define TLS_RECORD_MAX 16384
/* The largest send batch: conn_flush adds frames while the batch is under
 * SEND_BYTES_MAX, so it can pass it by one frame, at most a RecvPacket of the
 * largest packet. */
#define BATCH_MAX (SEND_BYTES_MAX + DERP_FRAME_HDR_LEN + DERP_KEY_LEN + DERP_MAX_PACKET)
/* Output of one wrap: the largest send batch plus record overhead (up to 64
 * bytes per record covers every suite BoringSSL offers). */
#define OUT_MAX (BATCH_MAX + (BATCH_MAX / TLS_RECORD_MAX + SEND_IOV_MAX + 1) * 64)
#define WIRE_PKT_MAX 65536

struct tls_conn {
  SSL *ssl;
  int fd;                  /* the conn's socket (the handshake's local address) */
  struct tls_ref *ctx_ref; /* ssl's SSL_CTX use count (tls.c); NULL if adopted */
  const uint8_t *in;       /* ciphertext not yet read by SSL (during recv only) */
  size_t in_len;
  uint8_t *out;            /* records SSL wrote, not yet queued or sent */
  size_t out_len, out_cap;
  uint8_t *wire;           /* records of the wrapped send in flight */
  bool done;               /* handshake complete */
  bool failed;             /* fatal error: the alert is on its way, then close */
  bool ktls_tried;         /* the RX switch was decided (installed or not) */
  uint8_t head_n;          /* stream bytes judged so far (2: done), the first in byte0 */
  uint8_t byte0;
  uint16_t ktls_version;   /* with TLS_RX in the kernel: TLS_1_x_VERSION */
};

static const struct transport transport_tls_krx;
static int ktls_switch_rx(struct conn *c, struct tls_conn *t);

static BIO_METHOD *bio_method; /* set once at start, read-only after */

/* Shard-thread scratch: decrypted records, and plaintext gathered into full
 * records before SSL_write. Both are used only within one call. */
static _Thread_local uint8_t plain_buf[TLS_RECORD_MAX];
static _Thread_local uint8_t stage_buf[TLS_RECORD_MAX];

static int reserve(struct tls_conn *t, size_t more) {
  size_t need = t->out_len + more;
  if (need <= t->out_cap) return 0;
  if (need > OUT_MAX) return -1;
  size_t cap = t->out_cap ? t->out_cap * 2 : 4096;
  while (cap < need) cap *= 2;
  if (cap > OUT_MAX) cap = OUT_MAX;
  uint8_t *b = realloc(t->out, cap);
  if (!b) return -1;
  t->out = b;
  t->out_cap = cap;
  return 0;
}

static void out_free(struct tls_conn *t) {
  free(t->out);
  t->out = NULL;
  t->out_len = t->out_cap = 0;
}

/* ---- the BIO ------------------------------------------------------------- */

static int bio_write(BIO *b, const char *p, int n) {
  struct tls_conn *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (n <= 0) return 0;
  if (reserve(t, (size_t)n) < 0) return -1;
  memcpy(t->out + t->out_len, p, (size_t)n);
  t->out_len += (size_t)n;
  return n;
}

static int bio_read(BIO *b, char *p, int n) {
  struct tls_conn *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (n <= 0) return 0;
  if (t->in_len == 0) {
    BIO_set_retry_read(b); /* SSL_ERROR_WANT_READ: wait for the next recv */
    return -1;
  }
  size_t k = t->in_len < (size_t)n ? t->in_len : (size_t)n;
  memcpy(p, t->in, k);
  t->in += k;
  t->in_len -= k;
  return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int transport_tls_init(void) {
  if (bio_method) return 0;
  bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "derpd conn");
  if (!bio_method) return -1;
  BIO_meth_set_write(bio_method, bio_write);
  BIO_meth_set_read(bio_method, bio_read);
  BIO_meth_set_ctrl(bio_method, bio_ctrl);
  return 0;
}

/* Puts ssl on c behind derpd's BIO (one BIO both ways: ssl takes the one
 * reference; any BIO ssl had is freed, its fd left open). Takes ssl in any
 * case: NULL (then nothing is made) or freed on failure. */
static struct tls_conn *wrap_ssl(struct conn *c, SSL *ssl) {
  struct tls_conn *t = ssl ? calloc(1, sizeof *t) : NULL;
  BIO *bio = t ? BIO_new(bio_method) : NULL;
  if (!bio) {
    SSL_free(ssl);
    free(t);
    ERR_clear_error();
    return NULL;
  }
  BIO_set_data(bio, t);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl, bio, bio);
  t->ssl = ssl;
  t->fd = c->fd;
  c->xp = &transport_tls;
  c->xp_state = t;
  return t;
}

int transport_tls_fd(const struct ssl_st *ssl) {
  BIO *b = SSL_get_rbio(ssl);
  const struct tls_conn *t = b ? BIO_get_data(b) : NULL;
  return t ? t->fd : -1;
}

int transport_tls_attach(struct conn *c) {
  struct tls_ref *ref;
  SSL *ssl = tls_new_ssl(&ref);
  struct tls_conn *t = wrap_ssl(c, ssl);
  if (!t) {
    tls_put(ref); /* after wrap_ssl freed ssl */
    return -1;
  }
  t->ctx_ref = ref;
  SSL_set_accept_state(ssl);
  SSL_set_shed_handshake_config(ssl, 1); /* drop certs/config refs once done */
  return 0;
}

int transport_tls_adopt(struct conn *c, SSL *ssl) {
  struct tls_conn *t = wrap_ssl(c, ssl);
  if (!t) return -1;
  t->done = true;
  t->ktls_tried = true; /* links stay in userspace TLS */
  return 0;
}

/* ---- receive ------------------------------------------------------------- */

/* Queue what SSL wrote as wire pkts. 0, or -1 after closing the conn. */
static int flush_out(struct conn *c, struct tls_conn *t) {
  for (size_t off = 0; off < t->out_len;) {
    size_t k = t->out_len - off < WIRE_PKT_MAX ? t->out_len - off : WIRE_PKT_MAX;
    struct pkt *p = pkt_alloc(c->sh, (uint32_t)k);
    if (!p) {
      out_free(t);
      conn_close(c, CLOSE_nomem, "TLS output");
      return -1;
    }
    memcpy(p->data, t->out + off, k);
    if (!conn_queue_wire(c, p)) {
      out_free(t);
      conn_close(c, CLOSE_tls, "TLS output not drained");
      return -1;
    }
    off += k;
  }
  out_free(t);
  return 0;
}

/* A fatal TLS error. During the TLS handshake and the HTTP request the alert
 * BoringSSL wrote (or, for plain HTTP sent to the TLS port, a 400 as Go's
 * servers answer) goes out before the close; from the DERP handshake on the
 * conn just closes: an admitted conn would otherwise move to its owner shard
 * and register there before its alert was out. */
static int fail(struct conn *c, struct tls_conn *t, const char *what) {
  uint32_t e = ERR_peek_error();
  const char *why = tls_take_reject_reason();
  if (!why) why = e ? ERR_reason_error_string(e) : what;
  bool http = ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST;
  ERR_clear_error();
  t->failed = true;
  if (c->state == CS_HTTP) { /* an accepted conn before any request */
    if (http) {
      static const char msg[] = "HTTP/1.0 400 Bad Request\r\n\r\n"
                                "Client sent an HTTP request to an HTTPS server.\n";
      t->out_len = 0;
      if (reserve(t, sizeof msg - 1) == 0) {
        memcpy(t->out, msg, sizeof msg - 1);
        t->out_len = sizeof msg - 1;
      }
    }
    if (t->out_len > 0) {
      if (flush_out(c, t) < 0) return -1;
      upgrade_set_detail(c, why);
      conn_close_after_send(c, CLOSE_tls);
      return 0;
    }
  }
  out_free(t);
  conn_close(c, CLOSE_tls, why);
  return -1;
}

/* As Go's server: a first record with TLS's major version that is neither a
 * handshake nor an alert is no TLS client. BoringSSL would wait for the
 * whole record its header declares, so garbage such as `45 03 01 10 00`
 * held the conn until the handshake timeout; derper closes it at once.
 * (Plain HTTP, an SSLv2 hello and other versions fail in BoringSSL at once.) */
static bool first_record_plausible(struct tls_conn *t, const uint8_t *p, size_t n) {
  if (t->head_n == 2 || t->done) return true;
  for (size_t i = 0; i < n && t->head_n < 2; i++) /* the stream's first two bytes, whatever the inputs */
    if (t->head_n++ == 0) t->byte0 = p[i];
    else return p[i] != 3 || t->byte0 == 21 || t->byte0 == 22;
  return true;
}

static int tls_recv(struct conn *c, const uint8_t *p, size_t n) {
  struct tls_conn *t = c->xp_state;
  if (t->failed) return 0; /* the alert is on its way; ignore the rest */
  if (!first_record_plausible(t, p, n)) {
    t->failed = true;
    out_free(t);
    conn_close(c, CLOSE_tls, "first record does not look like a TLS handshake");
    return -1;
  }
  t->in = p;
  t->in_len = n;
  int rc = 0;
  while (c->state != CS_CLOSING) {
    if (!t->done) {
      int r = SSL_do_handshake(t->ssl);
      if (r == 1) {
        t->done = true;
        c->tls_ver = SSL_version(t->ssl) == TLS1_3_VERSION ? 3 : 2; /* 1.2 at least */
        STAT_INC(&c->sh->stats, tls_handshakes);
        continue;
      }
      if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ) break;
      rc = fail(c, t, "handshake failed");
      break;
    }
    int r = SSL_read(t->ssl, plain_buf, sizeof plain_buf);
    if (r > 0) {
      /* Records SSL wrote before this plaintext go first. */
      if (t->out_len && flush_out(c, t) < 0) { rc = -1; break; }
      if (conn_input(c, plain_buf, (size_t)r) < 0) { rc = -1; break; }
      continue;
    }
    int err = SSL_get_error(t->ssl, r);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_ZERO_RETURN) { /* close_notify */
      ERR_clear_error();
      /* Behind a request in the same read: its reply goes out first (the
       * conn closes once it is written), as Go's server answers. Either way
       * our close_notify answers the peer's (tls_goodbye), then the close. */
      if (!c->close_after_send) conn_close_after_send(c, CLOSE_eof);
      break;
    }
    rc = fail(c, t, "read failed");
    break;
  }
  t->in = NULL;
  t->in_len = 0;
  if (c->state == CS_CLOSING) {
    out_free(t);
    return -1;
  }
  if (t->out_len && flush_out(c, t) < 0) return -1;
  if (rc == 0 && t->done && !t->failed && !t->ktls_tried && c->sh->srv->ktls) {
    t->ktls_tried = true;
    return ktls_switch_rx(c, t); /* the last use of t here: it may be freed */
  }
  return rc;
}

/* ---- send ---------------------------------------------------------------- */

static int write_all(struct tls_conn *t, const uint8_t *p, size_t n) {
  return SSL_write(t->ssl, p, (int)n) == (int)n ? 0 : -1;
}

static int tls_wrap(struct conn *c, struct send_ctx *x) {
  struct tls_conn *t = c->xp_state;
  /* Plaintext before the handshake ended (a shutdown notice, say) or after a
   * failure has nowhere to go. */
  if (!t->done || t->failed || t->wire) return -1;
  size_t total = 0;
  for (int i = x->first; i < x->niov; i++) total += x->iov[i].iov_len;
  if (reserve(t, total + (total / TLS_RECORD_MAX + 2) * 64) < 0) return -1;
  size_t staged = 0;
  for (int i = x->first; i < x->niov; i++) {
    const uint8_t *p = x->iov[i].iov_base;
    size_t n = x->iov[i].iov_len;
    while (n > 0) {
      size_t k = TLS_RECORD_MAX - staged < n ? TLS_RECORD_MAX - staged : n;
      memcpy(stage_buf + staged, p, k);
      staged += k;
      p += k;
      n -= k;
      if (staged == TLS_RECORD_MAX) {
        if (write_all(t, stage_buf, staged) < 0) goto fail;
        staged = 0;
      }
    }
  }
  if (staged && write_all(t, stage_buf, staged) < 0) goto fail;
  t->wire = t->out;
  x->iov[0].iov_base = t->wire;
  x->iov[0].iov_len = t->out_len;
  x->niov = 1;
  x->first = 0;
  t->out = NULL;
  t->out_len = t->out_cap = 0;
  return 1;
fail:
  ERR_clear_error();
  out_free(t);
  return -1;
}

/* close_notify, once the handshake is done and nothing failed. */
static int tls_goodbye(struct conn *c) {
  struct tls_conn *t = c->xp_state;
  if (!t || !t->done || t->failed || t->wire) return 0;
  SSL_shutdown(t->ssl); /* writes the alert to our BIO; reading its answer is not awaited */
  ERR_clear_error();
  if (!t->out_len) return 0;
  return flush_out(c, t) == 0 ? 1 : -1;
}

static void tls_sent(struct conn *c) {
  struct tls_conn *t = c->xp_state;
  free(t->wire);
  t->wire = NULL;
}

static void tls_destroy(struct conn *c) {
  struct tls_conn *t = c->xp_state;
  if (!t) return;
  SSL_free(t->ssl); /* and the BIO */
  tls_put(t->ctx_ref);
  free(t->out);
  free(t->wire);
  free(t);
  c->xp_state = NULL;
}

const struct transport transport_tls = {
    .name = "tls",
    .mode = XP_TLS,
    .recv = tls_recv,
    .wrap = tls_wrap,
    .sent = tls_sent,
    .destroy = tls_destroy,
    .goodbye = tls_goodbye,
};

/* ---- the switch to kTLS -------------------------------------------------- */

static void ktls_log(struct conn *c, const char *what, const char *detail) {
  if (log_get_level() < LOG_DEBUG || !shard_log_allowed(c->sh)) return;
  char addr[64];
  conn_addr_str(c, addr, sizeof addr);
  log_msg(LOG_DEBUG, "shard %d: conn %llu %s: %s%s%s", c->sh->id, (unsigned long long)c->id, addr,
          what, detail ? ": " : "", detail ? detail : "");
}

/* The conn stays in userspace TLS. 0, or -1 after closing it (require). */
static int ktls_fallback(struct conn *c, const char *why) {
  STAT_INC(&c->sh->stats, ktls_fallbacks);
  if (c->sh->srv->cfg.ktls_mode == KTLS_REQUIRE) {
    char d[200];
    snprintf(d, sizeof d, "--ktls=require, but %s", why);
    conn_close(c, CLOSE_ktls, d);
    return -1;
  }
  ktls_log(c, "userspace TLS", why);
  return 0;
}

/* The kernel refused the TX key with RX already in the kernel: the records
 * it reads are gone from userspace's view, so the conn cannot go back.
 * Always -1. */
static int ktls_fail(struct conn *c, const char *what, int err) {
  char d[160];
  snprintf(d, sizeof d, "%s: %s", what, strerror(err));
  STAT_INC(&c->sh->stats, ktls_failures);
  conn_close(c, CLOSE_ktls, d);
  return -1;
}

/* Step 2. x: the send batch being built (c->send == x, not yet submitted),
 * or NULL. 1 = switched: TX is in the kernel, the SSL and t are freed and
 * c->xp is transport_ktls; 0 = not yet; -1 = the conn was closed. */
static int ktls_switch_tx(struct conn *c, struct tls_conn *t, const struct send_ctx *x) {
  struct ktls_switch_in in = {
      .handshake_done = t->done,
      .rx_installed = c->xp == &transport_tls_krx,
      .wire_queued = c->ctrl_h && c->ctrl_h->wire,
      .send_in_flight = c->send && c->send != x,
      .ssl_out_pending = t->out_len > 0 || t->wire,
  };
  if (ktls_tx_step(&in) != KTLS_STEP_INSTALL) return 0;
  union ktls_info tx;
  char why[128];
  if (ktls_crypto_info(t->ssl, KTLS_TX, &tx, why, sizeof why) < 0) {
    /* Not expected: RX of the same suite just worked. */
    STAT_INC(&c->sh->stats, ktls_failures);
    conn_close(c, CLOSE_ktls, why);
    return -1;
  }
  uint16_t suite = tx.info.cipher_type;
  int r = ktls_set_key(c->fd, KTLS_TX, &tx);
  ktls_info_wipe(&tx);
  if (r < 0) {
    ktls_note_refusal(t->ktls_version, suite, -r); /* the next conns of this suite stay in userspace */
    return ktls_fail(c, "TLS_TX", -r);
  }
  char detail[96];
  const SSL_CIPHER *cipher = SSL_get_current_cipher(t->ssl);
  snprintf(detail, sizeof detail, "%s %s", SSL_get_version(t->ssl),
           cipher ? SSL_CIPHER_standard_name(cipher) : "?");
  uint16_t version = t->ktls_version;
  tls_destroy(c); /* the SSL (and its secrets), buffers, t; xp_state = NULL */
  c->xp = transport_ktls(version);
  STAT_INC(&c->sh->stats, ktls_installs);
  ktls_log(c, "kTLS on", detail);
  return 1;
}

/* Step 1, at the end of the receive that finished the handshake. 0, or -1
 * after closing the conn. */
static int ktls_switch_rx(struct conn *c, struct tls_conn *t) {
  struct ktls_switch_in in = {
      .handshake_done = t->done,
      .recv_in_flight = false, /* single-shot handshake read: this was it */
      .rx_partial = t->in_len > 0 || SSL_has_pending(t->ssl),
  };
  switch (ktls_rx_step(&in)) {
  case KTLS_STEP_WAIT: return 0;
  case KTLS_STEP_FALLBACK: return ktls_fallback(c, "part of a record was already read in userspace");
  case KTLS_STEP_INSTALL: break;
  }
  union ktls_info rx, tx;
  char why[128];
  /* Both directions must be possible before anything changes on the socket
   * (an unsupported version or suite: stay in userspace). */
  if (ktls_crypto_info(t->ssl, KTLS_RX, &rx, why, sizeof why) < 0) return ktls_fallback(c, why);
  int tx_ok = ktls_crypto_info(t->ssl, KTLS_TX, &tx, why, sizeof why);
  ktls_info_wipe(&tx);
  if (tx_ok < 0) {
    ktls_info_wipe(&rx);
    return ktls_fallback(c, why);
  }
  if (ktls_suite_refused(rx.info.version, rx.info.cipher_type)) {
    ktls_info_wipe(&rx);
    return ktls_fallback(c, "the kernel refused this suite's key before (its crypto is missing)");
  }
  int r = ktls_set_ulp(c->fd);
  if (r < 0) {
    ktls_info_wipe(&rx);
    snprintf(why, sizeof why, "TCP_ULP \"tls\" refused: %s", strerror(-r));
    return ktls_fallback(c, why);
  }
  t->ktls_version = rx.info.version;
  uint16_t suite = rx.info.cipher_type;
  r = ktls_set_key(c->fd, KTLS_RX, &rx);
  ktls_info_wipe(&rx);
  if (r < 0) {
    ktls_note_refusal(t->ktls_version, suite, -r);
    /* A refused key leaves the socket as it was: the kernel frees what it
     * set up and keeps the ULP's pass-through (net/tls/tls_main.c,
     * do_tls_setsockopt_conf), so userspace TLS goes on. ENOENT here means
     * the kernel could not load the suite's crypto (e.g. no chacha20poly1305
     * module); seen on Debian's 6.1 kernel without modprobe. */
    STAT_INC(&c->sh->stats, ktls_failures);
    snprintf(why, sizeof why, "TLS_RX refused: %s", strerror(-r));
    return ktls_fallback(c, why);
  }
  c->xp = &transport_tls_krx;
  return ktls_switch_tx(c, t, NULL) < 0 ? -1 : 0;
}

/* transport_tls_krx: TLS_RX in the kernel, TX still sealed here until the
 * first wrap (step 2). Reads are plaintext. */
static int krx_wrap(struct conn *c, struct send_ctx *x) {
  struct tls_conn *t = c->xp_state;
  int r = ktls_switch_tx(c, t, x);
  if (r < 0) return -1;
  if (r > 0) return 0; /* the kernel seals this batch */
  return tls_wrap(c, x); /* not reached (see the head of this file); still correct */
}

static int krx_recv_error(struct conn *c, int res) {
  struct tls_conn *t = c->xp_state;
  return ktls_recv_error(c, res, t->ktls_version, false);
}

static const struct transport transport_tls_krx = {
    .name = "ktls",
    .mode = XP_KTLS,
    /* .recv: plaintext from the kernel, as it is */
    .wrap = krx_wrap,
    .sent = tls_sent,
    .destroy = tls_destroy,
    .recv_error = krx_recv_error,
    .goodbye = tls_goodbye, /* TX is still SSL's */
};
