/* region_util.c: the region tests' nodes, keys and clients (region_util.h). */
#include "mini_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "derp/client_tls.h"
#include "region_util.h"

struct region g_r;
bool g_cert_dir; /* TLS links trust SSL_CERT_DIR rather than SSL_CERT_FILE */
bool g_mixed;    /* odd nodes serve TLS, even nodes plain HTTP */
const char *g_node_extra; /* more flags for every node (a test sets it, teardown clears it) */

static bool node_tls(const struct region *r, int i) { return r->tls || (g_mixed && i % 2); }
struct derp_client *g_clients[MAXC];
int g_nclients;

derp_key pub_of(const derp_privkey *priv) {
  derp_key k;
  derp_key_public(priv, &k);
  return k;
}

bool sanitized(void) {
  const char *s = getenv("DERPD_SANITIZE");
  return s && s[0] && strcmp(s, "none") != 0;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
}

void make_key_file(const char *path) {
  uint8_t b[32];
  derp_key k;
  e2e_random_key(&k);
  memcpy(b, k.b, sizeof b);
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
  char text[80];
  snprintf(text, sizeof text, "  %s\n", hex); /* derper trims whitespace */
  write_file(path, text);
}

/* The links of node i: "all" = every node (itself included, as one shared
 * command line would), "chain" = only its neighbours. */
static void mesh_list(struct region *r, int i, bool chain, char *out, size_t cap) {
  size_t n = 0;
  out[0] = 0;
  for (int j = 0; j < r->n; j++) {
    if (chain && (j == i || (j != i - 1 && j != i + 1))) continue;
    n += (size_t)snprintf(out + n, cap - n, "%s%s%s:%u", n ? "," : "", node_tls(r, j) ? "" : "http://",
                          node_tls(r, j) ? "localhost" : "127.0.0.1", r->port[j]);
  }
}

static void node_args(struct region *r, int i, bool chain, const char *key_file, char *out, size_t cap) {
  char list[512];
  mesh_list(r, i, chain, list, sizeof list);
  size_t n = (size_t)snprintf(out, cap, "-mesh-psk-file %s -mesh-with %s %s", key_file, list,
                              g_node_extra ? g_node_extra : "");
  if (node_tls(r, i))
    snprintf(out + n, cap - n, " -certmode selfsigned -hostname localhost -certdir %s/c%d -http-port -1",
             r->dir, i);
}

static int try_start_node(struct region *r, int i, bool chain, const char *key_file) {
  char args[900];
  node_args(r, i, chain, key_file, args, sizeof args);
  return derpd_start_port(&r->node[i], 2, r->port[i], args);
}

void start_node(struct region *r, int i, bool chain, const char *key_file) {
  cr_assert_eq(try_start_node(r, i, chain, key_file), 0, "node %d did not start", i);
}

/* TLS: one node makes a self-signed certificate for localhost once; every
 * node serves it, and it is what the links (and the test's clients) trust,
 * through SSL_CERT_FILE as an operator's private CA would be. */
static void make_certs(struct region *r) {
  char args[300], cmd[1200];
  snprintf(args, sizeof args, "-certmode selfsigned -hostname localhost -certdir %.100s/c0 -http-port -1", r->dir);
  struct derpd_proc p;
  cr_assert_eq(derpd_start(&p, 1, args), 0, "certificate maker did not start");
  derpd_kill(&p);
  for (int i = 1; i < r->n; i++) {
    snprintf(cmd, sizeof cmd, "mkdir -p '%.100s/c%d' && cp '%.100s/c0/localhost.crt' '%.100s/c0/localhost.key' '%.100s/c%d/'",
             r->dir, i, r->dir, r->dir, r->dir, i);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
  }
  snprintf(r->ca_file, sizeof r->ca_file, "%.100s/c0/localhost.crt", r->dir);
  if (!g_cert_dir) {
    setenv("SSL_CERT_FILE", r->ca_file, 1); /* the nodes inherit it */
    return;
  }
  /* Go's other variable: a directory of hashed roots. SSL_CERT_FILE names a
   * file that does not exist, which Go skips (root_unix.go: a missing file is
   * no error) and so must derpd: a host without ca-certificates whose
   * environment still names Debian's bundle. */
  snprintf(cmd, sizeof cmd, "mkdir -p '%.100s/roots' && cp '%.100s' '%.100s/roots/' && openssl rehash '%.100s/roots'",
           r->dir, r->ca_file, r->dir, r->dir);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  char dir[700];
  snprintf(dir, sizeof dir, "%.100s/roots", r->dir);
  setenv("SSL_CERT_DIR", dir, 1);
  snprintf(dir, sizeof dir, "%.100s/no-such-bundle.pem", r->dir);
  setenv("SSL_CERT_FILE", dir, 1);
}

