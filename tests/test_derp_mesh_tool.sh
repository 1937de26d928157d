#!/usr/bin/env bash
# derp-mesh, the operator's tool: --help, every usage error (exit 2 with a
# message), connection failures (exit 1), and watch / close-peer against
# fake_mesh_server, a scripted mesh-capable server (it sends edge cases on
# cue; region_tool covers derpd itself): the exact text and JSON lines, --count, --timeout, the mesh key from
# the environment, a server that does not share the key, and a lost connection.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mesh="${DERP_MESH_BIN:-$ROOT/build/tools/derp-mesh}"
fake="${FAKE_MESH_SERVER_BIN:-$ROOT/build/tests/fake_mesh_server}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/derp-mesh-tool.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
unset TAILSCALE_DERPER_MESH_KEY SSL_CERT_FILE

fail() {
  printf 'derp_mesh_tool: FAIL: %s\n' "$*" >&2
  for f in out err; do
    if [[ -s "$tmp/$f" ]]; then printf -- '--- %s\n' "$f" >&2; cat "$tmp/$f" >&2; fi
  done
  exit 1
}

# run RC PATTERN ARGS...: derp-mesh ARGS must exit RC, with PATTERN (if not
# empty) in its stderr. Its output stays in $tmp/out and $tmp/err.
run() {
  local want=$1 pat=$2 rc=0
  shift 2
  "$mesh" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
  ((rc == want)) || fail "derp-mesh $* exited $rc, want $want"
  [[ -z "$pat" ]] || grep -qF -- "$pat" "$tmp/err" || fail "derp-mesh $*: no \"$pat\" on stderr"
}

hex64=0123456789abcdef0123456789abcdef0123456789ABCDEF0123456789abcdef
printf '  %s\n\n' "$hex64" >"$tmp/mesh.key"
printf '%s\n' "${hex64//0/f}" >"$tmp/other.key"
printf 'abc\n' >"$tmp/short.key"
printf '%s\n' "${hex64/a/g}" >"$tmp/nonhex.key"
printf '%0513d\n' 0 >"$tmp/long.key"
: >"$tmp/empty.key"
closed=http://127.0.0.1:1 # nothing listens on port 1
key_of() { printf 'nodekey:'; for _ in $(seq 32); do printf '%s' "$1"; done; }

# ---- help ----
for h in --help -h help; do
  run 0 "" $h
  grep -q '^Exit status:' "$tmp/out" || fail "$h: no exit statuses"
  grep -qF 'present nodekey:HEX ADDR flags=FLAGS' "$tmp/out" || fail "$h: no output format"
done
run 0 "" watch --help
grep -qF 'close-peer' "$tmp/out" || fail "watch --help"

# ---- usage errors: exit 2 and a message ----
run 2 "no command"
run 2 'unknown command "frobnicate"' frobnicate
run 2 "--server URL is required" watch --mesh-psk-file "$tmp/mesh.key"
run 2 "unknown option --bogus" watch --server "$closed" --bogus
run 2 "--server needs a value" watch --server
run 2 'unexpected argument "extra"' watch --server "$closed" --mesh-psk-file "$tmp/mesh.key" extra
run 2 "--count: want a whole number" watch --server "$closed" --count -1
run 2 "--count: want a whole number" watch --server "$closed" --count x
run 2 "--timeout: want a positive duration" watch --server "$closed" --timeout abc
run 2 "--timeout: want a positive duration" watch --server "$closed" --timeout 0
run 2 "--count, --idle and --json are for watch" close-peer --server "$closed" --json "$(key_of aa)"
run 2 "--count, --idle and --json are for watch" close-peer --server "$closed" --idle 5s "$(key_of aa)"
run 2 "--idle: want a positive duration" watch --server "$closed" --idle 0
run 2 "close-peer: no KEY given" close-peer --server "$closed" --mesh-psk-file "$tmp/mesh.key"
run 2 'close-peer: bad KEY "nodekey:zz"' close-peer --server "$closed" --mesh-psk-file "$tmp/mesh.key" nodekey:zz
run 2 "--ca-file and --insecure are for https://" watch --server "$closed" --insecure
for bad in 'ftp://h:1|want http://HOST:PORT' '127.0.0.1:3340|want http://HOST:PORT' \
           'http://|no host' 'http://:80|no host' 'http://h:0|port must be' 'http://h:65536|port must be' \
           'http://h:12x|port must be' 'http://h:|empty port' 'http://h:1/foo|the path must be /derp' \
           'http://h:1/derp?x=1|the path must be /derp' 'http://[::1|no ]' 'http://[::1]x|junk after ]' \
           'http://u@h:1|no user name'; do
  run 2 "--server ${bad%%|*}: ${bad#*|}" watch --server "${bad%%|*}" --mesh-psk-file "$tmp/mesh.key"
