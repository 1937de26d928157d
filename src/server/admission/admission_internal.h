/* admission_internal.h: what admission.c and verify.c share. */
#ifndef DERPD_ADMISSION_INTERNAL_H
#define DERPD_ADMISSION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "derp/key.h"
#include "server/httpc/httpc.h"
#include "server/admission/wire.h"

/* A check's outcome, counted in derpd_admission_checks{result}. */
enum adm_result {
  ADM_R_ALLOW,    /* every configured check said yes */
  ADM_R_DENY,     /* a check said no: Allow not true, or unknown to tailscaled */
  ADM_R_ERROR,    /* no usable answer: transport failure, non-200 from
                     tailscaled, a malformed answer */
  ADM_R_TIMEOUT,  /* no answer within 5 s (or the handshake deadline passed
                     while the job waited) */
};

struct adm_verdict {
  uint8_t result;         /* enum adm_result */
  bool may_fail_open;     /* ERROR / TIMEOUT that -verify-client-url-fail-open
                             turns into a yes: the controller was unreachable */
  bool past_deadline;     /* ended (failed) after the client's handshake
                             deadline: cut short, so no verdict at all */
  char detail[300];       /* for the log */
};

struct adm_config {
  bool use_local;         /* -verify-clients */
  bool use_url;           /* -verify-client-url */
  bool fail_open;         /* -verify-client-url-fail-open */
  struct adm_url url;
  struct httpc_endpoint url_ep, local_ep;
  char socket_path[1024];
};

/* A worker's connections, kept between checks. */
struct adm_worker_io {
  struct httpc_conn url, local;
  struct ssl_ctx_st *redirect_tls; /* an http controller redirected to https: made then */
  uint8_t *whois_body;    /* ADM_WHOIS_MAX bytes, allocated on first use */
};
#define ADM_WHOIS_MAX (1 << 20)

/* Runs the configured checks for one client, in derper's order (tailscaled,
 * then the controller; the first no ends it). ip: the client's address as
 * Go prints it. stop_fd readable: give up. Each request has 5 s, but none
 * runs past until_ms (the client's handshake deadline: no one waits for the
 * answer after it), and the controller is not asked once *abandoned. */
void verify_run(const struct adm_config *cfg, struct adm_worker_io *io, const derp_key *k, const char *ip,
                int stop_fd, int64_t until_ms, const _Atomic bool *abandoned, struct adm_verdict *v);

#endif
