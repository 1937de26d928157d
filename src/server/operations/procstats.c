/* procstats.c: process facts from the kernel (see procstats.h). */
#include "server/operations/procstats.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Reads a small /proc file whole into buf (NUL-terminated); its length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0) return -1;
  buf[n] = 0;
  return n;
}

/* /proc/self/statm: size and resident, in pages. */
static void read_statm(int64_t *vsize, int64_t *rss) {
  char buf[256];
  unsigned long long size = 0, res = 0;
  *vsize = *rss = 0;
  if (read_small("/proc/self/statm", buf, sizeof buf) < 0 || sscanf(buf, "%llu %llu", &size, &res) != 2)
    return;
  long page = sysconf(_SC_PAGESIZE);
  *vsize = (int64_t)size * page;
  *rss = (int64_t)res * page;
}

/* The machine's boot time (the btime line of /proc/stat), Unix seconds; 0 if
 * unreadable. Line by line: on a machine with many CPUs and interrupts the
 * lines before it (cpuN, intr) run to tens of KiB. */
static int64_t boot_time(void) {
  FILE *f = fopen("/proc/stat", "re");
  if (!f) return 0;
  char line[256];
  bool at_start = true;
  long long bt = 0;
  while (fgets(line, sizeof line, f)) {
    if (at_start && strncmp(line, "btime ", 6) == 0 && sscanf(line + 6, "%lld", &bt) == 1) break;
    at_start = strchr(line, '\n') != NULL; /* a long line comes in pieces */
  }
  fclose(f);
  return bt > 0 ? bt : 0;
}

/* The kernel's start time of this process: boot time plus starttime, field
 * 22 of /proc/self/stat, in clock ticks. 0 if unreadable. */
static double kernel_start_time(int64_t btime) {
  char buf[4096];
  if (read_small("/proc/self/stat", buf, sizeof buf) < 0) return 0;
  const char *p = strrchr(buf, ')'); /* the command name may hold anything */
  if (!p) return 0;
  unsigned long long ticks = 0;
  /* After ')': field 3 (state) onwards; starttime is the 20th of those. */
  for (int field = 3; field <= 22 && p; field++) p = strchr(p + 1, ' ');
  if (!p || sscanf(p + 1, "%llu", &ticks) != 1 || btime <= 0) return 0;
  long hz = sysconf(_SC_CLK_TCK);
  return (double)btime + (double)ticks / (double)(hz > 0 ? hz : 100);
}

void proc_start_init(struct proc_start *ps) {
  struct timespec mono, real;
  clock_gettime(CLOCK_MONOTONIC, &mono);
  clock_gettime(CLOCK_REALTIME, &real);
  ps->start_mono_ms = (int64_t)mono.tv_sec * 1000 + mono.tv_nsec / 1000000;
  ps->boot_time = boot_time();
  ps->start_time = kernel_start_time(ps->boot_time);
  if (ps->start_time <= 0) ps->start_time = (double)real.tv_sec + real.tv_nsec / 1e9;
  int64_t vsize;
  read_statm(&vsize, &ps->rss0);
}

int64_t proc_count_fds(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int64_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n > 0 ? n - 1 : 0; /* the walk's own descriptor */
}

/* Files open besides connections, as of the last walk (older kernels). */
static _Atomic int64_t fds_besides_conns;

static int64_t open_fds(int64_t open_conns) {
  struct stat st;
  if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0) return st.st_size; /* Linux 6.2+ */
  if (open_conns <= PROC_FD_WALK_MAX) {
    int64_t n = proc_count_fds("/proc/self/fd");
    if (n >= 0) atomic_store_explicit(&fds_besides_conns, n - open_conns, memory_order_relaxed);
    return n;
  }
  return open_conns + atomic_load_explicit(&fds_besides_conns, memory_order_relaxed);
}

void proc_facts_read(struct proc_facts *f, int64_t open_conns) {
  struct rusage ru;
  memset(f, 0, sizeof *f);
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    f->cpu_seconds = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  read_statm(&f->vsize, &f->rss);
  f->open_fds = open_fds(open_conns);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    f->max_fds = rl.rlim_cur == RLIM_INFINITY ? INT64_MAX : (int64_t)rl.rlim_cur;
  if (getrlimit(RLIMIT_AS, &rl) == 0)
    f->vsize_max = rl.rlim_cur == RLIM_INFINITY ? 18446744073709551615.0 : (double)rl.rlim_cur;
}