done
# Mesh key errors come before any connection is tried.
run 2 "no mesh key: give --mesh-psk-file FILE or set \$TAILSCALE_DERPER_MESH_KEY" watch --server "$closed"
run 2 "mesh key file $tmp/missing.key: No such file or directory" \
  watch --server "$closed" --mesh-psk-file "$tmp/missing.key"
run 2 "short.key: fewer than 64 hex digits" watch --server "$closed" --mesh-psk-file "$tmp/short.key"
run 2 "nonhex.key: not hex" watch --server "$closed" --mesh-psk-file "$tmp/nonhex.key"
run 2 "long.key: more than 512 hex digits" watch --server "$closed" --mesh-psk-file "$tmp/long.key"
run 2 "empty.key: empty" close-peer --server "$closed" --mesh-psk-file "$tmp/empty.key" "$(key_of aa)"
TAILSCALE_DERPER_MESH_KEY=xyz run 2 "mesh key in \$TAILSCALE_DERPER_MESH_KEY: not hex" watch --server "$closed"

# ---- connection failures: exit 1 ----
run 1 "http://127.0.0.1:1: connect 127.0.0.1:1:" watch --server "$closed" --mesh-psk-file "$tmp/mesh.key"

# ---- against the fake server ----
start_fake() { # NAME [close]: sets $port
  : >"$tmp/$1.log" # before the child opens it: awk below may run first
  "$fake" "$tmp/mesh.key" "${2:-}" >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  port=
  for _ in $(seq 200); do
    port=$(awk '/^port /{print $2; exit}' "$tmp/$1.log")
    [[ -n "$port" ]] && return
    sleep 0.05
  done
  fail "fake_mesh_server did not start: $(cat "$tmp/$1.log")"
}
start_fake fake
srv="http://127.0.0.1:$port"
k11=$(key_of 11) k22=$(key_of 22) k33=$(key_of 33) k44=$(key_of 44) k55=$(key_of 55) k66=$(key_of 66)
cat >"$tmp/want.txt" <<EOF
present $k11 1.2.3.4:5678 flags=regular
present $k22 [2001:db8::1]:443 flags=mesh,prober
present $k33 - flags=-
present $k44 10.0.0.1:1 flags=-
present $k55 10.0.0.1:65535 flags=none
present $k66 [2001:db8::1]:80 flags=notideal,bit4,bit7
gone $k11 reason=disconnected
gone $k22 reason=not_here
gone $k33 reason=7
EOF
cat >"$tmp/want.json" <<EOF
{"event":"present","key":"$k11","addr":"1.2.3.4:5678","ip":"1.2.3.4","port":5678,"flags":["regular"],"flags_raw":1}
{"event":"present","key":"$k22","addr":"[2001:db8::1]:443","ip":"2001:db8::1","port":443,"flags":["mesh","prober"],"flags_raw":6}
{"event":"present","key":"$k33","addr":null,"ip":null,"port":null,"flags":null,"flags_raw":null}
{"event":"present","key":"$k44","addr":"10.0.0.1:1","ip":"10.0.0.1","port":1,"flags":null,"flags_raw":null}
{"event":"present","key":"$k55","addr":"10.0.0.1:65535","ip":"10.0.0.1","port":65535,"flags":[],"flags_raw":0}
{"event":"present","key":"$k66","addr":"[2001:db8::1]:80","ip":"2001:db8::1","port":80,"flags":["notideal","bit4","bit7"],"flags_raw":152}
{"event":"gone","key":"$k11","reason":"disconnected","reason_code":0}
{"event":"gone","key":"$k22","reason":"not_here","reason_code":1}
{"event":"gone","key":"$k33","reason":"7","reason_code":7}
EOF

run 0 "derp-mesh: watching $srv (server nodekey:" watch --server "$srv" --mesh-psk-file "$tmp/mesh.key" --count 9
diff -u "$tmp/want.txt" "$tmp/out" >&2 || fail "watch: text lines differ"
grep -qF 'derp-mesh: server health: fake health\x0aderp-mesh: forged \x1b[31mred' "$tmp/err" ||
  fail "watch: Health not on stderr, escaped"
! grep -q '^derp-mesh: forged' "$tmp/err" || fail "watch: the server's Health text forged a line"
run 0 "" watch --server "$srv/derp" --mesh-psk-file "$tmp/mesh.key" --count 9 --json
diff -u "$tmp/want.json" "$tmp/out" >&2 || fail "watch --json: lines differ"
run 0 "" watch --server "$srv" --mesh-psk-file "$tmp/mesh.key" --count 3
head -3 "$tmp/want.txt" | diff -u - "$tmp/out" >&2 || fail "watch --count 3"
TAILSCALE_DERPER_MESH_KEY="$hex64" run 0 "" watch --server "$srv" --count 1
head -1 "$tmp/want.txt" | diff -u - "$tmp/out" >&2 || fail "watch, key from the environment"
t0=$(date +%s%N)
run 0 "" watch --server "$srv" --mesh-psk-file "$tmp/mesh.key" --timeout 1s
ms=$((($(date +%s%N) - t0) / 1000000))
((ms >= 1000 && ms < 8000)) || fail "watch --timeout 1s took $ms ms"
diff -u "$tmp/want.txt" "$tmp/out" >&2 || fail "watch --timeout: text lines differ"
grep -q '^pong ok$' "$tmp/fake.log" || fail "the server's Ping was not answered"
# A server silent for --idle is lost (a host gone without a FIN or RST):
# the fake server says nothing after its script.
t0=$(date +%s%N)
run 1 "connection lost while watching: nothing from the server for 1000 ms (--idle)" \
  watch --server "$srv" --mesh-psk-file "$tmp/mesh.key" --idle 1s
