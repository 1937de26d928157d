/* upgrade.c: the handshake, on the shard that accepted the connection.
 *
 * HTTP request head (http.c) -> route: a plain reply and close, or the DERP
 * upgrade: 101 (unless fast start) and ServerKey -> ClientInfo opened with the
 * server key -> admission -> ServerInfo queued -> the conn moves to the shard
 * that owns its key, with ServerInfo still queued and any bytes that arrived
 * behind ClientInfo carried along, so nothing is lost and the owner registers
 * the client before ServerInfo goes out (as derper does).
 * Owns struct hs_state; frees it when the conn is established. Bounds: the
 * request head (HTTP_MAX_HEAD), ClientInfo (DERP_MAX_CLIENT_INFO) plus one
 * receive buffer of trailing bytes, and the handshake deadline (conn.c).
 *
 * Admission (admission/) may answer later: the conn then waits in
 * CS_CLIENT_INFO, still reading (bytes behind ClientInfo are kept, an EOF
 * closes it), with the box key kept to seal ServerInfo once admitted; nothing
 * is queued after ServerKey until the verdict.
 *
 * WebSocket (`Upgrade: websocket`, subprotocol derp) is the same handshake
 * one layer down: the 101 goes out as is, then the conn is in WebSocket mode
 * (websocket.c) and everything from ServerKey on, both ways, is inside
 * binary frames. Fast start does not apply. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "server/admission/admission.h"
#include "server/protocol/http.h"
#include "server/log.h"
#include "server/operations/debug_http.h"
#include "server/region/region.h"
#include "server/server.h"
#include "server/protocol/upgrade.h"
#include "server/transport/websocket.h"

struct hs_state {
  struct http_req req;
  uint8_t *buf;        /* ClientInfo and whatever follows it */
  uint32_t len, cap;
  struct adm_job *adm; /* an admission check outstanding */
  derp_box_key k;      /* meanwhile: seals ServerInfo once admitted */
};

struct hs_state *upgrade_new(void) {
  struct hs_state *hs = calloc(1, sizeof *hs);
  if (hs) http_req_init(&hs->req);
  return hs;
}

void upgrade_free(struct conn *c) {
  if (!c->hs) return;
  if (c->hs->adm) admission_abandon(c->sh, c->hs->adm);
  sodium_memzero(&c->hs->k, sizeof c->hs->k);
  free(c->hs->buf);
  free(c->hs);
  c->hs = NULL;
}

const char *upgrade_detail(const struct conn *c) {
  if (ws_conn_detail(c)) return ws_conn_detail(c);
  return c->hs && c->hs->req.error_reason ? c->hs->req.error_reason : NULL;
}

void upgrade_set_detail(struct conn *c, const char *static_text) {
  if (!c->hs) c->hs = upgrade_new(); /* a TLS failure before any request: kept for the close's log */
  if (c->hs) c->hs->req.error_reason = static_text;
}

static bool queue_bytes(struct conn *c, const void *p, size_t n) { return conn_queue_copy(c, p, n, false); }

static bool hs_append(struct conn *c, const uint8_t *p, size_t n) {
  struct hs_state *hs = c->hs;
  size_t limit = DERP_FRAME_HDR_LEN + DERP_MAX_CLIENT_INFO + c->sh->buf_size;
  if (n == 0) return true;
  if (hs->len + n > limit) return false;
  if (hs->len + n > hs->cap) {
    size_t cap = hs->cap ? hs->cap * 2 : 512;
    while (cap < hs->len + n) cap *= 2;
    if (cap > limit) cap = limit;
    uint8_t *b = realloc(hs->buf, cap);
    if (!b) return false;
    hs->buf = b;
    hs->cap = (uint32_t)cap;
  }
  memcpy(hs->buf + hs->len, p, n);
  hs->len += (uint32_t)n;
  return true;
}

static int queue_server_info(struct conn *c, const derp_box_key *k) {
  struct shard *sh = c->sh;
  struct pkt *m = pkt_alloc(sh, DERP_FRAME_HDR_LEN + DERP_SERVER_INFO_SEAL_MAX);
  if (!m) return -1;
  struct derp_server_info si = {.version = DERP_PROTOCOL_VERSION};
  size_t n = derp_server_info_seal_k(m->data + DERP_FRAME_HDR_LEN, m->cap - DERP_FRAME_HDR_LEN, k, &si);
  if (n == 0) { pkt_free(sh, m); return -1; }
  derp_frame_put_header(m->data, DERP_FRAME_SERVER_INFO, (uint32_t)n);
  m->len = (uint32_t)(DERP_FRAME_HDR_LEN + n);
  conn_queue_ctrl_once(c, m); /* refused only when the conn is ending anyway */
  return 0;
}

