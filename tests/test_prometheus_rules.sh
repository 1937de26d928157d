#!/usr/bin/env bash
# deploy/prometheus/derpd-alerts.yml, the alerting rules shipped for
# operators: `promtool check rules` finds them valid; `promtool test rules`
# (tests/prometheus/derpd-alerts.test.yml) has each alert fire on made-up
# series that show its condition and stay quiet on healthy ones; and every
# derpd metric the rules name is on a live derpd's /debug/varz (one started
# here on loopback with TLS under -certmode letsencrypt against an ACME server
# that does not answer, and a mesh peer that is not there, so that the
# certificate, ACME and mesh link series exist too).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
rules="$ROOT/deploy/prometheus/derpd-alerts.yml"
fail() { printf 'prometheus_rules: FAIL: %s\n' "$*" >&2; exit 1; }
# shellcheck source=tests/log_wait.sh
source "$ROOT/tests/log_wait.sh"
command -v promtool >/dev/null || fail "promtool not installed (scripts/setup --deps installs it)"
[[ -x "$derpd" ]] || fail "build derpd first"

promtool check rules "$rules" || fail "promtool check rules"
(cd "$ROOT/tests/prometheus" && promtool test rules derpd-alerts.test.yml) || fail "promtool test rules"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/prom-rules.XXXXXX")"
pid=
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tmp/mesh.key"
: >"$tmp/derpd.log"
"$derpd" -a 127.0.0.1:0 -certmode letsencrypt -hostname derp.example.net -certdir "$tmp" \
  -acme-directory https://127.0.0.1:1/directory -http-port=-1 -stun-port 0 \
  -mesh-psk-file "$tmp/mesh.key" -mesh-with 127.0.0.1:1 --metrics-listen 127.0.0.1:0 -c "$tmp/k" \
  >"$tmp/derpd.log" 2>&1 &
pid=$!
mport="$(log_value "$tmp/derpd.log" "$pid" 's/.*metrics listener on 127.0.0.1:\([0-9][0-9]*\) .*/\1/p')" ||
  fail "derpd did not start (its log is above)"
curl -s --max-time 5 "http://127.0.0.1:$mport/debug/varz" >"$tmp/varz" || fail "no /debug/varz"
names="$(grep -oE '\b(derp|derpd|process)_[a-z0-9_]+' "$rules" | sort -u)"
[[ "$(wc -l <<<"$names")" -ge 12 ]] || fail "too few metric names found in the rules: $names"
missing=0
for n in $names; do
  if ! grep -qE "^${n}[{ ]" "$tmp/varz"; then
    echo "prometheus_rules: the rules name $n, which /debug/varz does not serve" >&2
    missing=$((missing + 1))
  fi
done
((missing == 0)) || fail "$missing metric name(s) of the rules not served"
echo "prometheus_rules: ok ($(wc -l <<<"$names") metric names, all served)"
