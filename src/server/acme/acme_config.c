/* acme_config.c: the checks -certmode letsencrypt and gcp make at parse
 * time (acme_config.h). Nothing is opened here. */
#include "server/acme/acme_config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "server/config.h"

bool acme_dns_name_ok(const char *name) {
  size_t n = strlen(name), label = 0;
  bool dot = false;
  if (n == 0 || n > 253) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (ch == '.') {
      if (label == 0 || name[i - 1] == '-') return false;
      label = 0;
      dot = true;
      continue;
    }
    bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (!alnum && (ch != '-' || label == 0)) return false;
    if (++label > 63) return false;
  }
  /* The last label (the TLD) is never all digits: that rules out IPv4. */
  bool letter = false;
  for (size_t i = n - label; i < n; i++) letter |= name[i] < '0' || name[i] > '9';
  return dot && label > 0 && name[n - 1] != '-' && letter;
}

/* The default names no server can get a certificate for: derpd's own
 * placeholder, and derper's (Tailscale's servers, which derper's autocert
 * treats specially); NULL for any other name. */
static const char *placeholder(const char *host) {
  if (strcasecmp(host, "derp.example.com") == 0) return "derpd's placeholder default";
  if (strcasecmp(host, "derp.tailscale.com") == 0) return "derper's default (Tailscale's own servers)";
  return NULL;
}

#define BY_DEFAULT "TLS on port 443 without -certmode is -certmode letsencrypt (derper's default), "
#define MANUAL "-certmode manual with -certdir holding <hostname>.crt and .key"
#define PLAIN "serve plain HTTP (-dev, or -a on a port other than 443)"

size_t acme_eab_key_decode(const char *s, uint8_t *out, size_t cap) {
  static const int variants[] = {sodium_base64_VARIANT_URLSAFE_NO_PADDING, sodium_base64_VARIANT_ORIGINAL};
  for (int i = 0; i < 2; i++) {
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, cap, s, strlen(s), NULL, &n, &end, variants[i]) == 0 && *end == 0 && n > 0)
      return n;
  }
  return 0;
}

/* -acme-email: what autocert puts after "mailto:"; the CA judges the rest. */
static bool email_ok(const char *s) {
  const char *at = strchr(s, '@');
  if (!at || at == s || !at[1] || strchr(at + 1, '@')) return false;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= ' ' || *p == 0x7f || *p == ',' || *p == '<' || *p == '>') return false;
  return true;
}

static int eab_check(const struct config *c, char *err, size_t errlen) {
  bool gcp = strcmp(c->certmode, "gcp") == 0;
  if (gcp && (!c->acme_eab_kid[0] || !c->acme_eab_key[0])) {
    snprintf(err, errlen, "-certmode gcp needs -acme-eab-kid and -acme-eab-key (Google Trust Services' "
                          "External Account Binding: `gcloud publicca external-account-keys create`)");
    return -1;
  }
  if (gcp && !c->acme_email[0]) {
    snprintf(err, errlen, "-certmode gcp needs -acme-email (the ACME account's contact address)");
    return -1;
  }
  if (!c->acme_eab_kid[0] != !c->acme_eab_key[0]) {
    snprintf(err, errlen, "-acme-eab-kid and -acme-eab-key go together (External Account Binding)");
    return -1;
  }
  uint8_t key[ACME_EAB_KEY_MAX];
  if (c->acme_eab_key[0] && !acme_eab_key_decode(c->acme_eab_key, key, sizeof key)) {
    snprintf(err, errlen, "-acme-eab-key: not base64url or base64 (or empty): the HMAC key as the CA gave it");
    return -1;
  }
  sodium_memzero(key, sizeof key);
  if (c->acme_email[0] && !email_ok(c->acme_email)) {
    snprintf(err, errlen, "-acme-email \"%.64s\": want one address, name@domain", c->acme_email);
    return -1;
  }
  return 0;
}

int acme_config_check(const struct config *c, bool by_default, char *err, size_t errlen) {
  if (eab_check(c, err, errlen) < 0) return -1;
  bool gcp = strcmp(c->certmode, "gcp") == 0;
  const char *ph = placeholder(c->hostname);
  if (ph && by_default) {
    snprintf(err, errlen, BY_DEFAULT "which needs -hostname, and \"%s\" is %s: set -hostname to this "
                          "server's DNS name (it must resolve here); or give " MANUAL "; or " PLAIN,
             c->hostname, ph);
    return -1;
  }
  if (ph) {
    snprintf(err, errlen, "-certmode %s needs -hostname: the DNS name clients dial, which must "
                          "resolve to this server (\"%s\" is %s); or use " MANUAL " instead",
             c->certmode, c->hostname, ph);
    return -1;
  }
  bool ip = config_ip_literal(c->hostname);
  if (ip && gcp) {
    snprintf(err, errlen, "-certmode gcp needs -hostname to be a DNS name, not an IP address");
    return -1;
  }
  if (ip && c->acme_ip_certs) { /* an IP-only server: a certificate per address */
  } else if (ip) {
    snprintf(err, errlen, "%s-hostname \"%.64s\" is an IP address: give -acme-ip-certs for Let's Encrypt "
                          "certificates for this server's addresses, or use -certmode manual or selfsigned%s",
             by_default ? BY_DEFAULT "and " : "-certmode letsencrypt: ", c->hostname,
             by_default ? "; or " PLAIN : "");
    return -1;
  } else if (!acme_dns_name_ok(c->hostname)) {
    snprintf(err, errlen, "%s%s-hostname \"%.64s\" is not a DNS name with a dot (an IP address needs "
                          "-certmode manual or selfsigned)%s",
             by_default ? BY_DEFAULT "and " : "-certmode ", by_default ? "" : gcp ? "gcp: " : "letsencrypt: ",
             c->hostname, by_default ? "; or " PLAIN : "");
    return -1;
  }
  if (strncasecmp(c->acme_directory, "https://", 8) != 0 || !c->acme_directory[8]) {
    snprintf(err, errlen, "--acme-directory \"%.64s\": want an https:// URL", c->acme_directory);
    return -1;
  }
  return 0;
}
