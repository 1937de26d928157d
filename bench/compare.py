#!/usr/bin/env python3
"""bench/compare's statistics: reads the run's JSON lines and its meta data, prints
the Markdown report on stdout, writes gnuplot data files into --datadir and
appends one "median" line per (server, experiment, configuration) to the results.
"""
import argparse
import json
import statistics
import sys

p = argparse.ArgumentParser()
p.add_argument("--results", required=True)
p.add_argument("--meta", required=True)
p.add_argument("--datadir", required=True)
args = p.parse_args()

meta = json.load(open(args.meta))
runs, ceil = [], []
with open(args.results) as f:
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            print(f"aggregate: {args.results}:{n}: not JSON, skipped", file=sys.stderr)
            continue
        if rec.get("kind") == "run":
            runs.append(rec)
        elif rec.get("kind") == "ceiling" and rec.get("bits_per_second"):
            ceil.append(rec["bits_per_second"])

other = meta.get("other_name") or ""
servers = ["derpd"] + ([other] if other else [])

def varz_per_pkt(name):
    """A /debug/varz counter's growth over the run (the many experiment reads
    it before and after derp-bench) per packet the server wrote to clients
    (derp_packets_sent, over the same span); None where the server lacks it."""
    def get(r):
        v0, v1 = r.get("_varz_before") or {}, r.get("_varz_after") or {}
        pkts = v1.get("packets_sent", 0) - v0.get("packets_sent", 0)
        if name not in v0 or name not in v1 or pkts <= 0:
            return None
        return (v1[name] - v0[name]) / pkts
    return get


METRICS = {
    "pps": lambda r: r["delivered_pps"],
    "gbps": lambda r: r["payload_gbps"],
    "p50": lambda r: r["latency"]["p50_us"],
    "p99": lambda r: r["latency"]["p99_us"],
    "loss": lambda r: r["loss_pct"],
    "cpu": lambda r: r.get("server_cpu_s_per_mpkt"),
    "rss": lambda r: r.get("server_rss_peak_kb"),
    "ctx": lambda r: r.get("server_ctx_per_pkt"),
    "sends": varz_per_pkt("send_calls"),
    "wakeups": varz_per_pkt("wakeups"),
}


def stats(server, exp, key, shards=None):
    """{metric: (median, min, max)} over the successful runs (of that shard
    count, if given), or None."""
    res = [dict(r["result"], _varz_before=r.get("varz_before"), _varz_after=r.get("varz_after"))
           for r in runs
           if r["server"] == server and r["exp"] == exp and r["key"] == key and r.get("result")
           and (shards is None or r.get("shards") == shards)
           and not r["result"].get("error") and r.get("rc") == 0 and not r.get("note")
           and r["result"].get("delivered")]  # an empty run's p99 and CPU/pkt read 0
    if not res:
        return None
    out = {"n": len(res)}
    for m, get in METRICS.items():
        vals = []
        for r in res:
            try:
                v = get(r)
            except (KeyError, TypeError):
                v = None
            if v is not None:
                vals.append(float(v))
        out[m] = (statistics.median(vals), min(vals), max(vals)) if vals else None
    return out


def keys(exp):
    return sorted({r["key"] for r in runs if r["exp"] == exp})


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "kpps":
        v /= 1000
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    if kind == "pps":
        return f"{v:.0f}"
    if kind == "gbps":
        return f"{v:.3f}" if v < 10 else f"{v:.2f}"
    if kind == "us":
        return f"{v:.1f}" if v < 1000 else f"{v:.0f}"
    if kind in ("cpu", "per"):
        return f"{v:.3f}"
    if kind == "loss":
        return f"{v:.3f}"
    if kind == "pct":
        return f"{v:.0f}%"
    if kind == "x":
        return f"{v:.2f}×"
    return str(v)


def med(s, m):
    return s[m][0] if s and s.get(m) else None


