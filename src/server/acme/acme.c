/* acme.c: the ACME worker thread and its files (acme.h).
 *
 * Files in -certdir:
 *   <hostname>.crt      the chain, leaf first (PEM; what -certmode manual reads)
 *   <hostname>.key      its private key (PEM, mode 0600)
 *   acme_account+key    the ACME account key (PEM "EC PRIVATE KEY", 0600):
 *                       autocert's name and format, so derper's certdir works
 * derper's autocert keeps a certificate as one file, <hostname> (key, then
 * chain); when ours are missing and that one is there, acme_init splits it
 * into ours, so a derper node switches to derpd without a new certificate.
 *
 * The thread keeps a list of certificates (struct slot): -hostname's (not
 * on an IP-only server) and, with -acme-ip-certs, one per address in
 * acme_ipcert's table (<certdir>/<address>.crt and .key, derper's names).
 * For each: look at the files; when the certificate is missing, unusable
 * or due, run the ACME exchange (acme_client.c), write the key and then the
 * chain (each atomically), and install it (tls_reload for -hostname's, an
 * SSL_CTX in acme_ipcert's table for an address's); else sleep until the
 * first is due (waking at least hourly, so a changed clock is noticed, and
 * at once when a handshake asks for a new address). A failure is logged and
 * retried after 2 min, doubling to 1 h, per certificate: Let's Encrypt
 * allows 5 failed validations per hour per name. Whatever the certificate
 * in use, it stays in use until a new one is installed.
 *
 * Stopping: acme_stop (after the shards are joined) writes an eventfd the
 * thread polls in every wait and in every network read or write, joins it,
 * and frees the challenge contexts handshakes may have held. */
#include "server/acme/acme.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "derp/key.h"
#include "server/acme/acme_chal.h"
#include "server/acme/acme_client.h"
#include "server/acme/acme_ipcert.h"
#include "server/acme/acme_jws.h"
#include "server/config.h"
#include "server/httpc/httpc.h"
#include "server/log.h"
#include "server/transport/tls.h"

#define RETRY_FIRST_MS (2 * 60 * 1000L)
#define RETRY_MAX_MS (60 * 60 * 1000L)
#define RENEW_BEFORE_MAX (30 * 86400L) /* autocert's RenewBefore */
#define WAKE_MAX_S 3600

static struct {
  bool on, started;
  const struct config *cfg;
  char crt[1300], key[1300], account[1300];
  EVP_PKEY *account_key;
  int stop_fd;
  pthread_t thread;
  const char *types[2];
  int ntypes;
  long retry_first_ms;
  long test_renew_after_s; /* DERPD_TEST_ACME_RENEW_AFTER, -1 = off */
  bool ip_only;            /* -acme-ip-certs with an IP -hostname: no hostname slot */
  int kick_fd;             /* -acme-ip-certs: a handshake asked for an address */
} W = {.stop_fd = -1, .kick_fd = -1};

/* ---- files ----------------------------------------------------------------- */

static void iso_time(time_t t, char out[32]) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

struct cert_state {
  bool usable;              /* a chain for -hostname with its key */
  time_t not_before, not_after;
  char why[1700];           /* when not usable */
};

static X509 *read_leaf(const char *path) {
  FILE *f = fopen(path, "re");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  return x;
}

static EVP_PKEY *read_key(const char *path) {
  FILE *f = fopen(path, "re");
  EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
  if (f) fclose(f);
  return k;
}

/* One certificate the worker keeps: -hostname's, or (-acme-ip-certs) one
 * IP address's, entry ip of acme_ipcert's table. Worker thread only. */
struct slot {
  char name[256];           /* the DNS name or the address */
  int ip;                   /* acme_ipcert entry, or -1 for -hostname */
  char crt[1300], key[1300];
  time_t installed;         /* first seen usable or installed by this process */
  int64_t next_try_ms;      /* after a failure: not before (mono_ms) */
  long backoff;
  bool told;                /* "valid until" logged since the last change */
  char *kept_chain;         /* a certificate the CA issued whose files could not */
  char *kept_key;           /*   be written yet: written next time, not asked again */
  size_t kept_klen;
};

