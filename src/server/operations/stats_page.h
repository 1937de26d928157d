/* stats_page.h: the /debug/varz page (Prometheus text; expvar.c reads
 * /debug/vars, JSON, off it): metrics.c's counters summed over the shards, then the rest of
 * what derper v1.78 serves, the process facts a Prometheus client library
 * exports, derpd's histograms and its per-shard series.
 *
 * Pure rendering over a view, so tests feed it made-up shards. The cost is
 * O(shards x counters) relaxed loads and no lock: never per client. */
#ifndef DERPD_STATS_PAGE_H
#define DERPD_STATS_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/operations/metrics.h"
#include "server/operations/procstats.h"

struct stats_view {
  struct stats *const *all;        /* every shard's counters */
  int n;
  const struct proc_start *start;
  const struct proc_facts *proc;
  int64_t now_mono_ms;             /* for uptime_sec */
  int64_t bdns_queried;            /* bootstrap_dns_queried() */
  bool tls;                        /* the listener serves TLS: the two below */
  int64_t cert_not_after;          /* tls_cert_not_after() */
  bool acme;                       /* -certmode letsencrypt: acme_counts() below */
  int64_t acme_issued, acme_failed;
  bool rate_config;                /* -rate-config given: its metrics, as derper */
  uint64_t rate_bps, rate_burst;   /* the setting in force */
};

/* Bytes a page may need for n shards (a bound, not an estimate). */
size_t stats_page_cap(int nshards);
size_t stats_page_varz(char *buf, size_t cap, const struct stats_view *v);

#endif