def spread(s, m):
    if not s or not s.get(m) or s["n"] < 2 or not s[m][0]:
        return "–"
    mid, lo, hi = s[m]
    return f"{100 * (hi - lo) / mid:.0f}%"


def ratio(a, b, m):
    x, y = med(a, m), med(b, m)
    if x is None or y is None or y == 0:
        return None
    return x / y


def table(cols, rows):
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if i != 1 else "---" for i in range(len(cols))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


medians = []


def remember(server, exp, key, s, shards=None):
    if s:
        medians.append({"kind": "median", "server": server, "exp": exp, "key": key, "n": s["n"],
                        **({"shards": shards} if shards is not None else {}),
                        **{m: (s[m][0] if s[m] else None) for m in METRICS},
                        **{m + "_min": (s[m][1] if s[m] else None) for m in METRICS},
                        **{m + "_max": (s[m][2] if s[m] else None) for m in METRICS}})


def dat(name, server, lines):
    if lines:
        with open(f"{args.datadir}/{name}-{server}.dat", "w") as f:
            f.write("\n".join(" ".join(f"{v:.6g}" for v in l) for l in lines) + "\n")


md = []
title = "derpd" + (f" vs {other}" if other else "")
md.append(f"### Relay benchmark: {title} ({meta['date']})")
md.append("")
pin_s, pin_b = meta.get("server_cpus") or "", meta.get("bench_cpus") or ""
if pin_s or pin_b:
    where = (f"servers pinned to CPUs {pin_s or 'any'}, derp-bench to CPUs {pin_b or 'any'} (taskset); "
             "iperf3 unpinned.")
else:
    where = "on the same CPUs: the server, derp-bench and iperf3."
md.append(f"- Host: {meta['host']}, {meta['cpus']} CPUs ({meta['cpu_model']}). Everything runs on "
          f"loopback (127.0.0.1), {where}")
if meta.get("cpu_budget"):
    md.append(f"- CPU budget: every server ran in a cgroup capped at {meta['cpu_budget']} CPU per shard "
              "(CFS quota, 10 ms period), the rest of the machine left to derp-bench: the server is the "
              "bottleneck, as on a machine where the generator has cores of its own (an emulation).")
rep_txt = f"Median of {meta['repeat']} repeats" if meta["repeat"] > 1 else "One run per configuration (no repeats)"
if other:
    md.append(f"- {rep_txt}; each run measures {meta['duration']} after {meta['warmup']} of warm-up, on a "
              f"fresh server. derpd and {other} ran back to back for each configuration (order alternating "
              "between repeats), so machine noise hit both alike. Spread = (max − min) / median across repeats.")
else:
    md.append(f"- {rep_txt}; each run measures {meta['duration']} after {meta['warmup']} of warm-up, on a "
              "fresh server. derpd only: no other server command was given (--other or DERP_OTHER_CMD). "
              "Spread = (max − min) / median across repeats.")
md.append(f"- Run: `{meta['invocation']}` (load average at the end: {meta['loadavg']}; "
          f"{meta['elapsed_s']} s; {meta['failures']} failed runs).")
md.append(f"- derpd: `{meta['derpd_cmd']}`" + (f"; {other}: `{meta['other_cmd']}`" if other else ""))
md.append(f"- Load: `{meta['bench_common']}` plus each table's flags.")
md.append("- Units: kpps = thousands of data packets delivered per second; Gbit/s = payload only "
          "(no DERP framing, TCP/IP headers or acks); latency = one-way, sender to receiver through "
          "the server; CPU s/Mpkt = server CPU seconds (user + system) per million delivered data packets.")
if other:
    md.append(f"- Ratio rows are derpd ÷ {other}: above 1 is better for kpps and Gbit/s, "
              "below 1 is better for latency and CPU.")
md.append("")

main_sh = meta["main_shards"]
main_sh_txt = "0 (one per CPU)" if main_sh == 0 else str(main_sh)

