/* test_frame.c: the frame codec: encoders, limits, and the incremental reader
 * (splits at every byte, skipping, rejection before buffering, zero copy). */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "derp/frame.h"

#define MAXF 16

struct got {
  int n;
  uint8_t type[MAXF];
  uint32_t len[MAXF];
  uint8_t *data[MAXF];
};

static void got_free(struct got *g) {
  for (int i = 0; i < g->n; i++) free(g->data[i]);
  g->n = 0;
}

/* Feed one chunk, collecting every frame; returns the last status. */
static enum derp_read_status feed(struct derp_frame_reader *r, const uint8_t *p, size_t n,
                                  struct got *g) {
  struct derp_frame f;
  enum derp_read_status st;
  while ((st = derp_frame_read(r, &p, &n, &f)) == DERP_READ_FRAME) {
    cr_assert_lt(g->n, MAXF);
    cr_assert_not_null(f.payload);
    g->type[g->n] = f.type;
    g->len[g->n] = f.len;
    g->data[g->n] = malloc(f.len + 1);
    memcpy(g->data[g->n], f.payload, f.len);
    g->n++;
  }
  if (st == DERP_READ_MORE) cr_assert_eq(n, 0, "MORE must mean the input was consumed");
  return st;
}

static derp_key key_of(uint8_t v) {
  derp_key k;
  memset(k.b, v, sizeof k.b);
  return k;
}

/* A stream of client-sent frames, with an unknown type in the middle. */
static size_t client_stream(uint8_t *buf, size_t cap) {
  derp_key a = key_of(0xAA);
  uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  size_t n = 0;
  n += derp_enc_send_packet(buf + n, cap - n, &a, "hello", 5);
  n += derp_enc_ping(buf + n, cap - n, DERP_FRAME_PING, ping);
  derp_frame_put_header(buf + n, 0x42, 3); /* unknown: skipped */
  memcpy(buf + n + 5, "xyz", 3);
  n += 8;
  n += derp_enc_note_preferred(buf + n, cap - n, true);
  n += derp_enc_watch_conns(buf + n, cap - n);
  n += derp_enc_close_peer(buf + n, cap - n, &a);
  n += derp_enc_send_packet(buf + n, cap - n, &a, NULL, 0);
  return n;
}

static void check_client_stream(const struct got *g) {
  cr_assert_eq(g->n, 6);
  cr_assert_eq(g->type[0], DERP_FRAME_SEND_PACKET);
  cr_assert_eq(g->len[0], 37);
  cr_assert_eq(memcmp(g->data[0] + 32, "hello", 5), 0);
  cr_assert_eq(g->data[0][0], 0xAA);
  cr_assert_eq(g->type[1], DERP_FRAME_PING);
  cr_assert_eq(g->data[1][7], 8);
  cr_assert_eq(g->type[2], DERP_FRAME_NOTE_PREFERRED);
  cr_assert_eq(g->data[2][0], 1);
  cr_assert_eq(g->type[3], DERP_FRAME_WATCH_CONNS);
  cr_assert_eq(g->len[3], 0);
  cr_assert_eq(g->type[4], DERP_FRAME_CLOSE_PEER);
  cr_assert_eq(g->len[4], 32);
  cr_assert_eq(g->type[5], DERP_FRAME_SEND_PACKET);
  cr_assert_eq(g->len[5], 32);
}

Test(reader, whole_stream) {
  uint8_t buf[512];
  size_t n = client_stream(buf, sizeof buf);
  struct derp_frame_reader r;
  struct got g = {0};
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  cr_assert_eq(feed(&r, buf, n, &g), DERP_READ_MORE);
  check_client_stream(&g);
  cr_assert_eq(r.skipped_frames, 1);
  cr_assert_not(derp_frame_reader_busy(&r));
  got_free(&g);
  derp_frame_reader_reset(&r);
}

