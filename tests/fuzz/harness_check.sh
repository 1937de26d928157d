#!/usr/bin/env bash
# The fuzz phase's own test: run.sh on fuzz_canary (undefined behaviour on
# its seed) must exit 1 with UBSan's report, or a sanitizer report in a real
# target could pass unseen.
#   harness_check.sh RUN_SH CANARY_BINARY SEEDS_DIR
set -uo pipefail
run="$1" bin="$2" seeds="$3"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
bash "$run" "$bin" 20 30 --seeds="$seeds" >"$out" 2>&1
rc=$?
if ((rc != 1)); then
  echo "FAIL: run.sh exited $rc on the canary, want 1"; tail -n 20 "$out"; exit 1
fi
if ! grep -q 'runtime error: signed integer overflow' "$out"; then
  echo "FAIL: run.sh failed, but not on UBSan's report"; tail -n 20 "$out"; exit 1
fi
echo "ok: run.sh fails on a UBSan report"
