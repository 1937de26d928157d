#!/bin/sh
# tests/ktls_vm_init.sh: /init of the VM that scripts/ktls-vm boots on Debian's
# stock kernel (busybox sh). Runs the real kTLS checks and prints one line
# "ktls-vm: PASS name" or "ktls-vm: FAIL name: why" per check, then
# "ktls-vm: guest done", and powers off. Everything binds 127.0.0.1.
export PATH=/bin:/sbin:/derpd
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
ip link set lo up
ulimit -n 20000
. /derpd/config
cd /tmp
# derp-bench connects 19000 clients in idle mode: room for both ends.
echo "1024 65000" >/proc/sys/net/ipv4/ip_local_port_range

pass() { echo "ktls-vm: PASS $1"; }
fail() { echo "ktls-vm: FAIL $1: $2"; }
finish() { echo "ktls-vm: guest done"; sync; poweroff -f; }

echo "ktls-vm: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs"
# Nothing is loaded by hand: TCP_ULP "tls" and the record keys make the kernel
# load tls.ko and its crypto modules through /sbin/modprobe, as on an installed
# system.

# start_derpd PORT ARGS...: a TLS derpd on 127.0.0.1:PORT; sets DPID.
start_derpd() {
  port=$1; shift
  rm -rf /tmp/certs /tmp/key.json
  derpd -c /tmp/key.json -a 127.0.0.1:$port -certmode selfsigned -hostname localhost \
        -certdir /tmp/certs -http-port -1 -stun=false "$@" >/tmp/derpd-$port.log 2>&1 &
  DPID=$!
  for i in $(seq 100); do
    if grep -q 'server key nodekey' /tmp/derpd-$port.log 2>/dev/null; then sleep 0.1; return 0; fi
    sleep 0.05
  done
  echo "derpd did not start:"; cat /tmp/derpd-$port.log
}
stop_derpd() { kill $DPID 2>/dev/null; wait $DPID 2>/dev/null; }
# https PORT REQUEST-PATH OPENSSL-ARGS...: the answer (headers and body).
https() {
  port=$1 path=$2; shift 2
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" |
    timeout 15 openssl s_client -connect 127.0.0.1:$port -servername localhost -brief -ign_eof "$@" 2>&1
}
varz() { https "$1" /debug/varz | grep "^$2 " | awk '{print $2}'; }


# First, before anything has loaded it: a kernel that cannot load a suite's
# crypto (chacha20poly1305 blocked in modprobe) refuses that RX key with
# ENOENT. Under --ktls=auto the conn must go on in userspace TLS; under
# --ktls=require it is closed. AES-GCM conns still switch.
mkdir -p /etc/modprobe.d
echo "install chacha20poly1305 /bin/false" >/etc/modprobe.d/block-chacha.conf
start_derpd 8440 --shards 2 --ktls=auto -v
out="$(https 8440 /generate_204 -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256)"
if grep -q '^tls ' /proc/modules; then pass "tls.ko loaded on demand"
else fail "tls.ko loaded on demand" "not in /proc/modules"; fi
if echo "$out" | grep -q '^HTTP/1.1 204' && grep -q 'userspace TLS: TLS_RX refused: No such file' /tmp/derpd-8440.log
then pass "RX key refused (no chacha module): auto falls back to userspace TLS"
else echo "$out"; tail -5 /tmp/derpd-8440.log; fail "RX key refused, auto" "no 204 or no fallback logged"; fi
# Remembered: the next conn of that suite stays in userspace without asking
# the kernel (and modprobe) again.
f1="$(varz 8440 derpd_ktls_failures)"
out="$(https 8440 /generate_204 -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256)"
f2="$(varz 8440 derpd_ktls_failures)"
if echo "$out" | grep -q '^HTTP/1.1 204' && [ -n "$f1" ] && [ "$f1" = "$f2" ] &&
   grep -q "the kernel refused this suite's key before" /tmp/derpd-8440.log