Test(reader, split_at_every_byte) {
  uint8_t buf[512];
  size_t n = client_stream(buf, sizeof buf);
  for (size_t i = 0; i <= n; i++) {
    for (size_t j = i; j <= n; j++) {
      struct derp_frame_reader r;
      struct got g = {0};
      derp_frame_reader_init(&r, DERP_FROM_CLIENT);
      /* Copies so a reader that kept pointers into old input would be caught by ASan. */
      uint8_t *c1 = malloc(i + 1), *c2 = malloc(j - i + 1), *c3 = malloc(n - j + 1);
      memcpy(c1, buf, i);
      memcpy(c2, buf + i, j - i);
      memcpy(c3, buf + j, n - j);
      cr_assert_eq(feed(&r, c1, i, &g), DERP_READ_MORE);
      free(c1);
      cr_assert_eq(feed(&r, c2, j - i, &g), DERP_READ_MORE);
      free(c2);
      cr_assert_eq(feed(&r, c3, n - j, &g), DERP_READ_MORE);
      free(c3);
      check_client_stream(&g);
      cr_assert_eq(r.skipped_frames, 1);
      got_free(&g);
      derp_frame_reader_reset(&r);
    }
  }
}

Test(reader, byte_at_a_time) {
  uint8_t buf[512];
  size_t n = client_stream(buf, sizeof buf);
  struct derp_frame_reader r;
  struct got g = {0};
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  for (size_t i = 0; i < n; i++) {
    uint8_t b = buf[i];
    cr_assert_eq(feed(&r, &b, 1, &g), DERP_READ_MORE);
  }
  check_client_stream(&g);
  got_free(&g);
  derp_frame_reader_reset(&r);
}

/* Read exactly one frame from a complete buffer. */
static struct derp_frame read_one(enum derp_frame_dir dir, const uint8_t *p, size_t n) {
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, dir);
  cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_FRAME);
  cr_assert_eq(n, 0);
  derp_frame_reader_reset(&r);
  return f;
}

Test(encode, server_frames_round_trip) {
  uint8_t buf[70000], pkt[DERP_MAX_PACKET];
  derp_key k = key_of(7), k2;
  for (size_t i = 0; i < sizeof pkt; i++) pkt[i] = (uint8_t)i;
  size_t n = derp_enc_server_key(buf, sizeof buf, &k);
  struct derp_frame f = read_one(DERP_FROM_SERVER, buf, n);
  cr_assert_eq(f.type, DERP_FRAME_SERVER_KEY);
  cr_assert_eq(f.len, 40);
  cr_assert_eq(memcmp(f.payload, DERP_MAGIC, 8), 0);
  memcpy(k2.b, f.payload + 8, 32);
  cr_assert(derp_key_equal(&k, &k2));

  n = derp_enc_recv_packet(buf, sizeof buf, &k, pkt, sizeof pkt);
  f = read_one(DERP_FROM_SERVER, buf, n);
  cr_assert_eq(f.type, DERP_FRAME_RECV_PACKET);
  cr_assert_eq(f.len, 32 + DERP_MAX_PACKET);
  cr_assert_eq(memcmp(f.payload + 32, pkt, sizeof pkt), 0);

  f = read_one(DERP_FROM_SERVER, buf, derp_enc_keep_alive(buf, sizeof buf));
  cr_assert_eq(f.type, DERP_FRAME_KEEP_ALIVE);
  cr_assert_eq(f.len, 0);
  cr_assert_not_null(f.payload);

  f = read_one(DERP_FROM_SERVER, buf, derp_enc_peer_gone(buf, sizeof buf, &k, DERP_PEER_GONE_NOT_HERE));
  cr_assert_eq(f.type, DERP_FRAME_PEER_GONE);
  cr_assert_eq(f.len, 33);
  cr_assert_eq(f.payload[32], DERP_PEER_GONE_NOT_HERE);

  f = read_one(DERP_FROM_SERVER, buf, derp_enc_health(buf, sizeof buf, "bad things"));
  cr_assert_eq(f.type, DERP_FRAME_HEALTH);
  cr_assert_eq(f.len, 10);
  cr_assert_eq(memcmp(f.payload, "bad things", 10), 0);
  f = read_one(DERP_FROM_SERVER, buf, derp_enc_health(buf, sizeof buf, ""));
  cr_assert_eq(f.len, 0);

  f = read_one(DERP_FROM_SERVER, buf, derp_enc_restarting(buf, sizeof buf, 1000, 0x01020304));
  cr_assert_eq(f.type, DERP_FRAME_RESTARTING);
  cr_assert_eq(derp_get_be32(f.payload), 1000);
  cr_assert_eq(derp_get_be32(f.payload + 4), 0x01020304);

  uint8_t ping[8] = {9, 8, 7, 6, 5, 4, 3, 2};
  f = read_one(DERP_FROM_SERVER, buf, derp_enc_ping(buf, sizeof buf, DERP_FRAME_PONG, ping));
  cr_assert_eq(f.type, DERP_FRAME_PONG);
  cr_assert_eq(memcmp(f.payload, ping, 8), 0);
}

