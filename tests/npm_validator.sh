# shellcheck shell=bash
# Sourced by the tests whose validators are npm packages (k8s_manifests,
# grafana_dashboard).
# npm_validator_setup NAME PKGDIR WORK: node and npm must be here (without
# them the test is skipped, exit 77, or fails under CI=true); PKGDIR's pinned
# packages go into WORK by npm ci once per lock file, so the validator then
# runs offline, and PKGDIR/validate.js beside them.
npm_validator_setup() {
  local name="$1" pkg="$2" work="$3"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [[ "${CI:-}" == true ]]; then echo "$name: FAIL: no node/npm"; exit 1; fi
    echo "$name: no node or npm here (apt-get install nodejs npm): skipped"; exit 77
  fi
  mkdir -p "$work"
  if ! cmp -s "$pkg/package-lock.json" "$work/package-lock.json" || [[ ! -d "$work/node_modules" ]]; then
    cp "$pkg/package.json" "$pkg/package-lock.json" "$work/"
    rm -rf "$work/node_modules"
    if ! (cd "$work" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) >"$work/npm.log" 2>&1; then
      echo "$name: FAIL: npm ci"; cat "$work/npm.log"; exit 1
    fi
  fi
  cp "$pkg/validate.js" "$work/"
}
