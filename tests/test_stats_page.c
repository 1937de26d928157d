/* test_stats_page.c: the /debug/varz and /debug/vars pages
 * (src/server/operations/stats_page.c, metrics.c, procstats.c) over made-up
 * shards: sums, derper's derived names, histograms (cumulative buckets, _sum,
 * _count), the per-shard series, the text format's grouping (one TYPE per
 * family, its samples together), valid JSON, the page bound at 1024 shards,
 * and the process facts. A live page goes through promtool in
 * test_metrics_prometheus.sh. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/operations/expvar.h"
#include "server/operations/stats_page.h"
#include "server/operations/tcp_rtt.h"

#define NS 3
static struct stats shards[NS];
static struct stats *all[NS] = {&shards[0], &shards[1], &shards[2]};
static struct proc_start start = {.start_time = 1700000000.25, .boot_time = 1699990000, .start_mono_ms = 1000,
                                  .rss0 = 4096};
static struct proc_facts proc = {.cpu_seconds = 1.5, .rss = 8192, .vsize = 65536, .open_fds = 12,
                                 .max_fds = 1024, .vsize_max = 18446744073709551615.0};
static struct stats_view view = {.all = all, .n = NS, .start = &start, .proc = &proc, .now_mono_ms = 62400,
                                 .bdns_queried = 7};
static char page[256 * 1024];

static void fill(void) {
  memset(shards, 0, sizeof shards);
  for (int i = 0; i < NS; i++) {
    STAT_ADD(&shards[i], pkts_recv, 100 * (i + 1));
    STAT_ADD(&shards[i], cur_conns, i);
    STAT_ADD(&shards[i], open_conns, 2 * i);
  }
  STAT_DROP_N(&shards[0], queue_head, true, 2, 60);
  STAT_DROP_N(&shards[1], unknown_dest, false, 5, 5000);
  STAT_DROP_N(&shards[2], unknown_dest, false, 1, 1280);
  STAT_DROP_N(&shards[2], shard_queue, true, 1, 40);
  STAT_CLOSE(&shards[1], CLOSE_write_timeout);
  STAT_CLOSE(&shards[2], CLOSE_write_timeout);
  STAT_ADD(&shards[0], unknown_frames, 3);
  STAT_ADD(&shards[2], ws_upgrades, 4);
  /* write_frames: 0 | 1 | 7 | 64 | 1000 */
  hist_observe(&shards[0].ops, HIST_write_frames, 0);
  hist_observe(&shards[1].ops, HIST_write_frames, 1);
  hist_observe(&shards[1].ops, HIST_write_frames, 7);
  hist_observe(&shards[2].ops, HIST_write_frames, 64);
  hist_observe(&shards[2].ops, HIST_write_frames, 1000);
  /* queue waits: shard 0 10 µs then 20 µs; shard 2 one of 3 s (over every bound) */
  ops_queue_wait(&shards[0].ops, 10);
  ops_queue_wait(&shards[0].ops, 20);
  ops_queue_wait(&shards[2].ops, 3000000);
  hist_observe(&shards[1].ops, HIST_handshake, 3); /* ms */
}