def section(exp, datname, key_hdr, metrics, spread_m, datrow, speedup=False):
    """One table: a row per (key, server) and a derpd/other ratio row per key.
    metrics: (header, metric, unit, has_ratio) columns; speedup adds a column
    "x vs the first key" (the shards table); datrow(k, x) is the plot row."""
    cols = [key_hdr, "Server"] + [m[0] for m in metrics]
    if speedup:
        cols.append(f"× vs {keys(exp)[0]} shard(s)")
    cols.append(f"spread ({'kpps' if spread_m == 'pps' else spread_m})")
    rows = []
    data = {s: [] for s in servers}
    base = {s: med(stats(s, exp, keys(exp)[0]), "pps") for s in servers}
    for k in keys(exp):
        st = {}
        for s in servers:
            st[s] = x = stats(s, exp, k)
            remember(s, exp, k, x)
            row = [str(k), s] + [fmt(med(x, m), unit) for _, m, unit, _ in metrics]
            if speedup:
                row.append(fmt(med(x, "pps") / base[s] if med(x, "pps") and base[s] else None, "x"))
            rows.append(row + [spread(x, spread_m)])
            if x:
                data[s].append(datrow(k, x))
        if other:
            a, b = st["derpd"], st[other]
            rows.append([str(k), f"**derpd/{other}**"] +
                        [fmt(ratio(a, b, m), "x") if r else "" for _, m, _, r in metrics] +
                        [""] * (2 if speedup else 1))
    for s in servers:
        dat(datname, s, data[s])
    md.append(table(cols, rows))
    md.append("")


# 1. Throughput vs packet size.
if keys("size"):
    md.append("#### Throughput vs packet size")
    md.append("")
    md.append(f"Closed loop: `{meta['size_args']}`; derpd `--shards {main_sh_txt}`.")
    md.append("")
    section("size", "size", "Size (B)",
            [("kpps", "pps", "kpps", True), ("Gbit/s", "gbps", "gbps", True), ("p50 µs", "p50", "us", True),
             ("p99 µs", "p99", "us", True), ("CPU s/Mpkt", "cpu", "cpu", True)],
            "pps", lambda k, x: [k, *x["gbps"], *(v / 1000 for v in x["pps"])])

# 2. Latency vs offered load.
if keys("latency"):
    md.append("#### Latency vs offered load")
    md.append("")
    md.append(f"Open loop (no acks): `{meta['latency_args']}`; derpd `--shards {main_sh_txt}`. "
              "Loss = sent − received, counted after the drain.")
    md.append("")
    section("latency", "latency", "Offered pps",
            [("delivered pps", "pps", "pps", True), ("loss %", "loss", "loss", False), ("p50 µs", "p50", "us", True),
             ("p99 µs", "p99", "us", True), ("CPU s/Mpkt", "cpu", "cpu", True)],
            "p99", lambda k, x: [k, *x["p50"], *x["p99"]])

# 3. Scaling vs shards.
if keys("shards"):
    md.append("#### Scaling vs shards")
    md.append("")
    md.append(f"Closed loop: `{meta['shards_args']}`; derpd `--shards N`"
              + (f"; {other} gets `{{shards}}` only if its command has it" if other else "") + ".")
    md.append("")
    section("shards", "scaling", "Shards",
            [("kpps", "pps", "kpps", True), ("Gbit/s", "gbps", "gbps", True), ("p99 µs", "p99", "us", True),
             ("CPU s/Mpkt", "cpu", "cpu", True)],
            "pps", lambda k, x: [k, *(v / 1000 for v in x["pps"]), *x["gbps"]], speedup=True)

