#!/usr/bin/env bash
# Smoke test for bench/region: one short repeat (one node, then two meshed
# nodes), results in a temporary directory. Checks that the Markdown report
# has a CPU figure for both set-ups, their ratio, and both nodes' presence
# frames; no timing thresholds. Needs python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/region-smoke.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() { printf 'region_smoke: FAIL: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null || fail "python3 not installed"
rc=0
"$ROOT/bench/region" --repeat 1 --duration 1s --warmup 300ms --clients 4 \
  --derpd "${DERPD_BIN:-$ROOT/build/src/derpd}" --bench "${DERP_BENCH_BIN:-$ROOT/build/bench/derp-bench}" \
  --results "$tmp/r.jsonl" >"$tmp/report.md" 2>"$tmp/stderr.txt" || rc=$?
cat "$tmp/report.md"
if ((rc != 0)); then
  cat "$tmp/stderr.txt" >&2
  fail "bench/region exited $rc"
fi

num='[0-9]+(\.[0-9]+)?'
grep -Eq "^\| one node: relayed within it \| 1 \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric row for one node"
grep -Eq "^\| two nodes: every packet forwarded \(CPU of both\) \| 1 \| $num \| $num \| $num \| $num \|" "$tmp/report.md" ||
  fail "no numeric row for two nodes"
grep -Eq "^Forwarded / local, server CPU per packet: \*\*$num(e[-+]?[0-9]+)?x\*\*" "$tmp/report.md" || fail "no ratio"
grep -Eq "^Context switches per delivered packet \(all nodes' threads, medians\): $num forwarded against $num local" \
  "$tmp/report.md" || fail "no context-switch line"
for node in 1 2; do
  grep -Eq "^\| 1 \| $node \| $num \| $num \| $num \| 2 \(4\) \| [1-9][0-9]* \|" "$tmp/report.md" ||
    fail "no presence row for node $node (or it forwarded nothing)"
done
python3 - "$tmp/r.jsonl" <<'PY' || fail "bad JSON lines"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert [r["setup"] for r in runs] == ["local", "forwarded"], runs
for r in runs:
    assert r["rc"] == 0 and not r["note"] and r["result"]["lost"] == 0, r
assert r["result"]["servers"] == 2 and "--servers" in r["bench_cmd"], r
PY
echo "region_smoke: ok"
