/* check_flags: derpd's own flag parser (config_parse, mesh_with_parse) on a
 * command line, with nothing opened or started. For the command lines kept
 * outside the code (deploy/default/derpd, the Kubernetes manifests), so a
 * flag renamed or a value derpd refuses fails a test instead of a rollout.
 *
 *   check_flags ARGS...     exit 0 and one line of what derpd would do;
 *                           2 and derpd's own message if it would refuse them */
#include <stdio.h>
#include <string.h>

#include "server/config.h"
#include "server/region/region.h"

int main(int argc, char **argv) {
  struct config c;
  char err[512] = "";
  config_defaults(&c);
  argv[0] = "derpd";
  int r = config_parse(&c, argc, argv, stdout, err, sizeof err);
  if (r == 1) {
    fprintf(stderr, "check_flags: help asked for, not a command line to run\n");
    return 2;
  }
  if (r < 0) {
    fprintf(stderr, "derpd: %s\n", err);
    return 2;
  }
  static struct mesh_entry e[REGION_MAX_LINKS];
  int n = 0;
  if (c.mesh_with[0] && mesh_with_parse(c.mesh_with, e, REGION_MAX_LINKS, &n, err, sizeof err) != 0) {
    fprintf(stderr, "derpd: -mesh-with: %s\n", err);
    return 2;
  }
  printf("ok: listen=%s%s%s:%u tls=%d certmode=%s hostname=%s key=%s certdir=%s shards=%d mesh_entries=%d",
         strchr(c.listen_host, ':') ? "[" : "", c.listen_host, strchr(c.listen_host, ':') ? "]" : "",
         c.listen_port, c.tls, c.certmode[0] ? c.certmode : "-", c.hostname,
         c.key_path[0] ? c.key_path : "-", c.certdir, c.shards, n);
  if (c.metrics_port >= 0) printf(" metrics=%s:%d", c.metrics_host, c.metrics_port);
  printf(" stun=%d", c.stun ? c.stun_port : -1);
  for (int i = 0; i < n; i++) printf(" mesh=%s:%s/%s:%u", e[i].tls ? "https" : "http", e[i].name, e[i].dial, e[i].port);
  printf("\n");
  return 0;
}
