/* ktls_policy.c: the --ktls modes and the switch-over rules of ktls.h, kept
 * free of BoringSSL and of syscalls so that config.c and the unit tests can
 * use them. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "server/transport/ktls.h"

int ktls_mode_parse(const char *s, enum ktls_mode *out) {
  if (!strcmp(s, "off")) *out = KTLS_OFF;
  else if (!strcmp(s, "auto")) *out = KTLS_AUTO;
  else if (!strcmp(s, "require")) *out = KTLS_REQUIRE;
  else return -1;
  return 0;
}

const char *ktls_mode_name(enum ktls_mode m) {
  switch (m) {
  case KTLS_OFF: return "off";
  case KTLS_AUTO: return "auto";
  case KTLS_REQUIRE: return "require";
  }
  return "?";
}

enum ktls_step ktls_rx_step(const struct ktls_switch_in *s) {
  if (!s->handshake_done || s->recv_in_flight) return KTLS_STEP_WAIT;
  if (s->rx_installed) return KTLS_STEP_WAIT; /* done already: nothing to do */
  /* Part of a record was read off the socket into the SSL: the kernel would
   * see the rest of it as the start of a record. No way back. */
  if (s->rx_partial) return KTLS_STEP_FALLBACK;
  return KTLS_STEP_INSTALL;
}

enum ktls_step ktls_tx_step(const struct ktls_switch_in *s) {
  if (!s->handshake_done || !s->rx_installed) return KTLS_STEP_WAIT;
  if (s->wire_queued || s->send_in_flight || s->ssl_out_pending) return KTLS_STEP_WAIT;
  return KTLS_STEP_INSTALL;
}

bool ktls_may_ignore(unsigned so_far) { return so_far < KTLS_IGNORED_MAX; }

/* One bit per (TLS 1.2 or 1.3, cipher_type mod 32): the types are 51..60. */
static _Atomic uint64_t refused_suites;

static uint64_t suite_bit(uint16_t version, uint16_t cipher_type) {
  return 1ULL << ((version == TLS_1_3_VERSION ? 32 : 0) + (cipher_type & 31));
}

bool ktls_note_refusal(uint16_t version, uint16_t cipher_type, int err) {
  if (err != ENOENT && err != ENOPROTOOPT && err != EOPNOTSUPP) return false;
  atomic_fetch_or_explicit(&refused_suites, suite_bit(version, cipher_type), memory_order_relaxed);
  return true;
}

bool ktls_suite_refused(uint16_t version, uint16_t cipher_type) {
  return (atomic_load_explicit(&refused_suites, memory_order_relaxed) & suite_bit(version, cipher_type)) != 0;
}
