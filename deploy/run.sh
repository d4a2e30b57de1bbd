#!/usr/bin/env bash
# run.sh — `make run`: on a fresh Debian 12 machine (as root) install what is missing, build, start
# Ceph, Glance, the Temporal dev server with its Web UI, one worker and the API gateway, all on
# 127.0.0.1 with state under .run/ (plain HTTP: nothing listens beyond this machine); upload a
# public demo image and create two volumes from it (a cache miss, then a hit); then stay up until
# interrupted and stop everything it started. .run/env (mode 0600) holds three API tokens: a
# member of project demo, a member of demo2 and an operator (see write_run_env in lib.sh).
# Glance keeps its images in a local directory; with IMAGEVOL_GLANCE_STORE=rbd it keeps them in
# Ceph's images pool instead (deploy/glance.sh GLANCE_STORE=rbd, on GLANCE_RBD_PORT, default 9293),
# as most Ceph clouds do. The worker connects to Ceph as client.imagevol either way.
#
# Usage: deploy/run.sh [--no-demo] [--detach]
#   --no-demo  skip the demo image and volumes
#   --detach   return once the stack is up (stop it later with `make stop`)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${IMAGEVOL_GLANCE_STORE:-file}" in
  file) glance=glance ;;
  rbd) glance='glance-rbd' ;;
  *) say "IMAGEVOL_GLANCE_STORE is file or rbd, not '$IMAGEVOL_GLANCE_STORE'"; exit 2 ;;
esac

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

stop_all() { "$here/stop.sh"; }
# A part that fails to come up takes the rest down with it, so nothing is left answering for a
# stack that cannot work; the check that failed printed the failing part's log tail.
# shellcheck disable=SC2154 # rc is assigned in the trap itself
trap 'rc=$?; say "start failed; stopping what was started"; stop_all; exit $rc' ERR

"$here/ceph.sh" start
service "$glance" start
# The ceph env exports the worker's user (IMAGEVOL_CEPH_USER=imagevol and its keyring).
load_env ceph "$glance"
# The stack and .run/env speak of the one Glance as GLANCE_URL.
if [ "$glance" = glance-rbd ]; then export GLANCE_URL=$GLANCE_RBD_URL; fi

write_run_env

if [ "$detach" = 0 ]; then trap 'echo; stop_all; exit 0' INT TERM; fi

# start_part NAME: the parts this script runs and supervises, each by its name.
start_part() {
  case "$1" in
    temporal) start_bg temporal "$BIN/imagevol-devserver" --db "$RUN/temporal/temporal.db" --ip 127.0.0.1 --port 7233 --ui-port 8233 ;;
    worker-node1) start_bg worker-node1 "$BIN/imagevol-worker" --host node1 --pool volumes --metrics-listen 127.0.0.1:9101 ;;
    # Its tokens, with their roles, come from the tokens file alone.
    gateway) start_bg gateway env -u IMAGEVOL_TOKEN -u IMAGEVOL_PROJECT "$BIN/imagevol-gateway" --hosts node1 --tokens "$RUN/tokens" ;;
  esac
}
parts=(temporal worker-node1 gateway)

start_part temporal
wait_http http://127.0.0.1:8233/ 120 temporal
start_part worker-node1
start_part gateway
wait_http http://127.0.0.1:8776/healthz 60 gateway
# Ready once the worker polls its host's queue: a worker that died at start fails the start.
wait_ready http://127.0.0.1:8776/readyz 60 worker-node1
say "stack up: gateway http://127.0.0.1:8776, Temporal UI http://127.0.0.1:8233 (source $RUN/env)"
say "tokens in $RUN/env: IMAGEVOL_TOKEN (project demo), IMAGEVOL_OTHER_TOKEN (demo2), IMAGEVOL_ADMIN_TOKEN (admin)"

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
  # Public, so that every project may make volumes of it (demo and demo2 alike).
  id=$(curl -fsS -X POST "${GLANCE_URL%/}/v2/images" -H 'Content-Type: application/json' \
    -d '{"name":"imagevol-demo","disk_format":"raw","container_format":"bare","visibility":"public"}' |
    sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
  curl -fsS -X PUT "${GLANCE_URL%/}/v2/images/$id/file" -H 'Content-Type: application/octet-stream' --data-binary @"$img"
  say "demo image $id uploaded to Glance"
  "$BIN/imagevolctl" create --image "$id" --size 1 --name demo-miss --wait
  "$BIN/imagevolctl" create --image "$id" --size 2 --name demo-hit --wait
  say "workflows: http://127.0.0.1:8233/namespaces/default/workflows"
fi

trap - ERR
if [ "$detach" = 1 ]; then exit 0; fi
say "running; press Ctrl-C to stop"

# Supervise as systemd would: a part that exits is started again after a back-off that doubles
# from 1 s up to 30 s and resets once it has stayed up for a minute; the others stay up, and a
# provision in flight resumes on the restarted worker. `make stop` (which removes the pid files)
# ends the loop.
declare -A backoff next since
for p in "${parts[@]}"; do backoff[$p]=1 next[$p]=0 since[$p]=$SECONDS; done
while sleep 1; do
  for p in "${parts[@]}"; do
    [ -e "$RUN/pids/$p.pid" ] || { say "$p was stopped (make stop)"; stop_all; exit 0; }
    if [ -n "$(pid_of "$p")" ]; then
      # up for a minute: the next crash starts the back-off afresh
      if ((SECONDS - since[$p] >= 60)); then backoff[$p]=1; fi
      continue
    fi
    if ((next[$p] == 0)); then
      next[$p]=$((SECONDS + backoff[$p]))
      say "$p exited; restarting in ${backoff[$p]} s; log: $RUN/log/$p.log"
      tail -n 5 "$RUN/log/$p.log" >&2 || true
    elif ((SECONDS >= next[$p])); then
      start_part "$p"
      say "$p restarted (pid $(cat "$RUN/pids/$p.pid"))"
      since[$p]=$SECONDS next[$p]=0
      backoff[$p]=$((backoff[$p] * 2 > 30 ? 30 : backoff[$p] * 2))
    fi
  done
done