Test(encode, client_frames_round_trip) {
  uint8_t buf[70000], pkt[DERP_MAX_PACKET];
  derp_key s = key_of(1), d = key_of(2);
  memset(pkt, 0x5A, sizeof pkt);
  struct derp_frame f =
      read_one(DERP_FROM_CLIENT, buf, derp_enc_forward_packet(buf, sizeof buf, &s, &d, pkt, sizeof pkt));
  cr_assert_eq(f.type, DERP_FRAME_FORWARD_PACKET);
  cr_assert_eq(f.len, 64 + DERP_MAX_PACKET);
  cr_assert_eq(f.payload[0], 1);
  cr_assert_eq(f.payload[32], 2);
  cr_assert_eq(f.payload[64 + DERP_MAX_PACKET - 1], 0x5A);

  f = read_one(DERP_FROM_CLIENT, buf, derp_enc_send_packet(buf, sizeof buf, &d, pkt, sizeof pkt));
  cr_assert_eq(f.type, DERP_FRAME_SEND_PACKET);
  cr_assert_eq(f.len, 32 + DERP_MAX_PACKET);

  f = read_one(DERP_FROM_CLIENT, buf, derp_enc_note_preferred(buf, sizeof buf, false));
  cr_assert_eq(f.payload[0], 0);
  uint8_t ping[8] = {1};
  f = read_one(DERP_FROM_CLIENT, buf, derp_enc_ping(buf, sizeof buf, DERP_FRAME_PING, ping));
  cr_assert_eq(f.type, DERP_FRAME_PING);
  cr_assert_eq(f.len, 8);
}

Test(encode, peer_present_round_trip) {
  uint8_t buf[128], ip[16] = {[10] = 0xff, [11] = 0xff, [12] = 1, [13] = 2, [14] = 3, [15] = 4};
  derp_key k = key_of(0x33);
  size_t n = derp_enc_peer_present(buf, sizeof buf, &k, ip, 5678,
                                   DERP_PEER_PRESENT_REGULAR | DERP_PEER_PRESENT_NOT_IDEAL);
  cr_assert_eq(n, 5 + 51);
  struct derp_frame f = read_one(DERP_FROM_SERVER, buf, n);
  cr_assert_eq(f.type, DERP_FRAME_PEER_PRESENT);
  cr_assert_eq(f.len, 51);
  cr_assert_eq(f.payload[48], 5678 >> 8, "port big-endian");
  cr_assert_eq(f.payload[49], 5678 & 0xff);
  struct derp_peer_present pp;
  cr_assert_eq(derp_peer_present_parse(f.payload, f.len, &pp), 0);
  cr_assert(derp_key_equal(&pp.key, &k));
  cr_assert(pp.has_addr && pp.has_flags);
  cr_assert_eq(memcmp(pp.ip, ip, 16), 0);
  cr_assert_eq(pp.port, 5678);
  cr_assert_eq(pp.flags, 0x09);

  /* The key alone, as servers before the address sent it. */
  n = derp_enc_peer_present(buf, sizeof buf, &k, NULL, 99, 0xff);
  cr_assert_eq(n, 5 + 32);
  f = read_one(DERP_FROM_SERVER, buf, n);
  cr_assert_eq(derp_peer_present_parse(f.payload, f.len, &pp), 0);
  cr_assert(derp_key_equal(&pp.key, &k));
  cr_assert_not(pp.has_addr);
  cr_assert_not(pp.has_flags);
  cr_assert_eq(pp.port, 0);

  cr_assert_eq(derp_enc_peer_present(buf, 5 + 50, &k, ip, 1, 1), 0, "cap too small");
  cr_assert_eq(derp_enc_peer_present(buf, 5 + 51, &k, ip, 1, 1), 56);
}