/* The value of the sample line that starts with `series` and a space. */
static double sample(const char *pg, const char *series) {
  size_t n = strlen(series);
  for (const char *l = pg; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
    if (strncmp(l, series, n) == 0 && l[n] == ' ') return strtod(l + n + 1, NULL);
  cr_assert_fail("no sample %s", series);
  return -1;
}

static size_t render(void) {
  size_t n = stats_page_varz(page, sizeof page, &view);
  cr_assert(n > 0 && n < sizeof page - 1);
  page[n] = 0;
  return n;
}

Test(stats_page, sums_and_derived) {
  fill();
  render();
  cr_assert_eq(sample(page, "derp_packets_received"), 600);
  cr_assert_eq(sample(page, "derp_current_connections"), 3);
  cr_assert_eq(sample(page, "derpd_open_connections"), 6);
  /* derper v1.80+'s families, summed over shards; v1.78's by reason and type. */
  cr_assert_eq(sample(page, "derp_packets_dropped{reason=\"queue_head\",kind=\"disco\"}"), 2);
  cr_assert_eq(sample(page, "derp_packets_dropped{reason=\"queue_head\",kind=\"other\"}"), 0);
  cr_assert_eq(sample(page, "derp_packets_dropped{reason=\"unknown_dest\",kind=\"other\"}"), 6);
  cr_assert_eq(sample(page, "derp_packets_dropped{reason=\"shard_queue\",kind=\"disco\"}"), 1);
  cr_assert_eq(sample(page, "derp_bytes_dropped{reason=\"queue_head\",kind=\"disco\"}"), 60);
  cr_assert_eq(sample(page, "derp_bytes_dropped{reason=\"unknown_dest\",kind=\"other\"}"), 6280);
  cr_assert_eq(sample(page, "derp_bytes_dropped{reason=\"dup_client\",kind=\"other\"}"), 0);
  cr_assert(strstr(page, "# TYPE derp_packets_dropped counter\n") && strstr(page, "# TYPE derp_bytes_dropped counter\n"));
  cr_assert(!strstr(page, "\nderp_packets_dropped "), "no unlabelled sample beside the labelled family");
  cr_assert_eq(sample(page, "derp_packets_dropped_reason{reason=\"unknown_dest\"}"), 6);
  cr_assert_eq(sample(page, "derp_packets_dropped_reason{reason=\"queue_head\"}"), 2);
  cr_assert_eq(sample(page, "derp_packets_dropped_type{type=\"disco\"}"), 3);
  cr_assert_eq(sample(page, "derp_packets_dropped_type{type=\"other\"}"), 6);
  cr_assert_eq(sample(page, "derp_sclient_write_timeouts"), 2);
  cr_assert_eq(sample(page, "derp_unknown_frames"), 3);
  cr_assert_eq(sample(page, "derpd_unknown_frames"), 3, "the old name still works");
  cr_assert_eq(sample(page, "derp_websocket_accepts"), 4);
  cr_assert_eq(sample(page, "derp_current_file_descriptors"), 12);
  cr_assert_eq(sample(page, "derp_memstats_sys0"), 4096);
  cr_assert_eq(sample(page, "uptime_sec"), 61, "(62400 - 1000) ms, rounded");
  cr_assert_eq(sample(page, "process_start_unix_time"), 1700000000);
  cr_assert_eq(sample(page, "node_boot_time_seconds"), 1699990000);
  cr_assert_eq(sample(page, "version{version=\"" DERPD_VERSION "\"}"), 1, "derper's version series");
  cr_assert_eq(sample(page, "process_start_time_seconds"), 1700000000.25);
  cr_assert_eq(sample(page, "process_cpu_seconds_total"), 1.5);
  cr_assert_eq(sample(page, "process_open_fds"), 12);
  cr_assert_eq(sample(page, "process_max_fds"), 1024);
  cr_assert_eq(sample(page, "process_resident_memory_bytes"), 8192);
  cr_assert_eq(sample(page, "process_virtual_memory_bytes"), 65536);
  cr_assert_eq(sample(page, "process_virtual_memory_max_bytes"), 18446744073709551615.0);
  cr_assert_eq(sample(page, "bootstrap_dns_requests"), 0);
  cr_assert_eq(sample(page, "bootstrap_dns_queried_domains"), 7);
  cr_assert_eq(sample(page, "bootstrap_dns_published_misses"), 0);
  /* Shard 0's average: 10 then 0.1*20 + 0.9*10 = 11 µs; shard 2's: 3 s. */
  cr_assert_float_eq(sample(page, "derp_average_queue_duration_ms"), (0.011 + 3000.0) / 2, 1e-6);
  cr_assert(strstr(page, "\nderp_average_queue_duration_ms ") && !strstr(page, "TYPE derp_average_queue"),
            "untyped, as derper");
  cr_assert(!strstr(page, "\n "), "no internal (unnamed) counter is rendered");
}

Test(stats_page, histograms) {
  fill();
  render();
  cr_assert(strstr(page, "# TYPE derp_buffered_write_frames histogram\n"));
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"0\"}"), 1);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"1\"}"), 2);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"6\"}"), 2);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"7\"}"), 3);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"50\"}"), 3);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"100\"}"), 4);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_bucket{le=\"+Inf\"}"), 5);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_sum"), 1072);
  cr_assert_eq(sample(page, "derp_buffered_write_frames_count"), 5);
  cr_assert_eq(sample(page, "derpd_queue_wait_seconds_bucket{le=\"1e-05\"}"), 1);
  cr_assert_eq(sample(page, "derpd_queue_wait_seconds_bucket{le=\"2.5e-05\"}"), 2);
  cr_assert_eq(sample(page, "derpd_queue_wait_seconds_bucket{le=\"2.5\"}"), 2);
  cr_assert_eq(sample(page, "derpd_queue_wait_seconds_bucket{le=\"+Inf\"}"), 3);
  cr_assert_float_eq(sample(page, "derpd_queue_wait_seconds_sum"), 3.00003, 1e-9);
  cr_assert_eq(sample(page, "derpd_queue_wait_seconds_count"), 3);
  cr_assert_eq(sample(page, "derpd_handshake_seconds_bucket{le=\"0.002\"}"), 0);
  cr_assert_eq(sample(page, "derpd_handshake_seconds_bucket{le=\"0.005\"}"), 1);
  cr_assert_float_eq(sample(page, "derpd_handshake_seconds_sum"), 0.003, 1e-12);
  /* Every def is ascending and within bounds. */
  for (int h = 0; h < HIST_N; h++) {
    cr_assert(hist_defs[h].n > 0 && hist_defs[h].n <= HIST_BOUNDS_MAX);
    for (int k = 1; k < hist_defs[h].n; k++) cr_assert_lt(hist_defs[h].bound[k - 1], hist_defs[h].bound[k]);
  }
}

