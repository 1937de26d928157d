/* acme_config.c: the checks -certmode letsencrypt makes at parse time
 * (acme_config.h). Nothing is opened here. */
#include "server/acme/acme_config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

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

int acme_config_check(const struct config *c, bool by_default, char *err, size_t errlen) {
  const char *ph = placeholder(c->hostname);
  if (ph && by_default) {
    snprintf(err, errlen, BY_DEFAULT "which needs -hostname, and \"%s\" is %s: set -hostname to this "
                          "server's DNS name (it must resolve here); or give " MANUAL "; or " PLAIN,
             c->hostname, ph);
    return -1;
  }
  if (ph) {
    snprintf(err, errlen, "-certmode letsencrypt needs -hostname: the DNS name clients dial, which must "
                          "resolve to this server (\"%s\" is %s); or use " MANUAL " instead",
             c->hostname, ph);
    return -1;
  }
  if (!acme_dns_name_ok(c->hostname)) {
    snprintf(err, errlen, "%s-hostname \"%.64s\" is not a DNS name with a dot (an IP address needs "
                          "-certmode manual or selfsigned)%s",
             by_default ? BY_DEFAULT "and " : "-certmode letsencrypt: ", c->hostname,
             by_default ? "; or " PLAIN : "");
    return -1;
  }
  if (strncasecmp(c->acme_directory, "https://", 8) != 0 || !c->acme_directory[8]) {
    snprintf(err, errlen, "--acme-directory \"%.64s\": want an https:// URL", c->acme_directory);
    return -1;
  }
  return 0;
}
