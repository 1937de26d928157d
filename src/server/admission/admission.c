/* admission.c: the worker pool that runs admission checks off the shards,
 * and the shard side of it (see admission.h for the flow).
 *
 * Why threads: a check is DNS, TCP, TLS and an HTTP exchange with a 5 s
 * timeout, or a request to tailscaled; any of it can block, and a shard must
 * never wait (DESIGN.md). A fixed pool of --admission-workers threads each
 * run one check at a time with blocking I/O (httpc.c), keeping its
 * connections alive between checks. Checks wait for a worker in one FIFO of
 * at most --admission-queue jobs; with it full a client is refused, even
 * under -verify-client-url-fail-open, and counted (result "overload"). So at most workers + queue checks are outstanding,
 * and a slow verifier delays only the clients it is verifying: their conns
 * wait in CS_CLIENT_INFO while the shard goes on relaying.
 *
 * Ownership: a job is made and freed by its conn's shard. The shard fills
 * it, queues it (under the queue's mutex) and then touches only job->c; a
 * worker reads the inputs, writes the verdict, and pushes the job onto its
 * shard's inbox (a lock-free stack: release CAS by workers, acquire exchange
 * by the shard), after which it never touches it again. job->c is the
 * shard's alone: cleared when the conn goes away (admission_abandon), so a
 * verdict is applied only to a conn that is still there. The worker learns
 * of the abandon through an atomic flag and skips the request if it has not
 * started it. */
#include "server/admission/admission.h"

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/ssl.h>

#include "server/admission/admission_internal.h"
#include "server/log.h"
#include "server/protocol/upgrade.h"
#include "server/server.h"

#define WORKER_STACK (512 * 1024) /* getaddrinfo and a TLS handshake fit with room */

struct adm_job {
  struct adm_job *next;      /* inbox link (worker -> shard) */
  struct conn *c;            /* the shard's: NULL once the conn is gone */
  /* Set by the shard before the job is queued; read-only after. */
  int shard;
  int64_t deadline_ms;       /* the conn's handshake deadline: nobody waits past it */
  derp_key key;
  char ip[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
  _Atomic bool abandoned;    /* shard -> worker: the conn is gone, skip it */
  /* Written by the worker, read by the shard once it took the job back. */
  struct adm_verdict v;
};

/* A shard's inbox: its own cache line, written by workers. */
struct adm_inbox {
  alignas(64) _Atomic(struct adm_job *) head;
};

struct admission {
  struct server *srv;
  struct adm_config cfg;
  SSL_CTX *tls;
  int nworkers, qcap;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct adm_job **q;        /* ring of qcap jobs waiting for a worker */
  int qhead, qlen;
  bool closed;               /* no more jobs; workers leave */
  int stop_fd;               /* eventfd: readable at stop, cuts waits short */
  pthread_t *threads;
  int nthreads;
  struct adm_inbox *inbox;   /* [nshards] */
  pthread_mutex_t wake_mu;   /* orders no_wake against a wake-up being sent */
  bool no_wake;              /* (wake_mu) the shards may be gone: no MSG_RING */
};

/* ---- set-up and tear-down (main thread) ----------------------------------- */

int admission_setup(struct server *s) {
  const struct config *cf = &s->cfg;
  if (!cf->verify_client_url[0] && !cf->verify_clients) return 0;
  struct admission *a = calloc(1, sizeof *a);
  if (!a) return -1;
  s->admission = a;
  a->srv = s;
  a->stop_fd = -1;
  a->nworkers = cf->admission_workers;
  a->qcap = cf->admission_queue;
  struct adm_config *c = &a->cfg;
  c->fail_open = cf->verify_client_url_fail_open;
  char err[512];
  if (cf->verify_client_url[0]) {
    if (adm_url_parse(cf->verify_client_url, &c->url, err, sizeof err) < 0) {
      log_error("-verify-client-url: %s", err);
      return -1;
    }
    c->use_url = true;
    if (c->url.tls && !(a->tls = httpc_tls_ctx(NULL, err, sizeof err))) {
      log_error("-verify-client-url: %s", err);
      return -1;
    }
    c->url_ep = (struct httpc_endpoint){.kind = c->url.tls ? HTTPC_TLS : HTTPC_TCP, .host = c->url.host,
                                        .port = c->url.port, .tls = a->tls};
    /* Not the query: it may carry a token. */
    log_info("admission: asking %s://%s%.*s for every client (5s timeout; unreachable: %s)",
             c->url.tls ? "https" : "http", c->url.authority, (int)strcspn(c->url.target, "?"), c->url.target,
             c->fail_open ? "admit, -verify-client-url-fail-open" : "refuse");
  }
  if (cf->verify_clients) {
    c->use_local = true;
    snprintf(c->socket_path, sizeof c->socket_path, "%s", cf->tailscaled_socket);
    c->local_ep = (struct httpc_endpoint){.kind = HTTPC_UNIX, .host = c->socket_path};
    log_info("admission: only clients of the local tailscaled's tailnet (LocalAPI at %s)", c->socket_path);
    if (access(c->socket_path, F_OK) != 0)
      log_warn("admission: %s: %s: every client will be refused until tailscaled listens there (-socket)",
               c->socket_path, strerror(errno));
  }
  a->q = calloc((size_t)a->qcap, sizeof *a->q);
  a->threads = calloc((size_t)a->nworkers, sizeof *a->threads);
  a->inbox = aligned_alloc(64, (size_t)s->nshards * sizeof *a->inbox);
  a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!a->q || !a->threads || !a->inbox || a->stop_fd < 0) {
    log_error("admission: out of resources at start");
    return -1;
  }
  for (int i = 0; i < s->nshards; i++) atomic_init(&a->inbox[i].head, NULL);
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  pthread_mutex_init(&a->wake_mu, NULL);
  return 0;
}

