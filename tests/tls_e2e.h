/* tls_e2e.h: what the two files of the test_tls_e2e binary share: the
 * derpd under test and its certificate directory, TLS clients of it, its
 * /debug/varz over HTTPS; and the kTLS tests (test_tls_e2e_ktls.c) that the
 * runner in test_tls_e2e.c lists. */
#ifndef DERPD_TLS_E2E_H
#define DERPD_TLS_E2E_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "derp/client_tls.h"
#include "e2e_util.h"

extern struct derpd_proc srv; /* the derpd under test */
extern char certdir[64];       /* its -certdir (selfsigned, "localhost") */
#define MAX_TLS_CLIENTS 72
extern struct derp_client *clients[MAX_TLS_CLIENTS]; /* closed by teardown */

struct tls_conn_opts {
  uint16_t version;      /* 0 = any */
  bool websocket;        /* DERP inside WebSocket, inside TLS */
  const char *sni;       /* NULL = "localhost" */
  const uint8_t *pin;    /* NULL = the first logged hash */
  bool fast_start, meta;
  const derp_key *server_key; /* NULL = srv.server_key (unless meta fast start) */
};

/* derpd with -certmode selfsigned for "localhost" in a fresh cert dir. */
void start_tls(int shards, const char *more);
/* A TLS client of srv: NULL with err, or one that teardown closes. */
struct derp_client *try_client(const struct tls_conn_opts *co, struct derp_tls_info *info, char *err,
                               size_t errlen);
struct derp_client *tls_client(const struct tls_conn_opts *co, struct derp_tls_info *info);
/* One series of srv's /debug/varz over HTTPS; -1 if missing. */
long long tls_varz(const char *name);
/* test_tls_e2e_ktls.c: whether this kernel takes TCP_ULP "tls" (as derpd's
 * probe decides); wait (5 s at most) for a line in srv's log. */
bool kernel_has_ktls(void);
void wait_log(const char *what);

void ktls_auto(void);
void ktls_off(void);
void ktls_require_needs_kernel(void);
void ktls_assumed_fallback(void);
void ktls_assumed_require(void);
void ktls_key_refused(void);
void ktls_key_refused_require(void);
void ktls_suite_remembered(void);
void ktls_tx_refused_after_rx(void);

#endif
