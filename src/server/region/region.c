/* region.c: the region's start-up (mesh key, -mesh-with) and its seams with
 * the shard loop: per-shard state, control-message dispatch, the end of a
 * loop turn and the tick. What watchers, forwarders and links do is in
 * watch.c, forward.c and link.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "server/log.h"
#include "server/region/region_internal.h"

int region_links_setup(struct server *s, const struct mesh_entry *e, int n);
void region_links_free(struct region *rg);

/* derper up to v1.84 took 64 or more hex digits, as derpd does; v1.86 and
 * later (key.ParseDERPMesh) take exactly 64, refusing to start with any other
 * key and refusing a ClientInfo that carries one. */
static void note_key_length(const char *from, const char *key) {
  size_t n = strlen(key);
  if (n != 64)
    log_warn("mesh: the key from %s is %zu hex digits: derper v1.86 and later take exactly 64, "
             "so none of them can join this region", from, n);
}

/* The key: with -dev, TAILSCALE_DERPER_MESH_KEY when set (newer derper
 * reads only it then); else -mesh-psk-file, whose default (config.c) is
 * derper's: the first of its two paths that exists, and an explicit empty
 * value means no key. The variable without -dev is ignored, as newer derper
 * ignores it, but said. */
static int load_mesh_key(struct server *s) {
  struct region *rg = s->region;
  const char *env = getenv("TAILSCALE_DERPER_MESH_KEY");
  if (env && env[0] && s->cfg.dev) {
    const char *why = "";
    if (derp_mesh_key_parse(env, strlen(env), rg->mesh_key, sizeof rg->mesh_key, &why) < 0) {
      log_error("TAILSCALE_DERPER_MESH_KEY: %s", why);
      return -1;
    }
    log_info("mesh: key from TAILSCALE_DERPER_MESH_KEY");
    note_key_length("TAILSCALE_DERPER_MESH_KEY", rg->mesh_key);
    return 0;
  }
  if (env && env[0])
    log_warn("TAILSCALE_DERPER_MESH_KEY is read only with -dev (as derper): ignored; use -mesh-psk-file");
  const char *path = s->cfg.mesh_psk_file;
  if (!path[0]) return 0;
  char msg[1200];
  if (derp_mesh_key_load(path, rg->mesh_key, sizeof rg->mesh_key, msg, sizeof msg) < 0) {
    log_error("-mesh-psk-file %s", msg);
    return -1;
  }
  log_info("mesh: key from %s", path);
  note_key_length(path, rg->mesh_key);
  return 0;
}

int region_setup(struct server *s) {
  struct region *rg = calloc(1, sizeof *rg);
  if (!rg) return -1;
  s->region = rg;
  if (load_mesh_key(s) < 0) return -1;
  struct mesh_entry *e = calloc(REGION_MAX_LINKS, sizeof *e);
  int n = 0;
  char err[256];
  if (!e) return -1;
  if (mesh_with_parse(s->cfg.mesh_with, e, REGION_MAX_LINKS, &n, err, sizeof err) < 0) {
    log_error("%s", err);
    free(e);
    return -1;
  }
  for (int i = 0; i < n; i++) { /* named at its second listing, once */
    int before = 0;
    for (int j = 0; j < i; j++) before += strcmp(e[j].label, e[i].label) == 0;
    if (before == 1) log_warn("-mesh-with: %s is listed more than once; it is dialled once", e[i].label);
  }
  n = mesh_with_drop_repeats(e, n);
  if (n && !rg->mesh_key[0]) {
    log_error("-mesh-with needs a mesh key (-mesh-psk-file)");
    free(e);
    return -1;
  }
  int r = region_links_setup(s, e, n);
  free(e);
  if (r < 0) { log_error("mesh: out of resources setting up links"); return -1; }
  if (n) log_info("mesh: %d -mesh-with entr%s (this node's own is found and skipped)", n, n == 1 ? "y" : "ies");
  return 0;
}

void region_free(struct server *s) {
  if (!s->region || s->region->leaked) return; /* a dialler may still read it */
  region_links_free(s->region);
  sodium_memzero(s->region->mesh_key, sizeof s->region->mesh_key);
  free(s->region);
  s->region = NULL;
}

bool region_is_mesh_key(const struct region *r, const char *key) { return derp_mesh_key_equal(key, r->mesh_key); }

int region_shard_init(struct shard *sh) {
  sh->rg = calloc(1, sizeof *sh->rg);
  if (!sh->rg) return -1;
  sh->rg->watch = region_watch_new();
  int n = sh->srv->nshards;
  sh->rg->fwd = region_fwd_new((uint32_t)((sh->srv->cfg.mesh_max_remote + n - 1) / n));
  return sh->rg->watch && sh->rg->fwd ? 0 : -1;
}

void region_shard_free(struct shard *sh) {
  if (!sh->rg) return;
  link_shard_free(sh);
  region_watch_free(sh, sh->rg->watch);
  region_fwd_free(sh->rg->fwd);
  free(sh->rg);
  sh->rg = NULL;
}

void region_ctrl(struct shard *sh, struct pkt *m) {
  switch (m->kind) {
  case MSG_WATCH_SUB:
  case MSG_WATCH_UNSUB:
  case MSG_WATCH_RESNAP:
  case MSG_PRESENCE:
  case MSG_WATCH_ACK: region_watch_ctrl(sh, m); break;
  default: region_fwd_ctrl(sh, m); break;
  }
}

void region_end_turn(struct shard *sh) { region_watch_end_turn(sh); }

void region_tick(struct shard *sh) {
  region_links_tick(sh);
  region_watch_tick(sh);
}
