/* test_websocket.c: the WebSocket frame codec (lib/wsframe.c) and the
 * handshake helpers (lib/wsaccept.c).
 *
 * Owns the decoder's contract: the same events for every split of the input
 * (every single split point, byte by byte, and every two split points of a
 * short stream), masks required on the server side and refused on the client
 * side, control frames (ping, pong, close and its codes), the bounds (16 MiB
 * data frames, 125-byte control payloads) and every protocol error with its
 * close code. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/wsaccept.h"
#include "lib/wsframe.h"

/* ---- building client frames ---- */

struct stream {
  uint8_t b[1 << 20];
  size_t n;
};

/* Append one frame with raw control over the first byte (FIN/RSV/opcode). */
static void put_frame_b0(struct stream *s, uint8_t b0, const void *payload, size_t len, bool masked) {
  static uint32_t seed = 12345;
  uint8_t key[4];
  for (int i = 0; i < 4; i++) key[i] = (uint8_t)((seed = seed * 1103515245 + 12345) >> 16);
  size_t h = ws_put_header(s->b + s->n, 0, true, len, masked ? key : NULL);
  s->b[s->n] = b0;
  s->n += h;
  if (len) memcpy(s->b + s->n, payload, len);
  if (masked) ws_mask(s->b + s->n, len, key, 0);
  s->n += len;
}

static void put_frame(struct stream *s, uint8_t op, bool fin, const void *payload, size_t len) {
  put_frame_b0(s, (uint8_t)((fin ? 0x80 : 0) | op), payload, len, true);
}

/* ---- collecting events ---- */

#define MAX_EVENTS 64
struct seen {
  uint8_t data[1 << 20];
  size_t ndata;
  int nev;
  struct {
    enum ws_event_type type;
    size_t at; /* data bytes before it */
    uint16_t code;
    uint8_t payload[WS_CTRL_MAX];
    size_t len;
  } ev[MAX_EVENTS];
};

static void feed(struct ws_decoder *d, uint8_t *p, size_t n, struct seen *s) {
  for (;;) {
    struct ws_event ev;
    enum ws_event_type t = ws_decode(d, &p, &n, &ev);
    if (t == WS_EV_MORE) {
      cr_assert_eq(n, 0, "MORE with input left");
      return;
    }
    if (t == WS_EV_DATA) {
      cr_assert_gt(ev.len, 0, "empty data event");
      memcpy(s->data + s->ndata, ev.data, ev.len);
      s->ndata += ev.len;
      continue;
    }
    cr_assert_lt(s->nev, MAX_EVENTS);
    s->ev[s->nev].type = t;
    s->ev[s->nev].at = s->ndata;
    s->ev[s->nev].code = ev.code;
    s->ev[s->nev].len = ev.len;
    if (ev.len) memcpy(s->ev[s->nev].payload, ev.data, ev.len);
    s->nev++;
  }
}

static void assert_same(const struct seen *a, const struct seen *b, const char *what) {
  cr_assert_eq(a->ndata, b->ndata, "%s: %zu data bytes, want %zu", what, a->ndata, b->ndata);
  cr_assert(memcmp(a->data, b->data, a->ndata) == 0, "%s: data differs", what);
  cr_assert_eq(a->nev, b->nev, "%s: %d events, want %d", what, a->nev, b->nev);
  for (int i = 0; i < a->nev; i++) {
    cr_assert_eq(a->ev[i].type, b->ev[i].type, "%s: event %d type", what, i);
    cr_assert_eq(a->ev[i].at, b->ev[i].at, "%s: event %d position", what, i);
    cr_assert_eq(a->ev[i].code, b->ev[i].code, "%s: event %d code", what, i);
    cr_assert_eq(a->ev[i].len, b->ev[i].len, "%s: event %d length", what, i);
    cr_assert(memcmp(a->ev[i].payload, b->ev[i].payload, a->ev[i].len) == 0, "%s: event %d payload",
              what, i);
  }
}