Test(stats_page, per_shard_series) {
  fill();
  render();
  for (int i = 0; i < NS; i++) {
    char s[96];
    snprintf(s, sizeof s, "derpd_shard_packets_received{shard=\"%d\"}", i);
    cr_assert_eq(sample(page, s), 100 * (i + 1));
    snprintf(s, sizeof s, "derpd_shard_connections{shard=\"%d\"}", i);
    cr_assert_eq(sample(page, s), 2 * i, "every open conn, not only clients");
  }
  cr_assert_eq(sample(page, "derpd_shard_packets_dropped{shard=\"0\"}"), 2);
  cr_assert_eq(sample(page, "derpd_shard_packets_dropped{shard=\"1\"}"), 5);
  cr_assert_eq(sample(page, "derpd_shard_packets_dropped{shard=\"2\"}"), 2);
}

/* The text format's grouping: a family's TYPE comes once, before its
 * samples, and its samples stand together. */
Test(stats_page, families_grouped) {
  fill();
  render();
  char seen[256][96];
  int nseen = 0;
  char cur[96] = "";
  for (char *l = page; *l; l = strchr(l, '\n') + 1) {
    char fam[96];
    if (strncmp(l, "# TYPE ", 7) == 0) {
      sscanf(l + 7, "%95s", fam);
      for (int k = 0; k < nseen; k++) cr_assert(strcmp(seen[k], fam) != 0, "second TYPE for %s", fam);
      cr_assert_lt(nseen, 256);
      strcpy(seen[nseen++], fam);
      strcpy(cur, fam);
      continue;
    }
    if (l[0] == '#') continue;
    size_t n = strcspn(l, "{ ");
    cr_assert(n > 0 && n < sizeof fam);
    memcpy(fam, l, n);
    fam[n] = 0;
    bool in_cur = strncmp(fam, cur, strlen(cur)) == 0 && cur[0];
    if (!in_cur) { /* an untyped family: starts a group of its own */
      for (int k = 0; k < nseen; k++) cr_assert(strcmp(seen[k], fam) != 0, "%s apart from its TYPE", fam);
      strcpy(cur, fam);
    }
  }
}

/* /debug/vars: the page read back into derper's expvar tree. */
static json_t *vars(void) {
  static char json[256 * 1024];
  size_t vn = render();
  size_t n = expvar_render(json, sizeof json, page, vn);
  cr_assert(n > 0 && n < sizeof json - 1);
  json_error_t e;
  json_t *j = json_loadb(json, n, 0, &e);
  cr_assert(j, "bad JSON at line %d: %s", e.line, e.text);
  return j;
}

