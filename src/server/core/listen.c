/* listen.c: which address a listener takes, and the TCP listeners on it.
 * See listen.h. One address per listener, as derper has: every shard's
 * SO_REUSEPORT socket must take the same one, so the choice is made the
 * same way each time, never by which bind happened to work. */
#include "server/core/listen.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int listen_resolve(const char *host, uint16_t port, int socktype, struct sockaddr_storage *ss, socklen_t *len,
                   bool *dual, char *err, size_t errlen) {
  memset(ss, 0, sizeof *ss);
  *dual = false;
  if (!host[0]) {
    int probe = socket(AF_INET6, socktype | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
      close(probe);
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_any;
      a->sin6_port = htons(port);
      *len = sizeof *a;
      *dual = true;
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)ss;
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_ANY);
      a->sin_port = htons(port);
      *len = sizeof *a;
    }
    return 0;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = socktype, .ai_flags = AI_PASSIVE};
  struct addrinfo *res = NULL;
  int r = getaddrinfo(host, NULL, &hints, &res);
  const struct addrinfo *pick = res;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET) {
      pick = ai;
      break;
    }
  if (r != 0 || !pick || pick->ai_addrlen > sizeof *ss) {
    snprintf(err, errlen, "resolve %s: %s", host, r ? gai_strerror(r) : "no address");
    if (res) freeaddrinfo(res);
    return -1;
  }
  memcpy(ss, pick->ai_addr, pick->ai_addrlen);
  *len = pick->ai_addrlen;
  freeaddrinfo(res);
  if (ss->ss_family == AF_INET6) ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
  else ((struct sockaddr_in *)ss)->sin_port = htons(port);
  return 0;
}

int listen_open(const char *host, uint16_t port, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t len;
  bool dual;
  if (listen_resolve(host, port, SOCK_STREAM, &ss, &len, &dual, err, errlen) != 0) return -1;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "listen on %s:%u: socket: %s", host[0] ? host : "*", port, strerror(errno));
    return -1;
  }
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (dual) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  /* The kernel caps the backlog at net.core.somaxconn, which is what Go's
   * net.Listen (derper) asks for: an operator who raised it gets it. */
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, INT_MAX) != 0) {
    snprintf(err, errlen, "listen on %s:%u: %s", host[0] ? host : "*", port, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

int listen_port_in_use(const char *host, uint16_t port, char *err, size_t errlen) {
  if (port == 0) return 0;
  struct sockaddr_storage ss;
  socklen_t len;
  bool dual;
  char ignore[128];
  if (listen_resolve(host, port, SOCK_STREAM, &ss, &len, &dual, ignore, sizeof ignore) != 0) return 0;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* TIME_WAIT is no owner */
  if (dual) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  int busy = bind(fd, (struct sockaddr *)&ss, len) != 0 && errno == EADDRINUSE;
  close(fd);
  if (busy)
    snprintf(err, errlen, "listen on %s:%u: address already in use (another derpd or derper?)",
             host[0] ? host : "*", port);
  return busy;
}

uint16_t listen_bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}
