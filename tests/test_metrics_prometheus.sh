#!/usr/bin/env bash
# /debug/ end to end, from a non-loopback address: a network namespace joined
# to this machine by a veth pair, with private test addresses made here and
# used nowhere else (10.213.N.0/29: .1 this machine's end, .2 .3 .4 in the
# namespace). derpd runs here with --metrics-listen on .1; from the namespace:
#   - every access rule: --debug-allow (.2 allowed, .3 refused, on the metrics
#     listener and the main port), TS_ALLOW_DEBUG_IP (.4), ?debugkey= against
#     TS_DEBUG_KEY_PATH (right and wrong key), X-Forwarded-For refused, and
#     loopback allowed (from here); the metrics listener serves /debug/ only;
#   - `promtool check metrics` on the live page: no errors, and no lint but
#     what derper's own names bring (no _total, no HELP, _sec and _ms, the
#     gauge derp_clients_total, derp_tcp_rtt's "le" label on a counter);
#   - a real Prometheus server (Debian's package) in the namespace scrapes
#     derpd every second through the metrics listener; after derp_send relays
#     a known number of packets, its HTTP API must return exactly that many
#     for derp_packets_received and derp_packets_sent (within 30 s), and
#     /debug/vars has them in derper's expvar tree ("derp": {...}); and every
#     query of deploy/grafana/derpd-dashboard.json runs on that Prometheus.
# Needs root and `ip netns` (CI runs as root): without them it FAILS, never
# skips. Cleans up the namespace, the veth pair and its processes on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
send="${DERP_SEND_BIN:-$ROOT/build/tests/derp_send}"
COUNT=500
fail() { printf 'metrics_prometheus: FAIL: %s\n' "$*" >&2; exit 1; }
# shellcheck source=tests/log_wait.sh
source "$ROOT/tests/log_wait.sh"
say() { printf 'metrics_prometheus: %s\n' "$*"; }

[[ "$(id -u)" == 0 ]] || fail "needs root (network namespaces); CI runs as root"
command -v ip >/dev/null || fail "no ip (iproute2)"
for tool in prometheus promtool curl python3; do
  command -v "$tool" >/dev/null || fail "$tool not installed (scripts/setup --deps installs it)"
done
[[ -x "$derpd" && -x "$send" ]] || fail "build derpd and tests/derp_send first"

# The subnet's third byte: one nobody else holds (two builds may run this test
# at once, as CI's phases do): a lock per tag, held until this shell exits.
tag=
for i in $(seq 0 249); do
  t=$(( ($$ + i) % 250 + 1 ))
  exec {lockfd}>"${TMPDIR:-/tmp}/derpd-metrics-prom-$t.lock"
  if flock -n "$lockfd"; then tag=$t; break; fi
  exec {lockfd}>&-
done
[[ -n "$tag" ]] || fail "no free 10.213.N.0/29 (250 runs at once?)"
net="10.213.$tag"
ns="derpd-prom-$$"
veth="dpm$$"            # this machine's end; the namespace's is ${veth}n
tmp="$(mktemp -d "${TMPDIR:-/tmp}/metrics-prom.XXXXXX")"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true    # takes the namespace's veth end along
  ip link del "$veth" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$ns" || fail "ip netns add failed (no network namespaces here?)"
ip link add "$veth" type veth peer name "${veth}n"
ip link set "${veth}n" netns "$ns"
ip addr add "$net.1/29" dev "$veth"
ip link set "$veth" up
inns() { ip netns exec "$ns" "$@"; }
inns ip link set lo up
for a in 2 3 4; do inns ip addr add "$net.$a/29" dev "${veth}n"; done  # .2 first: Prometheus' source
inns ip link set "${veth}n" up

# derpd: main port anywhere (the namespace reaches it on .1), metrics on .1.
MPORT=9464
printf '  k3y-%s\n' "$$" >"$tmp/debugkey"
# The log exists before derpd starts: the shell opens the redirection in the
# child, which a loaded machine may run after the first sed below.
: >"$tmp/derpd.log"
TS_ALLOW_DEBUG_IP="$net.4" TS_DEBUG_KEY_PATH="$tmp/debugkey" \
  "$derpd" -dev -a :0 --shards 2 -stun-port 0 --metrics-listen "$net.1:$MPORT" --debug-allow "$net.2/32" \
  >"$tmp/derpd.log" 2>&1 &
pids+=($!)
port="$(log_value "$tmp/derpd.log" "${pids[0]}" 's/.*derpd: listening on .*:\([0-9][0-9]*\) (.*/\1/p')" ||
  fail "derpd did not start (its log is above)"
