/* bench_tool.h: what the bench tools (derp-bench, derp-chaos, derp-flood)
 * share: flag values and a process's set-up. */
#ifndef BENCH_TOOL_H
#define BENCH_TOOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A Go-like duration: 10s, 500ms, 100us, 5ns, 2m, 1h; a bare number is
 * seconds. 0, or -1 on anything else (negative included). */
int bench_parse_duration(const char *s, int64_t *ns);

/* libsodium initialised, SIGPIPE ignored, SIGINT and SIGTERM setting *stop,
 * and the open-file limit raised to its hard limit. Returns that limit, or
 * -1 if libsodium failed. */
long bench_tool_init(atomic_bool *stop);

#endif
