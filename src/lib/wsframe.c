/* wsframe.c: WebSocket frame decoder and header encoder (see wsframe.h).
 *
 * The decoder is a small state machine fed arbitrary splits of the stream:
 * header bytes are gathered in d->hdr until the header's length is known and
 * complete, then payload is either handed out in place (data frames) or
 * gathered in d->ctl (control frames, at most 125 bytes). Every check that
 * the first two header bytes allow is made as soon as they are in, so a bad
 * frame fails at the same point whatever the split. */
#include "lib/wsframe.h"

#include <string.h>

void ws_decoder_init(struct ws_decoder *d, bool masked) {
  memset(d, 0, sizeof *d);
  d->masked = masked;
}

void ws_mask(uint8_t *p, size_t n, const uint8_t key[4], unsigned pos) {
  unsigned k = pos & 3;
  size_t i = 0;
  for (; i < n && k; i++, k = (k + 1) & 3) p[i] ^= key[k];
  if (n - i >= 8) {
    uint8_t k8[8] = {key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]};
    uint64_t kw;
    memcpy(&kw, k8, 8);
    for (; n - i >= 8; i += 8) {
      uint64_t v;
      memcpy(&v, p + i, 8);
      v ^= kw;
      memcpy(p + i, &v, 8);
    }
  }
  for (; i < n; i++, k = (k + 1) & 3) p[i] ^= key[k];
}

bool ws_close_code_valid(uint16_t code) {
  if (code >= 1000 && code <= 1003) return true;
  if (code >= 1007 && code <= 1014) return true;
  return code >= 3000 && code <= 4999;
}

size_t ws_put_header(uint8_t out[WS_HDR_MAX], uint8_t opcode, bool fin, uint64_t len,
                     const uint8_t *mask_key) {
  uint8_t mbit = mask_key ? 0x80 : 0;
  size_t n;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
  if (len < 126) {
    out[1] = (uint8_t)(mbit | len);
    n = 2;
  } else if (len <= 0xffff) {
    out[1] = mbit | 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    out[1] = mbit | 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    n = 10;
  }
  if (mask_key) {
    memcpy(out + n, mask_key, 4);
    n += 4;
  }
  return n;
}

static enum ws_event_type fail(struct ws_decoder *d, struct ws_event *ev, uint16_t code,
                               const char *why) {
  d->done = true;
  ev->type = WS_EV_ERROR;
  ev->code = code;
  ev->why = why;
  return WS_EV_ERROR;
}

/* Header length once the first two bytes are known. */
static size_t header_len(const uint8_t *h) {
  size_t n = 2;
  uint8_t l7 = h[1] & 0x7f;
  if (l7 == 126) n += 2;
  else if (l7 == 127) n += 8;
  if (h[1] & 0x80) n += 4;
  return n;
}

/* What the first two bytes alone can prove wrong; NULL if nothing. */
static const char *check_start(const struct ws_decoder *d, uint16_t *code) {
  uint8_t b0 = d->hdr[0], b1 = d->hdr[1], op = b0 & 0x0f;
  bool fin = b0 & 0x80;
  *code = WS_CLOSE_PROTOCOL;
  if (b0 & 0x70) return "reserved bits set (no extension was negotiated)";
  if (op != WS_OP_CONT && op != WS_OP_TEXT && op != WS_OP_BINARY && op != WS_OP_CLOSE &&
      op != WS_OP_PING && op != WS_OP_PONG)
    return "unknown opcode";
  if (!(b1 & 0x80) != !d->masked) return d->masked ? "unmasked client frame" : "masked server frame";
  if (op & 0x08) {
    if (!fin) return "fragmented control frame";
    if ((b1 & 0x7f) > WS_CTRL_MAX) return "control frame over 125 bytes";
    return NULL;
  }
  if (op == WS_OP_TEXT) {
    *code = WS_CLOSE_UNSUPPORTED;
    return "text frame (DERP is binary)";
  }
  if (op == WS_OP_CONT && !d->in_message) return "continuation frame outside a message";
  if (op == WS_OP_BINARY && d->in_message) return "new message inside a fragmented one";
  return NULL;
}

