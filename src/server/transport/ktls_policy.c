/* ktls_policy.c: the --ktls modes and the switch-over rules of ktls.h, kept
 * free of BoringSSL and of syscalls so that config.c and the unit tests can
 * use them. */
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
