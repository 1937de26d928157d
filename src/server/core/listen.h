/* listen.h: the listening sockets of -a, -http-port and --metrics-listen,
 * and the address every listener of derpd (STUN too) takes for a host.
 * Used at start-up only, before the shards run; no shard state. */
#ifndef DERPD_LISTEN_H
#define DERPD_LISTEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>

/* The one address a listener on host:port takes, as Go's net.Listen (what
 * derper runs) picks it: no host: [::] dual stack (*dual) where the kernel
 * has IPv6, else 0.0.0.0 (a kernel booted with ipv6.disable=1); a name or a
 * literal: its first IPv4 address, else its first. 0, or -1 with err. */
int listen_resolve(const char *host, uint16_t port, int socktype, struct sockaddr_storage *ss, socklen_t *len,
                   bool *dual, char *err, size_t errlen);
/* A listening TCP socket (SO_REUSEPORT: one per shard) on that address: the
 * fd, or -1 with err. */
int listen_open(const char *host, uint16_t port, char *err, size_t errlen);
/* Whether a listener already holds host:port (derpd's own SO_REUSEPORT would
 * share it quietly; derper's second instance fails to bind): 1 with err, or
 * 0 (also when host does not resolve: listen_open says why). */
int listen_port_in_use(const char *host, uint16_t port, char *err, size_t errlen);
/* The port a socket is bound to; 0 if unknown. */
uint16_t listen_bound_port(int fd);

#endif