void region_up(int n, bool tls, bool chain) {
  struct region *r = &g_r;
  memset(r, 0, sizeof *r);
  r->n = n;
  r->tls = tls;
  snprintf(r->dir, sizeof r->dir, "/tmp/derpd-region-XXXXXX");
  cr_assert_not_null(mkdtemp(r->dir));
  snprintf(r->key_file, sizeof r->key_file, "%.100s/mesh.key", r->dir);
  make_key_file(r->key_file);
  if (tls || g_mixed) make_certs(r);
  /* Every node's port is in every -mesh-with list, so they are picked up
   * front; another test may take one between the pick and derpd's bind
   * (tests run two at a time), and then the region starts over on new ports. */
  for (int attempt = 0;; attempt++) {
    for (int i = 0; i < n; i++) {
      bool dup;
      do {
        cr_assert_eq(e2e_pick_port(&r->port[i]), 0);
        dup = false;
        for (int j = 0; j < i; j++) dup |= r->port[j] == r->port[i];
      } while (dup);
    }
    int up = 0;
    while (up < n && try_start_node(r, up, chain, r->key_file) == 0) up++;
    if (up == n) return;
    for (int i = 0; i <= up; i++) derpd_kill(&r->node[i]); /* the one that failed: its directory */
    cr_assert(attempt < 2, "node %d did not start, on three sets of ports", up);
    fprintf(stderr, "region: node %d did not start on port %u; starting the region on new ports\n", up,
            r->port[up]);
  }
}

/* Every node watched by every other (plain only: /debug/varz is plain HTTP). */
void wait_meshed(int watchers_each) {
  for (int i = 0; i < g_r.n; i++) {
    long long w = derpd_varz_eventually(&g_r.node[i], "derp_watchers", watchers_each, 10000);
    cr_assert_eq(w, watchers_each, "node %d: %lld watchers, want %d", i, w, watchers_each);
  }
}

struct derp_client *connect_as(int i, const derp_privkey *priv, const char *mkey) {
  struct derp_client_opts o = {.host = "127.0.0.1", .port = g_r.port[i], .priv = priv,
                               .mesh_key = mkey, .timeout_ms = 5000};
  struct derp_client *c = NULL;
  char err[256] = "";
  int rc;
  if (node_tls(&g_r, i)) {
    struct derp_tls_opts t = {.sni = "localhost", .ca_file = g_r.ca_file};
    rc = derp_client_connect_tls(&c, &o, &t, NULL, err, sizeof err);
  } else {
    rc = derp_client_connect(&c, &o, err, sizeof err);
  }
  cr_assert_eq(rc, 0, "connect to node %d: %s", i, err);
  cr_assert(g_nclients < MAXC);
  g_clients[g_nclients++] = c;
  return c;
}

struct derp_client *client_on(int i, derp_privkey *priv_out) {
  derp_privkey priv;
  derp_key pub;
  derp_key_generate(&priv, &pub);
  if (priv_out) *priv_out = priv;
  return connect_as(i, &priv, NULL);
}

void close_client(struct derp_client *c) {
  for (int i = 0; i < g_nclients; i++)
    if (g_clients[i] == c) { g_clients[i] = g_clients[--g_nclients]; break; }
  derp_client_close(c);
}

