#!/usr/bin/env bash
# A -mesh-with name the resolver never answers (it would wait 30 s): the
# link's dial gives up on the lookup within its 5 s dial deadline, says so
# once, and retries; a SIGTERM while the dialler sits in a lookup stops derpd
# at once (the stop cuts the dial short), exit 0, no dialler left behind;
# retries do not pile up lookup threads (2 per link at most); a lookup
# that fails logs the resolver's reason; and a certificate the link cannot
# trust logs why (no CA for it: self-signed) and where links take roots from
# (its entry listed twice: dialled once, the repeat named in a warning); an
# http:// entry for that TLS node shows the node's answer.
# Needs root: a mount namespace of its own binds a resolv.conf that names a
# silent UDP socket on port 53 of a random 127.x.y.z (a fixed address is
# taken when two builds run this test at once, as CI's phases may). ASan and
# UBSan builds run this too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/log_wait.sh
source "$ROOT/tests/log_wait.sh"
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/derpd-dial-hang.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  printf 'mesh_dial_hang: FAIL: %s\n' "$*" >&2
  [[ -s "$tmp/derpd.log" ]] && { echo '--- derpd.log' >&2; tail -30 "$tmp/derpd.log" >&2; }
  exit 1
}

(( EUID == 0 )) || fail "needs root (a mount namespace for its resolv.conf)"
printf '%s\n' 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef >"$tmp/mesh.key"
# The silent resolver: says where it is bound (written to bound.tmp, then
# renamed: the shell never reads half a line), and when the first query came.
python3 -c '
import errno, os, random, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(50):
    addr = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(0, 255), random.randint(1, 254))
    try:
        s.bind((addr, 53))
        break
    except OSError as e:
        if e.errno != errno.EADDRINUSE: raise
else:
    sys.exit("no free 127.x.y.z:53")
with open(sys.argv[1] + "/bound.tmp", "w") as f: f.write(addr + "\n")
os.rename(sys.argv[1] + "/bound.tmp", sys.argv[1] + "/bound")
s.recv(512)
open(sys.argv[1] + "/asked", "w").close()
time.sleep(120)' "$tmp" &
pids+=($!)
for _ in $(seq 100); do [[ -e "$tmp/bound" ]] && break; sleep 0.1; done
[[ -e "$tmp/bound" ]] || fail "the silent resolver did not start"
printf 'nameserver %s\noptions timeout:30 attempts:1\n' "$(cat "$tmp/bound")" >"$tmp/resolv.conf"

# derpd in a mount namespace whose /etc/resolv.conf is CONF, meshing with
# the -mesh-with list MESH, logging to LOG; in the background, in pids.
#   derpd_resolving_with CONF MESH LOG
derpd_resolving_with() {
  unshare -m sh -c 'mount --make-rprivate / && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh \
    "$1" "$derpd" -dev -a 127.0.0.1:0 -stun=false -mesh-psk-file "$tmp/mesh.key" -mesh-with "$2" >"$3" 2>&1 &
  pids+=($!)
}

: >"$tmp/derpd.log"
derpd_resolving_with "$tmp/resolv.conf" http://hang.derpd-test.example:3340 "$tmp/derpd.log"
pid=$!
for _ in $(seq 100); do grep -q 'derpd: pid' "$tmp/derpd.log" && break; sleep 0.1; done
grep -q 'derpd: pid' "$tmp/derpd.log" || fail "derpd did not start"
for _ in $(seq 100); do [[ -e "$tmp/asked" ]] && break; sleep 0.1; done
[[ -e "$tmp/asked" ]] || fail "the dialler never asked the resolver"
t_asked=$(date +%s%N)
# The lookup ends at the dial's deadline (5 s), not the resolver's 30 s.
for _ in $(seq 100); do grep -q 'cannot connect: .*lookup hang.derpd-test.example: timeout' "$tmp/derpd.log" && break; sleep 0.1; done
grep -q 'cannot connect: .*lookup hang.derpd-test.example: timeout' "$tmp/derpd.log" ||
  fail "no lookup timeout logged within 10 s of the first query"
ms=$(( ($(date +%s%N) - t_asked) / 1000000 ))
(( ms < 8000 )) || fail "the lookup timed out after $ms ms, not within the 5 s dial deadline"
sleep 1 # the retry (0.5 s later) sits in its lookup
t0=$(date +%s%N)
kill -TERM "$pid"
rc=0
for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "derpd still running 20 s after SIGTERM"
wait "$pid" || rc=$?
stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
(( rc == 0 )) || fail "exit status $rc"
grep -q 'dialler did not stop; leaving it' "$tmp/derpd.log" && fail "the dialler was left behind"
grep -q 'derpd: stopped$' "$tmp/derpd.log" || fail "no last line"
(( $(grep -c 'cannot connect' "$tmp/derpd.log") == 1 )) || fail "the failure was logged more than once"
(( stop_ms < 3000 )) || fail "took $stop_ms ms to stop"