grep -q "metrics listener on $net.1:$MPORT" "$tmp/derpd.log" || fail "no metrics listener line in the log"

# code FROM_ADDR URL [curl args...]: the HTTP status a request from the
# namespace address gets ("000" if none).
code() {
  local from="$1" url="$2"; shift 2
  inns curl -s -o /dev/null -w '%{http_code}' --max-time 5 --interface "$from" "$@" "$url" || true
}
expect() { # expect WANT WHAT FROM URL [curl args...]
  local want="$1" what="$2" got; shift 2
  got="$(code "$@")"
  [[ "$got" == "$want" ]] || fail "$what: HTTP $got, want $want"
  say "ok: $what -> $got"
}
M="http://$net.1:$MPORT"
P="http://$net.1:$port"
expect 200 "--debug-allow address, metrics listener" "$net.2" "$M/debug/varz"
expect 200 "--debug-allow address, main port" "$net.2" "$P/debug/vars"
expect 403 "address outside every rule, metrics listener" "$net.3" "$M/debug/varz"
expect 403 "address outside every rule, main port" "$net.3" "$P/debug/varz"
expect 403 "refused before routing (no probing)" "$net.3" "$M/debug/no-such-page"
expect 200 "TS_ALLOW_DEBUG_IP address" "$net.4" "$M/debug/"
expect 403 "X-Forwarded-For from an allowed address" "$net.2" "$M/debug/varz" -H "X-Forwarded-For: $net.2"
expect 200 "?debugkey= matching TS_DEBUG_KEY_PATH" "$net.3" "$M/debug/varz?debugkey=k3y-$$"
expect 403 "?debugkey= wrong" "$net.3" "$M/debug/varz?debugkey=k3y-x"
expect 403 "?debugkey= on HEAD (GET only)" "$net.3" "$M/debug/varz?debugkey=k3y-$$" -I
expect 404 "metrics listener: no /derp" "$net.2" "$M/derp"
expect 404 "metrics listener: no /generate_204" "$net.2" "$M/generate_204"
expect 204 "main port still answers /generate_204" "$net.3" "$P/generate_204"
lo="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/debug/varz")"
[[ "$lo" == 200 ]] || fail "loopback: HTTP $lo, want 200"
lo="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'X-Forwarded-For: 127.0.0.1' \
  "http://127.0.0.1:$port/debug/varz")"
[[ "$lo" == 403 ]] || fail "loopback with X-Forwarded-For: HTTP $lo, want 403"
say "ok: loopback 200, loopback with X-Forwarded-For 403"

# promtool on the live page: errors fail; lint only of derper's names.
inns curl -s --max-time 5 --interface "$net.2" "$M/debug/varz" >"$tmp/varz.txt"
grep -q '^derpd_queue_wait_seconds_bucket{le="+Inf"}' "$tmp/varz.txt" || fail "no histogram on the page"
rc=0
promtool check metrics <"$tmp/varz.txt" >"$tmp/lint.txt" 2>&1 || rc=$?
if ((rc != 0 && rc != 3)) || grep -q 'error while linting' "$tmp/lint.txt"; then
  cat "$tmp/lint.txt" >&2
  fail "promtool check metrics: exit $rc"
fi
if grep -vE ' counter metrics should have "_total" suffix$| no help text$|^(uptime_sec|derp_average_queue_duration_ms) metric names should not contain abbreviated units$|^derp_clients_total non-counter metrics should not have "_total" suffix$|^derp_tcp_rtt non-histogram metrics should not have "le" label$' \
  "$tmp/lint.txt" | grep -q .; then
  cat "$tmp/lint.txt" >&2
  fail "promtool check metrics: unexpected lint"
fi
say "ok: promtool check metrics (exit $rc; $(wc -l <"$tmp/lint.txt") lint lines, all of the naming kept for dashboards)"

# Prometheus in the namespace, scraping through the metrics listener.
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: derpd
    metrics_path: /debug/varz
    static_configs:
      - targets: ["$net.1:$MPORT"]
