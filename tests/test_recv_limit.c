/* test_recv_limit.c: -rate-config's arithmetic and file
 * (src/server/core/recv_limit.c): the bucket against golang.org/x/time/rate's
 * ReserveN on a clock the test drives, derper's rules for the setting, the
 * JSON as encoding/json reads it. The sequence lock under a writer is
 * test_recv_limit_seq.c (no Criterion: it runs under TSan). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/core/recv_limit.h"

#define MS 1000000LL
#define SEC 1000000000LL

Test(recv_limit, bucket_starts_full_then_waits_at_the_rate) {
  struct rate_cfg c = {100000, 200000}; /* 100 kB/s, 200 kB burst */
  struct recv_bucket b;
  recv_bucket_reset(&b, 1);
  int64_t now = 5 * SEC;
  /* The burst passes without a wait... */
  for (int i = 0; i < 4; i++) cr_assert_eq(recv_bucket_take(&b, c, now, 50000), 0);
  /* ...the next 50 kB waits 0.5 s, and the one after it 1 s. */
  cr_assert_eq(recv_bucket_take(&b, c, now, 50000), 500 * MS);
  cr_assert_eq(recv_bucket_take(&b, c, now, 50000), 1000 * MS);
  cr_assert_eq(b.tat_ns, now + 1000 * MS);
  /* Once the debt is paid the tokens come at the rate: 10 kB per 100 ms. */
  now += 1100 * MS;
  cr_assert_eq(recv_bucket_take(&b, c, now, 10000), 0);
  cr_assert_eq(recv_bucket_take(&b, c, now, 10000), 100 * MS);
}

Test(recv_limit, bucket_refills_only_to_the_burst) {
  struct rate_cfg c = {1000, 60000};
  struct recv_bucket b;
  recv_bucket_reset(&b, 1);
  int64_t now = 1 * SEC;
  cr_assert_eq(recv_bucket_take(&b, c, now, 60000), 0);
  /* An hour idle refills 3.6 MB worth, but the bucket holds 60 kB. */
  now += 3600 * SEC;
  cr_assert_eq(recv_bucket_take(&b, c, now, 60000), 0);
  cr_assert_eq(recv_bucket_take(&b, c, now, 1000), 1 * SEC);
}

Test(recv_limit, frame_clamped_to_the_minimum_burst) {
  /* derper clamps a frame's cost to 65568 so a huge one can be reserved. */
  struct rate_cfg c = rate_cfg_applied((struct rate_cfg){65568, 0});
  struct recv_bucket b;
  recv_bucket_reset(&b, 1);
  cr_assert_eq(recv_bucket_take(&b, c, SEC, 10u << 20), 0);
  cr_assert_eq(recv_bucket_take(&b, c, SEC, 10u << 20), SEC);
}

Test(recv_limit, small_clock_values_still_start_full) {
  /* A monotonic clock just after boot, a burst worth years: still full. */
  struct rate_cfg c = {1, 1ull << 40};
  struct recv_bucket b;
  recv_bucket_reset(&b, 1);
  cr_assert_eq(recv_bucket_take(&b, c, 1000, 65568), 0);
}

Test(recv_limit, derper_rules_for_the_setting) {
  struct rate_cfg a = rate_cfg_applied((struct rate_cfg){0, 123456});
  cr_assert_eq(a.bps, 0);
  cr_assert_eq(a.burst, 0);
  a = rate_cfg_applied((struct rate_cfg){5000, 100});
  cr_assert_eq(a.bps, 5000);
  cr_assert_eq(a.burst, RECV_LIMIT_MIN_BURST);
  a = rate_cfg_applied((struct rate_cfg){5000, 1 << 20});
  cr_assert_eq(a.burst, 1 << 20);
}

static int load_text(const char *text, struct rate_cfg *c, char *err, size_t cap) {
  char path[] = "/tmp/derpd-rate-XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  int r = rate_cfg_load(path, c, err, cap);
  unlink(path);
  return r;
}

Test(recv_limit, file_as_encoding_json_reads_it) {
  struct rate_cfg c;
  char err[256];
  cr_assert_eq(load_text("{\"PerClientRateLimitBytesPerSec\": 1000000, \"PerClientRateBurstBytes\": 2000000}",
                         &c, err, sizeof err), 0, "%s", err);
  cr_assert_eq(c.bps, 1000000);
  cr_assert_eq(c.burst, 2000000);
  /* Names match without regard to case; unknown fields and null are ignored. */
  cr_assert_eq(load_text("{\"perclientratelimitbytespersec\": 7, \"Other\": [1], \"PerClientRateBurstBytes\": null}",
                         &c, err, sizeof err), 0, "%s", err);
  cr_assert_eq(c.bps, 7);
  cr_assert_eq(c.burst, 0);
  cr_assert_eq(load_text("{}", &c, err, sizeof err), 0);
  cr_assert_eq(c.bps, 0);
  cr_assert_eq(load_text("null", &c, err, sizeof err), 0);
}

Test(recv_limit, bad_files_are_refused_with_a_reason) {
  struct rate_cfg c = {42, 43};
  char err[256];
  static const char *const bad[] = {
      "",                                          /* empty */
      "{\"PerClientRateLimitBytesPerSec\": -1}",   /* not unsigned */
      "{\"PerClientRateLimitBytesPerSec\": 1.5}",  /* not an integer */
      "{\"PerClientRateLimitBytesPerSec\": \"9\"}", /* a string */
      "[1, 2]",                                    /* not an object */
      "{\"PerClientRateLimitBytesPerSec\": 1} x",  /* trailing bytes */
      "{\"PerClientRateLimitBytesPerSec\": 99999999999999999999}", /* out of range */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    cr_assert_eq(load_text(bad[i], &c, err, sizeof err), -1, "accepted: %s", bad[i]);
    cr_assert(strstr(err, "error parsing rate config"), "%s: %s", bad[i], err);
  }
  cr_assert_eq(c.bps, 42, "a refused file must leave the setting alone");
  cr_assert_eq(rate_cfg_load("/nonexistent/rate.json", &c, err, sizeof err), -1);
  cr_assert(strstr(err, "error reading rate config") && strstr(err, "No such file"), "%s", err);
}