/* Decode s cut at the given points (sorted, npts of them). */
static void decode_split(const struct stream *s, const size_t *pts, int npts, struct seen *out) {
  static uint8_t copy[sizeof ((struct stream *)0)->b];
  memcpy(copy, s->b, s->n); /* decoding unmasks in place */
  out->ndata = 0;
  out->nev = 0;
  struct ws_decoder d;
  ws_decoder_init(&d, true);
  size_t from = 0;
  for (int i = 0; i <= npts; i++) {
    size_t to = i < npts ? pts[i] : s->n;
    feed(&d, copy + from, to - from, out);
    from = to;
  }
}

static struct seen want, got; /* big: keep off the stack */

static void pattern(uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7);
}

/* A stream with every feature that must survive splitting: a fragmented
 * message with a ping and a pong inside it, 7- and 16-bit lengths, empty
 * frames, and a close at the end. */
static void mixed_stream(struct stream *s, uint8_t *msg, size_t *msglen) {
  s->n = 0;
  size_t lens[] = {5, 0, 300, 1, 125, 126};
  size_t off = 0;
  pattern(msg, 600, 3);
  put_frame(s, WS_OP_BINARY, false, msg, lens[0]);
  off += lens[0];
  put_frame(s, WS_OP_PING, true, "hello", 5);
  put_frame(s, WS_OP_CONT, false, msg + off, lens[1]);
  put_frame(s, WS_OP_CONT, false, msg + off, lens[2]);
  off += lens[2];
  put_frame(s, WS_OP_PONG, true, "", 0);
  put_frame(s, WS_OP_CONT, true, msg + off, lens[3]);
  off += lens[3];
  put_frame(s, WS_OP_BINARY, true, msg + off, lens[4]);
  off += lens[4];
  put_frame(s, WS_OP_BINARY, true, "", 0);
  put_frame(s, WS_OP_BINARY, true, msg + off, lens[5]);
  off += lens[5];
  uint8_t close[] = {0x03, 0xe8, 'b', 'y', 'e'};
  put_frame(s, WS_OP_CLOSE, true, close, sizeof close);
  *msglen = off;
}

static struct stream st;

Test(ws_decode, whole_stream_events) {
  uint8_t msg[600];
  size_t ml;
  mixed_stream(&st, msg, &ml);
  decode_split(&st, NULL, 0, &want);
  cr_assert_eq(want.ndata, ml);
  cr_assert(memcmp(want.data, msg, ml) == 0, "message bytes differ");
  cr_assert_eq(want.nev, 3);
  cr_assert_eq(want.ev[0].type, WS_EV_PING);
  cr_assert_eq(want.ev[0].at, 5);
  cr_assert_eq(want.ev[0].len, 5);
  cr_assert(memcmp(want.ev[0].payload, "hello", 5) == 0);
  cr_assert_eq(want.ev[1].type, WS_EV_PONG);
  cr_assert_eq(want.ev[1].at, 305);
  cr_assert_eq(want.ev[2].type, WS_EV_CLOSE);
  cr_assert_eq(want.ev[2].code, 1000);
  cr_assert_eq(want.ev[2].len, 3);
  cr_assert(memcmp(want.ev[2].payload, "bye", 3) == 0);
}

Test(ws_decode, every_split_point) {
  uint8_t msg[600];
  size_t ml;
  mixed_stream(&st, msg, &ml);
  decode_split(&st, NULL, 0, &want);
  for (size_t i = 0; i <= st.n; i++) {
    char what[32];
    snprintf(what, sizeof what, "split at %zu", i);
    decode_split(&st, &i, 1, &got);
    assert_same(&got, &want, what);
  }
}

Test(ws_decode, byte_by_byte) {
  uint8_t msg[600];
  size_t ml;
  mixed_stream(&st, msg, &ml);
  decode_split(&st, NULL, 0, &want);
  size_t *pts = malloc(st.n * sizeof *pts);
  for (size_t i = 0; i < st.n; i++) pts[i] = i;
  decode_split(&st, pts, (int)st.n, &got);
  assert_same(&got, &want, "byte by byte");
  free(pts);
}

