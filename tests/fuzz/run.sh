#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded count and time, growing a corpus in
# the build directory (nothing is written into the source tree):
#   run.sh TARGET_BINARY RUNS SECONDS [--seeds=DIR] [libFuzzer flags...]
# --seeds: a directory of starting inputs, read but never written.
# Exit 0 = no crash, no leak, no sanitizer report, no broken invariant.
# Anything else exits 1 and fails the test (never libFuzzer's default 77,
# which meson reads as "skipped"); libFuzzer's crash-* file, in the build
# directory, reproduces it:
#   TARGET_BINARY crash-...
set -euo pipefail
bin="$1" runs="$2" secs="$3"; shift 3
seeds=() flags=()
for a in "$@"; do
  case "$a" in
    --seeds=*) seeds+=("${a#--seeds=}") ;;
    *) flags+=("$a") ;;
  esac
done
# UBSan only reports and carries on unless told to halt; a report must fail
# the run like an ASan one (halt_on_error last, so it wins over the caller's).
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:halt_on_error=1"
corpus="$(dirname "$bin")/corpus-$(basename "$bin")"
mkdir -p "$corpus"
cd "$(dirname "$bin")"
exec "$bin" -runs="$runs" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -verbosity=0 \
  -error_exitcode=1 -timeout_exitcode=1 \
  -print_final_stats=1 ${flags[@]+"${flags[@]}"} "$corpus" ${seeds[@]+"${seeds[@]}"}
