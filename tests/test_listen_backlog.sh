#!/usr/bin/env bash
# derpd's listen backlog is the kernel's net.core.somaxconn, as derper's (Go's
# net.Listen reads it), not a number of derpd's: in a network namespace of its
# own (somaxconn is per namespace) set to 1234, then to 70000, every listening
# socket (one per shard, and the metrics listener) must show that backlog in
# `ss -ltn` (Send-Q of a LISTEN socket). Needs root and `ip netns` (CI runs as
# root): without them it FAILS, never skips.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
fail() { printf 'listen_backlog: FAIL: %s\n' "$*" >&2; exit 1; }
say() { printf 'listen_backlog: %s\n' "$*"; }

[[ "$(id -u)" == 0 ]] || fail "needs root (network namespaces); CI runs as root"
command -v ip >/dev/null && command -v ss >/dev/null || fail "no ip or ss (iproute2)"
[[ -x "$derpd" ]] || fail "build derpd first"

ns="derpd-bl-$$"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/listen-backlog.XXXXXX")"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$ns" || fail "ip netns add failed (no network namespaces here?)"
inns() { ip netns exec "$ns" "$@"; }
inns ip link set lo up

# check SOMAXCONN: start derpd (2 shards, a metrics listener; not through
# inns, so that $! is derpd), read the backlog of its listening sockets (one
# per shard on each port), stop it.
check() {
  local want="$1" got
  inns sysctl -qw net.core.somaxconn="$want"
  ip netns exec "$ns" "$derpd" -dev -a 127.0.0.1:3390 --shards 2 -stun=false --metrics-listen 127.0.0.1:9464 \
    -c "$tmp/key" >"$tmp/log" 2>&1 &
  pid=$!
  # Ready when each shard's :3390 socket and the metrics listener are up.
  local ready=0 ls
  for _ in $(seq 100); do
    ls="$(inns ss -Hltn)"
    (($(grep -c ':3390 ' <<<"$ls" || true) == 2 && $(grep -c ':9464 ' <<<"$ls" || true) >= 1)) &&
      { ready=1; break; }
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/log" >&2; fail "derpd exited"; }
    sleep 0.05
  done
  ((ready)) || { inns ss -ltn >&2; fail "derpd's listeners did not all appear in 5 s"; }
  got="$(inns ss -Hltn | awk '$4 ~ /:(3390|9464)$/ {print $3}' | sort -u | tr '\n' ' ')"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  [[ "$got" == "$want " ]] || { inns ss -ltn >&2; fail "somaxconn $want: listeners' backlog '$got'"; }
  say "ok: somaxconn $want: every listener's backlog is $want"
}
check 1234
check 70000
