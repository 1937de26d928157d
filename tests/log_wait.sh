# shellcheck shell=bash
# Sourced by the shell tests that start derpd in the background and learn
# what it chose (a port) from its log.
# log_value LOG PID SED_EXPR: print the first value SED_EXPR (a
# `sed -n 's/.../\1/p'` script) takes from LOG, polled for 10 s at most. Exit
# status 1 with LOG on stderr if PID exits first or nothing shows in time.
log_value() {
  local log="$1" pid="$2" expr="$3" v
  for _ in $(seq 100); do
    v="$(sed -n "$expr" "$log" | head -1)"
    if [[ -n "$v" ]]; then printf '%s\n' "$v"; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  return 1
}