then pass "the refused suite is remembered: the next conn asks the kernel no more ($f1 refused)"
else echo "$out"; tail -5 /tmp/derpd-8440.log; fail "refused suite remembered" "refused ${f1:-none} then ${f2:-none}"; fi
out="$(https 8440 /generate_204 -tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256)"
k="$(varz 8440 derpd_ktls_installs)"; f="$(varz 8440 derpd_ktls_failures)"
if echo "$out" | grep -q '^HTTP/1.1 204' && [ "${k:-0}" -ge 1 ] && [ "${f:-0}" -ge 1 ]; then
  pass "AES-GCM still switches beside it ($k installs, $f refused)"
else echo "$out"; fail "AES-GCM beside a refused suite" "installs ${k:-none}, refused ${f:-none}"; fi
stop_derpd
start_derpd 8441 --shards 2 --ktls=require
out="$(https 8441 /generate_204 -tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256)"
if ! echo "$out" | grep -q '^HTTP/1.1 204' &&
   grep -q 'closed: ktls_error: --ktls=require, but TLS_RX refused' /tmp/derpd-8441.log && kill -0 $DPID
then pass "RX key refused, require: closed, derpd serves on"
else echo "$out"; tail -5 /tmp/derpd-8441.log; fail "RX key refused, require" "not closed as ktls_error"; fi
stop_derpd
rm /etc/modprobe.d/block-chacha.conf

# The userspace proof, on this kernel too.
if test_ktls >/tmp/ktls.txt 2>&1; then pass test_ktls; else cat /tmp/ktls.txt; fail test_ktls "exit $?"; fi

# The TLS end-to-end suite: with kTLS in the kernel its kTLS tests take their
# real-kernel branches (require starts, every conn switches and is counted).
DERPD_BIN=/derpd/derpd DERPD_SANITIZE=none test_tls_e2e >/tmp/e2e.txt 2>&1
rc=$?
cat /tmp/e2e.txt
if [ $rc -ne 0 ]; then fail test_tls_e2e "exit $rc"
elif ! grep -q 'this kernel has kTLS' /tmp/e2e.txt; then fail test_tls_e2e "the real-kernel branch did not run"
else pass test_tls_e2e; fi

# Cipher matrix against --ktls=require: every connection must switch, or close.
start_derpd 8443 --shards 2 --ktls=require -v
n=0
for c in "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256" \
         "-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384" \
         "-tls1_2 -cipher ECDHE-ECDSA-CHACHA20-POLY1305" \
         "-tls1_3 -ciphersuites TLS_AES_128_GCM_SHA256" \
         "-tls1_3 -ciphersuites TLS_AES_256_GCM_SHA384" \
         "-tls1_3 -ciphersuites TLS_CHACHA20_POLY1305_SHA256"; do
  name="matrix $(echo $c | awk '{print $1 "/" $3}')"
  out="$(https 8443 /generate_204 $c)"
  n=$((n + 1))
  if echo "$out" | grep -q '^HTTP/1.1 204'; then pass "$name"
  else echo "$out"; fail "$name" "no 204 through kTLS"; fi
done
# Every matrix conn switched both directions (the varz request itself may
# not be counted yet when it reads the counters).
k="$(varz 8443 derpd_ktls_installs)"
f="$(varz 8443 derpd_ktls_failures)"
b="$(varz 8443 derpd_ktls_fallbacks)"
if [ "${k:-0}" -ge $n ] && [ "${f:-1}" -eq 0 ] && [ "${b:-1}" -eq 0 ]; then pass "matrix counted: $k kTLS installs"
else grep -i ktls /tmp/derpd-8443.log | tail -5
  fail "matrix counters" "installs ${k:-none}, failures ${f:-none}, fallbacks ${b:-none}"; fi
stop_derpd