/* What a Go client makes of each length: key, then the address if all of it
 * is there, then the flags; bytes after them are for newer readers. */
Test(frame, peer_present_parse_by_length) {
  uint8_t p[512];
  for (size_t i = 0; i < sizeof p; i++) p[i] = (uint8_t)(i + 1);
  struct derp_peer_present pp;
  cr_assert_eq(derp_peer_present_parse(p, 31, &pp), -1);
  cr_assert_not(pp.has_addr);
  cr_assert_eq(derp_peer_present_parse(NULL, 51, &pp), -1);
  for (size_t n = 32; n <= sizeof p; n++) {
    cr_assert_eq(derp_frame_check(DERP_FROM_SERVER, DERP_FRAME_PEER_PRESENT, (uint32_t)n),
                 DERP_FRAME_DELIVER, "%zu", n);
    cr_assert_eq(derp_peer_present_parse(p, n, &pp), 0, "%zu", n);
    cr_assert_eq(pp.key.b[0], 1);
    cr_assert_eq(pp.key.b[31], 32);
    cr_assert_eq(pp.has_addr, n >= 50, "%zu", n);
    cr_assert_eq(pp.has_flags, n >= 51, "%zu", n);
    if (pp.has_addr) {
      cr_assert_eq(pp.ip[0], 33);
      cr_assert_eq(pp.ip[15], 48);
      cr_assert_eq(pp.port, 49 << 8 | 50);
    } else {
      cr_assert_eq(pp.port, 0);
    }
    cr_assert_eq(pp.flags, pp.has_flags ? 51 : 0);
  }
}

Test(encode, refuses_bad_arguments) {
  uint8_t buf[70000], pkt[DERP_MAX_PACKET + 1] = {0}, ping[8] = {0};
  derp_key k = key_of(3);
  cr_assert_eq(derp_enc_send_packet(buf, sizeof buf, &k, pkt, sizeof pkt), 0);
  cr_assert_eq(derp_enc_recv_packet(buf, sizeof buf, &k, pkt, sizeof pkt), 0);
  cr_assert_eq(derp_enc_forward_packet(buf, sizeof buf, &k, &k, pkt, sizeof pkt), 0);
  cr_assert_eq(derp_enc_send_packet(buf, 5 + 32 + 9, &k, pkt, 10), 0);
  cr_assert_eq(derp_enc_send_packet(buf, 5 + 32 + 10, &k, pkt, 10), 47);
  cr_assert_eq(derp_enc_server_key(buf, 44, &k), 0);
  cr_assert_eq(derp_enc_keep_alive(buf, 4), 0);
  cr_assert_eq(derp_enc_keep_alive(buf, 5), 5);
  cr_assert_eq(derp_enc_ping(buf, sizeof buf, DERP_FRAME_HEALTH, ping), 0);
  cr_assert_eq(derp_enc_peer_gone(buf, 37, &k, 0), 0);
  cr_assert_eq(derp_enc_peer_gone(buf, 38, &k, 0), 38);
}

struct bound {
  enum derp_frame_dir dir;
  uint8_t type;
  uint32_t min, max;
  bool short_skips; /* shorter than min: dropped and read on (derper's client) */
};