static void *worker_main(void *arg);

int admission_start(struct server *s) {
  struct admission *a = s->admission;
  if (!a) return 0;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setstacksize(&at, WORKER_STACK);
  for (; a->nthreads < a->nworkers; a->nthreads++) {
    int r = pthread_create(&a->threads[a->nthreads], &at, worker_main, a);
    if (r != 0) {
      log_error("admission: cannot start worker %d: %s", a->nthreads, strerror(r));
      pthread_attr_destroy(&at);
      return -1;
    }
  }
  pthread_attr_destroy(&at);
  log_info("admission: %d workers, at most %d checks waiting for one (--admission-workers, --admission-queue)",
           a->nworkers, a->qcap);
  return 0;
}

void admission_quiesce(struct server *s) {
  struct admission *a = s->admission;
  if (!a) return;
  pthread_mutex_lock(&a->wake_mu);
  a->no_wake = true;
  pthread_mutex_unlock(&a->wake_mu);
}

void admission_stop(struct server *s) {
  struct admission *a = s->admission;
  if (!a) return;
  pthread_mutex_lock(&a->mu);
  a->closed = true;
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  uint64_t one = 1;
  if (write(a->stop_fd, &one, sizeof one) != sizeof one) log_warn("admission: stop: %s", strerror(errno));
  for (int i = 0; i < a->nthreads; i++) pthread_join(a->threads[i], NULL);
  a->nthreads = 0;
}

void admission_free(struct server *s) {
  struct admission *a = s->admission;
  if (!a) return;
  /* The shards are joined: jobs still queued or in an inbox belong to no one. */
  for (int i = 0; a->q && i < a->qlen; i++) free(a->q[(a->qhead + i) % a->qcap]);
  for (int i = 0; a->inbox && i < s->nshards; i++)
    for (struct adm_job *j = atomic_load(&a->inbox[i].head), *n; j; j = n) {
      n = j->next;
      free(j);
    }
  if (a->q) {
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->wake_mu);
  }
  free(a->q);
  free(a->threads);
  free(a->inbox);
  if (a->stop_fd >= 0) close(a->stop_fd);
  SSL_CTX_free(a->tls);
  free(a);
  s->admission = NULL;
}

/* ---- workers -------------------------------------------------------------- */

static struct adm_job *take(struct admission *a) {
  pthread_mutex_lock(&a->mu);
  while (!a->closed && a->qlen == 0) pthread_cond_wait(&a->cv, &a->mu);
  struct adm_job *j = NULL;
  if (!a->closed) {
    j = a->q[a->qhead];
    a->qhead = (a->qhead + 1) % a->qcap;
    a->qlen--;
  }
  pthread_mutex_unlock(&a->mu);
  return j;
}

