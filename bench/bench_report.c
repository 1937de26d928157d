/* bench_report.c: server sampling and the relay mode's output.
 *
 * Owns reading the server's CPU time (/proc/PID/stat: utime + stime),
 * memory (/proc/PID/status: VmRSS, VmHWM) and context switches (every
 * thread's /proc/PID/task/TID/status), the once-a-second progress line,
 * and the final relay report, as text (stdout, or stderr under --json) and as
 * one JSON object on stdout with --json. */
#include "bench.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the
 * command name (which may itself hold spaces or parentheses). */
static bool read_cpu(pid_t pid, double *cpu_s) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  unsigned long long ut = 0, st = 0;
  /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
   * cmajflt utime(14) stime(15) */
  if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return false;
  long hz = sysconf(_SC_CLK_TCK);
  *cpu_s = (double)(ut + st) / (double)(hz > 0 ? hz : 100);
  return true;
}

static bool read_mem(pid_t pid, long *rss_kb, long *hwm_kb) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  int got = 0;
  while (fgets(line, sizeof line, f) && got < 2) {
    if (sscanf(line, "VmRSS: %ld kB", rss_kb) == 1) got++;
    else if (sscanf(line, "VmHWM: %ld kB", hwm_kb) == 1) got++;
  }
  fclose(f);
  return got == 2;
}

/* voluntary_ctxt_switches + nonvoluntary_ctxt_switches of one thread. */
static bool read_task_ctx(pid_t pid, const char *tid, uint64_t *n) {
  char path[320], line[256]; /* room for any d_name (256) */
  snprintf(path, sizeof path, "/proc/%d/task/%s/status", (int)pid, tid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  unsigned long long v, sum = 0;
  int got = 0;
  while (fgets(line, sizeof line, f) && got < 2) {
    if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1 ||
        sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1) {
      sum += v;
      got++;
    }
  }
  fclose(f);
  if (got != 2) return false;
  *n = sum;
  return true;
}

/* Context switches of every thread /proc/PID/task lists now, summed. The
 * kernel keeps them per thread, and no /proc file has the process's total
 * with its exited threads (only wait4's rusage does, for a child), so a
 * thread that exits between two samples takes its switches with it (the
 * difference comes out short, below zero at worst), and one that appears in
 * between adds all of its own (which do fall in between). A thread that
 * exits while the directory is read is skipped. Servers with long-lived
 * threads (derpd's shards, Go's Ms) lose little. */
static bool read_ctx(pid_t pid, uint64_t *total) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return false;
  struct dirent *e;
  uint64_t sum = 0, one;
  int threads = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    if (read_task_ctx(pid, e->d_name, &one)) {
      sum += one;
      threads++;
    }
  }
  closedir(d);
  *total = sum;
  return threads > 0;
}

const char *bench_transport(const struct bench_cfg *cfg) {
  int v = atomic_load(&bench_tls_negotiated);
  if (cfg->websocket && !cfg->tls) return "websocket";
  if (cfg->websocket) return v == 0x0304 ? "websocket+tls1.3" : v == 0x0303 ? "websocket+tls1.2" : "websocket+tls";
  if (!cfg->tls) return "plain";
  return v == 0x0304 ? "tls1.3" : v == 0x0303 ? "tls1.2" : "tls";
}

void proc_sample(pid_t pid, struct proc_sample *s) {
  memset(s, 0, sizeof *s);
  s->ok = read_cpu(pid, &s->cpu_s) && read_mem(pid, &s->rss_kb, &s->hwm_kb);
  s->ctx_ok = read_ctx(pid, &s->ctx_switches);
}

void servers_sample(const struct bench_cfg *cfg, struct proc_sample *s) {
  memset(s, 0, sizeof *s);
  s->ok = s->ctx_ok = cfg->npids > 0;
  for (int i = 0; i < cfg->npids; i++) {
    struct proc_sample one;
    proc_sample(cfg->server_pids[i], &one);
    s->ok = s->ok && one.ok;
    s->ctx_ok = s->ctx_ok && one.ctx_ok;
    s->ctx_switches += one.ctx_switches;
    s->cpu_s += one.cpu_s;
    s->rss_kb += one.rss_kb;
    s->hwm_kb += one.hwm_kb;
  }
}

void relay_progress(const struct bench_cfg *cfg, const char *phase, double secs, uint64_t pps,
                    uint64_t bytes, uint64_t gap, uint64_t timeouts) {
  fprintf(stderr, "[%5.1fs %-7s] %9llu pps  %7.3f Gbit/s  not yet delivered %llu",
          secs, phase, (unsigned long long)pps, (double)bytes * 8 / 1e9, (unsigned long long)gap);
  if (cfg->pps <= 0) fprintf(stderr, "  ack timeouts %llu", (unsigned long long)timeouts);
  fputc('\n', stderr);
}

static const char *topo_name(enum bench_topo t) {
  return t == TOPO_PAIRS ? "pairs" : t == TOPO_FANIN ? "fanin" : "random";
}