Test(ws_decode, every_two_split_points) {
  /* Short frames so all pairs stay cheap: headers, masks, control frames. */
  st.n = 0;
  uint8_t msg[200];
  pattern(msg, sizeof msg, 9);
  put_frame(&st, WS_OP_BINARY, false, msg, 3);
  put_frame(&st, WS_OP_PING, true, "pp", 2);
  put_frame(&st, WS_OP_CONT, true, msg + 3, 130);
  put_frame(&st, WS_OP_BINARY, true, msg + 133, 7);
  decode_split(&st, NULL, 0, &want);
  cr_assert_eq(want.ndata, 140);
  for (size_t i = 0; i <= st.n; i++)
    for (size_t j = i; j <= st.n; j++) {
      size_t pts[2] = {i, j};
      decode_split(&st, pts, 2, &got);
      assert_same(&got, &want, "two splits");
    }
}

Test(ws_decode, length_64bit_across_splits) {
  st.n = 0;
  static uint8_t msg[70000];
  pattern(msg, sizeof msg, 1);
  put_frame(&st, WS_OP_BINARY, true, msg, sizeof msg); /* 127 + 8-byte length */
  put_frame(&st, WS_OP_PING, true, "x", 1);
  decode_split(&st, NULL, 0, &want);
  cr_assert_eq(want.ndata, sizeof msg);
  cr_assert(memcmp(want.data, msg, sizeof msg) == 0);
  cr_assert_eq(want.nev, 1);
  /* Every split in the header, around mask-word boundaries, and at the end. */
  for (size_t i = 0; i <= st.n; i = i < 40 ? i + 1 : i < st.n - 40 ? i + 997 : i + 1) {
    decode_split(&st, &i, 1, &got);
    assert_same(&got, &want, "64-bit length split");
  }
}

/* ---- errors ---- */

/* Decode s whole; expect an error with code after data bytes of data. */
static void expect_error(struct stream *s, uint16_t code, size_t data, const char *what) {
  for (size_t split = 0; split <= s->n; split++) {
    decode_split(s, &split, 1, &got);
    cr_assert_eq(got.nev, 1, "%s: %d events", what, got.nev);
    cr_assert_eq(got.ev[0].type, WS_EV_ERROR, "%s: event %d", what, got.ev[0].type);
    cr_assert_eq(got.ev[0].code, code, "%s: code %u, want %u", what, got.ev[0].code, code);
    cr_assert_eq(got.ndata, data, "%s: %zu data bytes before the error", what, got.ndata);
  }
}

Test(ws_decode, unmasked_client_frame) {
  st.n = 0;
  put_frame_b0(&st, 0x82, "abcd", 4, false);
  expect_error(&st, WS_CLOSE_PROTOCOL, 0, "unmasked");
  /* After a good frame too; the good bytes are delivered first. */
  st.n = 0;
  put_frame(&st, WS_OP_BINARY, true, "ok", 2);
  put_frame_b0(&st, 0x82, "abcd", 4, false);
  expect_error(&st, WS_CLOSE_PROTOCOL, 2, "unmasked after good");
}

Test(ws_decode, client_side_refuses_masked) {
  st.n = 0;
  put_frame(&st, WS_OP_BINARY, true, "abc", 3);
  struct ws_decoder d;
  ws_decoder_init(&d, false);
  uint8_t *p = st.b;
  size_t n = st.n;
  struct ws_event ev;
  cr_assert_eq(ws_decode(&d, &p, &n, &ev), WS_EV_ERROR);
  cr_assert_eq(ev.code, WS_CLOSE_PROTOCOL);
  /* And reads unmasked ones. */
  uint8_t f[16];
  size_t h = ws_put_header(f, WS_OP_BINARY, true, 3, NULL);
  memcpy(f + h, "xyz", 3);
  ws_decoder_init(&d, false);
  p = f;
  n = h + 3;
  cr_assert_eq(ws_decode(&d, &p, &n, &ev), WS_EV_DATA);
  cr_assert_eq(ev.len, 3);
  cr_assert(memcmp(ev.data, "xyz", 3) == 0);
}

Test(ws_decode, text_frame_1003) {
  st.n = 0;
  put_frame(&st, WS_OP_TEXT, true, "hi", 2);
  expect_error(&st, WS_CLOSE_UNSUPPORTED, 0, "text");
}

