/* test_listen.c: the address a listener takes for -a's host (core/listen.c),
 * as Go's net.Listen picks it for derper: [::] dual stack for no host, or
 * 0.0.0.0 on a kernel without IPv6 (ipv6.disable=1, here a seccomp filter
 * that refuses AF_INET6 sockets); a name's first IPv4 address, else its first.
 * The cases that change the world run in a child in their own mount and
 * network namespaces (root, as CI runs): binds stay inside them. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/core/listen.h"

static int family_of(const char *host, bool *dual, char *ip, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t len;
  char err[200];
  if (listen_resolve(host, 4433, SOCK_STREAM, &ss, &len, dual, err, sizeof err) != 0) return -1;
  const void *a = ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                                          : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
  inet_ntop(ss.ss_family, a, ip, (socklen_t)cap);
  return ss.ss_family;
}

Test(listen, literals_and_no_host) {
  bool dual;
  char ip[64];
  cr_assert_eq(family_of("127.0.0.1", &dual, ip, sizeof ip), AF_INET);
  cr_assert(!dual);
  cr_assert_eq(family_of("::1", &dual, ip, sizeof ip), AF_INET6);
  cr_assert(!dual);
  cr_assert_eq(family_of("", &dual, ip, sizeof ip), AF_INET6, "no host: [::] where the kernel has IPv6");
  cr_assert(dual);
  cr_assert_str_eq(ip, "::");
  struct sockaddr_storage ss;
  socklen_t len;
  char err[200] = "";
  cr_assert_eq(listen_resolve("no-such-host.invalid", 1, SOCK_STREAM, &ss, &len, &dual, err, sizeof err), -1);
  cr_assert(strstr(err, "no-such-host.invalid"), "error: %s", err);
}

/* Runs fn in a child, in new mount and network namespaces; its exit status. */
static int in_namespaces(int (*fn)(void)) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    if (unshare(CLONE_NEWNS | CLONE_NEWNET) != 0) {
      fprintf(stderr, "unshare: %s (this test needs root, as CI has)\n", strerror(errno));
      _exit(90);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(91);
    _exit(fn());
  }
  int st = -1;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  cr_assert(WIFEXITED(st), "child ended by signal %d", WTERMSIG(st));
  return WEXITSTATUS(st);
}

/* A name with an IPv6 address listed first (getaddrinfo sorts ::1 before
 * 127.0.0.1 too): the IPv4 one. Go's Listen does so; derpd took the first. */
static int name_with_both(void) {
  char path[] = "/tmp/derpd-test-hosts-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 92;
  const char hosts[] = "::1 both.derpd.test\n127.0.0.1 both.derpd.test\n";
  if (write(fd, hosts, sizeof hosts - 1) != (ssize_t)(sizeof hosts - 1)) return 93;
  close(fd);
  int r = mount(path, "/etc/hosts", NULL, MS_BIND, NULL);
  unlink(path);
  if (r != 0) return 94;
  bool dual;
  char ip[64];
  int fam = family_of("both.derpd.test", &dual, ip, sizeof ip);
  if (fam != AF_INET || strcmp(ip, "127.0.0.1") != 0) {
    fprintf(stderr, "both.derpd.test: family %d, %s\n", fam, ip);
    return 1;
  }
  return 0;
}

Test(listen, name_prefers_ipv4) {
  int r = in_namespaces(name_with_both);
  cr_assert_eq(r, 0, "child status %d", r);
}

/* A kernel booted with ipv6.disable=1: socket(AF_INET6) fails with
 * EAFNOSUPPORT. derpd failed to start with -a :PORT (and an empty error). */
static int refuse_ipv6(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAFNOSUPPORT & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 95;
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) return 96;
  return 0;
}

static int no_ipv6_kernel(void) {
  int r = refuse_ipv6();
  if (r) return r;
  if (socket(AF_INET6, SOCK_STREAM, 0) >= 0 || errno != EAFNOSUPPORT) return 97; /* the filter works */
  bool dual;
  char ip[64];
  if (family_of("", &dual, ip, sizeof ip) != AF_INET || dual || strcmp(ip, "0.0.0.0") != 0) return 2;
  char err[200] = "";
  if (listen_port_in_use("", 0, err, sizeof err) != 0) return 3;
  int fd = listen_open("", 0, err, sizeof err);
  if (fd < 0) {
    fprintf(stderr, "listen_open: %s\n", err);
    return 4;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family != AF_INET) return 5;
  if (listen_bound_port(fd) == 0) return 6;
  /* The port is held: a second derpd would be told so. */
  if (listen_port_in_use("", listen_bound_port(fd), err, sizeof err) != 1 || !strstr(err, "already in use")) return 7;
  /* And STUN's datagram socket takes the same address. */
  struct sockaddr_storage us;
  if (listen_resolve("", 3478, SOCK_DGRAM, &us, &len, &dual, err, sizeof err) != 0 || us.ss_family != AF_INET) return 8;
  return 0;
}

Test(listen, no_ipv6_kernel_takes_ipv4) {
  int r = in_namespaces(no_ipv6_kernel);
  cr_assert_eq(r, 0, "child status %d", r);
}
