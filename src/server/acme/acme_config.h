/* acme_config.h: what -certmode letsencrypt needs from the command line
 * (pure; part of the parsing library, so unit tests link it). */
#ifndef DERPD_ACME_CONFIG_H
#define DERPD_ACME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct config;

/* -hostname must be a DNS name a public CA can validate (not an IP, not
 * derpd's placeholder default nor derper's), --acme-directory an https URL.
 * by_default: letsencrypt because no -certmode was given (TLS on port 443),
 * which the message says, with the ways out. 0, or -1 with err. */
int acme_config_check(const struct config *c, bool by_default, char *err, size_t errlen);
/* A DNS host name: labels of letters, digits and '-' (not at either end),
 * 1..63 bytes each, 253 in all, at least one dot, the last label not all
 * digits (so no IPv4 address passes). */
bool acme_dns_name_ok(const char *name);

#endif
