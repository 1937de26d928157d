/* acme_ipcert.c: the address table of -acme-ip-certs (acme_ipcert.h). */
#include "server/acme/acme_ipcert.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/acme/acme_chal.h"
#include "server/log.h"

struct entry {
  char addr[ACME_IPCERT_TEXT]; /* "" = free; set once */
  SSL_CTX *ctx;                /* NULL until the worker installs one */
  int64_t not_after;           /* ctx's leaf, unix seconds */
};

static struct {
  pthread_mutex_t mu;
  struct entry e[ACME_IPCERT_MAX];
  int n;
  bool full_told, private_told;
  bool any_ip;                 /* DERPD_TEST_ACME_ANY_IP: loopback too (tests) */
  atomic_int kick_fd;          /* -1 = off */
} T = {.mu = PTHREAD_MUTEX_INITIALIZER, .kick_fd = -1};

void acme_ipcert_enable(int kick_fd) {
  const char *any = getenv("DERPD_TEST_ACME_ANY_IP");
  pthread_mutex_lock(&T.mu);
  T.any_ip = any && strcmp(any, "1") == 0;
  pthread_mutex_unlock(&T.mu);
  if (T.any_ip) log_warn("acme: DERPD_TEST_ACME_ANY_IP=1: certificates asked for any address (tests only)");
  atomic_store(&T.kick_fd, kick_fd);
}

static bool in4(uint32_t a, uint32_t net, int bits) { return (a ^ net) >> (32 - bits) == 0; }

bool acme_ipcert_public(const char *addr) {
  uint8_t b[16];
  if (inet_pton(AF_INET, addr, b) == 1) {
    uint32_t a = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    static const struct { uint32_t net; int bits; } no[] = {
        {0x00000000, 8},  {0x0a000000, 8},  {0x64400000, 10}, {0x7f000000, 8},  {0xa9fe0000, 16},
        {0xac100000, 12}, {0xc0000000, 24}, {0xc0000200, 24}, {0xc0a80000, 16}, {0xc6120000, 15},
        {0xc6336400, 24}, {0xcb007100, 24}, {0xe0000000, 3},
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
      if (in4(a, no[i].net, no[i].bits)) return false;
    return true;
  }
  if (inet_pton(AF_INET6, addr, b) != 1) return false;
  const struct in6_addr *a6 = (const struct in6_addr *)b;
  if (IN6_IS_ADDR_V4MAPPED(a6)) {
    char v4[INET_ADDRSTRLEN];
    return inet_ntop(AF_INET, b + 12, v4, sizeof v4) && acme_ipcert_public(v4);
  }
  static const uint8_t doc[4] = {0x20, 0x01, 0x0d, 0xb8};
  return !(IN6_IS_ADDR_UNSPECIFIED(a6) || IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_LINKLOCAL(a6) ||
           IN6_IS_ADDR_MULTICAST(a6) || (b[0] & 0xfe) == 0xfc || memcmp(b, doc, 4) == 0);
}

/* The connection's local address, unmapped, as text. */
static bool local_addr(int fd, char *out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return false;
  if (ss.ss_family == AF_INET)
    return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)cap) != NULL;
  if (ss.ss_family != AF_INET6) return false;
  const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(a)) return inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)cap) != NULL;
  return inet_ntop(AF_INET6, a, out, (socklen_t)cap) != NULL;
}

/* An IP-literal SNI in the form local_addr writes (unmapped, canonical), or
 * false when the name is not an address. */
static bool canonical_ip(const char *name, char *out, size_t cap) {
  uint8_t a[16];
  if (inet_pton(AF_INET, name, a) == 1) return inet_ntop(AF_INET, a, out, (socklen_t)cap) != NULL;
  if (inet_pton(AF_INET6, name, a) != 1) return false;
  if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a)) return inet_ntop(AF_INET, a + 12, out, (socklen_t)cap) != NULL;
  return inet_ntop(AF_INET6, a, out, (socklen_t)cap) != NULL;
}

/* Under T.mu: entry for addr, added (and the worker woken) when missing and
 * there is room; NULL when full. */
static struct entry *lookup_locked(const char *addr, bool *added) {
  *added = false;
  for (int i = 0; i < T.n; i++)
    if (strcmp(T.e[i].addr, addr) == 0) return &T.e[i];
  if (T.n == ACME_IPCERT_MAX || (!T.any_ip && !acme_ipcert_public(addr))) return NULL;
  struct entry *e = &T.e[T.n++];
  snprintf(e->addr, sizeof e->addr, "%s", addr);
  *added = true;
  return e;
}

bool acme_ipcert_add(const char *addr) {
  char canon[ACME_IPCERT_TEXT];
  bool added;
  if (!canonical_ip(addr, canon, sizeof canon)) return false;
  pthread_mutex_lock(&T.mu);
  struct entry *e = lookup_locked(canon, &added);
  pthread_mutex_unlock(&T.mu);
  if (!e) log_error("acme: %s is not a public address: no CA will certify it", canon);
  return e != NULL;
}

