/* fake_mesh_server.c: a scripted DERP server for test_derp_mesh_tool.sh.
 *
 * A mesh-capable server that answers with scripted edge cases (odd flags,
 * unknown keys, a lost connection) on cue, so that derp-mesh and libderp's
 * mesh frames are tested end to end over a real socket; test region_tool
 * runs derp-mesh against derpd itself. Plain TCP, one connection at a time, on 127.0.0.1.
 *
 *   fake_mesh_server KEYFILE [close]
 *
 * KEYFILE is the mesh key file (derp_mesh_key_load). Prints "port N" once
 * listening, then one line per thing it saw (all flushed), for the test to
 * grep: "client mesh=1|0", "watchconns", "closepeer nodekey:HEX",
 * "pong ok" (the Ping of the script was answered), "rejected FRAME" (a mesh
 * frame from a client without the key: the connection is closed, as derpd and
 * derper do), "eof". After WatchConns it sends the script below; with "close"
 * it closes the connection once the script's Ping is answered. Runs until
 * killed. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "derp/frame.h"
#include "derp/handshake.h"
#include "derp/key.h"
#include "derp/meshkey.h"

static char mesh_key[DERP_MESH_KEY_MAX + 1];
static derp_privkey spriv;
static derp_key spub;
static const uint8_t ping_data[8] = {'f', 'a', 'k', 'e', 'p', 'i', 'n', 'g'};

static int send_all(int fd, const void *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    p = (const uint8_t *)p + w;
    n -= (size_t)w;
  }
  return 0;
}

static derp_key key_of(uint8_t v) {
  derp_key k;
  memset(k.b, v, sizeof k.b);
  return k;
}

/* The events a watcher gets: every shape of PeerPresent a server may send,
 * each PeerGone reason, and a Health and a Ping in between (not printed). */
static int send_script(int fd) {
  static uint8_t buf[4096];
  size_t n = 0;
  uint8_t v4[16] = {[10] = 0xff, [11] = 0xff, 1, 2, 3, 4};
  uint8_t v4b[16] = {[10] = 0xff, [11] = 0xff, 10, 0, 0, 1};
  uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
  derp_key k1 = key_of(0x11), k2 = key_of(0x22), k3 = key_of(0x33), k4 = key_of(0x44),
           k5 = key_of(0x55), k6 = key_of(0x66);
  /* The text is the server's: a newline or an escape in it must not forge a
   * line of the tool's or reach the terminal. */
  n += derp_enc_health(buf + n, sizeof buf - n, "fake health\nderp-mesh: forged \x1b[31mred");
  n += derp_enc_peer_present(buf + n, sizeof buf - n, &k1, v4, 5678, DERP_PEER_PRESENT_REGULAR);
  n += derp_enc_ping(buf + n, sizeof buf - n, DERP_FRAME_PING, ping_data);
  n += derp_enc_peer_present(buf + n, sizeof buf - n, &k2, v6, 443,
                             DERP_PEER_PRESENT_MESH | DERP_PEER_PRESENT_PROBER);
  n += derp_enc_peer_present(buf + n, sizeof buf - n, &k3, NULL, 0, 0);
  /* Address, no flags byte (50 bytes, servers before v1.70). */
  size_t at = n;
  n += derp_enc_peer_present(buf + n, sizeof buf - n, &k4, v4b, 1, 0);
  derp_frame_put_header(buf + at, DERP_FRAME_PEER_PRESENT, 50);
  n--;
  n += derp_enc_peer_present(buf + n, sizeof buf - n, &k5, v4b, 65535, 0);
  /* Unknown bits, and bytes after the flags that a newer server may add. */
  at = n;
  n += derp_enc_peer_present(buf + n, sizeof buf - n, &k6, v6, 80, 0x90 | DERP_PEER_PRESENT_NOT_IDEAL);
  derp_frame_put_header(buf + at, DERP_FRAME_PEER_PRESENT, 51 + 9);
  memset(buf + n, 0xEE, 9);
  n += 9;
  n += derp_enc_peer_gone(buf + n, sizeof buf - n, &k1, DERP_PEER_GONE_DISCONNECTED);
  n += derp_enc_peer_gone(buf + n, sizeof buf - n, &k2, DERP_PEER_GONE_NOT_HERE);
  n += derp_enc_peer_gone(buf + n, sizeof buf - n, &k3, 7);
  return send_all(fd, buf, n);
}

static int send_server_info(int fd, const derp_key *client) {
  uint8_t buf[DERP_FRAME_HDR_LEN + DERP_SERVER_INFO_SEAL_MAX];
  struct derp_server_info si = {.version = DERP_PROTOCOL_VERSION};
  size_t n = derp_server_info_seal(buf + DERP_FRAME_HDR_LEN, sizeof buf - DERP_FRAME_HDR_LEN, &spriv,
                                   client, &si);
  if (n == 0) return -1;
  derp_frame_put_header(buf, DERP_FRAME_SERVER_INFO, (uint32_t)n);
  return send_all(fd, buf, n + DERP_FRAME_HDR_LEN);
}

