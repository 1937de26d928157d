#!/usr/bin/env bash
# Smoke test for bench/device: pack this build's derpd and derp-bench with
# their libraries and loader, prove the wrappers run with an empty
# environment, and run the many-client step through them with --quick
# (seconds; a check of the plumbing, no timing thresholds). Needs python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/device-smoke.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() { printf 'device_smoke: FAIL: %s\n' "$*" >&2; exit 1; }

"$ROOT/bench/device" pack --dest "$tmp/pack" 2>"$tmp/pack.log" || { cat "$tmp/pack.log" >&2; fail "pack"; }
[[ -x "$tmp/pack/lib/ld-linux-x86-64.so.2" ]] || fail "no loader in the pack"
for b in derpd derp-bench; do
  env -i "$tmp/pack/bin/$b" --help >"$tmp/$b.help" 2>&1 || true
  grep -q -i 'usage' "$tmp/$b.help" || { cat "$tmp/$b.help" >&2; fail "$b does not run through its wrapper"; }
done
# The wrapped derpd is the process bench/compare started: CPU and context
# switches are read from that PID.
rc=0
"$ROOT/bench/device" run --pack "$tmp/pack" --out "$tmp/out" --quick --only env,many 2>"$tmp/run.log" || rc=$?
((rc == 0)) || { cat "$tmp/run.log" "$tmp/out"/*.log >&2 2>/dev/null; fail "run exited $rc"; }
grep -q '^nproc ' "$tmp/out/env.txt" || fail "no env.txt"
num='[0-9]+(\.[0-9]+)?'
grep -Eq "^\| $num \| derpd \| 1 \| $num \| $num \| $num \| $num \| $num \|" "$tmp/out/many.out" || { cat "$tmp/out/many.out" >&2; fail "no many row"; }
echo "device_smoke: ok"