Test(ws_decode, fragmented_control_frame) {
  st.n = 0;
  put_frame(&st, WS_OP_PING, false, "a", 1);
  expect_error(&st, WS_CLOSE_PROTOCOL, 0, "fragmented ping");
  st.n = 0;
  put_frame(&st, WS_OP_CLOSE, false, "", 0);
  expect_error(&st, WS_CLOSE_PROTOCOL, 0, "fragmented close");
}

Test(ws_decode, control_payload_over_125) {
  uint8_t big[126] = {0};
  st.n = 0;
  put_frame(&st, WS_OP_PING, true, big, 126);
  expect_error(&st, WS_CLOSE_PROTOCOL, 0, "126-byte ping");
  st.n = 0;
  put_frame(&st, WS_OP_PING, true, big, 125);
  decode_split(&st, NULL, 0, &got);
  cr_assert_eq(got.nev, 1);
  cr_assert_eq(got.ev[0].type, WS_EV_PING);
  cr_assert_eq(got.ev[0].len, 125);
}

Test(ws_decode, oversize_data_frame_1009) {
  /* Only the header is needed: the length alone decides. */
  st.n = 0;
  uint8_t h[WS_HDR_MAX], key[4] = {1, 2, 3, 4};
  size_t n = ws_put_header(h, WS_OP_BINARY, true, (uint64_t)WS_DATA_FRAME_MAX + 1, key);
  memcpy(st.b, h, n);
  st.n = n;
  expect_error(&st, WS_CLOSE_TOO_BIG, 0, "16 MiB + 1");
  /* Exactly 16 MiB is accepted: the decoder waits for its payload. */
  n = ws_put_header(h, WS_OP_BINARY, true, WS_DATA_FRAME_MAX, key);
  memcpy(st.b, h, n);
  st.n = n;
  decode_split(&st, NULL, 0, &got);
  cr_assert_eq(got.nev, 0);
  /* A continuation is bounded the same way. */
  st.n = 0;
  put_frame(&st, WS_OP_BINARY, false, "a", 1);
  n = ws_put_header(h, WS_OP_CONT, true, (uint64_t)1 << 40, key);
  memcpy(st.b + st.n, h, n);
  st.n += n;
  expect_error(&st, WS_CLOSE_TOO_BIG, 1, "continuation of 1 TiB");
}

Test(ws_decode, protocol_errors_1002) {
  struct { uint8_t b0; bool first_binary; const char *what; } cases[] = {
      {0xC2, false, "RSV1 (compression not negotiated)"},
      {0xA2, false, "RSV2"},
      {0x92, false, "RSV3"},
      {0x83, false, "reserved data opcode"},
      {0x8B, false, "reserved control opcode"},
      {0x80, false, "continuation without a message"},
      {0x82, true, "binary inside a fragmented message"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    st.n = 0;
    if (cases[i].first_binary) put_frame(&st, WS_OP_BINARY, false, "ab", 2);
    put_frame_b0(&st, cases[i].b0, "xyz", 3, true);
    expect_error(&st, WS_CLOSE_PROTOCOL, cases[i].first_binary ? 2 : 0, cases[i].what);
  }
  /* 64-bit length with the top bit set. */
  uint8_t f[WS_HDR_MAX] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9};
  memcpy(st.b, f, sizeof f);
  st.n = sizeof f;
  expect_error(&st, WS_CLOSE_PROTOCOL, 0, "top length bit");
}