static void inspect(const struct slot *sl, struct cert_state *s) {
  memset(s, 0, sizeof *s);
  X509 *leaf = read_leaf(sl->crt);
  EVP_PKEY *key = leaf ? read_key(sl->key) : NULL;
  const char *host = sl->name;
  if (!leaf)
    snprintf(s->why, sizeof s->why, "no certificate in %s", sl->crt);
  else if (!key)
    snprintf(s->why, sizeof s->why, "no key in %s", sl->key);
  else if (!X509_check_private_key(leaf, key))
    snprintf(s->why, sizeof s->why, "%s does not match its key file", sl->crt);
  else if ((sl->ip >= 0 ? X509_check_ip_asc(leaf, host, 0) : X509_check_host(leaf, host, strlen(host), 0, NULL)) != 1)
    snprintf(s->why, sizeof s->why, "%s does not name %s", sl->crt, host);
  else
    s->usable = true;
  if (s->usable) {
    s->not_before = (time_t)tls_asn1_epoch(X509_get0_notBefore(leaf));
    s->not_after = (time_t)tls_asn1_epoch(X509_get0_notAfter(leaf));
  }
  X509_free(leaf);
  EVP_PKEY_free(key);
  ERR_clear_error();
}

/* When to renew: a third of the lifetime before expiry, at most 30 days
 * before (Let's Encrypt's 90 days: day 60, as autocert; a 6-day certificate:
 * day 4). Tests: DERPD_TEST_ACME_RENEW_AFTER seconds after installation. */
static time_t renew_time(const struct cert_state *s, time_t installed) {
  if (W.test_renew_after_s >= 0) return installed + W.test_renew_after_s;
  long life = (long)(s->not_after - s->not_before);
  long before = life / 3 < RENEW_BEFORE_MAX ? life / 3 : RENEW_BEFORE_MAX;
  return s->not_after - (before > 0 ? before : 0);
}

static int write_pem(const char *path, unsigned mode, const char *pem, size_t len, char *err, size_t errlen) {
  if (derp_file_write_atomic(path, mode, pem, len) == 0) return 0;
  snprintf(err, errlen, "write %.400s: %s", path, strerror(errno));
  return -1;
}

/* derper's autocert cache: <certdir>/<hostname> = key PEM, then the chain. */
static void import_autocert(void) {
  char path[1300];
  snprintf(path, sizeof path, "%s/%s", W.cfg->certdir, W.cfg->hostname);
  if ((access(W.crt, F_OK) == 0 && access(W.key, F_OK) == 0) || access(path, R_OK) != 0) return;
  FILE *f = fopen(path, "re");
  EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
  BIO *chain = BIO_new(BIO_s_mem());
  int n = 0;
  X509 *x;
  while (key && chain && (x = PEM_read_X509(f, NULL, NULL, NULL))) {
    n += PEM_write_bio_X509(chain, x) ? 1 : 0;
    X509_free(x);
  }
  if (f) fclose(f);
  ERR_clear_error();
  char *kpem = NULL, err[600] = "";
  size_t klen = 0, clen = 0;
  const uint8_t *cpem;
  if (n > 0 && acme_key_pem(key, &kpem, &klen) == 0 && BIO_mem_contents(chain, &cpem, &clen) &&
      write_pem(W.key, 0600, kpem, klen, err, sizeof err) == 0 &&
      write_pem(W.crt, 0644, (const char *)cpem, clen, err, sizeof err) == 0)
    log_info("acme: took over derper's autocert certificate %s as %s and %s", path, W.crt, W.key);
  else
    log_warn("acme: cannot use derper's autocert file %s%s%s", path, err[0] ? ": " : "", err);
  free(kpem);
  BIO_free(chain);
  EVP_PKEY_free(key);
}

/* ---- the thread ------------------------------------------------------------ */

/* Put the slot's files in use: -hostname's through tls_reload (the SIGHUP
 * path), an address's as its entry in acme_ipcert's table. 0, or -1 with err. */
