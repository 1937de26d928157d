/* region_util.h: what the region tests share (test_region.c,
 * test_region_fake.c): a region of up to three derpd nodes on loopback
 * (plain, TLS or mixed links), its mesh key, clients on its nodes, and the
 * teardown that stops it all. One region per test process (meson runs each
 * test as its own process). */
#ifndef DERPD_TESTS_REGION_UTIL_H
#define DERPD_TESTS_REGION_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "e2e_util.h"

#define MAXN 3
#define MAXC 512

struct region {
  int n;
  bool tls;
  struct derpd_proc node[MAXN];
  uint16_t port[MAXN];
  char dir[128], key_file[600], ca_file[600];
};

extern struct region g_r;
extern bool g_cert_dir;          /* TLS links trust SSL_CERT_DIR rather than SSL_CERT_FILE */
extern bool g_mixed;             /* odd nodes serve TLS, even nodes plain HTTP */
extern const char *g_node_extra; /* more flags for every node (a test sets it, teardown clears it) */
extern struct derp_client *g_clients[MAXC];
extern int g_nclients;

derp_key pub_of(const derp_privkey *priv);
bool sanitized(void);                     /* a sanitizer build: smaller loads */
void make_key_file(const char *path);     /* a fresh mesh key, as derper writes it */
void start_node(struct region *r, int i, bool chain, const char *key_file);
void region_up(int n, bool tls, bool chain);
void wait_meshed(int watchers_each);      /* plain links: every node watched by the others */
void wait_links_logged(int links_each);   /* TLS links: from the logs */
struct derp_client *connect_as(int i, const derp_privkey *priv, const char *mkey);
struct derp_client *client_on(int i, derp_privkey *priv_out);
void close_client(struct derp_client *c);
const char *mesh_key(void);               /* the region's key, as a client sends it */
void send_sizes(struct derp_client *a, struct derp_client *b); /* buffer-class edges and 64 KiB, in order, checked */
int count_in_log(const struct derpd_proc *p, const char *s);
long long varz_until(int i, const char *name, bool (*ok)(long long));
int region_teardown(void);

#endif
