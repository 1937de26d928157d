/* bench_tool.c: see bench_tool.h. */
#include "bench_tool.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "derp/key.h"

int bench_parse_duration(const char *s, int64_t *ns) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0) return -1;
  static const struct { const char *unit; double mul; } units[] = {
      {"", 1e9}, {"s", 1e9}, {"ms", 1e6}, {"us", 1e3}, {"ns", 1}, {"m", 60e9}, {"h", 3600e9}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(end, units[i].unit) == 0) {
      *ns = (int64_t)(v * units[i].mul);
      return 0;
    }
  return -1;
}

static atomic_bool *g_stop_flag;

static void on_stop_signal(int sig) {
  (void)sig;
  atomic_store(g_stop_flag, true);
}

long bench_tool_init(atomic_bool *stop) {
  if (derp_init() < 0) return -1;
  signal(SIGPIPE, SIG_IGN);
  g_stop_flag = stop;
  struct sigaction sa = {.sa_handler = on_stop_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur == RLIM_INFINITY ? 1L << 30 : (long)rl.rlim_cur;
}