static int install(struct slot *sl, char *err, size_t errlen) {
  char terr[400] = "";
  if (sl->ip < 0) {
    if (tls_reload(terr, sizeof terr) == 0) return 0;
  } else {
    SSL_CTX *ctx = tls_ctx_from_files(sl->crt, sl->key, terr, sizeof terr);
    if (ctx) {
      acme_ipcert_install(sl->ip, ctx, tls_ctx_not_after(ctx));
      return 0;
    }
  }
  snprintf(err, errlen, "the certificate does not load: %s", terr);
  return -1;
}

/* Whether the certificate files can be made: a temporary file beside them.
 * Asked before each order, so that a -certdir derpd cannot write (read-only,
 * full) costs no certificate: each would count against the CA's limit on
 * duplicate certificates (Let's Encrypt: 5 a week) and be thrown away. */
static int certdir_writable(char *err, size_t errlen) {
  char probe[1100]; /* every slot's files are in -certdir */
  snprintf(probe, sizeof probe, "%s/.derpd-write-test-XXXXXX", W.cfg->certdir);
  int fd = mkstemp(probe);
  if (fd < 0) {
    snprintf(err, errlen, "cannot write to %.300s (%s): not asking the CA for a certificate that could "
             "not be kept", W.cfg->certdir, strerror(errno));
    return -1;
  }
  close(fd);
  unlink(probe);
  return 0;
}

static void drop_kept(struct slot *sl) {
  if (sl->kept_key) OPENSSL_cleanse(sl->kept_key, sl->kept_klen);
  free(sl->kept_key);
  free(sl->kept_chain);
  sl->kept_key = sl->kept_chain = NULL;
  sl->kept_klen = 0;
}

/* Get a certificate, write it, swap it in. 0, or -1 with err. One the CA
 * issued but that could not be written is kept and written next time,
 * instead of ordering another. */
static int renew(struct acme_client *c, struct slot *sl, char *err, size_t errlen) {
  if (!sl->kept_chain) {
    if (certdir_writable(err, errlen) != 0) return -1;
    EVP_PKEY *key = NULL;
    char *chain = NULL;
    if (acme_client_obtain(c, sl->name, &key, &chain, err, errlen) != 0) {
      /* Next time, read the directory and look the account up again: either
       * may have changed (newAccount with a known key just returns it). */
      c->new_order[0] = 0;
      c->kid[0] = 0;
      return -1;
    }
    int kr = acme_key_pem(key, &sl->kept_key, &sl->kept_klen);
    EVP_PKEY_free(key);
    if (kr != 0) {
      free(chain);
      snprintf(err, errlen, "encode the key: failed");
      return -1;
    }
    sl->kept_chain = chain;
  }
  if (write_pem(sl->key, 0600, sl->kept_key, sl->kept_klen, err, errlen) != 0 ||
      write_pem(sl->crt, 0644, sl->kept_chain, strlen(sl->kept_chain), err, errlen) != 0) {
    size_t n = strlen(err);
    snprintf(err + n, errlen - n, " (the certificate the CA issued is kept and written at the next try)");
    return -1;
  }
  drop_kept(sl);
  return install(sl, err, errlen);
}

/* Certificates the worker got and installed, and attempts that failed: the
 * worker writes, /debug/varz (any shard) reads. */
static _Atomic int64_t n_issued, n_failed;

void acme_counts(int64_t *issued, int64_t *failed) {
  *issued = atomic_load_explicit(&n_issued, memory_order_relaxed);
  *failed = atomic_load_explicit(&n_failed, memory_order_relaxed);
}