/* One frame of an established connection. 0 = go on, -1 = close it. */
static int on_frame(int fd, const struct derp_frame *f, bool mesh, bool close_after) {
  char hex[DERP_KEY_STRLEN];
  uint8_t out[64];
  bool mesh_only = f->type == DERP_FRAME_WATCH_CONNS || f->type == DERP_FRAME_CLOSE_PEER ||
                   f->type == DERP_FRAME_FORWARD_PACKET;
  if (mesh_only && !mesh) {
    printf("rejected %s\n", derp_frame_type_name(f->type));
    return -1;
  }
  switch (f->type) {
  case DERP_FRAME_WATCH_CONNS:
    printf("watchconns\n");
    return send_script(fd);
  case DERP_FRAME_CLOSE_PEER: {
    derp_key k;
    memcpy(k.b, f->payload, DERP_KEY_LEN);
    derp_key_format(&k, hex);
    printf("closepeer %s\n", hex);
    return 0;
  }
  case DERP_FRAME_PING: {
    uint8_t d[8];
    memcpy(d, f->payload, 8);
    return send_all(fd, out, derp_enc_ping(out, sizeof out, DERP_FRAME_PONG, d));
  }
  case DERP_FRAME_PONG:
    if (memcmp(f->payload, ping_data, 8) != 0) return 0;
    printf("pong ok\n");
    return close_after ? -1 : 0; /* all read: the close is a clean EOF */
  default: return 0;
  }
}

static void serve(int fd, bool close_after) {
  static uint8_t buf[128 * 1024];
  size_t have = 0;
  char *end = NULL;
  while (!end) { /* the HTTP request head */
    ssize_t r = recv(fd, buf + have, 8192 - have, 0);
    if (r <= 0) return;
    have += (size_t)r;
    end = memmem(buf, have, "\r\n\r\n", 4);
    if (!end && have == 8192) return;
  }
  static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
                             "Connection: Upgrade\r\nDerp-Version: 2\r\n\r\n";
  uint8_t sk[DERP_FRAME_HDR_LEN + DERP_SERVER_KEY_PAYLOAD_LEN];
  if (send_all(fd, resp, sizeof resp - 1) < 0 ||
      send_all(fd, sk, derp_enc_server_key(sk, sizeof sk, &spub)) < 0)
    return;
  /* Frames are cut here by hand, not with libderp's server-side reader: that
   * one skips a client's Pong (derper's server never reads them), and this
   * fixture checks that the tool answers its Ping. */
  memmove(buf, end + 4, have - (size_t)((const uint8_t *)end + 4 - buf));
  have -= (size_t)((const uint8_t *)end + 4 - buf);
  bool established = false, mesh = false;
  for (;;) {
    uint32_t flen = have >= DERP_FRAME_HDR_LEN ? derp_get_be32(buf + 1) : 0;
    if (have < DERP_FRAME_HDR_LEN || have < DERP_FRAME_HDR_LEN + (size_t)flen) {
      if (flen > sizeof buf - DERP_FRAME_HDR_LEN) break; /* larger than any frame it expects */
      ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
      if (r <= 0) {
        printf("eof\n");
        break;
      }
      have += (size_t)r;
      continue;
    }
    struct derp_frame f = {.type = buf[0], .len = flen, .payload = buf + DERP_FRAME_HDR_LEN};
    int rc = 0;
    if (!established) {
      struct derp_client_info ci;
      derp_key who;
      const char *why = NULL;
      if (f.type != DERP_FRAME_CLIENT_INFO ||
          derp_client_info_open(f.payload, f.len, &spriv, &who, &ci, &why) < 0) {
        printf("bad client info: %s\n", why ? why : "not ClientInfo");
        break;
      }
      mesh = ci.has_mesh_key && derp_mesh_key_equal(ci.mesh_key, mesh_key);
      printf("client mesh=%d\n", mesh);
      fflush(stdout);
      rc = send_server_info(fd, &who);
      established = true;
    } else {
      rc = on_frame(fd, &f, mesh, close_after);
    }
    fflush(stdout);
    size_t used = DERP_FRAME_HDR_LEN + flen;
    memmove(buf, buf + used, have - used);
    have -= used;
    if (rc < 0) break;
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  char msg[512];
  if (argc < 2 || derp_init() < 0) return 2;
  if (derp_mesh_key_load(argv[1], mesh_key, sizeof mesh_key, msg, sizeof msg) < 0) {
    fprintf(stderr, "fake_mesh_server: %s\n", msg);
    return 2;
  }
  bool close_after = argc > 2 && strcmp(argv[2], "close") == 0;
  derp_key_generate(&spriv, &spub);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 16) < 0 ||
      getsockname(ls, (struct sockaddr *)&sa, &sl) < 0) {
    perror("fake_mesh_server");
    return 1;
  }
  printf("port %u\n", ntohs(sa.sin_port));
  fflush(stdout);
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd < 0) continue;
    serve(fd, close_after);
    close(fd);
  }
}