/* The header is complete: take its length and key, start the payload. */
static enum ws_event_type start_payload(struct ws_decoder *d, struct ws_event *ev) {
  const uint8_t *h = d->hdr;
  uint8_t l7 = h[1] & 0x7f;
  size_t pos = 2;
  uint64_t len = l7;
  if (l7 == 126) {
    len = (uint64_t)h[2] << 8 | h[3];
    pos = 4;
  } else if (l7 == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
    pos = 10;
    if (len >> 63) return fail(d, ev, WS_CLOSE_PROTOCOL, "frame length with the top bit set");
  }
  d->op = h[0] & 0x0f;
  d->fin = h[0] & 0x80;
  if (!(d->op & 0x08)) {
    if (len > WS_DATA_FRAME_MAX) return fail(d, ev, WS_CLOSE_TOO_BIG, "data frame over 16 MiB");
    d->in_message = !d->fin;
  }
  if (h[1] & 0x80) memcpy(d->key, h + pos, 4);
  d->left = len;
  d->kpos = 0;
  d->ctl_len = 0;
  d->hlen = 0;
  d->in_payload = true;
  return WS_EV_MORE;
}

/* A whole control frame is in d->ctl. */
static enum ws_event_type control_event(struct ws_decoder *d, struct ws_event *ev) {
  ev->data = d->ctl;
  ev->len = d->ctl_len;
  if (d->op == WS_OP_PING) return ev->type = WS_EV_PING;
  if (d->op == WS_OP_PONG) return ev->type = WS_EV_PONG;
  /* Close. */
  if (d->ctl_len == 1) return fail(d, ev, WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
  ev->code = WS_CLOSE_NO_STATUS;
  if (d->ctl_len >= 2) {
    ev->code = (uint16_t)(d->ctl[0] << 8 | d->ctl[1]);
    if (!ws_close_code_valid(ev->code)) return fail(d, ev, WS_CLOSE_PROTOCOL, "invalid close code");
    ev->data = d->ctl + 2;
    ev->len = d->ctl_len - 2u;
  }
  d->done = true;
  return ev->type = WS_EV_CLOSE;
}

enum ws_event_type ws_decode(struct ws_decoder *d, uint8_t **in, size_t *inlen,
                             struct ws_event *ev) {
  memset(ev, 0, sizeof *ev);
  for (;;) {
    if (d->done) { /* closed or failed: nothing after that means anything */
      *in += *inlen;
      *inlen = 0;
      return WS_EV_MORE;
    }
    if (!d->in_payload) {
      while (d->hlen < 2 || d->hlen < header_len(d->hdr)) {
        if (*inlen == 0) return WS_EV_MORE;
        d->hdr[d->hlen++] = **in;
        (*in)++;
        (*inlen)--;
        uint16_t code;
        const char *why;
        if (d->hlen == 2 && (why = check_start(d, &code))) return fail(d, ev, code, why);
      }
      if (start_payload(d, ev) == WS_EV_ERROR) return WS_EV_ERROR;
    }
    size_t take = d->left < *inlen ? (size_t)d->left : *inlen;
    uint8_t *p = *in;
    if (d->masked) ws_mask(p, take, d->key, d->kpos);
    d->kpos = (uint8_t)((d->kpos + take) & 3);
    d->left -= take;
    *in += take;
    *inlen -= take;
    if (d->op & 0x08) {
      memcpy(d->ctl + d->ctl_len, p, take);
      d->ctl_len = (uint8_t)(d->ctl_len + take);
      if (d->left) return WS_EV_MORE; /* all input used */
      d->in_payload = false;
      return control_event(d, ev);
    }
    if (d->left == 0) d->in_payload = false;
    if (take == 0) {
      if (d->in_payload) return WS_EV_MORE; /* no input left */
      continue;                             /* an empty data frame */
    }
    ev->type = WS_EV_DATA;
    ev->data = p;
    ev->len = take;
    return WS_EV_DATA;
  }
}