/* Onto the shard's inbox, then wake the shard: a MSG_RING into its ring,
 * every time (a wake it did not need costs it one empty CQE; skipping one it
 * needed would cost the verdict up to a 100 ms tick). */
static void deliver(struct admission *a, struct adm_job *j, struct io_uring *ring) {
  int shard = j->shard; /* once pushed, j is the shard's: it may be freed at once */
  struct adm_inbox *in = &a->inbox[shard];
  struct adm_job *head = atomic_load_explicit(&in->head, memory_order_relaxed);
  do j->next = head;
  while (!atomic_compare_exchange_weak_explicit(&in->head, &head, j, memory_order_release, memory_order_relaxed));
  if (!ring) return;
  pthread_mutex_lock(&a->wake_mu);
  struct io_uring_sqe *sqe = a->no_wake ? NULL : io_uring_get_sqe(ring);
  if (sqe) {
    io_uring_prep_msg_ring(sqe, a->srv->shards[shard].ring_fd, 0, ud_make(NULL, UD_WAKE), 0);
    io_uring_sqe_set_data64(sqe, 0);
    struct io_uring_cqe *cqe;
    if (io_uring_submit_and_wait(ring, 1) >= 0 && io_uring_peek_cqe(ring, &cqe) == 0) io_uring_cqe_seen(ring, cqe);
  }
  pthread_mutex_unlock(&a->wake_mu);
}

static void *worker_main(void *arg) {
  struct admission *a = arg;
  pthread_setname_np(pthread_self(), "admission");
  struct io_uring ring;
  int r = io_uring_queue_init(4, &ring, 0);
  if (r < 0) log_warn("admission: worker ring: %s: verdicts wait for the shards' tick", strerror(-r));
  struct adm_worker_io io = {.url = HTTPC_CONN_INIT, .local = HTTPC_CONN_INIT};
  struct adm_job *j;
  while ((j = take(a))) {
    if (atomic_load_explicit(&j->abandoned, memory_order_relaxed))
      j->v.result = ADM_R_ERROR; /* nobody is waiting: not asked */
    else if (httpc_now_ms() >= j->deadline_ms)
      snprintf(j->v.detail, sizeof j->v.detail, "the handshake deadline passed while the check waited"),
          j->v.result = ADM_R_TIMEOUT;
    else
      verify_run(&a->cfg, &io, &j->key, j->ip, a->stop_fd, j->deadline_ms, &j->abandoned, &j->v);
    /* Judged on this clock, not the shard's: a shard turn that started
     * before the deadline may apply the verdict. */
    if ((j->v.result == ADM_R_ERROR || j->v.result == ADM_R_TIMEOUT) && httpc_now_ms() >= j->deadline_ms)
      j->v.past_deadline = true;
    deliver(a, j, r < 0 ? NULL : &ring);
  }
  httpc_conn_close(&io.url);
  httpc_conn_close(&io.local);
  SSL_CTX_free(io.redirect_tls);
  free(io.whois_body);
  if (r >= 0) io_uring_queue_exit(&ring);
  return NULL;
}

/* ---- the shard side ------------------------------------------------------- */

/* The client's address as Go's netip.Addr prints it: IPv4 (also when it came
 * v4-mapped on a dual-stack socket) or IPv6 with its zone. */
static void client_ip(const struct conn *c, char *out, size_t cap) {
  const struct in6_addr *a = &c->addr.sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(a)) {
    inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)cap);
    return;
  }
  inet_ntop(AF_INET6, a, out, (socklen_t)cap);
  char ifn[IF_NAMESIZE];
  if (c->addr.sin6_scope_id && if_indextoname(c->addr.sin6_scope_id, ifn)) {
    size_t l = strlen(out);
    snprintf(out + l, cap - l, "%%%s", ifn);
  }
}

static bool queue_push(struct admission *a, struct adm_job *j) {
  pthread_mutex_lock(&a->mu);
  bool ok = !a->closed && a->qlen < a->qcap;
  if (ok) {
    a->q[(a->qhead + a->qlen) % a->qcap] = j;
    a->qlen++;
    pthread_cond_signal(&a->cv);
  }
  pthread_mutex_unlock(&a->mu);
  return ok;
}

