/* acme_config.h: what -certmode letsencrypt needs from the command line
 * (pure; part of the parsing library, so unit tests link it). */
#ifndef DERPD_ACME_CONFIG_H
#define DERPD_ACME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct config;

/* -hostname must be a DNS name a public CA can validate (not an IP, not the
 * placeholder default), --acme-directory an https URL. 0, or -1 with err. */
int acme_config_check(const struct config *c, char *err, size_t errlen);
/* A DNS host name: labels of letters, digits and '-' (not at either end),
 * 1..63 bytes each, 253 in all, at least one dot, the last label not all
 * digits (so no IPv4 address passes). */
bool acme_dns_name_ok(const char *name);

#endif
