/* stun_server.h: derpd's STUN service (derper's -stun, -stun-port), riding
 * on the shards: one UDP socket per shard on the same port (SO_REUSEPORT),
 * read with a multishot recvmsg into a buffer group of its own, answered
 * with sendmsg on the same socket, at most STUN_REPLIES_MAX replies in
 * flight per shard. What a datagram means is libderp's derp/stun.h.
 *
 * Ownership: main.c opens the sockets before the shards start (so a port
 * in use stops derpd at start, with a message); from then on a shard's
 * struct stun_shard is touched by its thread only, and freed after its
 * ring is gone. Every function takes a shard whose stun may be NULL
 * (-stun=false) and then does nothing. */
#ifndef DERPD_STUN_SERVER_H
#define DERPD_STUN_SERVER_H

#include <stddef.h>

struct server;
struct shard;
struct io_uring_cqe;

#define STUN_BGID 1           /* the provided buffer group of STUN receives (BGID 0: TCP) */
#define STUN_NBUFS 64         /* receive buffers per shard: datagrams read per loop turn, at most */
#define STUN_BUF_SIZE 2048    /* recvmsg header, address and a datagram up to DERP_STUN_REQUEST_MAX */
#define STUN_REPLIES_MAX 64   /* replies in flight per shard; beyond, requests are dropped */

/* Main thread, before the shards start: one socket per shard on -a's host
 * and -stun-port (after a live upgrade, the old process's sockets, kind
 * "stun"). 0 (also with -stun=false), or -1 with a message in err. */
int stun_open(struct server *s, char *err, size_t errlen);
/* The shard's STUN socket, or -1: what a live upgrade hands over. */
int stun_shard_fd(const struct shard *sh);
/* Shard thread, while its ring is set up: register the buffer group.
 * 0 or -errno. */
int stun_shard_ring_init(struct shard *sh);
/* Shard thread, at start and every tick: arm the receive if it is not. */
void stun_shard_poll(struct shard *sh);
/* Shard thread, when it starts to stop: cancel the receive (the socket
 * stays open: after a live upgrade the new process reads it). */
void stun_shard_stop(struct shard *sh);
/* Shard thread: a completion tagged UD_STUN. */
void stun_on_cqe(struct shard *sh, struct io_uring_cqe *cqe);
/* After the shard's ring is torn down (or if it never ran): close and free.
 * Safe to call twice. */
void stun_shard_free(struct shard *sh);

#endif