static double loss_pct(const struct relay_totals *t) {
  return t->sent ? 100.0 * (double)(t->sent - (t->delivered < t->sent ? t->delivered : t->sent)) /
                       (double)t->sent
                 : 0;
}

/* The server's context switches over the measured window; 0 where threads
 * that exited in between (see read_ctx) leave the end sample lower. */
static uint64_t ctx_delta(const struct relay_totals *t) {
  return t->s1.ctx_switches > t->s0.ctx_switches ? t->s1.ctx_switches - t->s0.ctx_switches : 0;
}

static void report_text(FILE *out, const struct bench_cfg *cfg, const struct relay_totals *t) {
  double pps = t->measure_s > 0 ? (double)t->delivered / t->measure_s : 0;
  double gbps = t->measure_s > 0 ? (double)t->delivered_bytes * 8 / 1e9 / t->measure_s : 0;
  fprintf(out, "relay %s over %s: %d clients, %u B payload, %s %g, %d threads, %.2f s measured\n",
          topo_name(cfg->topo), bench_transport(cfg), cfg->clients, cfg->size, cfg->pps > 0 ? "open loop pps" : "window",
          cfg->pps > 0 ? cfg->pps : (double)cfg->window, cfg->threads, t->measure_s);
  if (cfg->nservers > 1) {
    fprintf(out, "%d servers (%s), ", cfg->nservers,
            cfg->topo == TOPO_PAIRS ? "every packet crosses servers" : "clients round robin");
    if (t->sync_s < 0) fprintf(out, "route sync failed\n");
    else fprintf(out, "routes synced in %.3f s\n", t->sync_s);
  }
  fprintf(out, "delivered: %llu packets, %.0f pps, %.3f Gbit/s payload\n",
          (unsigned long long)t->delivered, pps, gbps);
  fprintf(out, "sent %llu, lost %llu (%.4f%%)", (unsigned long long)t->sent,
          (unsigned long long)(t->sent > t->delivered ? t->sent - t->delivered : 0), loss_pct(t));
  if (cfg->pps <= 0)
    fprintf(out, ", acks %llu, ack timeouts %llu, late acks %llu", (unsigned long long)t->acks,
            (unsigned long long)t->timeouts, (unsigned long long)t->late_acks);
  else fprintf(out, ", not offered (generator backed up) %llu", (unsigned long long)t->skipped);
  fputc('\n', out);
  const struct hist *h = &t->lat;
  fprintf(out, "one-way latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
          hist_quantile(h, 0.5) / 1e3, hist_quantile(h, 0.9) / 1e3, hist_quantile(h, 0.99) / 1e3,
          hist_quantile(h, 0.999) / 1e3, h->count ? h->max / 1e3 : 0.0);
  if (t->s0.ok && t->s1.ok) {
    double cpu = t->s1.cpu_s - t->s0.cpu_s;
    fprintf(out, "server: %.2f CPU s, %.3f CPU s per million delivered, RSS %ld KiB (peak %ld)\n",
            cpu, t->delivered ? cpu * 1e6 / (double)t->delivered : 0, t->s1.rss_kb, t->s1.hwm_kb);
    if (t->acks)
      fprintf(out, "server: %.3f CPU s per million relayed packets (data + acks)\n",
              cpu * 1e6 / (double)(t->delivered + t->acks));
  }
  if (t->s0.ctx_ok && t->s1.ctx_ok) {
    uint64_t ctx = ctx_delta(t);
    fprintf(out, "server context switches: %llu (%.3f per delivered packet)\n",
            (unsigned long long)ctx, t->delivered ? (double)ctx / (double)t->delivered : 0.0);
  }
  fprintf(out, "derp-bench itself: %.2f CPU s\n", t->bench_cpu_s);
  if (t->bad || t->peer_gone)
    fprintf(out, "anomalies: %llu malformed packets, %llu PeerGone frames\n",
            (unsigned long long)t->bad, (unsigned long long)t->peer_gone);
}

static json_t *latency_json(const struct hist *h) {
  return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)h->count, "p50_us",
                   hist_quantile(h, 0.5) / 1e3, "p90_us", hist_quantile(h, 0.9) / 1e3, "p99_us",
                   hist_quantile(h, 0.99) / 1e3, "p999_us", hist_quantile(h, 0.999) / 1e3,
                   "max_us", h->count ? h->max / 1e3 : 0.0, "mean_us",
                   h->count ? h->sum / (double)h->count / 1e3 : 0.0);
}

