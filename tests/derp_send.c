/* derp_send: a known amount of DERP traffic, for tests that check counters
 * from outside (test_metrics_prometheus.sh).
 *
 *   derp_send HOST PORT COUNT [SIZE]
 *
 * Connects two clients A and B (fresh keys), then A sends COUNT data packets
 * of SIZE bytes (default 100; not disco) to B, one at a time, each received
 * by B before the next is sent, so none can be dropped to a full queue: the
 * server counts exactly COUNT received and COUNT sent. Exit 0 when B got them
 * all, 1 on any failure (the reason on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derp/client.h"

static struct derp_client *connect_one(const char *host, int port, derp_key *pub) {
  derp_privkey priv;
  derp_key_generate(&priv, pub);
  struct derp_client_opts o = {.host = host, .port = (uint16_t)port, .priv = &priv, .timeout_ms = 5000};
  struct derp_client *c = NULL;
  char err[256];
  if (derp_client_connect(&c, &o, err, sizeof err) != 0) {
    fprintf(stderr, "derp_send: connect %s:%d: %s\n", host, port, err);
    exit(1);
  }
  return c;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: derp_send HOST PORT COUNT [SIZE]\n");
    return 2;
  }
  int port = atoi(argv[2]);
  long count = atol(argv[3]), size = argc > 4 ? atol(argv[4]) : 100;
  if (port <= 0 || port > 65535 || count < 0 || size < 8 || size > 65536) {
    fprintf(stderr, "derp_send: bad PORT, COUNT or SIZE\n");
    return 2;
  }
  if (derp_init() != 0) return 1;
  derp_key ka, kb;
  struct derp_client *a = connect_one(argv[1], port, &ka);
  struct derp_client *b = connect_one(argv[1], port, &kb);
  uint8_t *pkt = calloc(1, (size_t)size);
  if (!pkt) return 1;
  for (long i = 0; i < count; i++) {
    memcpy(pkt, &i, sizeof i);
    if (derp_client_send(a, &kb, pkt, (size_t)size) != 0) {
      fprintf(stderr, "derp_send: send %ld failed\n", i);
      return 1;
    }
    struct derp_client_msg m;
    int r = derp_client_recv_packet(b, &m, 5000);
    if (r != 1 || m.type != DERP_FRAME_RECV_PACKET || m.packet_len != (uint32_t)size ||
        memcmp(m.packet, &i, sizeof i) != 0 || !derp_key_equal(&m.src, &ka)) {
      fprintf(stderr, "derp_send: packet %ld not received (r=%d type=%u)\n", i, r, m.type);
      return 1;
    }
  }
  printf("derp_send: %ld packets of %ld bytes delivered\n", count, size);
  free(pkt);
  derp_client_close(a);
  derp_client_close(b);
  return 0;
}
