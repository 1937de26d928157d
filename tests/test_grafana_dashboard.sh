#!/usr/bin/env bash
# deploy/grafana/derpd-dashboard.json: validated against Grafana's dashboard
# model, offline, by tests/grafana/validate.js (TypeScript with
# @grafana/schema's Dashboard, Panel and per-panel Options/FieldConfig types,
# and the rules Grafana relies on: panel ids, gridPos, the data source
# variable, template variables, queries; npm packages pinned in
# tests/grafana/package-lock.json, installed once into $GRAFANA_WORK, default
# build-grafana-validate/). Then mutated copies of the dashboard must fail,
# naming each problem, so that a validator that passes everything fails here.
# The queries themselves run against a real Prometheus in
# test_metrics_prometheus.sh.
# The $s in single quotes below are the dashboard's and JavaScript's:
# shellcheck disable=SC2016
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${GRAFANA_WORK:-$ROOT/build-grafana-validate}"
dashboard="$ROOT/deploy/grafana/derpd-dashboard.json"

# shellcheck source=tests/npm_validator.sh
source "$ROOT/tests/npm_validator.sh"
npm_validator_setup grafana_dashboard "$ROOT/tests/grafana" "$work"

fails=0
fail() { printf 'grafana_dashboard: FAIL: %s\n' "$*"; fails=$((fails + 1)); }
if ! node "$work/validate.js" "$dashboard"; then
  fail "validate.js found problems in $dashboard (above)"
fi

# Negative cases: a copy with the given change must make the validator exit
# 1 and print every pattern given.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
must_fail() { # name, JS changing the dashboard d, patterns the output must hold
  local name="$1" change="$2" out rc=0
  shift 2
  node -e '
    const fs = require("fs");
    const d = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const panel = (id) => d.panels.find((p) => p.id === id);
    eval(process.argv[3]);
    fs.writeFileSync(process.argv[2], JSON.stringify(d, null, 1));
  ' "$dashboard" "$tmp/$name.json" "$change"
  out="$(node "$work/validate.js" "$tmp/$name.json" 2>&1)" || rc=$?
  if ((rc != 1)); then fail "$name: validator exit $rc, want 1: $out"; return; fi
  for want in "$@"; do
    [[ "$out" == *"$want"* ]] || fail "$name: validator did not say '$want': $out"
  done
}
# Field names Grafana does not have: TypeScript's excess-property checks.
must_fail fields '
  panel(2).colour = "red";
  const l = panel(3).options.legend; l.placment = l.placement; delete l.placement;
  panel(6).targets[0].legendFromat = "{{instance}}";' \
  '(id 2, timeseries "Connections") at colour: schema: Object literal may only specify known properties' \
  '(id 3, timeseries "Handshakes completed /s") options at legend.placment: schema:' \
  '(id 6, timeseries "Packets /s") targets[0] at legendFromat: schema:'
# Layout and references: overlapping panels, a second id 2, a panel on a
# fixed data source instead of $datasource, an undefined variable.
must_fail layout '
  panel(3).gridPos.x = 4;
  panel(4).id = 2;
  panel(7).datasource = {type: "prometheus", uid: "P1809F7CD0C75ACF3"};
  panel(8).targets[0].expr = panel(8).targets[0].expr.replace("$instance", "$node");' \
  '(id 3, timeseries "Handshakes completed /s"): gridPos {"h":8,"w":8,"x":4,"y":1} overlaps panels[1] (id 2,' \
  'id 2 already used by panels[1] (id 2, timeseries "Connections")' \
  '(id 7, timeseries "Payload bytes /s"): datasource {"type":"prometheus","uid":"P1809F7CD0C75ACF3"}, want' \
  'variable $node is not defined'

if ((fails)); then echo "0 passed, 1 failed"; exit 1; fi
echo "grafana_dashboard: dashboard valid; 2 broken copies refused"
echo "1 passed, 0 failed"