static long long jint(json_t *o, const char *path) { /* "a/b/c" */
  char buf[128];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *k = strtok(buf, "/"); k && o; k = strtok(NULL, "/")) o = json_object_get(o, k);
  cr_assert(json_is_integer(o), "%s: not an integer", path);
  return (long long)json_integer_value(o);
}

Test(stats_page, vars_json) {
  fill();
  json_t *j = vars();
  json_t *d = json_object_get(j, "derp");
  cr_assert(json_is_object(d), "derper's \"derp\" map");
  cr_assert_eq(jint(d, "packets_received"), 600);
  cr_assert_eq(jint(d, "gauge_current_connections"), 3);
  cr_assert_eq(jint(d, "packets_dropped"), 9, "v1.78's total, from v1.80's family");
  cr_assert_eq(jint(d, "counter_packets_dropped_reason/unknown_dest"), 6);
  cr_assert_eq(jint(d, "counter_packets_dropped_reason/shard_queue"), 1);
  cr_assert_eq(jint(d, "counter_packets_dropped_type/disco"), 3);
  cr_assert_eq(jint(d, "counter_packets_dropped_type/other"), 6);
  cr_assert_eq(jint(d, "counter_packets_received_kind/other"), 0);
  cr_assert_eq(jint(d, "sclient_write_timeouts"), 2);
  cr_assert_eq(jint(d, "gauge_current_file_descriptors"), 12);
  cr_assert_eq(jint(d, "gauge_memstats_sys0"), 4096);
  /* A histogram as tsweb writes one: cumulative counts by bound, sum, count. */
  cr_assert_eq(jint(d, "counter_buffered_write_frames/0"), 1);
  cr_assert_eq(jint(d, "counter_buffered_write_frames/7"), 3);
  cr_assert_eq(jint(d, "counter_buffered_write_frames/+Inf"), 5);
  cr_assert_eq(jint(d, "counter_buffered_write_frames/sum"), 1072);
  cr_assert_eq(jint(d, "counter_buffered_write_frames/count"), 5);
  cr_assert_float_eq(json_number_value(json_object_get(d, "average_queue_duration_ms")), (0.011 + 3000.0) / 2, 1e-6);
  cr_assert_str_eq(json_string_value(json_object_get(d, "version")), DERPD_VERSION);
  cr_assert_str_eq(json_string_value(json_object_get(j, "version")), DERPD_VERSION, "derper's expvar string");
  cr_assert_eq(jint(j, "counter_uptime_sec"), 61);
  cr_assert_eq(jint(j, "counter_bootstrap_dns_queried_domains"), 7);
  cr_assert_eq(jint(j, "derp_websocket_accepts"), 4);
  cr_assert_eq(jint(j, "process_start_unix_time"), 1700000000);
  cr_assert_eq(jint(j, "stun/counter_requests/success"), 0);
  json_t *tv = json_object_get(j, "derper_tls_request_version");
  cr_assert(json_is_object(tv) && json_object_size(tv) == 0, "no TLS request seen: {}, as derper");
  cr_assert(json_is_object(json_object_get(j, "gauge_derper_tls_active_version")));
  /* derpd's own, flat; what derper's tree holds is not repeated there. */
  json_t *o = json_object_get(j, "derpd");
  cr_assert_eq(jint(o, "derpd_open_connections"), 6);
  cr_assert_eq(jint(o, "derpd_conn_closed_write_timeout"), 2);
  cr_assert_eq(jint(o, "derp_bytes_dropped_unknown_dest_other"), 6280);
  cr_assert_eq(jint(o, "process_open_fds"), 12);
  cr_assert_eq(jint(o, "node_boot_time_seconds"), 1699990000);
  cr_assert_float_eq(json_number_value(json_object_get(o, "process_cpu_seconds_total")), 1.5, 1e-9);
  cr_assert(json_object_get(o, "derpd_shards"));
  cr_assert(!json_object_get(o, "derp_packets_received") && !json_object_get(o, "derp_packets_dropped_reason_unknown_dest"),
            "a series in derper's tree is not repeated");
  const char *k;
  json_t *v;
  json_object_foreach(o, k, v) {
    cr_assert(json_is_number(v), "%s: not a number", k);
    cr_assert(!strstr(k, "_bucket") && !strstr(k, "derpd_shard_packets") && !strstr(k, "derpd_shard_connections") &&
                  !strstr(k, "queue_wait_seconds"),
              "%s: histograms and per-shard series stay on /debug/varz", k);
  }
  json_decref(j);
}