# 4. Many clients at modest rates.
if keys("many"):
    md.append("#### Many clients at modest rates")
    md.append("")
    md.append(f"Open loop (no acks): `{meta['many_args']}`; `--shards N` as in the Shards column"
              + (f" ({other} gets `{{shards}}` only if its command has it)" if other else "") + ". "
              "CPU µs/pkt = server CPU (user + system) per delivered packet (the same number as "
              "CPU s/Mpkt); ctx/pkt = the server's context switches (voluntary + involuntary, "
              "every thread) per delivered packet, both over derp-bench's measured window. "
              "sends/pkt = sendmsg operations completed (`derpd_send_calls`) and wake-ups/pkt = "
              "cross-shard MSG_RING wake-ups (`derpd_shard_wakeups_sent`), each per packet written "
              "to clients (`derp_packets_sent`), from /debug/varz read before and after the whole "
              "derp-bench run (set-up, warm-up, measured window and drain, so the handshakes' two "
              "sends per client are in); n/a for a server without those counters.")
    md.append("")
    mcols = [("delivered pps", "pps", "pps", True), ("loss %", "loss", "loss", False),
             ("p99 µs", "p99", "us", True), ("CPU µs/pkt", "cpu", "cpu", True),
             ("ctx/pkt", "ctx", "per", True), ("sends/pkt", "sends", "per", True),
             ("wake-ups/pkt", "wakeups", "per", True)]
    rows = []
    for k in keys("many"):
        for n in sorted({r["shards"] for r in runs if r["exp"] == "many" and r["key"] == k}):
            st = {}
            for s in servers:
                st[s] = x = stats(s, "many", k, n)
                remember(s, "many", k, x, shards=n)
                rows.append([str(k), s, str(n)] + [fmt(med(x, m), unit) for _, m, unit, _ in mcols]
                            + [spread(x, "p99")])
            if other:
                a, b = st["derpd"], st[other]
                rows.append([str(k), f"**derpd/{other}**", str(n)] +
                            [fmt(ratio(a, b, m), "x") if r else "" for _, m, _, r in mcols] + [""])
    md.append(table(["Offered pps", "Server", "Shards"] + [c[0] for c in mcols] + ["spread (p99)"], rows))
    md.append("")

# 5. Loopback ceiling.
md.append("#### Loopback ceiling")
md.append("")
if ceil:
    c = statistics.median(ceil) / 1e9
    half = c / 2
    with open(f"{args.datadir}/ceiling_half_gbps", "w") as f:
        f.write(f"{half:.6g}\n")
    rng = f" (range {min(ceil) / 1e9:.2f}–{max(ceil) / 1e9:.2f})" if len(ceil) > 1 else ""
    md.append(f"iperf3, one TCP stream, `{meta['iperf_cmd']}`: median **{c:.2f} Gbit/s**{rng} over "
              f"{len(ceil)} run(s). A relayed byte crosses loopback twice (sender → server → receiver), "
              f"so half of it, **{half:.2f} Gbit/s**, bounds a relay's payload throughput.")
    md.append("")
    shares = []
    for s in servers:
        x = stats(s, "size", 1200)
        if x and x["gbps"]:
            shares.append(f"- {s}, 1200 B, 4 clients (size table): **{x['gbps'][0]:.3f} Gbit/s = "
                          f"{100 * x['gbps'][0] / half:.0f}% of half the ceiling**")
        best = None
        for k in keys("shards"):
            y = stats(s, "shards", k)
            if y and y["gbps"] and (best is None or y["gbps"][0] > best[1]):
                best = (k, y["gbps"][0])
        if best:
            shares.append(f"- {s}, 1200 B, {meta.get('shard_clients', 8)} clients, {best[0]} shard(s) (best of the shards table): "
                          f"{best[1]:.3f} Gbit/s = {100 * best[1] / half:.0f}% of half the ceiling")
    md += shares or ["- no 1200 B relay result to compare (add 1200 to --sizes)"]
    md.append("")
    md.append("The shares count payload only; DERP framing (37 B per packet), TCP/IP headers and the "
              "24 B acks of the closed loop also cross loopback, and the server, derp-bench and iperf3 "
              "compete for the same CPUs.")
else:
    md.append("Not measured (iperf3 missing, failed, or left out with --only).")
md.append("")

with open(args.results, "a") as f:
    for m in medians:
        f.write(json.dumps(m) + "\n")
print("\n".join(md))