/* Admitted: seal ServerInfo with k (then wiped), queue it, and move. */
static int admitted(struct conn *c, derp_box_key *k) {
  c->state = CS_MOVING;
  int qr = queue_server_info(c, k);
  sodium_memzero(k, sizeof *k);
  if (qr < 0) {
    conn_close(c, CLOSE_nomem, "ServerInfo");
    return -1;
  }
  shard_mark_dirty(c->sh, c); /* the move runs from the flush pass */
  return 0;
}

/* Wait for the whole ClientInfo frame, open it, ask admission, and get ready
 * to move (now, or when the verdict comes). */
static int client_info_step(struct conn *c) {
  struct hs_state *hs = c->hs;
  struct server *s = c->sh->srv;
  if (hs->adm) return 0; /* ClientInfo done, verdict outstanding: bytes wait in buf */
  if (hs->len < DERP_FRAME_HDR_LEN) return 0;
  uint8_t type = hs->buf[0];
  uint32_t flen = derp_get_be32(hs->buf + 1);
  char d[96];
  if (type != DERP_FRAME_CLIENT_INFO) {
    snprintf(d, sizeof d, "expected ClientInfo, got %s", derp_frame_type_name(type));
    conn_close(c, CLOSE_bad_first_frame, d);
    return -1;
  }
  if (flen < DERP_MIN_CLIENT_INFO || flen > DERP_MAX_CLIENT_INFO) {
    snprintf(d, sizeof d, "ClientInfo length %u", flen);
    conn_close(c, CLOSE_bad_client_info, d);
    return -1;
  }
  if (hs->len < DERP_FRAME_HDR_LEN + flen) return 0;
  struct derp_client_info ci;
  derp_box_key k; /* one X25519 serves both boxes of the handshake */
  const char *why = "?";
  if (derp_client_info_open_k(hs->buf + DERP_FRAME_HDR_LEN, flen, &s->priv, &c->key, &ci, &k,
                              &why) != 0) {
    sodium_memzero(&k, sizeof k);
    conn_close(c, CLOSE_bad_client_info, why);
    return -1;
  }
  c->key_hash = key_hash(s, &c->key);
  c->is_mesh = ci.has_mesh_key && region_is_mesh_key(s->region, ci.mesh_key);
  /* -tcp-user-timeout (15 s) would have the kernel cut a mesh peer that
   * stops reading before its 30 s write timeout does; let ours decide (the
   * kernel's clock starts when the window closes, ours when the send
   * buffer is full, so the backstop is well behind). */
  int ut = 2 * MESH_WRITE_TIMEOUT_MS;
  if (c->is_mesh && s->cfg.tcp_user_timeout_ms > 0 && s->cfg.tcp_user_timeout_ms < ut)
    setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
  c->is_prober = ci.is_prober;
  c->not_ideal = hs->req.ideal_node;
  uint32_t used = DERP_FRAME_HDR_LEN + flen;
  memmove(hs->buf, hs->buf + used, hs->len - used);
  hs->len -= used;
  char detail[160];
  switch (admission_begin(c, &hs->adm, detail, sizeof detail)) {
  case ADM_PASS: break;
  case ADM_WAIT:
    hs->k = k; /* the verdict comes back through upgrade_admission_done */
    sodium_memzero(&k, sizeof k);
    return 0;
  case ADM_REFUSE:
    sodium_memzero(&k, sizeof k);
    conn_close(c, CLOSE_admission, detail);
    return -1;
  }
  return admitted(c, &k);
}

void upgrade_admission_done(struct conn *c, bool admit, const char *detail) {
  struct hs_state *hs = c->hs;
  hs->adm = NULL;
  if (c->state != CS_CLIENT_INFO) return; /* closing already: nothing to decide */
  if (!admit) {
    conn_close(c, CLOSE_admission, detail);
    return;
  }
  conn_cancel_hs_recv(c); /* the move waits for no read (single-shot, cancelled) */
  admitted(c, &hs->k);
}

void upgrade_admission_expired(struct conn *c) {
  c->hs->adm = NULL;
  if (c->state == CS_CLIENT_INFO)
    conn_close(c, CLOSE_handshake_timeout, "the admission check outlived the handshake deadline");
}

static int start_derp(struct conn *c, const struct http_reply *r) {
  struct server *s = c->sh->srv;
  STAT_INC(&c->sh->stats, accepts); /* derper's Accept: every DERP upgrade, before its handshake */
  uint8_t sk[DERP_FRAME_HDR_LEN + DERP_SERVER_KEY_PAYLOAD_LEN];
  size_t n = derp_enc_server_key(sk, sizeof sk, &s->pub);
  if ((r->len && !queue_bytes(c, r->buf, r->len)) || !queue_bytes(c, sk, n)) {
    conn_close(c, CLOSE_nomem, "handshake");
    return -1;
  }
  c->state = CS_CLIENT_INFO;
  return client_info_step(c);
}

