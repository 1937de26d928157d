/* acme_ipcert.h: -acme-ip-certs (derper v1.102): certificates for this
 * server's own IP addresses, for clients that dial it by address.
 *
 * A ClientHello with no SNI, or an IP address as SNI, is for the address
 * the connection reached (getsockname): derper's rule, so a client can
 * never make us ask for an address that is not ours. The first one for an
 * address without a certificate adds the address to a small table and
 * wakes the ACME worker, and that handshake fails (a shard never waits for
 * the CA; the client retries). The worker (acme.c) loads the address's
 * files or gets a certificate (http-01, acme_client.c) and installs an
 * SSL_CTX for it here; later handshakes for the address move to it.
 *
 * Only public addresses: loopback, private (RFC 1918, CGNAT, ULA),
 * link-local, documentation, multicast and unspecified addresses take no
 * slot, since a CA refuses them and health checks or a NAT's inside address
 * would otherwise fill the table (DERPD_TEST_ACME_ANY_IP=1 lets tests use
 * loopback with pebble).
 *
 * Threads: shards call acme_ipcert_select; the worker the rest. One mutex,
 * held to look up or install an entry, never across I/O. */
#ifndef DERPD_ACME_IPCERT_H
#define DERPD_ACME_IPCERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define ACME_IPCERT_MAX 16          /* addresses with a certificate or asked for */
#define ACME_IPCERT_TEXT 46         /* INET6_ADDRSTRLEN */

/* Main thread, before the shards start: from now on acme_ipcert_select
 * serves addresses, and writes kick_fd (an eventfd) when one is wanted. */
void acme_ipcert_enable(int kick_fd);

/* Main thread, before the shards start: an address to get a certificate
 * for from the start (an IP-only server's -hostname). False (logged) if it
 * is not one a CA would certify. */
bool acme_ipcert_add(const char *addr);

/* Whether a CA could certify the address (text, canonical or not). */
bool acme_ipcert_public(const char *addr);

/* Shard, from the TLS select-certificate callback, for a ClientHello whose
 * SNI is absent or an IP address; fd is the connection's socket. Moves the
 * SSL to the address's certificate; without one asks the worker for it and
 * refuses this handshake (*why says so). */
enum ssl_select_cert_result_t acme_ipcert_select(const SSL_CLIENT_HELLO *ch, int fd, const char **why);

/* Worker: the address of entry i in text ("192.0.2.1", "2001:db8::1");
 * false past the last. Entries are only ever added, in order. */
bool acme_ipcert_addr(int i, char *out, size_t cap);
/* Worker: entry i's certificate is ctx from now on (taken; the one it
 * replaces is retired: acme_chal_retire), its leaf valid until not_after
 * (unix seconds). */
void acme_ipcert_install(int i, SSL_CTX *ctx, int64_t not_after);
/* Any thread: the soonest NotAfter (unix seconds) of the addresses'
 * certificates in use; 0 while there is none. */
int64_t acme_ipcert_not_after(void);
/* Entry i's installed certificate's NotAfter; 0 when none is installed. */
int64_t acme_ipcert_entry_not_after(int i);
/* Main thread, once the shards and the worker are joined. */
void acme_ipcert_free(void);

/* A certificate file name for an address, as derper names them:
 * <certdir>/<address, ':' as '.'><suffix>. */
void acme_ipcert_path(const char *certdir, const char *addr, const char *suffix, char *out, size_t cap);

#endif