# Records the kernel hands back: a DERP upgrade keeps the conn open (the
# server waits for ClientInfo), then s_client sends a TLS 1.3 KeyUpdate ('K')
# or a close_notify ('Q'). derpd reads them under kTLS: KeyUpdate closes as
# ktls_key_update (no re-key), close_notify is counted and closes as eof.
start_derpd 8447 --shards 2 --ktls=require -v
up='GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n'
for cmd in K Q; do
  (printf "$up"; sleep 1; echo $cmd; sleep 2) |
    timeout 8 openssl s_client -connect 127.0.0.1:8447 -servername localhost -brief -tls1_3 \
      >/tmp/sc-$cmd.txt 2>&1
done
# The closes are counted once derpd reads the records: poll (the VM's
# software CPU is slow when the host is busy).
for _ in 1 2 3 4 5 6 7 8 9 10; do
  kc="$(varz 8447 'derpd_conn_closed{reason="ktls_key_update"}')"
  cn="$(varz 8447 derpd_ktls_close_notify)"
  [ "${kc:-0}" -ge 1 ] && [ "${cn:-0}" -ge 1 ] && break
  sleep 0.5
done
if [ "${kc:-0}" -ge 1 ] && grep -q 'peer sent KeyUpdate' /tmp/derpd-8447.log; then
  pass "KeyUpdate under kTLS: closed as ktls_key_update"
else cat /tmp/sc-K.txt; tail -5 /tmp/derpd-8447.log; fail "KeyUpdate under kTLS" "count ${kc:-none}"; fi
if [ "${cn:-0}" -ge 1 ]; then pass "close_notify under kTLS: counted ($cn)"
else cat /tmp/sc-Q.txt; tail -5 /tmp/derpd-8447.log; fail "close_notify under kTLS" "count ${cn:-none}"; fi
if kill -0 $DPID; then pass "derpd alive after KeyUpdate and close_notify"; else fail "derpd alive" "exited"; fi
stop_derpd

# DERP relay through kTLS, across 2 shards, both TLS versions: nothing lost.
start_derpd 8444 --shards 2 --ktls=require
for v in 1.2 1.3; do
  if derp-bench --server 127.0.0.1:8444 --tls --sni localhost --insecure --tls-version $v \
       --clients 8 --window 32 --size 1200 --duration 2s --warmup 500ms --quiet >/tmp/b.txt 2>&1 &&
     grep -q 'lost 0' /tmp/b.txt; then pass "relay over ktls, TLS $v"
  else cat /tmp/b.txt; fail "relay over ktls, TLS $v" "derp-bench failed or lost packets"; fi
  grep 'delivered' /tmp/b.txt
done
k="$(varz 8444 'derpd_conns_mode{mode="ktls"}')"
if [ "${k:-0}" -ge 16 ]; then pass "relay conns counted as ktls ($k)"; else fail "relay counters" "ktls conns ${k:-none}"; fi
if kill -0 $DPID; then pass "derpd alive after kTLS relay"; else fail "derpd alive" "exited"; fi
stop_derpd

if [ "$BENCH" = 1 ]; then
  # Idle RSS per connection and relay throughput: kTLS against userspace TLS.
  for mode in on off; do
    ktls=--ktls=require
    [ $mode = off ] && ktls=--ktls=off
    for clients in 5000 19000; do
      start_derpd 8445 --shards 2 $ktls
      echo "ktls-vm: bench idle ktls=$mode clients=$clients"
      derp-bench --server 127.0.0.1:8445 --tls --sni localhost --insecure --mode idle \
        --clients $clients --hold 2s --server-pid $DPID 2>&1 | tail -2
      stop_derpd
    done
  done
  for rep in 1 2 3; do
    for mode in on off; do
      ktls=--ktls=require
      [ $mode = off ] && ktls=--ktls=off
      start_derpd 8446 --shards 2 $ktls
      echo "ktls-vm: bench relay ktls=$mode rep=$rep"
      derp-bench --server 127.0.0.1:8446 --tls --sni localhost --insecure --clients 4 \
        --window 32 --size 1200 --duration 4s --warmup 1s --quiet --server-pid $DPID 2>&1 |
        grep -E 'delivered|CPU s per million'
      stop_derpd
    done
  done
fi
finish
