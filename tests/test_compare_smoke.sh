#!/usr/bin/env bash
# Smoke test for bench/compare: one short run of every experiment (many: 200
# clients at 10000 pps on 2 shards, not 1000 at 50000), derpd against
# derpd over TLS as the "other" server (--other, --other-bench-args), results and
# plots in a temporary directory, servers and derp-bench pinned with taskset,
# servers in a CPU-budget cgroup (needs root, as scripts/test has). Checks that the Markdown report has a number
# for both servers and their ratio in each table, and that the plots and JSON
# lines were written; no timing thresholds. Needs python3, iperf3 and gnuplot (scripts/setup installs them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/compare-smoke.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() { printf 'compare_smoke: FAIL: %s\n' "$*" >&2; exit 1; }

for tool in python3 iperf3 gnuplot; do
  command -v "$tool" >/dev/null || fail "$tool not installed (run scripts/setup --deps)"
done

# meson passes the build directory's binaries; by hand, build/ is used.
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
bench="${DERP_BENCH_BIN:-$ROOT/build/bench/derp-bench}"

rc=0
env -u DERP_OTHER_CMD "$ROOT/bench/compare" --quick --repeat 1 --duration 1s \
  --derpd "$derpd -dev -a 127.0.0.1:{port} --shards {shards} -stun=false" --bench "$bench" \
  --sizes 1200 --shards 1 --loads 20000 --shard-clients 6 \
  --only size,latency,shards,ceiling,many --many-clients 200 --many-loads 10000 --many-shards 2 \
  --server-cpus 0 --bench-cpus "$(($(nproc) - 1))" --server-cpu-budget 1 \
  --other "$derpd -c $tmp/key.json -a 127.0.0.1:{port} --shards {shards} -certmode selfsigned -hostname localhost -certdir $tmp/certs -http-port -1 -stun=false" \
  --other-name derpd-tls --other-bench-args '--tls --sni localhost --insecure' \
  --plots "$tmp/img" --results "$tmp/results/r.jsonl" >"$tmp/report.md" 2>"$tmp/stderr.txt" || rc=$?
if ((rc != 0)); then
  cat "$tmp/stderr.txt" >&2
  fail "bench/compare exited $rc"
fi
cat "$tmp/report.md"

num='[0-9]+(\.[0-9]+)?'
grep -Eq "^\| 1200 \| derpd \| $num \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric throughput row for 1200 B"
grep -Eq "^\| 20000 \| derpd \| $num \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric latency row for 20000 pps"
grep -Eq "^\| 1 \| derpd \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric scaling row for 1 shard"
# many: every column numeric for derpd (-dev: /debug/varz has the send and
# wake-up counters); the TLS one's context switches too.
grep -Eq "^\| 10000 \| derpd \| 2 \| $num \| $num \| $num \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric many-clients row for derpd"
grep -Eq "^\| 10000 \| derpd-tls \| 2 \| $num \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric many-clients row for derpd-tls"
grep -Eq "^\| 10000 \| \*\*derpd/derpd-tls\*\* \| 2 \| $num× \|  \| $num× \| $num× \| $num× \|" "$tmp/report.md" ||
  fail "no derpd/derpd-tls ratio row for many clients"
grep -Eq "^\| 1200 \| derpd-tls \| $num \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric throughput row for derpd-tls (the other server, over TLS)"
grep -Eq "^\| 1200 \| \*\*derpd/derpd-tls\*\* \| $num× \|" "$tmp/report.md" ||
  fail "no derpd/derpd-tls ratio row"
grep -Eq "median \*\*$num Gbit/s\*\*" "$tmp/report.md" || fail "no loopback ceiling"
grep -Eq "derpd, 1200 B, 4 clients .*= $num% of half the ceiling" "$tmp/report.md" ||
  fail "no ceiling share"
grep -q 'bench/compare --quick' "$tmp/report.md" || fail "the command is not in the report"
grep -q 'servers pinned to CPUs 0, derp-bench to CPUs' "$tmp/report.md" || fail "the pinning is not in the report"
grep -q 'CPU budget: every server ran in a cgroup capped at 1 CPU per shard' "$tmp/report.md" ||
  fail "the CPU budget is not in the report"
grep -q 'servers run in cgroup v[12] ' "$tmp/stderr.txt" || fail "no budget cgroup made"
! grep -q 'is not in .*derp-compare' "$tmp/stderr.txt" || fail "a server escaped the budget cgroup"
! ls -d /sys/fs/cgroup/*/derp-compare-* /sys/fs/cgroup/derp-compare-* 2>/dev/null | grep -q . ||
  fail "the budget cgroup was left behind"
for p in throughput-vs-size latency-vs-load scaling-vs-shards; do
  [[ -s "$tmp/img/$p.png" ]] || fail "no $p.png"
  [[ "$(head -c 4 "$tmp/img/$p.png" | od -An -c | tr -d ' ')" == '211PNG' ]] || fail "$p.png is not a PNG"
done
python3 - "$tmp/results/r.jsonl" <<'PY' || fail "bad JSON lines"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [l for l in lines if l["kind"] == "run"]
assert len(runs) == 8 and all(r["rc"] == 0 and r["result"] for r in runs), runs
assert sum(l["kind"] == "ceiling" for l in lines) == 1
assert sum(l["kind"] == "median" for l in lines) == 8
many = [r for r in runs if r["exp"] == "many"]
assert len(many) == 2 and all("--clients 200 " in r["bench_cmd"] and "--shards 2 " in r["server_cmd"]
                              for r in many), many
for r in many:
    res = r["result"]
    assert res["server_ctx_switches"] > 0 and res["server_ctx_per_pkt"] > 0, res
    assert 0 < res["delivered"] <= res["sent"], res
d = [r for r in many if r["server"] == "derpd"][0]
v0, v1 = d["varz_before"], d["varz_after"]
pkts = v1["packets_sent"] - v0["packets_sent"]
assert pkts >= d["result"]["delivered"], (v0, v1)
sends = (v1["send_calls"] - v0["send_calls"]) / pkts
assert 0 < sends < 10, (v0, v1)
assert v1["wakeups"] >= v0["wakeups"], (v0, v1)
med = [l for l in lines if l["kind"] == "median" and l["exp"] == "many" and l["server"] == "derpd"]
assert len(med) == 1 and med[0]["shards"] == 2 and med[0]["ctx"] > 0 and med[0]["sends"] > 0, med
assert all("--tls" in r["bench_cmd"] for r in runs if r["server"] == "derpd-tls")
assert all(r["bench_cmd"].startswith("taskset -c ") for r in runs), "derp-bench not pinned"
assert all(r["server_cmd"].startswith("taskset -c 0 ") for r in runs), "server not pinned"
assert all("--clients 6 " in r["bench_cmd"] for r in runs if r["exp"] == "shards")
assert not any("--tls" in r["bench_cmd"] for r in runs if r["server"] == "derpd")
PY
echo "compare_smoke: ok"