enum adm_begin admission_begin(struct conn *c, struct adm_job **job, char *detail, size_t cap) {
  struct shard *sh = c->sh;
  struct admission *a = sh->srv->admission;
  if (!a) return ADM_PASS;
  if (c->is_mesh) { /* derper: a trusted mesh peer is not in the tailnet; never asked */
    STAT_INC(&sh->stats, adm_mesh_skips);
    return ADM_PASS;
  }
  struct adm_job *j = calloc(1, sizeof *j);
  if (j) {
    j->c = c;
    j->shard = sh->id;
    j->deadline_ms = c->deadline_ms;
    j->key = c->key;
    client_ip(c, j->ip, sizeof j->ip);
    atomic_init(&j->abandoned, false);
  }
  if (j && queue_push(a, j)) {
    STAT_INC(&sh->stats, adm_pending);
    *job = j;
    return ADM_WAIT;
  }
  free(j);
  STAT_INC(&sh->stats, adm_overload);
  char key[DERP_KEY_STRLEN];
  derp_key_format(&c->key, key);
  /* No room (or stopping): refused, even under -verify-client-url-fail-open.
   * That is for a controller that cannot be asked; a busy queue is not one,
   * and admitting on it would let anyone who keeps the queue full in. The
   * client retries (Tailscale's clients redial with backoff). */
  snprintf(detail, cap, "%d check%s waiting already (--admission-queue): refusing %s", a->qcap,
           a->qcap == 1 ? "" : "s", key);
  return ADM_REFUSE;
}

void admission_abandon(struct shard *sh, struct adm_job *j) {
  j->c = NULL;
  atomic_store_explicit(&j->abandoned, true, memory_order_relaxed);
  STAT_ADD(&sh->stats, adm_pending, -1);
  STAT_INC(&sh->stats, adm_abandoned);
}

static void apply(struct shard *sh, struct admission *a, struct adm_job *j) {
  struct conn *c = j->c;
  const struct adm_verdict *v = &j->v;
  STAT_ADD(&sh->stats, adm_pending, -1);
  if (c->state != CS_CLIENT_INFO) { /* closing, not yet freed: as if gone */
    STAT_INC(&sh->stats, adm_abandoned);
    upgrade_admission_done(c, false, NULL);
    return;
  }
  bool failed = v->result == ADM_R_ERROR || v->result == ADM_R_TIMEOUT;
  if (failed && (v->past_deadline || sh->now_ms >= c->deadline_ms)) {
    /* A check cut short by the client's deadline (request_deadline) is no
     * verdict, so never a fail-open: closed, and counted, as the deadline's
     * tick would have (a turn that ran late applies it first). */
    STAT_INC(&sh->stats, adm_abandoned);
    upgrade_admission_expired(c);
    return;
  }
  switch ((enum adm_result)v->result) {
  case ADM_R_ALLOW: STAT_INC(&sh->stats, adm_allow); break;
  case ADM_R_DENY: STAT_INC(&sh->stats, adm_deny); break;
  case ADM_R_ERROR: STAT_INC(&sh->stats, adm_error); break;
  case ADM_R_TIMEOUT: STAT_INC(&sh->stats, adm_timeout); break;
  }
  bool admit = v->result == ADM_R_ALLOW || (failed && v->may_fail_open && a->cfg.fail_open);
  if (admit && failed) {
    STAT_INC(&sh->stats, adm_fail_open);
    if (shard_log_allowed(sh)) {
      char addr[64];
      conn_addr_str(c, addr, sizeof addr);
      log_info("shard %d: conn %llu %s: %s; allowing the client (-verify-client-url-fail-open)", sh->id,
               (unsigned long long)c->id, addr, v->detail);
    }
  }
  upgrade_admission_done(c, admit, admit ? NULL : v->detail);
}

void admission_drain(struct shard *sh) {
  struct admission *a = sh->srv->admission;
  if (!a) return;
  struct adm_inbox *in = &a->inbox[sh->id];
  if (!atomic_load_explicit(&in->head, memory_order_relaxed)) return;
  struct adm_job *j = atomic_exchange_explicit(&in->head, NULL, memory_order_acquire), *fifo = NULL;
  while (j) { /* the stack is newest first: turn it round */
    struct adm_job *n = j->next;
    j->next = fifo;
    fifo = j;
    j = n;
  }
  for (j = fifo; j; j = fifo) {
    fifo = j->next;
    if (j->c) apply(sh, a, j);
    free(j);
  }
}