# Retries against the silent resolver: each link holds at most 2 lookup
# threads (the one its dial waits for, one abandoned), however often it
# retries, not one more per retry (dials at 0, 5.5, 11.5 s ...: a third
# lookup per link from 11.5 s without the bound). Two links, sampled 12-16 s.
: >"$tmp/derpd2.log"
derpd_resolving_with "$tmp/resolv.conf" http://hang1.derpd-test.example:3340,http://hang2.derpd-test.example:3340 \
  "$tmp/derpd2.log"
pid2=$!
for _ in $(seq 100); do grep -q 'derpd: pid' "$tmp/derpd2.log" && break; sleep 0.1; done
grep -q 'derpd: pid' "$tmp/derpd2.log" || fail "the second derpd did not start"
sleep 12
most=0
for _ in $(seq 40); do
  n=$(cat /proc/"$pid2"/task/*/comm 2>/dev/null | grep -c '^dns-lookup' || true)
  (( n > most )) && most=$n
  sleep 0.1
done
(( most >= 2 )) || fail "only $most lookup threads: the links did not dial"
(( most <= 4 )) || fail "$most lookup threads for 2 links after 3 retries each: retries pile up lookups"
kill -TERM "$pid2"
rc=0
wait "$pid2" || rc=$?
(( rc == 0 )) || fail "the second derpd exited $rc"

# A resolver that refuses (nothing on port 53 there: an ICMP error at once):
# the lookup's own error is logged (getaddrinfo's EAI_AGAIN), not an errno
# read from its code ("No such process").
printf 'nameserver 127.%d.%d.%d\noptions timeout:1 attempts:1\n' $((RANDOM % 254 + 1)) $((RANDOM % 256)) \
  $((RANDOM % 254 + 1)) >"$tmp/refused.conf"
: >"$tmp/derpd3.log"
derpd_resolving_with "$tmp/refused.conf" http://refused.derpd-test.example:3340 "$tmp/derpd3.log"
pid3=$!
for _ in $(seq 100); do grep -q 'cannot connect' "$tmp/derpd3.log" && break; sleep 0.1; done
line=$(grep -m1 'cannot connect' "$tmp/derpd3.log" || true)
[[ "$line" == *"lookup refused.derpd-test.example: Temporary failure in name resolution"* ]] ||
  fail "a refused lookup logged as: ${line:-nothing within 10 s}"
kill -TERM "$pid3"
rc=0
wait "$pid3" || rc=$?
(( rc == 0 )) || fail "the third derpd exited $rc"

# A TLS node whose self-signed certificate the link has no root for.
derpd_bg() { "$derpd" "$@" >>"$tmp/tls.log" 2>&1 & pids+=($!); }
: >"$tmp/tls.log"
derpd_bg -a 127.0.0.1:0 -c "$tmp/tls.key" -stun=false -http-port -1 -certmode selfsigned -hostname localhost \
  -certdir "$tmp/certs"
tls_port="$(log_value "$tmp/tls.log" "${pids[-1]}" 's/.*listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p')" ||
  fail "the TLS derpd did not listen"
: >"$tmp/derpd4.log"
env -u SSL_CERT_FILE -u SSL_CERT_DIR "$derpd" -dev -a 127.0.0.1:0 -stun=false -mesh-psk-file "$tmp/mesh.key" \
  -mesh-with "localhost:$tls_port,localhost:$tls_port" >"$tmp/derpd4.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q 'cannot connect' "$tmp/derpd4.log" && break; sleep 0.1; done
line=$(grep -m1 'cannot connect' "$tmp/derpd4.log" || true)
[[ "$line" == *"CERTIFICATE_VERIFY_FAILED: self signed certificate (checked for localhost) (links trust the system roots, or SSL_CERT_FILE and SSL_CERT_DIR)"* ]] ||
  fail "an untrusted certificate logged as: ${line:-nothing within 10 s}"
grep -qF -- "-mesh-with: localhost:$tls_port is listed more than once; it is dialled once" "$tmp/derpd4.log" ||
  fail "the repeated entry is not named"
(( $(grep -c 'cannot connect' "$tmp/derpd4.log") == 1 )) || fail "the repeated entry was dialled as two links"
: >"$tmp/derpd5.log"
"$derpd" -dev -a 127.0.0.1:0 -stun=false -mesh-psk-file "$tmp/mesh.key" -mesh-with "http://127.0.0.1:$tls_port" \
  >"$tmp/derpd5.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q 'cannot connect' "$tmp/derpd5.log" && break; sleep 0.1; done
line=$(grep -m1 'cannot connect' "$tmp/derpd5.log" || true)
[[ "$line" == *"http: expected 101, got 400: Client sent an HTTP request to an HTTPS server."* ]] ||
  fail "plain HTTP to a TLS node logged as: ${line:-nothing within 10 s}"
echo "mesh_dial_hang: ok: lookup timed out after $ms ms; stopped in $stop_ms ms with the dialler in a lookup;" \
  "2 links retrying for 16 s held at most $most lookup threads; a refused lookup says so; an untrusted" \
  "certificate says why"
