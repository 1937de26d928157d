/* acme.h: -certmode letsencrypt: certificates from an ACME CA (Let's Encrypt
 * by default), obtained and renewed by one worker thread beside the shards.
 *
 * The worker keeps <certdir>/<hostname>.crt and .key (the files -certmode
 * manual reads) current: it gets a certificate when there is none, renews
 * at two thirds of its lifetime (at most 30 days before expiry, as
 * autocert), writes the files and swaps the server's SSL_CTX through
 * tls_reload, the SIGHUP path: open connections keep theirs. Challenges are
 * answered by the shards from acme_chal.h's table. No shard ever waits for
 * the worker. With -acme-ip-certs it also keeps a certificate for each
 * address clients dial without a DNS name (acme_ipcert.h). */
#ifndef DERPD_ACME_H
#define DERPD_ACME_H

#include <stddef.h>
#include <stdint.h>

struct config;

/* Main thread, before tls_init. Nothing unless -certmode letsencrypt; then
 * creates -certdir, loads or creates the account key, takes over derper's
 * autocert cache file when our files are missing, and enables the challenge
 * routes. 0, or -1 with err. */
int acme_init(const struct config *cfg, char *err, size_t errlen);
/* Main thread, once the shards listen: start the worker (when acme_init
 * enabled it). 0, or -1 (logged). */
int acme_start(void);
/* Main thread, after the shards are joined: wake the worker, wait for it
 * (any request in flight is abandoned), free everything. Safe without
 * start. */
void acme_stop(void);
/* Any thread: certificates obtained and installed, and attempts that failed
 * (each retry counts), since start. */
void acme_counts(int64_t *issued, int64_t *failed);

#endif
