#!/usr/bin/env bash
# deploy/k8s/*.yaml: validated against the Kubernetes API's schemas and field
# names, offline, by tests/k8s/validate.js (kubernetes-models, TypeScript with
# kubernetes-types; npm packages pinned in tests/k8s/package-lock.json,
# installed once into $K8S_WORK, default build-k8s-validate/), and derpd's
# command line of every pod run through derpd's own flag parser
# (check_flags): it must parse, serve TLS on :443, name the pod, serve
# /debug/ on --metrics-listen :9100, answer STUN on 3478, and mesh with all
# three nodes in name/dialaddr form.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
check_flags="${CHECK_FLAGS_BIN:-$ROOT/build/tests/check_flags}"
work="${K8S_WORK:-$ROOT/build-k8s-validate}"

# shellcheck source=tests/npm_validator.sh
source "$ROOT/tests/npm_validator.sh"
npm_validator_setup k8s_manifests "$ROOT/tests/k8s" "$work"

fails=0
fail() { printf 'k8s_manifests: FAIL: %s\n' "$*"; fails=$((fails + 1)); }
if ! lines="$(cd "$work" && node validate.js "$ROOT/deploy/k8s")"; then
  fail "validate.js found problems (above)"
fi
n=0
while IFS= read -r line; do
  [[ -n "$line" ]] || continue
  pod="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pod"])' "$line")"
  mapfile -t args < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["args"]))' "$line")
  if ! out="$("$check_flags" "${args[@]}" 2>&1)"; then
    fail "$pod: derpd refuses its command line: $out"; continue
  fi
  for want in "listen=:443" "tls=1" "certmode=manual" "hostname=$pod." "mesh_entries=3" \
              "mesh=https:$pod." "metrics=:9100" "stun=3478"; do
    [[ "$out" == *" $want"* || "$out" == *"$want"* ]] || fail "$pod: derpd would not run with $want: $out"
  done
  n=$((n + 1))
done <<<"$lines"
((n == 3)) || fail "derpd command lines for $n pods, want 3"
if ((fails)); then echo "0 passed, 1 failed"; exit 1; fi
echo "k8s_manifests: manifests valid; derpd accepts the command lines of $n pods"
echo "1 passed, 0 failed"