static int http_done(struct conn *c, const uint8_t *rest, size_t nrest) {
  struct shard *sh = c->sh;
  struct http_reply r;
  debug_route(c, &c->hs->req, &r); /* operations/: /debug/ access, the listener's routes */
  STAT_INC(&sh->stats, http_requests);
  if (c->tls_ver) { /* derper counts each request on its TLS port, and those being served */
    stat_add_slot(&sh->stats.v[STAT_TLS_REQ(c->tls_ver)], 1);
    stat_add_slot(&sh->stats.v[STAT_TLS_ACTIVE(c->tls_ver)], 1);
    c->tls_active = 1;
  }
  switch (r.action) {
  case HTTP_ACT_DERP:
    if (!hs_append(c, rest, nrest)) {
      conn_close(c, CLOSE_nomem, "handshake buffer");
      return -1;
    }
    return start_derp(c, &r);
  case HTTP_ACT_DEBUG:
    debug_reply(c, &c->hs->req, &r);
    return 0;
  case HTTP_ACT_BOOTSTRAP_DNS:
    bootstrap_dns_reply(c, &c->hs->req);
    return 0;
  case HTTP_ACT_WEBSOCKET:
    if (ws_conn_start(c, r.buf, r.len) < 0) {
      conn_close(c, CLOSE_nomem, "websocket");
      return -1;
    }
    r.len = 0; /* the 101 is queued */
    if (start_derp(c, &r) < 0) return -1;
    return conn_input(c, rest, nrest); /* WebSocket frames: through the decoder */
  case HTTP_ACT_CLOSE:
    break;
  }
  if (!queue_bytes(c, r.buf, r.len)) { conn_close(c, CLOSE_nomem, "reply"); return -1; }
  c->close_after_send = 1;
  return 0;
}

int upgrade_input(struct conn *c, const uint8_t *p, size_t n) {
  if (c->state == CS_HTTP && !c->hs && !c->close_after_send && !(c->hs = upgrade_new())) {
    conn_close(c, CLOSE_nomem, "handshake state");
    return -1;
  }
  struct hs_state *hs = c->hs;
  if (c->state == CS_HTTP) {
    if (c->close_after_send) return 0; /* reply pending: ignore what follows */
    size_t used = 0;
    enum http_feed_status st = http_req_feed(&hs->req, p, n, &used);
    if (st == HTTP_FEED_MORE) return 0;
    if (st == HTTP_FEED_ERROR) {
      if (hs->req.error_status == 0) {
        conn_close(c, CLOSE_http_bad, hs->req.error_reason);
        return -1;
      }
      struct http_reply r;
      http_req_error_reply(&hs->req, &r);
      if (!queue_bytes(c, r.buf, r.len)) { conn_close(c, CLOSE_nomem, "reply"); return -1; }
      c->close_reason = CLOSE_http_bad; /* applied when the reply is out */
      c->close_after_send = 1;
      return 0;
    }
    return http_done(c, p + used, n - used);
  }
  /* CS_MOVING: no reads are armed, but one WebSocket read can hold more
   * frames behind the one that finished ClientInfo, and a read can complete
   * before the cancel that an admission verdict sent: they are carried too.
   * CS_CLIENT_INFO with a verdict outstanding: kept the same way. */
  if (!hs_append(c, p, n)) {
    conn_close(c, CLOSE_bad_client_info, "too many bytes before ClientInfo completed");
    return -1;
  }
  return c->state == CS_CLIENT_INFO ? client_info_step(c) : 0;
}

void upgrade_move(struct conn *c) {
  struct shard *sh = c->sh;
  int owner = owner_of(sh->srv, c->key_hash);
  if (owner == sh->id) {
    if (list_linked(&c->dl_node)) list_del(&c->dl_node);
    conn_establish(c);
    return;
  }
  if (list_linked(&c->ka_node)) list_del(&c->ka_node); /* was waiting */
  if (!shard_push_hand(sh, owner, c)) {
    /* The ring to the owner is full: wait here and try again next turn, in
     * place in the deadline FIFO, so the handshake deadline still closes a
     * conn that waits too long. */
    list_add_tail(&sh->handoff_pending, &c->ka_node);
    STAT_INC(&sh->stats, handoff_waits);
    return;
  }
  /* Staged, not yet visible: the owner sees it when this turn publishes, so
   * detaching after the push is safe. */
  conn_detach(c);
}

void upgrade_retry_handoffs(struct shard *sh) {
  if (list_empty(&sh->handoff_pending)) return;
  struct list todo;
  list_take(&todo, &sh->handoff_pending); /* a conn that fails again waits for the next turn */
  while (!list_empty(&todo)) {
    struct conn *c = list_entry(todo.next, struct conn, ka_node);
    list_del(&c->ka_node);
    upgrade_move(c);
  }
}

void upgrade_finish(struct conn *c) {
  struct hs_state *hs = c->hs;
  /* Past any WebSocket framing already: these are DERP stream bytes. */
  if (hs && hs->len > 0) conn_stream_input(c, hs->buf, hs->len);
  upgrade_free(c);
}
