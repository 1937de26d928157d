/* test_ktls_policy.c: the kTLS switch-over rules (src/server/transport/ktls_policy.c):
 * when a TLS connection may hand its RX and TX keys to the kernel, when it
 * must wait, and when it stays in userspace; and the --ktls mode names. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "server/transport/ktls.h"

/* Every combination of the seven inputs. */
static struct ktls_switch_in from_bits(unsigned b) {
  return (struct ktls_switch_in){
      .handshake_done = b & 1, .recv_in_flight = b & 2, .rx_partial = b & 4,
      .rx_installed = b & 8, .wire_queued = b & 16, .send_in_flight = b & 32,
      .ssl_out_pending = b & 64,
  };
}

Test(ktls_policy, rx_installs_at_handshake_end) {
  struct ktls_switch_in s = {.handshake_done = true};
  cr_assert_eq(ktls_rx_step(&s), KTLS_STEP_INSTALL);
  /* Sealed bytes still on their way do not matter to RX. */
  s.wire_queued = s.send_in_flight = s.ssl_out_pending = true;
  cr_assert_eq(ktls_rx_step(&s), KTLS_STEP_INSTALL);
}

Test(ktls_policy, rx_waits_for_handshake_and_reads) {
  struct ktls_switch_in s = {0};
  cr_assert_eq(ktls_rx_step(&s), KTLS_STEP_WAIT);
  s.handshake_done = true;
  s.recv_in_flight = true; /* a read may be consuming socket bytes right now */
  cr_assert_eq(ktls_rx_step(&s), KTLS_STEP_WAIT);
}

Test(ktls_policy, rx_partial_record_falls_back) {
  struct ktls_switch_in s = {.handshake_done = true, .rx_partial = true};
  cr_assert_eq(ktls_rx_step(&s), KTLS_STEP_FALLBACK);
}

Test(ktls_policy, tx_needs_rx_first) {
  struct ktls_switch_in s = {.handshake_done = true};
  cr_assert_eq(ktls_tx_step(&s), KTLS_STEP_WAIT);
  s.rx_installed = true;
  cr_assert_eq(ktls_tx_step(&s), KTLS_STEP_INSTALL);
}

Test(ktls_policy, tx_waits_for_sealed_bytes) {
  struct ktls_switch_in base = {.handshake_done = true, .rx_installed = true};
  struct ktls_switch_in s = base;
  s.wire_queued = true; /* TLS 1.2: the server's Finished, queued */
  cr_assert_eq(ktls_tx_step(&s), KTLS_STEP_WAIT);
  s = base;
  s.send_in_flight = true;
  cr_assert_eq(ktls_tx_step(&s), KTLS_STEP_WAIT);
  s = base;
  s.ssl_out_pending = true;
  cr_assert_eq(ktls_tx_step(&s), KTLS_STEP_WAIT);
}

/* The invariants over all 128 states: nothing installs before the handshake;
 * RX never installs with a read in flight or part of a record in userspace;
 * TX never installs while a sealed byte is anywhere but on the socket, nor
 * before RX; TX never falls back (once RX is in, only closing is left). */
Test(ktls_policy, invariants) {
  for (unsigned b = 0; b < 128; b++) {
    struct ktls_switch_in s = from_bits(b);
    enum ktls_step rx = ktls_rx_step(&s), tx = ktls_tx_step(&s);
    cr_assert(rx == KTLS_STEP_WAIT || rx == KTLS_STEP_INSTALL || rx == KTLS_STEP_FALLBACK);
    cr_assert(tx == KTLS_STEP_WAIT || tx == KTLS_STEP_INSTALL, "state %u", b);
    if (!s.handshake_done) cr_assert(rx == KTLS_STEP_WAIT && tx == KTLS_STEP_WAIT, "state %u", b);
    if (rx == KTLS_STEP_INSTALL)
      cr_assert(!s.recv_in_flight && !s.rx_partial && !s.rx_installed, "state %u", b);
    if (rx == KTLS_STEP_FALLBACK) cr_assert(s.rx_partial && !s.recv_in_flight, "state %u", b);
    if (tx == KTLS_STEP_INSTALL)
      cr_assert(s.rx_installed && !s.wire_queued && !s.send_in_flight && !s.ssl_out_pending,
                "state %u", b);
  }
}

Test(ktls_policy, mode_names) {
  enum ktls_mode m;
  static const char *names[] = {"off", "auto", "require"};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(ktls_mode_parse(names[i], &m), 0);
    cr_assert_str_eq(ktls_mode_name(m), names[i]);
  }
  cr_assert_eq(ktls_mode_parse("on", &m), -1);
  cr_assert_eq(ktls_mode_parse("", &m), -1);
  cr_assert_eq(ktls_mode_parse("AUTO", &m), -1);
}

Test(ktls_policy, ignorable_records_have_a_budget) {
  for (unsigned i = 0; i < KTLS_IGNORED_MAX; i++) cr_assert(ktls_may_ignore(i), "record %u", i);
  cr_assert_not(ktls_may_ignore(KTLS_IGNORED_MAX));
  /* The count lives in a 2-bit field of struct conn: the budget must fit. */
  cr_assert_leq(KTLS_IGNORED_MAX, 3);
}

/* A suite the kernel could not load crypto for is remembered per TLS
 * version and cipher; other errors (a bad key, a busy socket) are not. */
Test(ktls_policy, refused_suites_are_remembered) {
  cr_assert(!ktls_note_refusal(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_256, EINVAL));
  cr_assert(!ktls_note_refusal(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_256, EBUSY));
  cr_assert(!ktls_suite_refused(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_256));
  cr_assert(ktls_note_refusal(TLS_1_3_VERSION, TLS_CIPHER_CHACHA20_POLY1305, ENOENT));
  cr_assert(ktls_suite_refused(TLS_1_3_VERSION, TLS_CIPHER_CHACHA20_POLY1305));
  cr_assert(!ktls_suite_refused(TLS_1_2_VERSION, TLS_CIPHER_CHACHA20_POLY1305), "another version");
  cr_assert(!ktls_suite_refused(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128), "another suite");
  cr_assert(ktls_note_refusal(TLS_1_2_VERSION, TLS_CIPHER_AES_GCM_128, EOPNOTSUPP));
  cr_assert(ktls_suite_refused(TLS_1_2_VERSION, TLS_CIPHER_AES_GCM_128));
  cr_assert(!ktls_suite_refused(TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128));
}
