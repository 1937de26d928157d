/* procstats.h: the process facts a Prometheus client library exports
 * (process_*), read from the kernel when a page is rendered.
 *
 * Cost of one read, on the shard serving the scrape: getrusage, two
 * getrlimit, one stat of /proc/self/fd, and open+read+close of
 * /proc/self/statm: a few microseconds, whatever the number of clients. The
 * open-file count is O(1) on Linux 6.2 and later (the size the kernel reports
 * for /proc/self/fd); on older kernels the entries are counted while there
 * are at most PROC_FD_WALK_MAX connections, and beyond that the count is the
 * connections plus the other files seen at the last walk, so a scrape never
 * walks a million entries. */
#ifndef DERPD_PROCSTATS_H
#define DERPD_PROCSTATS_H

#include <stdbool.h>
#include <stdint.h>

#define PROC_FD_WALK_MAX 10000

/* Taken once at start. */
struct proc_start {
  double start_time;      /* process start, Unix seconds (kernel's /proc/self/stat) */
  int64_t boot_time;      /* the machine's boot, Unix seconds (/proc/stat btime); 0 unknown */
  int64_t start_mono_ms;  /* CLOCK_MONOTONIC at proc_start_init */
  int64_t rss0;           /* resident bytes at start (derp_memstats_sys0) */
  bool by_upgrade;        /* started by a live upgrade of the process before (set by its owner) */
};

struct proc_facts {
  double cpu_seconds;     /* user + system */
  int64_t rss, vsize;     /* bytes */
  int64_t open_fds, max_fds;
  double vsize_max;       /* RLIMIT_AS; unlimited = 2^64 - 1, as procfs reports it */
};

void proc_start_init(struct proc_start *ps);
/* open_conns: the server's open connections (for the fd estimate, above). */
void proc_facts_read(struct proc_facts *f, int64_t open_conns);
/* Entries of an fd directory, not counting the one the walk itself opens; -1
 * if it cannot be read. */
int64_t proc_count_fds(const char *dir);

#endif
