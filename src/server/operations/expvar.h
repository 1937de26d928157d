/* expvar.h: /debug/vars as derper serves it, Go's expvar tree: "derp" (the
 * server's map: "accepts", "gauge_current_connections",
 * "counter_packets_dropped_reason": {...}, ...), "stun", "tls_listener",
 * the bootstrap DNS counters, "version"; then "derpd", a flat object of
 * every other series of /debug/varz (a label's value joined with "_").
 *
 * Made from a rendered /debug/varz page, by reading tsweb's naming
 * backwards, so both pages always say the same. Not served: Go's own
 * ("memstats", "cmdline", "goroutines", "go_*"). */
#ifndef DERPD_EXPVAR_H
#define DERPD_EXPVAR_H

#include <stddef.h>

/* The JSON for the varz page varz[0..vlen) into buf; returns its length
 * (cap or more: cut), 0 when out of memory. Allocates one array of a
 * pointer-sized record per line of the page, freed before returning. */
size_t expvar_render(char *buf, size_t cap, const char *varz, size_t vlen);

#endif
