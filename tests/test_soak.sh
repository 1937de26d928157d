#!/usr/bin/env bash
# bench/soak, 25 s: two nodes (plain and TLS, meshed, 2 shards each) under
# the whole mixed load at its default modest rates, which must pass every
# judgement, and write its JSON lines and plot; then a 4 s run with an
# impossible latency bound, which must fail naming that judgement (the
# judging itself is tested, not only the happy path). The first run's bound
# on the whole-run p99 is looser than bench/soak's default (2 s, not 100 ms):
# this runs on a shared 2-CPU machine beside other builds, where a process is
# now and then not scheduled for a second, and in 25 s one such stall is over
# 1% of the packets (the per-interval bound, which subtracts the generator's
# own stalls, stays at its default). Its RSS tolerance is 8 MiB, not 2: a
# burst after such a stall fills a shard's packet pools towards their caps
# (3.5 MiB a shard) and grows its receive buffer ring, bounded caches that
# a 25 s run cannot tell from a leak. The 10-minute figures in
# docs/benchmarks.md use the defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/soak-test.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() { printf 'test_soak: FAIL: %s\n' "$*" >&2; exit 1; }

# meson sets MALLOC_PERTURB_, which makes glibc write every block it hands
# out and takes back: the servers' RSS would count freed memory (and grow
# with the heap's spread), which is not what "RSS flat" is about.
unset MALLOC_PERTURB_
# A sanitized derpd (DERPD_SANITIZE, from meson) holds freed memory in its
# quarantine and shadow until they fill: its RSS is not judged flat here.
rss_tol=8
[[ "${DERPD_SANITIZE:-none}" == none ]] || rss_tol=256
rc=0
"$ROOT/bench/soak" --duration 25s --sample-every 2s --derpd-args '--shards 2' \
  --max-p99 2s --rss-tolerance-mib "$rss_tol" --out "$tmp/run" 2>"$tmp/stderr.txt" || rc=$?
cat "$tmp/stderr.txt" >&2
((rc == 0)) || fail "bench/soak exited $rc"
for j in alive 'rss flat' 'fds flat' clients misbehaving loss latency; do
  grep -q "^soak: PASS $j:" "$tmp/stderr.txt" || fail "no PASS line for $j"
done
grep -q '^soak \[ *[0-9]*s/27s\] | n0-plain rss .* | n1-tls rss ' "$tmp/stderr.txt" || fail "no progress lines"
command -v gnuplot >/dev/null && { [[ "$(head -c 4 "$tmp/run/soak.png" | od -An -c | tr -d ' ')" == '211PNG' ]] ||
  fail "soak.png is not a PNG"; }
python3 - "$tmp/run/soak.jsonl" <<'PY' || fail "bad JSON lines"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert recs[0]["kind"] == "meta" and recs[-1]["kind"] == "verdict" and recs[-1]["ok"], recs[-1]
samples = [r for r in recs if r["kind"] == "sample"]
assert len(samples) >= 10, len(samples)
last = samples[-2]
assert set(last["nodes"]) == {"n0-plain", "n1-tls"}, last["nodes"].keys()
for name, n in last["nodes"].items():
    assert n["rss_kb"] > 0 and n["fds"] > 0 and n["conns"] > 0, (name, n)
    assert n["watchers"] == 1, (name, "not meshed", n)
assert len(last["flows"]) == 4 and all(f and f["p99_us"] for f in last["flows"].values()), last["flows"]
final = recs[-1]
for c in final["chaos"].values():
    assert c["churn_ok"] > 0 and c["garbage_sent"] > 0 and c["slow_cut"] > 0 and c["unknown_sent"] > 0, c
for n in final["final_nodes"].values():
    for reason in ("queue_head", "unknown_dest"):
        assert n["drops"].get(reason, 0) > 0, (reason, n["drops"])
    for reason in ("write_timeout", "http_bad" if "tls_error" not in n["closed"] else "tls_error",
                   "bad_frame_length", "not_mesh", "websocket_protocol"):
        assert n["closed"].get(reason, 0) > 0, (reason, n["closed"])
PY

rc=0
"$ROOT/bench/soak" --duration 4s --sample-every 1s --nodes 1 --no-chaos --ws-clients 0 \
  --max-p99 1us --no-plot --out "$tmp/fail" 2>"$tmp/stderr2.txt" || rc=$?
((rc == 1)) || { cat "$tmp/stderr2.txt" >&2; fail "an impossible latency bound: exit $rc, want 1"; }
grep -q '^soak: FAIL latency: .*whole-run p99' "$tmp/stderr2.txt" || fail "no FAIL latency line"
grep -q '^soak: FAILED: latency;' "$tmp/stderr2.txt" || fail "the summary does not name latency"
echo "test_soak: ok"
