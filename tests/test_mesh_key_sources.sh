#!/usr/bin/env bash
# Where derpd takes the region's mesh key from, as derper does: the default
# file ($HOME/keys/derp-mesh.key; /home/derp/keys/derp-mesh.key first, which
# must not exist here), an explicit -mesh-psk-file "" for none, a malformed
# default file as a start-up error, and TAILSCALE_DERPER_MESH_KEY: the key
# with -dev (over any file, as newer derper), ignored with a warning without;
# a key of other than 64 digits served, with a warning that derper v1.86+
# takes exactly 64.
# Each case starts derpd on a free loopback port and asks it with derp-mesh
# (a WatchConns with the key is served only when the key is derpd's).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/log_wait.sh
source "$ROOT/tests/log_wait.sh"
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
mesh="${DERP_MESH_BIN:-$ROOT/build/tools/derp-mesh}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/mesh-key-sources.XXXXXX")"
pid=
stop() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=
}
trap 'stop; rm -rf "$tmp"' EXIT
unset TAILSCALE_DERPER_MESH_KEY

fail() {
  printf 'mesh_key_sources: FAIL: %s\n' "$*" >&2
  [[ -s "$tmp/log" ]] && { printf -- '--- derpd log\n' >&2; cat "$tmp/log" >&2; }
  exit 1
}

[[ ! -e /home/derp/keys/derp-mesh.key ]] ||
  fail "/home/derp/keys/derp-mesh.key exists on this machine: it would be every case's key"

hex() { printf '%064d' 0 | tr 0 "$1"; }
mkdir -p "$tmp/home/keys"
printf '  %s\n' "$(hex a)" >"$tmp/home/keys/derp-mesh.key"
printf '%s\n' "$(hex a)" >"$tmp/file.key"
printf '%s\n' "$(hex b)" >"$tmp/env.key"
"$derpd" -dev -c "$tmp/server.key" -a 127.0.0.1:0 -stun=false >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do [[ -s "$tmp/server.key" ]] && break; sleep 0.1; done
stop
[[ -s "$tmp/server.key" ]] || fail "no server key file made"

# start ENV... -- ARGS...: derpd with HOME=$tmp/home; sets $port, or fails.
start() {
  local envs=()
  while [[ "$1" != -- ]]; do envs+=("$1"); shift; done
  shift
  env HOME="$tmp/home" "${envs[@]}" "$derpd" -a 127.0.0.1:0 -c "$tmp/server.key" -stun=false -http-port -1 \
    "$@" >"$tmp/log" 2>&1 &
  pid=$!
  port="$(log_value "$tmp/log" "$pid" 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p')" ||
    fail "derpd $* did not listen (its log is above)"
}

# served KEYFILE: a WatchConns with that key is served (exit 0), or not (1).
served() {
  local rc=0
  "$mesh" watch --server "http://127.0.0.1:$port" --mesh-psk-file "$1" --count 1 --timeout 3s \
    >/dev/null 2>&1 || rc=$?
  return $rc
}

# 1. The default file in $HOME.
start -- 
grep -qF "mesh: key from $tmp/home/keys/derp-mesh.key" "$tmp/log" || fail "default file: no 'key from' line"
grep -qF "take exactly 64" "$tmp/log" && fail "a 64-digit key: warned about its length"
served "$tmp/file.key" || fail "default file: its key is not served"
stop

# 2. -mesh-psk-file "": no key, the default file notwithstanding.
start -- -mesh-psk-file ""
grep -q "mesh: key from" "$tmp/log" && fail "-mesh-psk-file \"\": a key was read"
served "$tmp/file.key" && fail "-mesh-psk-file \"\": the default file's key is served"
stop

# 3. The variable without -dev: ignored (said), the file's key stands.
start "TAILSCALE_DERPER_MESH_KEY=$(hex b)" --
grep -qF "TAILSCALE_DERPER_MESH_KEY is read only with -dev" "$tmp/log" || fail "no warning for the variable"
served "$tmp/env.key" && fail "the variable's key is served without -dev"
served "$tmp/file.key" || fail "the file's key is not served beside an ignored variable"
stop

# 4. The variable with -dev: the key, over the default file.
start "TAILSCALE_DERPER_MESH_KEY=$(hex b)" -- -dev
grep -qF "mesh: key from TAILSCALE_DERPER_MESH_KEY" "$tmp/log" || fail "-dev: the variable was not read"
served "$tmp/env.key" || fail "-dev: the variable's key is not served"
served "$tmp/file.key" && fail "-dev: the file's key is served over the variable"
stop

# 5. 128 digits: served (derper v1.78's rule), with a warning (v1.86's).
printf '%s%s\n' "$(hex c)" "$(hex c)" >"$tmp/long.key"
start -- -mesh-psk-file "$tmp/long.key"
grep -qF "mesh: the key from $tmp/long.key is 128 hex digits: derper v1.86 and later take exactly 64" "$tmp/log" ||
  fail "a 128-digit key: no warning about its length"
served "$tmp/long.key" || fail "a 128-digit key is not served"
stop

# 6. A malformed default file: a start-up error naming it.
printf 'xyz\n' >"$tmp/home/keys/derp-mesh.key"
rc=0
env HOME="$tmp/home" timeout 10 "$derpd" -a 127.0.0.1:0 -c "$tmp/server.key" -stun=false -http-port -1 \
  >"$tmp/log" 2>&1 || rc=$?
((rc != 0 && rc != 124)) || fail "a malformed default key file: derpd exited $rc"
grep -qF "$tmp/home/keys/derp-mesh.key" "$tmp/log" || fail "the error does not name the file"
echo "mesh_key_sources: ok"
