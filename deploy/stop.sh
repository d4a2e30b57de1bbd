#!/usr/bin/env bash
# stop.sh — `make stop`: stop what deploy/run.sh started (gateway, workers, Temporal, Glance on its
# file or rbd store, Ceph), each by its pid file.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for f in "$RUN"/pids/*.pid; do
  [ -e "$f" ] || continue
  n=$(basename "$f" .pid)
  case "$n" in gateway | gateway-* | worker-*) stop_bg "$n" ;; esac
done
stop_bg temporal
service glance stop || true
service glance-rbd stop || true
"$here/ceph.sh" stop || true
