/* acme_config.h: what -certmode letsencrypt and gcp need from the command
 * line (pure; part of the parsing library, so unit tests link it). */
#ifndef DERPD_ACME_CONFIG_H
#define DERPD_ACME_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

/* Longest -acme-eab-key, decoded (a 256-character flag holds at most 192). */
#define ACME_EAB_KEY_MAX 192

/* -hostname must be a DNS name a public CA can validate (not an IP, not
 * derpd's placeholder default nor derper's), --acme-directory an https URL,
 * -acme-eab-kid and -acme-eab-key come together and the key decodes,
 * -acme-email looks like an address; gcp needs all three (as derper).
 * by_default: letsencrypt because no -certmode was given (TLS on port 443),
 * which the message says, with the ways out. 0, or -1 with err. */
int acme_config_check(const struct config *c, bool by_default, char *err, size_t errlen);
/* A DNS host name: labels of letters, digits and '-' (not at either end),
 * 1..63 bytes each, 253 in all, at least one dot, the last label not all
 * digits (so no IPv4 address passes). */
bool acme_dns_name_ok(const char *name);
/* -acme-eab-key as derper reads it: unpadded base64url (RFC 8555's form),
 * else padded standard base64 (what `gcloud` prints). The key's length, at
 * most cap; 0 when it is neither, empty, or longer than cap. */
size_t acme_eab_key_decode(const char *s, uint8_t *out, size_t cap);

#endif
