/* acme_client.h: one ACME (RFC 8555) client: directory, nonces, account,
 * order, authorizations and challenges, finalize with a CSR, the chain.
 *
 * Blocking, for the ACME worker thread only: every request is bounded
 * (acme_https.h) and every wait watches the stop descriptor. Challenge
 * responses go to acme_chal.h's table, where the shards find them. */
#ifndef DERPD_ACME_CLIENT_H
#define DERPD_ACME_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "server/acme/acme_config.h"
#include "server/acme/acme_https.h"

#define ACME_CHAL_TLS_ALPN "tls-alpn-01"
#define ACME_CHAL_HTTP "http-01"

struct acme_client {
  struct acme_https https;
  EVP_PKEY *key;                 /* the account key (not owned) */
  char thumbprint[44];
  char directory[1024];
  char new_nonce[1024], new_account[1024], new_order[1024];
  char kid[1024];                /* the account URL, once registered */
  char nonce[256];               /* the next Replay-Nonce to use */
  const char *types[2];          /* challenge types, preferred first */
  int ntypes;
  int next_type;                 /* as autocert: a type that failed is not tried again */
  char email[256];               /* the account's contact, "" = none */
  char eab_kid[256];             /* External Account Binding, "" = none */
  uint8_t eab_key[ACME_EAB_KEY_MAX];
  size_t eab_keylen;
  bool shortlived;               /* the directory offers the "shortlived" profile */
};

/* directory: the URL; ca_file: roots for the CA ("" = system's); types:
 * "tls-alpn-01" and/or "http-01", preferred first. 0, or -1 with err. */
int acme_client_init(struct acme_client *c, EVP_PKEY *account_key, const char *directory,
                     const char *ca_file, const char *const *types, int ntypes, int stop_fd,
                     char *err, size_t errlen);
void acme_client_free(struct acme_client *c);
/* What newAccount sends besides agreeing to the terms: a contact address
 * (email, "" = none) and an External Account Binding (eab_kid "" = none;
 * eab_key as -acme-eab-key gives it). 0, or -1 when the key does not decode. */
int acme_client_account(struct acme_client *c, const char *email, const char *eab_kid, const char *eab_key);

/* Get a certificate for host, a DNS name or an IP address (RFC 8738:
 * http-01 only, Let's Encrypt's short-lived profile where the CA has it): a
 * new P-256 key (*key_out) and the chain the CA issued, PEM, leaf first
 * (*chain_out, free()). 0, or -1 with err. */
int acme_client_obtain(struct acme_client *c, const char *host, EVP_PKEY **key_out, char **chain_out,
                       char *err, size_t errlen);

/* Sleep ms, waking early if stop_fd becomes readable: 0 slept, -1 stop. */
int acme_sleep_ms(int stop_fd, long ms);

#endif