ms=$((($(date +%s%N) - t0) / 1000000))
((ms >= 1000 && ms < 8000)) || fail "watch --idle 1s took $ms ms"
diff -u "$tmp/want.txt" "$tmp/out" >&2 || fail "watch --idle: text lines differ"

run 0 "" close-peer --server "$srv" --mesh-psk-file "$tmp/mesh.key" "$k44" "$(key_of ab | cut -d: -f2)"
[[ ! -s "$tmp/out" ]] || fail "close-peer printed on stdout"
grep -qxF "closepeer $k44" "$tmp/fake.log" || fail "ClosePeer $k44 not seen by the server"
grep -qxF "closepeer $(key_of ab)" "$tmp/fake.log" || fail "ClosePeer (bare hex key) not seen by the server"

# A server that does not share the key closes the connection at WatchConns /
# ClosePeer: exit 1, and the message says what that may mean.
run 1 "connection lost while watching: connection closed by the server (a server closes the connection of a client whose mesh key" \
  watch --server "$srv" --mesh-psk-file "$tmp/other.key" --count 1
grep -qx 'rejected WatchConns' "$tmp/fake.log" || fail "the fake server did not reject WatchConns"
run 1 "connection lost before the server confirmed ClosePeer" \
  close-peer --server "$srv" --mesh-psk-file "$tmp/other.key" "$k11"
grep -qx 'rejected ClosePeer' "$tmp/fake.log" || fail "the fake server did not reject ClosePeer"

# TLS to a plain server fails (exit 1) within the connect bound.
run 1 "tls: handshake" watch --server "https://127.0.0.1:$port" --insecure --mesh-psk-file "$tmp/mesh.key" \
  --timeout 1s

# A connection lost after events: exit 1 once the lines are out, no key hint.
start_fake closing close
run 1 "connection lost while watching: connection closed by the server" \
  watch --server "http://127.0.0.1:$port" --mesh-psk-file "$tmp/mesh.key"
diff -u "$tmp/want.txt" "$tmp/out" >&2 || fail "watch until the connection is lost: lines differ"
! grep -qF "mesh key" "$tmp/err" || fail "a loss after events blamed the mesh key"

# The connect bound holds whatever the name gives (libderp's tcp_connect):
# three addresses that all drop SYNs (a listener with a full queue on each)
# and --timeout 3s: exit 1 in about 3 s, not the kernel's minutes of SYN
# retries for the last address (root: /etc/hosts in a mount namespace).
python3 - "$tmp/synsink.port" <<'PY' &
import socket, sys, time
port, held = 0, []
for a in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
    s = socket.socket()
    s.bind((a, port))
    s.listen(0)
    port = s.getsockname()[1]
    held.append(s)
    for _ in range(4):  # fill the accept queue: further SYNs are dropped
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect((a, port))
        except BlockingIOError:
            pass
        held.append(c)
with open(sys.argv[1], "w") as f:
    f.write(str(port))
time.sleep(30)
PY
pids+=($!)
for _ in $(seq 100); do [[ -s "$tmp/synsink.port" ]] && break; sleep 0.05; done
[[ -s "$tmp/synsink.port" ]] || fail "the SYN sink did not start"
printf '127.0.0.1 localhost\n127.0.0.1 multi.test\n127.0.0.2 multi.test\n127.0.0.3 multi.test\n' >"$tmp/hosts"
t0=$(date +%s%N)
rc=0
unshare -m sh -c 'mount --bind "$1" /etc/hosts && shift && exec timeout 30 "$@"' sh "$tmp/hosts" \
  "$mesh" watch --server "http://multi.test:$(cat "$tmp/synsink.port")" --mesh-psk-file "$tmp/mesh.key" \
  --timeout 3s >"$tmp/out" 2>"$tmp/err" </dev/null || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
((rc == 1)) || fail "connect to three SYN-dropping addresses: exit $rc after $ms ms, want 1"
((ms < 8000)) || fail "connect to three SYN-dropping addresses took $ms ms (--timeout 3s)"
grep -qF "connect multi.test:" "$tmp/err" || fail "no connect error: $(cat "$tmp/err")"

echo "derp_mesh_tool: ok"