Test(ws_decode, close_codes) {
  struct { uint8_t p[2]; size_t len; enum ws_event_type t; uint16_t code; } cases[] = {
      {{0, 0}, 0, WS_EV_CLOSE, WS_CLOSE_NO_STATUS},
      {{0x03, 0xe8}, 2, WS_EV_CLOSE, 1000},
      {{0x03, 0xe9}, 2, WS_EV_CLOSE, 1001},
      {{0x0f, 0xa0}, 2, WS_EV_CLOSE, 4000},
      {{0x03}, 1, WS_EV_ERROR, WS_CLOSE_PROTOCOL},
      {{0x03, 0xed}, 2, WS_EV_ERROR, WS_CLOSE_PROTOCOL}, /* 1005 must not be sent */
      {{0x03, 0xe7}, 2, WS_EV_ERROR, WS_CLOSE_PROTOCOL}, /* 999 */
      {{0x13, 0x88}, 2, WS_EV_ERROR, WS_CLOSE_PROTOCOL}, /* 5000 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    st.n = 0;
    put_frame(&st, WS_OP_CLOSE, true, cases[i].p, cases[i].len);
    decode_split(&st, NULL, 0, &got);
    cr_assert_eq(got.nev, 1, "case %zu", i);
    cr_assert_eq(got.ev[0].type, cases[i].t, "case %zu: type %d", i, got.ev[0].type);
    cr_assert_eq(got.ev[0].code, cases[i].code, "case %zu: code %u", i, got.ev[0].code);
  }
}

Test(ws_decode, nothing_after_close) {
  st.n = 0;
  put_frame(&st, WS_OP_CLOSE, true, "\x03\xe8", 2);
  put_frame(&st, WS_OP_BINARY, true, "late", 4);
  put_frame_b0(&st, 0x82, "bad", 3, false);
  decode_split(&st, NULL, 0, &got);
  cr_assert_eq(got.nev, 1);
  cr_assert_eq(got.ev[0].type, WS_EV_CLOSE);
  cr_assert_eq(got.ndata, 0);
}

/* ---- encoder, mask, accept ---- */

Test(ws_encode, header_sizes_round_trip) {
  uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, 300000};
  static uint8_t buf[300100];
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    size_t h = ws_put_header(buf, WS_OP_BINARY, true, lens[i], NULL);
    size_t want_h = lens[i] < 126 ? 2 : lens[i] <= 65535 ? 4 : 10;
    cr_assert_eq(h, want_h, "len %llu: header %zu", (unsigned long long)lens[i], h);
    pattern(buf + h, (size_t)lens[i], 5);
    struct ws_decoder d;
    ws_decoder_init(&d, false);
    uint8_t *p = buf;
    size_t n = h + (size_t)lens[i], total = 0;
    struct ws_event ev;
    enum ws_event_type t;
    while ((t = ws_decode(&d, &p, &n, &ev)) == WS_EV_DATA) total += ev.len;
    cr_assert_eq(t, WS_EV_MORE);
    cr_assert_eq(total, lens[i]);
  }
  uint8_t key[4] = {9, 8, 7, 6};
  cr_assert_eq(ws_put_header(buf, WS_OP_PONG, true, 5, key), 6);
  cr_assert_eq(buf[0], 0x8A);
  cr_assert_eq(buf[1], 0x85);
  cr_assert(memcmp(buf + 2, key, 4) == 0);
}

Test(ws_encode, mask_matches_bytewise_at_every_offset) {
  uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
  for (unsigned pos = 0; pos < 4; pos++)
    for (size_t n = 0; n < 40; n++) {
      uint8_t a[40], b[40];
      pattern(a, n, (uint8_t)n);
      memcpy(b, a, n);
      ws_mask(a, n, key, pos);
      for (size_t i = 0; i < n; i++) b[i] ^= key[(pos + i) & 3];
      cr_assert(memcmp(a, b, n) == 0, "pos %u n %zu", pos, n);
    }
}

Test(ws_accept, sha1_vectors_and_rfc_sample) {
  uint8_t d[20];
  char hex[41];
  struct { const char *in; const char *out; } v[] = {
      {"", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
      {"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    derp_sha1((const uint8_t *)v[i].in, strlen(v[i].in), d);
    for (int j = 0; j < 20; j++) snprintf(hex + 2 * j, 3, "%02x", d[j]);
    cr_assert_str_eq(hex, v[i].out, "sha1(\"%s\")", v[i].in);
  }
  char acc[DERP_WS_ACCEPT_LEN + 1];
  derp_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", acc); /* RFC 6455 §1.3 */
  cr_assert_str_eq(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  char b64[16];
  derp_base64((const uint8_t *)"fo", 2, b64);
  cr_assert_str_eq(b64, "Zm8=");
  derp_base64((const uint8_t *)"f", 1, b64);
  cr_assert_str_eq(b64, "Zg==");
}
