/* admission.h: who may connect (derper's -verify-client-url and
 * -verify-clients), decided off the shards.
 *
 * The pieces, one file each:
 *   admission.c  set-up from the flags, the worker pool and its bounded
 *                queue, verdicts handed back to each conn's shard, counters
 *   verify.c     what a worker does for one client: ask the local tailscaled
 *                (LocalAPI whois over its unix socket), then the admission
 *                controller (POST to -verify-client-url), as derper does
 *   (server/httpc/httpc.c: the blocking HTTP/1.1 client both use, and ACME)
 *   wire.c       the pure parts: the URL, request bytes, reading the answer
 *
 * A conn whose ClientInfo is open asks admission_begin on its shard. Unless
 * there is nothing to check (no flag, or a mesh peer), a job goes on the
 * queue and the conn waits in CS_CLIENT_INFO under its handshake deadline,
 * reading on, with nothing queued after ServerKey. A worker thread runs the
 * checks and pushes the job onto its shard's inbox, then wakes the shard
 * (IORING_OP_MSG_RING from the worker's own small ring). The shard drains its
 * inbox every loop turn (admission_drain) and hands the verdict to upgrade.c
 * (upgrade_admission_done). A conn that goes away first abandons its job
 * (admission_abandon, from upgrade_free): the job forgets the conn and is
 * freed when it comes back, so a verdict never reaches a freed conn. */
#ifndef DERPD_ADMISSION_H
#define DERPD_ADMISSION_H

#include <stddef.h>

struct server;
struct shard;
struct conn;
struct adm_job;

/* main.c, before the shards: reads the flags (URL, TLS roots, socket).
 * s->admission stays NULL when nothing is to be checked. 0, or -1 (logged). */
int admission_setup(struct server *s);
/* main.c, once the shards run: starts the workers. 0, or -1 (logged). */
int admission_start(struct server *s);
/* main.c, at exit, before the shards are told to stop: verdicts still reach
 * their inboxes (drained every loop turn, so within a 100 ms tick), but no
 * worker sends a shard's ring a wake-up any more, so the shards may exit
 * (and close their rings) while checks run on: a handshake in progress at a
 * live upgrade finishes during the drain and hears Restarting. */
void admission_quiesce(struct server *s);
/* main.c, once the shards are joined: workers give up what they are doing
 * and are joined; the queue takes nothing more. */
void admission_stop(struct server *s);
/* main.c, after the shards are joined: frees what is left. */
void admission_free(struct server *s);

enum adm_begin {
  ADM_PASS,    /* admit now: nothing to check, a mesh peer, or (fail-open) no room */
  ADM_WAIT,    /* *job is outstanding: upgrade_admission_done follows on this
                  shard, unless admission_abandon comes first */
  ADM_REFUSE,  /* refuse now (no room for the check); detail says why */
};
/* On c's shard, with c's key, address and mesh status known. */
enum adm_begin admission_begin(struct conn *c, struct adm_job **job, char *detail, size_t cap);
/* The conn of an outstanding job is going away (upgrade_free). */
void admission_abandon(struct shard *sh, struct adm_job *job);
/* Every loop turn, on each shard: apply the verdicts that came back. */
void admission_drain(struct shard *sh);

#endif
