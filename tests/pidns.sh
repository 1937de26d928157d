#!/bin/sh
# pidns.sh CMD [ARG...]: runs CMD in a PID namespace of its own (root), so
# that every process it leaves behind dies with it: a live upgrade's new
# derpd is the old derpd's child, out of the harness's PDEATHSIG reach, and
# a test that fails or times out mid-upgrade would leave it running.
# Criterion names its runner's message socket /tmp/criterion_<pid>.sock by
# the pid the runner sees, so CMD must not get a pid that a runner elsewhere
# on the machine can have at the same time (two runners on one socket fail:
# "Could not spawn test instance: Protocol error"). CMD gets, inside the
# namespace, the pid that the namespace's first process (this sh, alive
# until CMD ends) holds outside it: no other process outside can have that
# pid meanwhile, and every other namespace made here picks its own first
# process's.
exec unshare --pid --fork --kill-child --mount --propagation private sh -c '
  while read -r k p rest; do [ "$k" = NSpid: ] && break; done </proc/self/status
  mount -t proc proc /proc || exit 1
  echo $((p - 1)) >/proc/sys/kernel/ns_last_pid || exit 1
  "$@"; exit $?' sh "$@"
