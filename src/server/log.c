/* log.c: timestamped stderr lines. Owns nothing but the level. */
#include "server/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;

void log_set_level(int level) { atomic_store_explicit(&g_level, level, memory_order_relaxed); }
int log_get_level(void) { return atomic_load_explicit(&g_level, memory_order_relaxed); }

void log_msg(int level, const char *fmt, ...) {
  if (level > log_get_level()) return;
  static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
  char line[1024];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, ts.tv_nsec / 1000000, names[level & 3]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  /* One event, one line: a control byte in text that came from the network
   * (an SNI, a header, a node's Health) must not start a forged line. */
  for (size_t i = (size_t)n; i < len; i++)
    if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f) line[i] = '?';
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
