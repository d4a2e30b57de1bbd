#!/usr/bin/env bash
# run.sh — `make run`: on a fresh Debian 12 machine (as root) install what is missing, build, start
# Ceph, Glance, the Temporal dev server with its Web UI, one worker and the API gateway, all on
# 127.0.0.1 with state under .run/; upload a demo image and create two volumes from it (a cache
# miss, then a hit); then stay up until interrupted and stop everything it started.
#
# Usage: deploy/run.sh [--no-demo] [--detach]
#   --no-demo  skip the demo image and volumes
#   --detach   return once the stack is up (stop it later with `make stop`)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

demo=1 detach=0
for a in "$@"; do
  case "$a" in
    --no-demo) demo=0 ;;
    --detach) detach=1 ;;
    *) echo "usage: $0 [--no-demo] [--detach]" >&2; exit 2 ;;
  esac
done

"$here/install-deps.sh" all
make -C "$TOP" --no-print-directory build

"$here/ceph.sh" start
"$here/glance.sh" start
. "$RUN/ceph/env"
. "$RUN/glance/env"

write_run_env

stop_all() { "$here/stop.sh"; }
if [ "$detach" = 0 ]; then trap 'echo; stop_all; exit 0' INT TERM; fi

start_bg temporal "$BIN/imagevol-devserver" --db "$RUN/temporal/temporal.db" --ip 127.0.0.1 --port 7233 --ui-port 8233
wait_http http://127.0.0.1:8233/ 120 temporal
start_bg worker-node1 "$BIN/imagevol-worker" --host node1 --pool volumes --metrics-listen 127.0.0.1:9101
start_bg gateway "$BIN/imagevol-gateway" --hosts node1
wait_http http://127.0.0.1:8776/healthz 60 gateway
sleep 0.5
[ -n "$(pid_of worker-node1)" ] || { tail -n 30 "$RUN/log/worker-node1.log" >&2; say "worker exited"; exit 1; }
say "stack up: gateway http://127.0.0.1:8776, Temporal UI http://127.0.0.1:8233 (source $RUN/env)"

if [ "$demo" = 1 ]; then
  img=$RUN/demo/demo.raw
  if [ ! -s "$img" ]; then
    # 64 MiB demo disk: 1 MiB of random data every 4 MiB, the rest zeros (sparse).
    mkdir -p "$RUN/demo"
    truncate -s 64M "$img"
    for i in $(seq 0 4 60); do
      head -c 1M /dev/urandom | dd of="$img" bs=1M seek="$i" conv=notrunc status=none
    done
  fi
  id=$(curl -fsS -X POST "${GLANCE_URL%/}/v2/images" -H 'Content-Type: application/json' \
    -d '{"name":"imagevol-demo","disk_format":"raw","container_format":"bare","visibility":"community"}' | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
  curl -fsS -X PUT "${GLANCE_URL%/}/v2/images/$id/file" -H 'Content-Type: application/octet-stream' --data-binary @"$img"
  say "demo image $id uploaded to Glance"
  "$BIN/imagevolctl" create --image "$id" --size 1 --name demo-miss --wait
  "$BIN/imagevolctl" create --image "$id" --size 2 --name demo-hit --wait
  say "workflows: http://127.0.0.1:8233/namespaces/default/workflows"
fi

if [ "$detach" = 1 ]; then exit 0; fi
say "running; press Ctrl-C to stop"
while sleep 1; do
  for p in temporal worker-node1 gateway; do
    [ -e "$RUN/pids/$p.pid" ] || { say "$p was stopped (make stop)"; stop_all; exit 0; }
    [ -n "$(pid_of "$p")" ] || { say "$p exited; log: $RUN/log/$p.log"; stop_all; exit 1; }
  done
done