static bool stop_requested(void) {
  struct pollfd p = {.fd = W.stop_fd, .events = POLLIN};
  return poll(&p, 1, 0) > 0;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Look at one certificate and get a new one when it is missing or due:
 * milliseconds until it wants a look again, or -1 to stop. */
static int64_t step(struct acme_client *c, struct slot *sl) {
  int64_t left = sl->next_try_ms - mono_ms();
  if (left > 0) return left;
  time_t now = time(NULL);
  struct cert_state cs;
  inspect(sl, &cs);
  if (cs.usable && !sl->installed) sl->installed = now;
  char err[600], t1[32], t2[32];
  /* The files are what must be served: an address's files from before (this
   * process or derper), or a certificate whose install failed after it was
   * written (or that a SIGHUP raced). Files that will not load are renewed. */
  int64_t served = sl->ip < 0 ? tls_cert_not_after() : acme_ipcert_entry_not_after(sl->ip);
  if (cs.usable && now < cs.not_after && served != (int64_t)cs.not_after) {
    if (install(sl, err, sizeof err) == 0) {
      log_info("acme: %s: serving the certificate in %s", sl->name, sl->crt);
    } else {
      log_warn("acme: %s: %s", sl->name, err);
      cs.usable = false;
      snprintf(cs.why, sizeof cs.why, "%s", err);
    }
  }
  time_t due = cs.usable ? renew_time(&cs, sl->installed) : now;
  iso_time(cs.not_after, t1);
  if (now < due) {
    iso_time(due, t2);
    if (!sl->told) log_info("acme: %s: certificate valid until %s; renewal due %s", sl->name, t1, t2);
    sl->told = true;
    return (int64_t)(due - now) * 1000;
  }
  const char *why = !cs.usable ? cs.why : now >= cs.not_after ? "the certificate has expired"
                                                               : "the certificate is due for renewal";
  log_info("acme: %s: %s: requesting a certificate from %s", sl->name, why, W.cfg->acme_directory);
  if (renew(c, sl, err, sizeof err) == 0) {
    atomic_fetch_add_explicit(&n_issued, 1, memory_order_relaxed);
    sl->installed = time(NULL);
    sl->told = false;
    inspect(sl, &cs);
    iso_time(cs.not_after, t1);
    log_info("acme: %s: new certificate installed (valid until %s); new connections use it", sl->name, t1);
    if (cs.usable && renew_time(&cs, sl->installed) > time(NULL)) {
      sl->backoff = W.retry_first_ms;
      sl->next_try_ms = mono_ms() + 1000; /* then its renewal date */
      return 1000;
    }
    /* Due already (a clock ahead of the CA's, a CA that issues short or
     * expired certificates): asking again at once, every second, would
     * spend the CA's rate limits (Let's Encrypt: 5 duplicates a week) and
     * lock the name out. The next request waits as after a failure. */
    log_error("acme: %s: the new certificate is due for renewal already (valid until %s): is this "
              "machine's clock ahead? next request in %ld s", sl->name, t1, sl->backoff / 1000);
    sl->next_try_ms = mono_ms() + sl->backoff;
    int64_t wait = sl->backoff;
    sl->backoff = sl->backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : sl->backoff * 2;
    return wait;
  }
  if (stop_requested()) return -1;
  atomic_fetch_add_explicit(&n_failed, 1, memory_order_relaxed);
  log_error("acme: %s: could not get a certificate: %s; %s%s; retrying in %ld s", sl->name, err,
            cs.usable ? "still serving the current one, valid until " : "no certificate to serve yet",
            cs.usable ? t1 : "", sl->backoff / 1000);
  sl->next_try_ms = mono_ms() + sl->backoff;
  left = sl->backoff;
  sl->backoff = sl->backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : sl->backoff * 2;
  return left;
}

static void slot_init(struct slot *sl, const char *name, int ip) {
  memset(sl, 0, sizeof *sl);
  snprintf(sl->name, sizeof sl->name, "%s", name);
  sl->ip = ip;
  sl->backoff = W.retry_first_ms;
  if (ip < 0) {
    snprintf(sl->crt, sizeof sl->crt, "%s", W.crt);
    snprintf(sl->key, sizeof sl->key, "%s", W.key);
  } else {
    acme_ipcert_path(W.cfg->certdir, name, ".crt", sl->crt, sizeof sl->crt);
    acme_ipcert_path(W.cfg->certdir, name, ".key", sl->key, sizeof sl->key);
  }
}

/* Sleep ms, until stop (-1) or a handshake asks for an address (0, early). */
static int sleep_ms(int64_t ms) {
  if (ms > WAKE_MAX_S * 1000L) ms = WAKE_MAX_S * 1000L;
  if (ms < 0) ms = 0;
  struct pollfd p[2] = {{.fd = W.stop_fd, .events = POLLIN}, {.fd = W.kick_fd, .events = POLLIN}};
  int r = poll(p, W.kick_fd >= 0 ? 2 : 1, (int)ms);
  if (r > 0 && (p[0].revents & POLLIN)) return -1;
  if (r > 0 && (p[1].revents & POLLIN)) {
    uint64_t v;
    if (read(W.kick_fd, &v, sizeof v) != sizeof v) log_warn("acme: read the wake-up: %s", strerror(errno));
  }
  return 0;
}

static void *worker(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "acme");
  struct acme_client c;
  char err[600];
  if (acme_client_init(&c, W.account_key, W.cfg->acme_directory, W.cfg->acme_ca_file, W.types, W.ntypes,
                       W.stop_fd, err, sizeof err) != 0) {
    log_error("acme: cannot start: %s; no certificates will be obtained or renewed", err);
    return NULL;
  }
  if (acme_client_account(&c, W.cfg->acme_email, W.cfg->acme_eab_kid, W.cfg->acme_eab_key) != 0) {
    log_error("acme: -acme-eab-key does not decode; no certificates will be obtained or renewed");
    acme_client_free(&c);
    return NULL;
  }
  /* -hostname's certificate first (none on an IP-only server), then one per
   * address acme_ipcert's table gained. */
  static struct slot slots[1 + ACME_IPCERT_MAX];
  int n = 0, nip = 0;
  if (!W.ip_only) slot_init(&slots[n++], W.cfg->hostname, -1);
  for (;;) {
    char addr[ACME_IPCERT_TEXT];
    while (nip < ACME_IPCERT_MAX && acme_ipcert_addr(nip, addr, sizeof addr)) {
      slot_init(&slots[n++], addr, nip);
      nip++;
    }
    int64_t wake = WAKE_MAX_S * 1000L;
    for (int i = 0; i < n; i++) {
      int64_t t = step(&c, &slots[i]);
      if (t < 0) goto out;
      if (t < wake) wake = t;
    }
    if (wake > 0 && sleep_ms(wake) != 0) break;
    if (stop_requested()) break;
  }
out:
  for (int i = 0; i < n; i++) drop_kept(&slots[i]);
  acme_chal_clear_all();
  acme_client_free(&c);
  return NULL;
}

