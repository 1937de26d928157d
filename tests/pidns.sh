#!/bin/sh
# pidns.sh CMD [ARG...]: runs CMD in a PID namespace of its own (root), so
# that every process it leaves behind dies with it: a live upgrade's new
# derpd is the old derpd's child, out of the harness's PDEATHSIG reach, and
# a test that fails or times out mid-upgrade would leave it running.
# CMD gets pid (this shell's pid + 1) in the namespace, unique on the machine
# while this runs: Criterion names its message socket by its runner's pid.
exec unshare --pid --fork --kill-child --mount-proc \
  sh -c 'echo "$0" > /proc/sys/kernel/ns_last_pid && "$@"' "$$" "$@"