enum ssl_select_cert_result_t acme_ipcert_select(const SSL_CLIENT_HELLO *ch, int fd, const char **why) {
  char local[ACME_IPCERT_TEXT], sni_ip[ACME_IPCERT_TEXT];
  const char *sni = SSL_get_servername(ch->ssl, TLSEXT_NAMETYPE_host_name);
  if (!local_addr(fd, local, sizeof local)) {
    *why = "no local address for the IP certificate";
    return ssl_select_cert_error;
  }
  if (sni && (!canonical_ip(sni, sni_ip, sizeof sni_ip) || strcmp(sni_ip, local) != 0)) {
    *why = "SNI names an IP address this connection did not reach";
    return ssl_select_cert_error;
  }
  bool added = false, full = false;
  SSL_CTX *ctx = NULL;
  pthread_mutex_lock(&T.mu);
  struct entry *e = lookup_locked(local, &added);
  if (e && e->ctx) {
    ctx = e->ctx;
    SSL_CTX_up_ref(ctx);
  }
  bool priv = !e && T.n < ACME_IPCERT_MAX, told_priv = priv && T.private_told;
  if (priv) T.private_told = true;
  if (!e && !priv && !T.full_told) full = T.full_told = true;
  pthread_mutex_unlock(&T.mu);
  if (ctx) {
    SSL_CTX *set = SSL_set_SSL_CTX(ch->ssl, ctx); /* takes its own reference */
    SSL_CTX_free(ctx);
    if (set) return ssl_select_cert_success;
    *why = "could not switch to the IP certificate";
    return ssl_select_cert_error;
  }
  if (added) {
    log_info("acme: %s: a client dialled this address: asking the CA for a certificate", local);
    uint64_t one = 1;
    int kfd = atomic_load(&T.kick_fd);
    if (kfd >= 0 && write(kfd, &one, sizeof one) != sizeof one) log_warn("acme: wake the worker: failed");
  }
  if (full)
    log_warn("acme: %s: no certificate: %d addresses already have one or asked (-acme-ip-certs' bound)", local,
             ACME_IPCERT_MAX);
  if (priv && !told_priv) /* once: a health check on loopback would repeat it for ever */
    log_warn("acme: %s: a client dialled an address that is not public (loopback, private, link-local...): "
             "no CA certifies one, so none is asked for (logged once)", local);
  *why = e ? "no certificate for this IP address yet (asked the CA)"
           : priv ? "no certificate for an address that is not public" : "too many IP addresses";
  return ssl_select_cert_error;
}

bool acme_ipcert_addr(int i, char *out, size_t cap) {
  pthread_mutex_lock(&T.mu);
  bool ok = i >= 0 && i < T.n;
  if (ok) snprintf(out, cap, "%s", T.e[i].addr);
  pthread_mutex_unlock(&T.mu);
  return ok;
}

void acme_ipcert_install(int i, SSL_CTX *ctx, int64_t not_after) {
  pthread_mutex_lock(&T.mu);
  SSL_CTX *old = ctx;
  if (i >= 0 && i < T.n) {
    old = T.e[i].ctx;
    T.e[i].ctx = ctx;
    T.e[i].not_after = not_after;
  }
  pthread_mutex_unlock(&T.mu);
  acme_chal_retire(old); /* a handshake may still hold it */
}

int64_t acme_ipcert_not_after(void) {
  int64_t soonest = 0;
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < T.n; i++)
    if (T.e[i].ctx && (!soonest || T.e[i].not_after < soonest)) soonest = T.e[i].not_after;
  pthread_mutex_unlock(&T.mu);
  return soonest;
}

int64_t acme_ipcert_entry_not_after(int i) {
  pthread_mutex_lock(&T.mu);
  int64_t na = i >= 0 && i < T.n && T.e[i].ctx ? T.e[i].not_after : 0;
  pthread_mutex_unlock(&T.mu);
  return na;
}

void acme_ipcert_free(void) {
  pthread_mutex_lock(&T.mu);
  for (int i = 0; i < T.n; i++) {
    SSL_CTX_free(T.e[i].ctx);
    T.e[i].ctx = NULL;
    T.e[i].addr[0] = 0;
  }
  T.n = 0;
  T.full_told = T.private_told = false;
  pthread_mutex_unlock(&T.mu);
  atomic_store(&T.kick_fd, -1);
}

void acme_ipcert_path(const char *certdir, const char *addr, const char *suffix, char *out, size_t cap) {
  char name[ACME_IPCERT_TEXT];
  snprintf(name, sizeof name, "%s", addr);
  for (char *p = name; *p; p++)
    if (*p == ':') *p = '.';
  snprintf(out, cap, "%s/%s%s", certdir, name, suffix);
}