static void report_json(const struct bench_cfg *cfg, const struct relay_totals *t) {
  double secs = t->measure_s > 0 ? t->measure_s : 1;
  json_t *o = json_pack(
      "{s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:I, s:I, s:I, s:f, s:f, s:f, s:I, s:I, s:I, "
      "s:I, s:I, s:I, s:o, s:f}",
      "mode", "relay", "topology", topo_name(cfg->topo), "loop", cfg->pps > 0 ? "open" : "closed",
      "clients", cfg->clients, "threads", cfg->threads, "size", (int)cfg->size, "window_or_pps",
      cfg->pps > 0 ? cfg->pps : (double)cfg->window, "duration_s", t->measure_s, "sent",
      (json_int_t)t->sent, "delivered", (json_int_t)t->delivered, "lost",
      (json_int_t)(t->sent > t->delivered ? t->sent - t->delivered : 0), "loss_pct", loss_pct(t),
      "delivered_pps", (double)t->delivered / secs, "payload_gbps",
      (double)t->delivered_bytes * 8 / 1e9 / secs, "acks", (json_int_t)t->acks, "ack_timeouts",
      (json_int_t)t->timeouts, "late_acks", (json_int_t)t->late_acks, "not_offered",
      (json_int_t)t->skipped, "malformed", (json_int_t)t->bad, "peer_gone",
      (json_int_t)t->peer_gone, "latency", latency_json(&t->lat), "bench_cpu_s", t->bench_cpu_s);
  if (!o) { /* a format/argument mismatch: a bug here, never silent */
    fprintf(stderr, "derp-bench: building the JSON report failed\n");
    return;
  }
  if (t->s0.ok && t->s1.ok) {
    double cpu = t->s1.cpu_s - t->s0.cpu_s;
    json_object_set_new(o, "server_cpu_s", json_real(cpu));
    json_object_set_new(o, "server_cpu_s_per_mpkt",
                        json_real(t->delivered ? cpu * 1e6 / (double)t->delivered : 0));
    /* Closed loop: the server relays an ack per data packet too. */
    uint64_t frames = t->delivered + t->acks;
    json_object_set_new(o, "server_cpu_s_per_mframes",
                        json_real(frames ? cpu * 1e6 / (double)frames : 0));
    json_object_set_new(o, "server_rss_kb", json_integer(t->s1.rss_kb));
    json_object_set_new(o, "server_rss_peak_kb", json_integer(t->s1.hwm_kb));
  }
  if (t->s0.ctx_ok && t->s1.ctx_ok) {
    uint64_t ctx = ctx_delta(t);
    json_object_set_new(o, "server_ctx_switches", json_integer((json_int_t)ctx));
    json_object_set_new(o, "server_ctx_per_pkt",
                        json_real(t->delivered ? (double)ctx / (double)t->delivered : 0));
  }
  json_object_set_new(o, "transport", json_string(bench_transport(cfg)));
  json_object_set_new(o, "servers", json_integer(cfg->nservers));
  if (cfg->nservers > 1)
    json_object_set_new(o, "route_sync_s", t->sync_s < 0 ? json_null() : json_real(t->sync_s));
  json_object_set_new(o, "error", t->error[0] ? json_string(t->error) : json_null());
  json_dumpf(o, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  fflush(stdout);
  json_decref(o);
}

void relay_interval_report(const struct bench_cfg *cfg, const struct relay_interval *iv) {
  const struct hist *h = iv->lat;
  double secs = iv->interval_s > 0 ? iv->interval_s : 1;
  uint64_t gap = iv->sent > iv->delivered ? iv->sent - iv->delivered : 0;
  if (!cfg->json) {
    fprintf(stderr,
            "[%6.1fs %-7s] interval %.1f s: %.0f pps, p50 %.1f us, p99 %.1f us, max %.1f us; "
            "measured sent %llu, delivered %llu; generator stalled %.1f ms at most\n",
            iv->t_s, iv->phase, iv->interval_s, (double)iv->rx / secs,
            hist_quantile(h, 0.5) / 1e3, hist_quantile(h, 0.99) / 1e3,
            h->count ? h->max / 1e3 : 0.0, (unsigned long long)iv->sent,
            (unsigned long long)iv->delivered, iv->stall_s * 1e3);
    return;
  }
  json_t *o = json_pack("{s:s, s:s, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}",
                        "kind", "interval", "phase", iv->phase, "t_s", iv->t_s, "interval_s",
                        iv->interval_s, "generator_stall_ms", iv->stall_s * 1e3, "rx_pps",
                        (double)iv->rx / secs, "sent",
                        (json_int_t)iv->sent, "delivered", (json_int_t)iv->delivered,
                        "not_yet_delivered", (json_int_t)gap, "not_offered",
                        (json_int_t)iv->skipped, "ack_timeouts", (json_int_t)iv->timeouts,
                        "malformed", (json_int_t)iv->bad, "peer_gone", (json_int_t)iv->peer_gone,
                        "latency", latency_json(h));
  if (!o) {
    fprintf(stderr, "derp-bench: building the interval JSON failed\n");
    return;
  }
  json_dumpf(o, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  fflush(stdout);
  json_decref(o);
}

void relay_report(const struct bench_cfg *cfg, const struct relay_totals *t) {
  report_text(cfg->json ? stderr : stdout, cfg, t);
  if (cfg->json) report_json(cfg, t);
}