static const struct bound bounds[] = {
    {DERP_FROM_CLIENT, DERP_FRAME_CLIENT_INFO, 56, 256 * 1024, false},
    {DERP_FROM_CLIENT, DERP_FRAME_SEND_PACKET, 32, 32 + 65536, false},
    {DERP_FROM_CLIENT, DERP_FRAME_FORWARD_PACKET, 64, 64 + 65536, false},
    {DERP_FROM_CLIENT, DERP_FRAME_NOTE_PREFERRED, 1, 1, false},
    {DERP_FROM_CLIENT, DERP_FRAME_PING, 8, 1000, false},
    {DERP_FROM_CLIENT, DERP_FRAME_WATCH_CONNS, 0, 0, false},
    {DERP_FROM_CLIENT, DERP_FRAME_CLOSE_PEER, 32, 32, false},
    {DERP_FROM_SERVER, DERP_FRAME_SERVER_KEY, 40, 1024, false},
    {DERP_FROM_SERVER, DERP_FRAME_SERVER_INFO, 40, 64 * 1024, false},
    {DERP_FROM_SERVER, DERP_FRAME_RECV_PACKET, 32, 32 + 65536, true},
    {DERP_FROM_SERVER, DERP_FRAME_KEEP_ALIVE, 0, 65536 + 64, false},
    {DERP_FROM_SERVER, DERP_FRAME_PEER_GONE, 32, 65536 + 64, true},
    {DERP_FROM_SERVER, DERP_FRAME_PEER_PRESENT, 32, 65536 + 64, true},
    {DERP_FROM_SERVER, DERP_FRAME_PING, 8, 65536 + 64, true},
    {DERP_FROM_SERVER, DERP_FRAME_PONG, 8, 65536 + 64, true},
    {DERP_FROM_SERVER, DERP_FRAME_HEALTH, 0, 64 * 1024, false},
    {DERP_FROM_SERVER, DERP_FRAME_RESTARTING, 8, 65536 + 64, true},
};

Test(limits, every_bound_both_directions) {
  for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
    const struct bound *b = &bounds[i];
    if (b->min > 0)
      cr_assert_eq(derp_frame_check(b->dir, b->type, b->min - 1),
                   b->short_skips ? DERP_FRAME_SKIP : DERP_FRAME_REJECT, "%s min-1", derp_frame_type_name(b->type));
    cr_assert_eq(derp_frame_check(b->dir, b->type, b->min), DERP_FRAME_DELIVER, "%s min",
                 derp_frame_type_name(b->type));
    cr_assert_eq(derp_frame_check(b->dir, b->type, b->max), DERP_FRAME_DELIVER, "%s max",
                 derp_frame_type_name(b->type));
    cr_assert_eq(derp_frame_check(b->dir, b->type, b->max + 1), DERP_FRAME_REJECT, "%s max+1",
                 derp_frame_type_name(b->type));
    cr_assert_eq(derp_frame_check(b->dir, b->type, UINT32_MAX), DERP_FRAME_REJECT);
  }
}

Test(limits, wrong_direction_types_are_unknown) {
  /* Server-only frames from a client, and client-only from a server, skip. */
  cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_KEEP_ALIVE, 0), DERP_FRAME_SKIP);
  cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_RECV_PACKET, 100), DERP_FRAME_SKIP);
  cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_SERVER_KEY, DERP_MAX_UNKNOWN_FRAME),
               DERP_FRAME_SKIP);
  /* A client's unknown frames skip at any length, as derper discards them. */
  cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_HEALTH, DERP_MAX_UNKNOWN_FRAME + 1),
               DERP_FRAME_SKIP);
  cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_HEALTH, UINT32_MAX), DERP_FRAME_SKIP);
  /* A client's Pong is not read by derper's server at all: skipped, any length. */
  for (uint32_t len = 0; len < 2000; len += 7)
    cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_PONG, len), DERP_FRAME_SKIP);
  cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, DERP_FRAME_PONG, UINT32_MAX), DERP_FRAME_SKIP);
  cr_assert_eq(derp_frame_check(DERP_FROM_SERVER, DERP_FRAME_SEND_PACKET, 40), DERP_FRAME_SKIP);
  cr_assert_eq(derp_frame_check(DERP_FROM_SERVER, DERP_FRAME_CLIENT_INFO, 4), DERP_FRAME_SKIP);
  for (int t = 0x16; t < 0x100; t++) {
    cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, (uint8_t)t, 0), DERP_FRAME_SKIP);
    cr_assert_eq(derp_frame_check(DERP_FROM_CLIENT, (uint8_t)t, UINT32_MAX), DERP_FRAME_SKIP);
    /* Go's client skips a server's unknown frame up to 1 MiB. */
    cr_assert_eq(derp_frame_check(DERP_FROM_SERVER, (uint8_t)t, DERP_MAX_UNKNOWN_FRAME + 1), DERP_FRAME_SKIP);
    cr_assert_eq(derp_frame_check(DERP_FROM_SERVER, (uint8_t)t, 1u << 20), DERP_FRAME_SKIP);
    cr_assert_eq(derp_frame_check(DERP_FROM_SERVER, (uint8_t)t, (1u << 20) + 1), DERP_FRAME_REJECT);
  }
}

