#!/usr/bin/env bash
# deploy/systemd/derpd.service and deploy/default/derpd, as shipped:
# - `systemd-analyze verify` passes without a word, in a temporary root that
#   holds the host's units, /bin/kill and the built derpd at /usr/bin/derpd
#   (the unit's ExecStart), so the file checked is the repository's own,
#   unedited (--man=no: derpd(8) is installed by the package, not here);
# - `systemd-analyze security --offline`: exposure 2.5 at most;
# - what docs/deployment.md promises is set (Type=notify, WatchdogSec, the
#   user, the capability, the file limit, the hardening);
# - the default DERPD_ARGS and every commented example in deploy/default/derpd
#   pass derpd's own flag parser (check_flags), split as systemd splits $VAR,
#   and every one that serves TLS names its -certmode.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
derpd="${DERPD_BIN:-$ROOT/build/src/derpd}"
check_flags="${CHECK_FLAGS_BIN:-$ROOT/build/tests/check_flags}"
unit="$ROOT/deploy/systemd/derpd.service"
defaults="$ROOT/deploy/default/derpd"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [[ "${CI:-}" == true ]]; then
    echo "systemd_unit: FAIL: no systemd-analyze (scripts/setup installs systemd)"; exit 1
  fi
  echo "systemd_unit: no systemd-analyze here (apt-get install systemd): skipped"; exit 77
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/derpd-unit.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { printf 'systemd_unit: FAIL: %s\n' "$*"; fails=$((fails + 1)); }

r="$tmp/root"
mkdir -p "$r/lib/systemd" "$r/bin" "$r/usr/bin" "$r/etc/systemd/system" "$r/etc/default"
cp -a /lib/systemd/system "$r/lib/systemd/"
cp /bin/kill "$r/bin/kill"
cp "$derpd" "$r/usr/bin/derpd"
cp "$unit" "$r/etc/systemd/system/derpd.service"
cp "$defaults" "$r/etc/default/derpd"

# verify prints warnings and still exits 0 for some of them: any output fails.
if ! out="$(cd "$tmp" && systemd-analyze verify --man=no --root="$r" /etc/systemd/system/derpd.service 2>&1)"; then
  fail "systemd-analyze verify: $out"
elif [[ -n "$out" ]]; then
  fail "systemd-analyze verify warns: $out"
fi
if ! out="$(cd "$tmp" && systemd-analyze security --offline=true --threshold=25 --no-pager \
              --root="$r" /etc/systemd/system/derpd.service 2>&1)"; then
  fail "systemd-analyze security: exposure above 2.5: $(grep 'Overall exposure' <<<"$out")"
else
  echo "systemd_unit: $(grep -o 'Overall exposure level.*' <<<"$out")"
fi

for want in Type=notify NotifyAccess=all WatchdogSec=20s 'ExecStart=/usr/bin/derpd $DERPD_ARGS' \
            'ExecReload=/bin/kill -HUP $MAINPID' EnvironmentFile=-/etc/default/derpd User=derp \
            AmbientCapabilities=CAP_NET_BIND_SERVICE CapabilityBoundingSet=CAP_NET_BIND_SERVICE \
            LimitNOFILE=1048576 StateDirectory=derpd StateDirectoryMode=0700 ConfigurationDirectory=derpd \
            ReadWritePaths=-/etc/derpd/certs ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
            NoNewPrivileges=yes 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK' \
            MemoryDenyWriteExecute=yes SystemCallArchitectures=native Restart=on-failure; do
  grep -qxF -- "$want" "$unit" || fail "the unit has no line $want"
done

# DERPD_ARGS as the unit gets it ($DERPD_ARGS unquoted: split at white space).
n=0
while IFS= read -r line; do
  args="${line#*=\"}"
  args="${args%\"}"
  # shellcheck disable=SC2086 # word splitting is what systemd does
  if ! out="$("$check_flags" $args 2>&1)"; then
    fail "deploy/default/derpd: derpd refuses '$args': $out"
  elif [[ "$out" == *" tls=1 "* && " $args " != *" -certmode "* ]]; then
    # Without -certmode, TLS is letsencrypt (derper's default): an example
    # that means files it manages itself must say -certmode manual.
    fail "deploy/default/derpd: '$args' serves TLS without naming its -certmode: $out"
  fi
  n=$((n + 1))
done < <(grep -E '^#?DERPD_ARGS="[^"]*"$' "$defaults")
((n >= 3)) || fail "deploy/default/derpd: $n DERPD_ARGS lines, want the default and the examples"
active="$(grep -cE '^DERPD_ARGS=' "$defaults")"
((active == 1)) || fail "deploy/default/derpd: $active active DERPD_ARGS lines, want 1"

if ((fails)); then echo "0 passed, 1 failed"; exit 1; fi
echo "systemd_unit: verify clean, $n command lines parse"
echo "1 passed, 0 failed"
