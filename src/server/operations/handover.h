/* handover.h: live upgrade. On SIGUSR2 derpd starts a new derpd (the binary
 * at the same path, the same flags) and passes it its listening sockets; the
 * new process accepts on those very sockets from its first moment, and once
 * it says it listens the old one stops accepting (without closing them),
 * sends every client Restarting, drains and exits. Connections waiting in a
 * socket's accept queue are never reset: the socket itself lives on.
 *
 * The sockets travel by inheritance across fork+exec, named in the
 * environment: DERPD_HANDOVER="main=5,6;http80=7,8" (kind = fds in shard
 * order), and DERPD_HANDOVER_READY=<fd of a pipe> on which the new process
 * writes one byte once it listens. Main thread only, before the shards start
 * (inherited) or while they run (spawn). */
#ifndef DERPD_HANDOVER_H
#define DERPD_HANDOVER_H

#include <stdbool.h>
#include <sys/types.h>

#define HANDOVER_KINDS_MAX 8
/* Four kinds in use (main, http80, metrics, stun), one socket each per shard,
 * up to --shards' 1024; the environment that names them fits ENV_MAX. */
#define HANDOVER_FDS_MAX (4 * 1024)
#define HANDOVER_ENV_MAX 32768

/* New process: the inherited socket of `kind` for shard i, or -1 if none
 * (then open one). Each is handed out once. */
int handover_inherited(const char *kind, int i);
/* New process: whether it was started by a handover. */
bool handover_active(void);
/* New process, once every shard listens: closes inherited sockets nobody
 * claimed (a smaller --shards than before) and tells the old process. */
void handover_ready(void);

/* Old process: the sockets to pass, by kind. */
struct handover_set {
  int nkinds;
  struct { const char *kind; int n; const int *fds; } k[HANDOVER_KINDS_MAX];
};
/* Old process: start the new derpd (argv[0], found in $PATH as execvp
 * would) with the sockets, wait up to timeout_ms for it to say it listens. 0 with *child = its pid, or
 * -1 after logging why (the new process, if any, was stopped; nothing
 * changed here). */
int handover_spawn(char *const argv[], const struct handover_set *set, int timeout_ms, pid_t *child);

#endif