Test(reader, bad_length_rejected_with_header) {
  uint8_t hdr[6];
  derp_frame_put_header(hdr, DERP_FRAME_PING, 4);
  hdr[5] = 0;
  const uint8_t *p = hdr;
  size_t n = sizeof hdr;
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_ERROR);
  cr_assert_eq(f.type, DERP_FRAME_PING);
  cr_assert_eq(f.len, 4);
  cr_assert_null(r.buf);
}

Test(reader, huge_length_rejected_immediately) {
  uint8_t hdr[5];
  const uint8_t types[] = {DERP_FRAME_SEND_PACKET, DERP_FRAME_CLIENT_INFO}; /* known types; unknown ones skip (huge_unknown_from_client_streams_past) */
  for (size_t i = 0; i < sizeof types; i++) {
    derp_frame_put_header(hdr, types[i], 0xFFFFFFFFu);
    struct derp_frame_reader r;
    struct derp_frame f;
    derp_frame_reader_init(&r, DERP_FROM_CLIENT);
    const uint8_t *p = hdr;
    size_t n = 4;
    cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_MORE);
    n = 1;
    cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_ERROR);
    cr_assert_eq(f.type, types[i]);
    cr_assert_eq(f.len, 0xFFFFFFFFu);
    cr_assert_null(r.buf);
  }
}

/* The server side skips a client's unknown frame of any length as it streams,
 * never buffering it, and reads the next frame right behind it. */
Test(reader, huge_unknown_from_client_streams_past) {
  enum { CHUNK = 4096, LEN = 3 * 1024 * 1024 + 17 };
  static uint8_t chunk[CHUNK];
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  uint8_t hdr[5];
  derp_frame_put_header(hdr, 0x99, LEN);
  const uint8_t *p = hdr;
  size_t n = sizeof hdr;
  cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_MORE);
  memset(chunk, 0x55, sizeof chunk);
  for (size_t left = LEN; left > 0;) {
    size_t k = left < CHUNK ? left : CHUNK;
    p = chunk;
    n = k;
    cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_MORE);
    cr_assert_null(r.buf, "a skipped frame is never buffered");
    left -= k;
  }
  uint8_t ping[5 + 8];
  uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  derp_enc_ping(ping, sizeof ping, DERP_FRAME_PING, data);
  p = ping;
  n = sizeof ping;
  cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_FRAME);
  cr_assert_eq(f.type, DERP_FRAME_PING);
  cr_assert_eq(r.skipped_frames, 1);
  derp_frame_reader_reset(&r);
}

Test(reader, oversized_unknown_from_server_rejected_before_buffering) {
  uint8_t buf[64] = {0};
  derp_frame_put_header(buf, 0x99, DERP_MAX_SERVER_FRAME + 1);
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_SERVER);
  const uint8_t *p = buf;
  size_t n = sizeof buf;
  cr_assert_eq(derp_frame_read(&r, &p, &n, &f), DERP_READ_ERROR);
  cr_assert_eq(f.type, 0x99);
  cr_assert_eq(f.len, DERP_MAX_SERVER_FRAME + 1);
  cr_assert_null(r.buf);
  cr_assert_eq(n, sizeof buf - 5, "no payload byte consumed");
}