EOF
# Not through inns (a function: $! would be a subshell, not Prometheus).
ip netns exec "$ns" prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="$net.2:9090" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
API="http://$net.2:9090/api/v1/query"
# query EXPR: the value of the first sample, or "" (none yet).
query() {
  inns curl -s --max-time 2 --get --data-urlencode "query=$1" "$API" 2>/dev/null |
    python3 -c 'import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "")
except Exception:
    print("")' || true
}
# wait_for EXPR WANT: poll until the query returns WANT (30 s at most).
wait_for() {
  local v="" deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    v="$(query "$1")"
    [[ "$v" == "$2" ]] && { say "ok: Prometheus: $1 = $v"; return 0; }
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$tmp/prometheus.log" >&2; fail "prometheus exited"; }
    sleep 0.5
  done
  cat "$tmp/prometheus.log" >&2
  fail "Prometheus: $1 = '$v' after 30 s, want $2"
}
wait_for 'up{job="derpd"}' 1
wait_for 'derp_packets_received' 0
"$send" 127.0.0.1 "$port" "$COUNT" 200 || fail "derp_send failed"
wait_for 'derp_packets_received' "$COUNT"
wait_for 'derp_packets_sent' "$COUNT"
wait_for 'derp_bytes_received' "$((COUNT * 200))"
wait_for 'derpd_queue_wait_seconds_count' "$COUNT"
wait_for 'sum(derpd_shard_packets_received)' "$COUNT"
wait_for 'count(derp_packets_dropped)' 20   # v1.80's family: 10 reasons x 2 kinds
# /debug/vars: derper's expvar tree, the same counts.
inns curl -s --max-time 5 --interface "$net.2" "$P/debug/vars" >"$tmp/vars.json"
python3 - "$tmp/vars.json" "$COUNT" <<'PY' || fail "/debug/vars: not derper's tree with these counts"
import json, sys
j = json.load(open(sys.argv[1]))
n, d = int(sys.argv[2]), j["derp"]
checks = [
    (d["packets_received"], n), (d["packets_sent"], n), (d["bytes_received"], n * 200),
    (d["packets_dropped"], 0), (sum(d["counter_packets_received_kind"].values()), n),
    (d["gauge_current_connections"], 0), (j["derpd"]["derpd_shards"], 2),
    (type(j["version"]), str), (d["counter_buffered_write_frames"]["+Inf"] > 0, True),
]
bad = [i for i, (got, want) in enumerate(checks) if got != want]
if bad:
    print("metrics_prometheus: /debug/vars checks failed:", [checks[i] for i in bad], file=sys.stderr)
    sys.exit(1)
PY
say "ok: /debug/vars in derper's shape: derp.packets_received = $COUNT"
# deploy/grafana/derpd-dashboard.json: every panel's query is valid PromQL
# against this Prometheus, and returns series but for those that need TLS, a
# mesh or drops (none here).
inns python3 - "$ROOT/deploy/grafana/derpd-dashboard.json" "$API" <<'PY' || fail "the Grafana dashboard's queries"
import json, sys, urllib.error, urllib.parse, urllib.request
d = json.load(open(sys.argv[1]))
api = sys.argv[2]
ids, exprs = set(), []
for p in d["panels"]:
    assert p["id"] not in ids, "panel id %s twice" % p["id"]
    ids.add(p["id"])
    for t in p.get("targets", []):
        assert t["datasource"]["uid"] == "${datasource}", p["title"]
        exprs.append((p["title"], t["expr"]))
exprs.append(("$instance", "derpd_shards"))
bad = []
for title, e in exprs:
    q = e.replace('$instance', '.*').replace('$__rate_interval', '1m')
    url = api + "?" + urllib.parse.urlencode({"query": q})
    try:
        r = json.load(urllib.request.urlopen(url, timeout=5))
    except urllib.error.HTTPError as err:  # 400: a query that does not parse
        r = json.load(err)
    may_be_empty = any(k in e for k in ("derpd_mesh_link_up", "derpd_tls_cert_not_after")) or e.endswith("> 0")
    if r.get("status") != "success":
        bad.append("%s: %s: %s" % (title, e, r.get("error")))
    elif not r["data"]["result"] and not may_be_empty:
        bad.append("%s: %s: no series" % (title, e))
for b in bad:
    print("metrics_prometheus: dashboard:", b, file=sys.stderr)
print("metrics_prometheus: dashboard: %d queries checked" % len(exprs))
sys.exit(1 if bad else 0)
PY
say "ok: the Grafana dashboard's queries all run"
# derpd stops cleanly (under ASan: no leak at exit either).
kill -TERM "${pids[0]}" 2>/dev/null || { cat "$tmp/derpd.log" >&2; fail "derpd died"; }
rc=0
wait "${pids[0]}" || rc=$?
((rc == 0)) || { cat "$tmp/derpd.log" >&2; fail "derpd exited $rc on SIGTERM"; }
echo "metrics_prometheus: ok"