/* ---- start and stop ---------------------------------------------------------- */

static long env_long(const char *name, long dflt) {
  const char *v = getenv(name);
  if (!v || !v[0]) return dflt;
  log_warn("acme: %s=%s (tests only)", name, v);
  return strtol(v, NULL, 10);
}

int acme_init(const struct config *cfg, char *err, size_t errlen) {
  if (!config_acme(cfg)) return 0;
  W.cfg = cfg;
  snprintf(W.crt, sizeof W.crt, "%s/%s.crt", cfg->certdir, cfg->hostname);
  snprintf(W.key, sizeof W.key, "%s/%s.key", cfg->certdir, cfg->hostname);
  snprintf(W.account, sizeof W.account, "%s/acme_account+key", cfg->certdir);
  if (derp_mkdir_p(cfg->certdir, 0700) != 0) {
    snprintf(err, errlen, "create -certdir %s: %s", cfg->certdir, strerror(errno));
    return -1;
  }
  /* What the worker would find only after the start, and then give up on
   * for good (no certificate, no renewal): a start-up error instead. */
  char terr[400];
  SSL_CTX *roots = httpc_tls_ctx(cfg->acme_ca_file, terr, sizeof terr);
  if (!roots) {
    snprintf(err, errlen, "%s", terr);
    return -1;
  }
  SSL_CTX_free(roots); /* (-acme-eab-key was checked with the flags) */
  bool created = false;
  char kerr[400];
  if (acme_key_load_or_create(W.account, &W.account_key, &created, kerr, sizeof kerr) != 0) {
    snprintf(err, errlen, "ACME account key: %s", kerr);
    return -1;
  }
  log_info("acme: %s account key %s", created ? "created" : "using", W.account);
  import_autocert();
  /* tls-alpn-01 works with the TLS port alone; http-01 needs the helper. */
  const char *only = getenv("DERPD_TEST_ACME_CHALLENGE");
  if (only && only[0]) log_warn("acme: DERPD_TEST_ACME_CHALLENGE=%s (tests only)", only);
  if (!only || !only[0] || strcmp(only, ACME_CHAL_TLS_ALPN) == 0) W.types[W.ntypes++] = ACME_CHAL_TLS_ALPN;
  if (cfg->http_port >= 0 && (!only || !only[0] || strcmp(only, ACME_CHAL_HTTP) == 0))
    W.types[W.ntypes++] = ACME_CHAL_HTTP;
  if (W.ntypes == 0) {
    snprintf(err, errlen, "no ACME challenge type can be answered (http-01 needs -http-port)");
    return -1;
  }
  W.retry_first_ms = env_long("DERPD_TEST_ACME_RETRY_MS", RETRY_FIRST_MS);
  W.test_renew_after_s = env_long("DERPD_TEST_ACME_RENEW_AFTER", -1);
  W.stop_fd = eventfd(0, EFD_CLOEXEC);
  if (W.stop_fd < 0) {
    snprintf(err, errlen, "eventfd: %s", strerror(errno));
    return -1;
  }
  if (cfg->acme_ip_certs) {
    W.ip_only = config_ip_literal(cfg->hostname);
    W.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (W.kick_fd < 0) {
      snprintf(err, errlen, "eventfd: %s", strerror(errno));
      return -1;
    }
    acme_ipcert_enable(W.kick_fd);
    /* The address clients are told to dial; one no CA certifies would
     * leave an IP-only server without a certificate for ever. */
    if (W.ip_only && !acme_ipcert_add(cfg->hostname)) {
      snprintf(err, errlen, "-hostname %s with -acme-ip-certs: not a public address, and no CA certifies "
               "one (use -certmode manual for a self-signed certificate)", cfg->hostname);
      return -1;
    }
    log_info("acme: -acme-ip-certs: a certificate for each of this server's addresses that clients dial "
             "without a DNS name (http-01 on -http-port %d)", cfg->http_port);
  }
  acme_chal_enable();
  W.on = true;
  log_info("acme: -certmode %s for %s from %s; challenges: %s%s%s", cfg->certmode, cfg->hostname,
           cfg->acme_directory, W.types[0], W.ntypes > 1 ? ", " : "", W.ntypes > 1 ? W.types[1] : "");
  /* Said once, because a setup that relied on derpd's old manual default
   * now asks a CA: the line names the flag that keeps the old behaviour. */
  if (cfg->certmode_defaulted)
    log_info("acme: letsencrypt is the default for port 443 without -certmode, as in derper; "
             "give -certmode manual to serve %s/%s.crt instead", cfg->certdir, cfg->hostname);
  return 0;
}

int acme_start(void) {
  if (!W.on) return 0;
  int rc = pthread_create(&W.thread, NULL, worker, NULL);
  if (rc != 0) {
    log_error("acme: cannot start the worker thread: %s", strerror(rc));
    return -1;
  }
  W.started = true;
  return 0;
}

void acme_stop(void) {
  if (W.started) {
    uint64_t one = 1;
    if (write(W.stop_fd, &one, sizeof one) != sizeof one) log_warn("acme: stop: %s", strerror(errno));
    pthread_join(W.thread, NULL);
    W.started = false;
  }
  acme_chal_free(); /* the shards are joined: no handshake holds a challenge context */
  acme_ipcert_free();
  if (W.kick_fd >= 0) close(W.kick_fd);
  W.kick_fd = -1;
  if (W.stop_fd >= 0) close(W.stop_fd);
  W.stop_fd = -1;
  EVP_PKEY_free(W.account_key);
  W.account_key = NULL;
  W.on = false;
}