Test(reader, unknown_skipped_without_buffering) {
  static uint8_t buf[DERP_MAX_UNKNOWN_FRAME + 64];
  derp_key k = key_of(0x11);
  derp_frame_put_header(buf, 0x30, DERP_MAX_UNKNOWN_FRAME);
  memset(buf + 5, 0xEE, DERP_MAX_UNKNOWN_FRAME);
  size_t n = 5 + DERP_MAX_UNKNOWN_FRAME;
  n += derp_enc_send_packet(buf + n, sizeof buf - n, &k, "abc", 3);
  struct derp_frame_reader r;
  struct got g = {0};
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  /* Feed in uneven chunks: the skip must not allocate at any point. */
  size_t off = 0, step = 1000;
  while (off < n) {
    size_t c = n - off < step ? n - off : step;
    feed(&r, buf + off, c, &g);
    if (off + c < 5 + DERP_MAX_UNKNOWN_FRAME) cr_assert_null(r.buf);
    off += c;
    step += 7;
  }
  cr_assert_eq(r.skipped_frames, 1);
  cr_assert_eq(g.n, 1);
  cr_assert_eq(g.type[0], DERP_FRAME_SEND_PACKET);
  cr_assert_eq(g.len[0], 35);
  cr_assert_eq(g.data[0][0], 0x11);
  cr_assert_eq(memcmp(g.data[0] + 32, "abc", 3), 0);
  got_free(&g);
  derp_frame_reader_reset(&r);
}

Test(reader, zero_copy_when_frame_is_whole) {
  uint8_t buf[256];
  derp_key k = key_of(4);
  size_t n = derp_enc_send_packet(buf, sizeof buf, &k, "payload", 7);
  n += derp_enc_send_packet(buf + n, sizeof buf - n, &k, "second", 6);
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  const uint8_t *p = buf;
  size_t left = n;
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_FRAME);
    cr_assert(f.payload >= buf && f.payload + f.len <= buf + n, "payload inside input");
    cr_assert_null(r.buf);
  }
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_MORE);
}

Test(reader, header_then_whole_payload_is_zero_copy) {
  uint8_t buf[256];
  derp_key k = key_of(4);
  size_t n = derp_enc_send_packet(buf, sizeof buf, &k, "payload", 7);
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  const uint8_t *p = buf;
  size_t left = 5;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_MORE);
  cr_assert(derp_frame_reader_busy(&r));
  left = n - 5;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_FRAME);
  cr_assert_eq(f.payload, buf + 5);
  cr_assert_null(r.buf);
}

Test(reader, split_frame_assembled_then_freed) {
  uint8_t buf[256];
  derp_key k = key_of(5);
  size_t n = derp_enc_send_packet(buf, sizeof buf, &k, "spanning", 8);
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  const uint8_t *p = buf;
  size_t left = 10;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_MORE);
  cr_assert_not_null(r.buf);
  cr_assert(derp_frame_reader_busy(&r));
  /* Held: the payload bytes in the buffer; consumed: every byte taken. */
  cr_assert_eq(derp_frame_reader_held(&r), 10 - DERP_FRAME_HDR_LEN);
  cr_assert_eq(r.consumed, 10);
  left = 0;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_MORE);
  cr_assert_eq(r.consumed, 10, "no input, no progress");
  left = n - 10;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_FRAME);
  cr_assert_eq(r.consumed, n);
  cr_assert_eq(derp_frame_reader_held(&r), 0, "a delivered frame is not held");
  cr_assert_eq(f.payload, r.buf);
  cr_assert_eq(memcmp(f.payload + 32, "spanning", 8), 0);
  cr_assert_not(derp_frame_reader_busy(&r));
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_MORE);
  cr_assert_null(r.buf, "freed on the next call");
}

Test(reader, reset_releases_partial_frame) {
  uint8_t buf[256];
  derp_key k = key_of(6);
  size_t n = derp_enc_send_packet(buf, sizeof buf, &k, "xx", 2);
  struct derp_frame_reader r;
  struct derp_frame f;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  const uint8_t *p = buf;
  size_t left = n - 1;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_MORE);
  cr_assert_not_null(r.buf);
  derp_frame_reader_reset(&r);
  cr_assert_null(r.buf);
  cr_assert_not(derp_frame_reader_busy(&r));
  /* A fresh frame reads cleanly afterwards. */
  p = buf;
  left = n;
  cr_assert_eq(derp_frame_read(&r, &p, &left, &f), DERP_READ_FRAME);
  cr_assert_eq(f.len, 34);
}