static char g_mesh_key[200];
const char *mesh_key(void) {
  FILE *f = fopen(g_r.key_file, "r");
  cr_assert_not_null(f);
  char buf[200] = "";
  cr_assert_not_null(fgets(buf, sizeof buf, f));
  fclose(f);
  char *s = buf;
  while (*s == ' ') s++;
  s[strcspn(s, "\r\n ")] = 0;
  snprintf(g_mesh_key, sizeof g_mesh_key, "%s", s);
  return g_mesh_key;
}

int region_teardown(void) {
  while (g_nclients) derp_client_close(g_clients[--g_nclients]);
  for (int i = 0; i < MAXN; i++) {
    if (getenv("E2E_LOG") && g_r.node[i].pid) derpd_dump_log(&g_r.node[i], 8192);
    derpd_kill(&g_r.node[i]);
  }
  int rc = e2e_crash_seen() ? 1 : 0;
  if (g_r.dir[0]) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_r.dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_r.dir);
  }
  unsetenv("SSL_CERT_FILE");
  unsetenv("SSL_CERT_DIR");
  g_cert_dir = false;
  g_mixed = false;
  g_node_extra = NULL;
  memset(&g_r, 0, sizeof g_r);
  return rc;
}

/* Sizes at the edges of derpd's buffer classes (a RecvPacket of 256 and 2048
 * bytes fills one; as a ForwardPacket it needs the next) and the largest:
 * forwarding rewrites a packet in its buffer or copies it to a bigger one. */
void send_sizes(struct derp_client *a, struct derp_client *b) {
  static const uint32_t sizes[] = {1, 218, 219, 220, 251, 2010, 2011, 2012, DERP_MAX_PACKET};
  static uint8_t buf[DERP_MAX_PACKET];
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    for (uint32_t i = 0; i < sizes[k]; i++) buf[i] = (uint8_t)(i * 7 + 3 + k);
    cr_assert_eq(derp_client_send(a, derp_client_public_key(b), buf, sizes[k]), 0);
  }
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    struct derp_client_msg m;
    e2e_recv_data(b, &m, 5000);
    cr_assert_eq(m.packet_len, sizes[k], "packet %zu: %u bytes arrived, %u sent", k, m.packet_len, sizes[k]);
    cr_assert(memcmp(m.src.b, derp_client_public_key(a)->b, DERP_KEY_LEN) == 0, "packet %zu: wrong source", k);
    for (uint32_t i = 0; i < sizes[k]; i++)
      cr_assert_eq(m.packet[i], (uint8_t)(i * 7 + 3 + k), "packet of %u bytes corrupted at %u", sizes[k], i);
  }
}


int count_in_log(const struct derpd_proc *p, const char *s) {
  FILE *f = fopen(p->log_path, "r");
  if (!f) return -1;
  char line[2048];
  int n = 0;
  while (fgets(line, sizeof line, f)) n += strstr(line, s) != NULL;
  fclose(f);
  return n;
}

/* TLS nodes serve /debug/ only over TLS: wait for their logs instead (each
 * says a link is up once it has stayed up 5 s). */
void wait_links_logged(int links_each) {
  for (int i = 0; i < g_r.n; i++) {
    int64_t deadline = e2e_now_ms() + 20000;
    while (count_in_log(&g_r.node[i], ": up (watching its clients)") < links_each && e2e_now_ms() < deadline)
      e2e_sleep_ms(50);
    cr_assert_eq(count_in_log(&g_r.node[i], ": up (watching its clients)"), links_each, "node %d: links not up", i);
  }
}

/* Polls node i's varz until ok(value) or 10 s; the last value. */
long long varz_until(int i, const char *name, bool (*ok)(long long)) {
  long long v = derpd_varz(&g_r.node[i], name);
  for (int t = 0; t < 500 && !ok(v); t++) {
    usleep(20000);
    v = derpd_varz(&g_r.node[i], name);
  }
  return v;
}
