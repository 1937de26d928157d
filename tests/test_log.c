/* test_log.c: log.c's one promise beyond formatting: every call is one line,
 * whatever bytes the message carries (text from the network included). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/log.h"

/* The lines log_msg wrote while f ran, read back from a pipe on stderr. */
static size_t capture(void (*f)(void), char *out, size_t cap) {
  int p[2];
  cr_assert_eq(pipe(p), 0);
  int saved = dup(STDERR_FILENO);
  dup2(p[1], STDERR_FILENO);
  f();
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(p[1]);
  ssize_t n = read(p[0], out, cap - 1);
  close(p[0]);
  out[n > 0 ? n : 0] = 0;
  return n > 0 ? (size_t)n : 0;
}

static void forged(void) {
  log_set_level(LOG_INFO);
  log_info("sni %s here", "x\n2026-12-07T00:00:00.000Z ERROR forged\r\x1b[31m\x7f");
  log_info("tab\tkept");
}

Test(log, one_line_per_call) {
  char buf[4096];
  capture(forged, buf, sizeof buf);
  int lines = 0;
  for (char *c = buf; *c; c++) lines += *c == '\n';
  cr_assert_eq(lines, 2, "%d lines: %s", lines, buf);
  cr_assert(strstr(buf, "sni x?2026-12-07T00:00:00.000Z ERROR forged??[31m? here\n"), "%s", buf);
  cr_assert(strstr(buf, "tab\tkept\n"), "%s", buf);
}