Test(frame, disco_detection) {
  /* A disco packet is magic + sender disco key (32) + nonce (24) + box. */
  uint8_t pkt[DERP_DISCO_MIN_LEN + 16];
  memset(pkt, 0, sizeof pkt);
  memcpy(pkt, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN);
  cr_assert(derp_is_disco(pkt, sizeof pkt));
  cr_assert(derp_is_disco(pkt, DERP_DISCO_MIN_LEN));
  cr_assert_not(derp_is_disco(pkt, DERP_DISCO_MIN_LEN - 1), "too short to be disco");
  cr_assert_not(derp_is_disco(pkt, DERP_DISCO_MAGIC_LEN));
  pkt[5] ^= 1;
  cr_assert_not(derp_is_disco(pkt, sizeof pkt), "wrong magic");
  cr_assert_not(derp_is_disco((const uint8_t *)"", 0));
}

Test(frame, header_and_names) {
  uint8_t h[5];
  derp_frame_put_header(h, DERP_FRAME_PONG, 0x01020304);
  cr_assert_eq(h[0], 0x13);
  cr_assert_eq(h[1], 1);
  cr_assert_eq(h[4], 4);
  cr_assert_eq(derp_get_be32(h + 1), 0x01020304);
  cr_assert_str_eq(derp_frame_type_name(DERP_FRAME_SEND_PACKET), "SendPacket");
  cr_assert_str_eq(derp_frame_type_name(0xEE), "unknown");
}

/* Per-connection overrides: a skipped type is never buffered (nor delivered),
 * a rejected type fails at its header before any payload arrives. */
Test(frame, type_masks_skip_and_reject) {
  static uint8_t stream[300000];
  size_t n = 0;
  derp_frame_put_header(stream, DERP_FRAME_CLIENT_INFO, 200000);
  n = DERP_FRAME_HDR_LEN + 200000;
  uint8_t ping[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  n += derp_enc_ping(stream + n, sizeof stream - n, DERP_FRAME_PING, ping);
  struct derp_frame_reader r;
  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  r.skip_types = 1u << DERP_FRAME_CLIENT_INFO;
  const uint8_t *in = stream;
  size_t left = 1000; /* the ClientInfo arrives in pieces: nothing may be buffered */
  struct derp_frame f;
  cr_assert_eq(derp_frame_read(&r, &in, &left, &f), DERP_READ_MORE);
  cr_assert_null(r.buf);
  left = n - (size_t)(in - stream);
  cr_assert_eq(derp_frame_read(&r, &in, &left, &f), DERP_READ_FRAME);
  cr_assert_eq(f.type, DERP_FRAME_PING, "the skipped frame must not be delivered");
  cr_assert_eq(r.skipped_frames, 1);
  /* Outside ClientInfo's own limits (1 byte; 1 MiB): skipped too, as derper
   * discards a late ClientInfo of any length. */
  static const uint32_t odd[] = {1, 1u << 20};
  for (int k = 0; k < 2; k++) {
    uint8_t h[DERP_FRAME_HDR_LEN + 8];
    derp_frame_put_header(h, DERP_FRAME_CLIENT_INFO, odd[k]);
    in = h;
    left = DERP_FRAME_HDR_LEN;
    cr_assert_eq(derp_frame_read(&r, &in, &left, &f), DERP_READ_MORE, "a %u-byte late ClientInfo", odd[k]);
    cr_assert_null(r.buf);
    static uint8_t zeros[1u << 20];
    in = zeros;
    left = odd[k];
    cr_assert_eq(derp_frame_read(&r, &in, &left, &f), DERP_READ_MORE);
    cr_assert_eq(r.skipped_frames, 2 + (uint64_t)k);
  }
  derp_frame_reader_reset(&r);

  derp_frame_reader_init(&r, DERP_FROM_CLIENT);
  r.reject_types = 1u << DERP_FRAME_FORWARD_PACKET;
  uint8_t hdr[DERP_FRAME_HDR_LEN];
  derp_frame_put_header(hdr, DERP_FRAME_FORWARD_PACKET, 1000);
  in = hdr;
  left = sizeof hdr;
  cr_assert_eq(derp_frame_read(&r, &in, &left, &f), DERP_READ_ERROR);
  cr_assert_eq(f.type, DERP_FRAME_FORWARD_PACKET);
  cr_assert_null(r.buf);
}