/* expvar.c reads any page without running past it: odd lines are skipped,
 * a label value keeps its escapes (JSON reads them the same), and a small
 * buffer cuts the output at its cap. */
Test(stats_page, vars_from_odd_pages) {
  static const char odd[] = "# TYPE derp_accepts counter\nderp_accepts 5\nderp_accepts 6\nnovalue\nderp_x{a=\"}\" 1\n"
                            "derp_got_ping 1\nderp_got_ping{x=\"y\"} 2\nderp_sent_pong{a=\"1\",b=\"2\"} 3\nderp_sent_pong{a=\"4\"} 5\n"
                            "derp_packets_received_kind{kind=\"q\\\"x\"} 2\n{} 3\nderp_bytes_sent{kind=\"a\",b=\"c\"} 7\n"
                            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nversion{version=\"v\"} 1";
  static char json[4096];
  size_t n = expvar_render(json, sizeof json, odd, sizeof odd - 1);
  cr_assert(n > 0 && n < sizeof json);
  json_error_t e;
  json_t *j = json_loadb(json, n, 0, &e);
  cr_assert(j, "bad JSON at line %d: %s: %.*s", e.line, e.text, (int)n, json);
  cr_assert_eq(jint(j, "derp/accepts"), 5, "a name twice: its first value");
  cr_assert_eq(jint(j, "derp/got_ping/y"), 2, "labelled and not: the label map");
  cr_assert_eq(jint(j, "derp/sent_pong/4"), 5, "one label and two: the one-label samples");
  cr_assert_eq(jint(j, "derp/counter_packets_received_kind/q\"x"), 2);
  cr_assert_eq(jint(j, "derp/bytes_sent"), 7, "a two-label family: its total");
  cr_assert(!json_object_get(json_object_get(j, "derpd"), "h_bucket_1"), "histograms stay on /debug/varz");
  cr_assert_str_eq(json_string_value(json_object_get(j, "version")), "v");
  json_decref(j);
  for (size_t cap = 0; cap < 64; cap++) {
    char small[64];
    memset(small, 0x55, sizeof small);
    size_t m = expvar_render(small, cap, odd, sizeof odd - 1);
    cr_assert(m <= cap || cap == 0, "%zu bytes into %zu", m, cap);
    for (size_t i = cap; i < sizeof small; i++) cr_assert_eq((uint8_t)small[i], 0x55, "wrote past %zu", cap);
  }
}

/* The certificate's NotAfter with TLS, ACME's results with letsencrypt, and
 * neither series on a plain listener. */
Test(stats_page, cert_and_acme) {
  fill();
  render();
  cr_assert(!strstr(page, "derpd_tls_cert_not_after") && !strstr(page, "derpd_acme_"), "plain: no TLS series");
  view.tls = true;
  view.cert_not_after = 1767225600;
  render();
  cr_assert_eq(sample(page, "derpd_tls_cert_not_after"), 1767225600);
  cr_assert(strstr(page, "# TYPE derpd_tls_cert_not_after gauge\n"));
  cr_assert(!strstr(page, "derpd_acme_"), "manual or selfsigned: no ACME series");
  view.acme = true;
  view.acme_issued = 2;
  view.acme_failed = 3;
  render();
  cr_assert_eq(sample(page, "derpd_acme_certificates{result=\"issued\"}"), 2);
  cr_assert_eq(sample(page, "derpd_acme_certificates{result=\"failed\"}"), 3);
  cr_assert(strstr(page, "# TYPE derpd_acme_certificates counter\n"));
  STAT_INC(&shards[1], tls_req13);
  STAT_INC(&shards[1], tls_active13);
  json_t *j = vars();
  cr_assert_eq(jint(j, "derpd/derpd_tls_cert_not_after"), 1767225600, "and in /debug/vars");
  cr_assert_eq(jint(j, "derpd/derpd_acme_certificates_failed"), 3);
  cr_assert_eq(jint(j, "derper_tls_request_version/1.3"), 1);
  json_decref(j);
  view.tls = view.acme = false;
}

/* stats_page_cap is a bound: 1024 shards with every counter at its widest. */
Test(stats_page, cap_holds_1024_shards) {
  enum { N = 1024 };
  struct stats *big = calloc(N, sizeof *big);
  struct stats **ptrs = calloc(N, sizeof *ptrs);
  cr_assert(big && ptrs);
  for (int i = 0; i < N; i++) {
    ptrs[i] = &big[i];
    for (int j = 0; j < STAT_NSCALARS; j++) big[i].v[j] = INT64_MIN / N;
    for (int j = 0; j < DROP_NREASONS; j++)
      for (int k = 0; k < DROP_NKINDS; k++)
        big[i].drops[j][k] = big[i].drop_bytes[j][k] = INT64_MIN / N / DROP_NREASONS / DROP_NKINDS;
  }
  struct stats_view v = {.all = ptrs, .n = N, .start = &start, .proc = &proc, .now_mono_ms = 62400,
                        .tls = true, .cert_not_after = INT64_MIN, .acme = true, .acme_issued = INT64_MIN,
                        .acme_failed = INT64_MIN};
  size_t cap = stats_page_cap(N);
  char *buf = malloc(cap);
  size_t n = stats_page_varz(buf, cap, &v);
  cr_assert_lt(n, cap - 1, "page of %zu bytes filled its %zu-byte buffer", n, cap);
  cr_assert(memmem(buf, n, "derpd_shard_packets_dropped{shard=\"1023\"}", 41));
  free(buf);
  free(ptrs);
  free(big);
}

Test(procstats, facts) {
  struct proc_start ps;
  proc_start_init(&ps);
  cr_assert_gt(ps.start_time, 1.5e9);
  cr_assert_gt(ps.boot_time, 1.5e9, "btime read line by line from /proc/stat");
  cr_assert_geq(ps.start_time, (double)ps.boot_time);
  cr_assert_gt(ps.rss0, 0);
  struct proc_facts f;
  proc_facts_read(&f, 0);
  cr_assert_gt(f.rss, 0);
  cr_assert_geq(f.vsize, f.rss);
  cr_assert_gt(f.max_fds, 0);
  cr_assert_gt(f.vsize_max, 0);
  cr_assert_geq(f.cpu_seconds, 0);
  int64_t before = proc_count_fds("/proc/self/fd");
  cr_assert_gt(before, 2);
  int fds[3];
  for (int i = 0; i < 3; i++) fds[i] = open("/dev/null", O_RDONLY);
  cr_assert_eq(proc_count_fds("/proc/self/fd"), before + 3);
  proc_facts_read(&f, 0);
  cr_assert_eq(f.open_fds, before + 3, "stat's size (Linux 6.2+) or the walk: the same count");
  for (int i = 0; i < 3; i++) close(fds[i]);
  cr_assert_eq(proc_count_fds("/nonexistent"), -1);
}

/* derper's durationToLabel: a bound is inclusive, past 500 ms is "inf". */
Test(stats_page, tcp_rtt_buckets) {
  cr_assert_eq(tcp_rtt_bucket(0), 0);
  cr_assert_eq(tcp_rtt_bucket(10000), 0);
  cr_assert_eq(tcp_rtt_bucket(10001), 1);
  cr_assert_eq(tcp_rtt_bucket(20000), 1);
  cr_assert_eq(tcp_rtt_bucket(50000), 2);
  cr_assert_eq(tcp_rtt_bucket(100000), 3);
  cr_assert_eq(tcp_rtt_bucket(150000), 4);
  cr_assert_eq(tcp_rtt_bucket(250000), 5);
  cr_assert_eq(tcp_rtt_bucket(500000), 6);
  cr_assert_eq(tcp_rtt_bucket(500001), 7);
  cr_assert_eq(tcp_rtt_bucket(UINT32_MAX), 7);
}
