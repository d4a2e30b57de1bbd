#!/usr/bin/env bash
# faults.sh — `make test-faults`: provisions that survive faults. Brings up a stack of its own
# beside the shared services (a Temporal dev server on 7243/8243 with its SQLite store under
# .run/faults, a private MariaDB on 3307, worker fault1 on pool "volumes", a gateway on
# 127.0.0.1:8786), runs the tests of ./faults/ against it, and stops what it started. Ceph and
# Glance are the shared ones (started here only if they are not running); the OSD and Glance
# cases stop them briefly, so run this on its own, not beside `make test` or `make bench`.
#
# Usage: deploy/faults.sh [run]     up, go test ./faults/ (extra args go to go test), down
#        deploy/faults.sh up|down   the private stack only
#        deploy/faults.sh kill-worker|start-worker|start-worker2|stop-worker2|stop-temporal|
#                         start-temporal|stop-mariadb|start-mariadb|stop-glance|start-glance|
#                         restart-osd
#                                   the faults, as the tests inject them (FAULTS_CTL)
#        deploy/faults.sh restart-gateway [TIMEOUT]
#                                   the gateway again, with that provision timeout (default 1h)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$here/.." && pwd)
# Ceph and Glance live in the shared run dir; everything of this stack under its own. The verbs
# the tests run inherit IMAGEVOL_RUN_DIR=<shared>/faults, so the shared dir is passed on apart.
SHARED=${FAULTS_SHARED_RUN_DIR:-${IMAGEVOL_RUN_DIR:-$TOP/.run}}
mkdir -p "$SHARED"
SHARED=$(cd "$SHARED" && pwd)
export FAULTS_SHARED_RUN_DIR=$SHARED IMAGEVOL_RUN_DIR=$SHARED/faults
. "$here/lib.sh"

TEMPORAL_PORT=7243
TEMPORAL_UI_PORT=8243
DB_PORT=3307
DB_NAME=imagevol_faults
API=127.0.0.1:8786
HOST=fault1
POOL=volumes

# glance is the file-store Glance (service in lib.sh)
shared() { IMAGEVOL_RUN_DIR=$SHARED service "$@"; }
private_db() { MARIADB_PORT=$DB_PORT "$here/mariadb.sh" "$@"; }

# stack_env: what the worker and gateway read, and the tests' addresses.
stack_env() {
  RUN=$SHARED load_env ceph glance
  export CEPH_CONF GLANCE_URL
  export IMAGEVOL_TEMPORAL_ADDRESS=127.0.0.1:$TEMPORAL_PORT
  export IMAGEVOL_DB_DSN="root@tcp(127.0.0.1:$DB_PORT)/$DB_NAME"
  export TEMPORAL_UI_URL=http://127.0.0.1:$TEMPORAL_UI_PORT
  IMAGEVOL_TOKEN=$(keep_token "$RUN/token")
  export IMAGEVOL_TOKEN IMAGEVOL_PROJECT=faults
}

start_temporal() {
  mkdir -p "$RUN/temporal"
  start_bg temporal "$BIN/imagevol-devserver" --db "$RUN/temporal/temporal.db" --ip 127.0.0.1 \
    --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT"
  wait_http "http://127.0.0.1:$TEMPORAL_UI_PORT/" 120 temporal
}

start_worker() {
  start_bg "worker-$HOST" "$BIN/imagevol-worker" --host "$HOST" --pool "$POOL"
  settle "worker-$HOST"
}

# start_worker2: a second worker process serving the same host's queue (and pool), so that a
# crashed worker's steps move to a live one.
start_worker2() {
  start_bg "worker-$HOST-b" "$BIN/imagevol-worker" --host "$HOST" --pool "$POOL"
  settle "worker-$HOST-b"
}

start_gateway() {
  start_bg gateway "$BIN/imagevol-gateway" --hosts "$HOST" --reconcile-every 0 --listen "$API" \
    --provision-timeout "${1:-1h}" --default-quota-volumes -1 --default-quota-gigabytes -1
  wait_http "http://$API/healthz" 60 gateway
}

start_db() {
  private_db start
  # a server on the port that mariadb.sh did not start could not be stopped for the fault
  private_db status | grep -q '^our mariadbd' || { say "127.0.0.1:$DB_PORT is not our own mariadbd"; return 1; }
}

# kill_strays kills imagevol processes left by an earlier run of this stack that was itself
# killed before it could stop them: they keep dialling this stack's Temporal port, and once the
# new server is up a stray worker would take this run's tasks with its old code and settings.
kill_strays() {
  local env_file pid name
  for env_file in /proc/[0-9]*/environ; do
    pid=${env_file#/proc/}
    pid=${pid%/environ}
    name=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    case "$name" in imagevol-*) ;; *) continue ;; esac
    # a worker or gateway of this stack's Temporal, or that Temporal itself
    tr '\0' '\n' <"$env_file" 2>/dev/null | grep -qx "IMAGEVOL_TEMPORAL_ADDRESS=127.0.0.1:$TEMPORAL_PORT" ||
      tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--port $TEMPORAL_PORT " || continue
    kill -KILL "$pid" 2>/dev/null && say "killed a stray $name (pid $pid) of an earlier fault run"
  done
  return 0
}

cmd_up() {
  local s
  kill_strays
  # answers: refuse ports held by something else rather than test against it
  for s in "$TEMPORAL_PORT" "$TEMPORAL_UI_PORT" "${API##*:}"; do
    if listening "$s"; then
      say "127.0.0.1:$s is already taken"
      return 1
    fi
  done
  start_db
  "$(command -v mariadb || command -v mysql)" --no-defaults -h 127.0.0.1 -P "$DB_PORT" -u root \
    -e "DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME"
  stack_env
  # a fresh Temporal store: every workflow in it belongs to this run (the tests scope on it)
  rm -f "$RUN/temporal/temporal.db"*
  start_temporal
  start_worker
  start_gateway
  say "faults stack up: gateway http://$API, Temporal UI http://127.0.0.1:$TEMPORAL_UI_PORT"
}

cmd_down() {
  stop_bg gateway
  stop_bg "worker-$HOST"
  stop_bg "worker-$HOST-b"
  stop_bg temporal
  private_db stop
}

cmd_run() {
  local started=() rc=0 s
  # one case at a time: its 1 GiB image in Glance's store, its volume and cache volume in Ceph
  need_disk 4 "the fault suite"
  "$here/install-deps.sh" all
  make -C "$TOP" --no-print-directory build
  for s in ceph glance; do
    shared "$s" status >/dev/null 2>&1 || started+=("$s")
    shared "$s" start
  done
  # shellcheck disable=SC2317 # called by the trap
  cleanup() {
    set +e
    cmd_down
    for s in "${started[@]}"; do shared "$s" stop >/dev/null 2>&1; done
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  cmd_up
  export FAULTS_API=http://$API FAULTS_TOKEN=$IMAGEVOL_TOKEN FAULTS_DSN=$IMAGEVOL_DB_DSN \
    FAULTS_POOL=$POOL FAULTS_HOST=$HOST FAULTS_CTL=$here/faults.sh
  cd "$TOP"
  local t0=$SECONDS
  go test -tags 'pacific faults' -count=1 -timeout 30m -v "$@" ./faults/ || rc=$?
  say "fault tests finished in $((SECONDS - t0)) s (exit $rc)"
  return "$rc"
}

case "${1:-run}" in
  run) shift || true; cmd_run "$@" ;;
  up) cmd_up ;;
  down) cmd_down ;;
  kill-worker)
    pid=$(pid_of "worker-$HOST")
    [ -n "$pid" ] || { say "worker-$HOST is not running"; exit 1; }
    kill -KILL "$pid"
    wait_until -i 0.05 60 ! running "worker-$HOST" || { say "worker-$HOST (pid $pid) still runs 60 s after SIGKILL"; exit 1; }
    rm -f "$RUN/pids/worker-$HOST.pid"
    say "killed worker-$HOST (pid $pid) with SIGKILL"
    ;;
  start-worker) stack_env && start_worker ;;
  start-worker2) stack_env && start_worker2 ;;
  stop-worker2) stop_bg "worker-$HOST-b" ;;
  stop-temporal) stop_bg temporal ;;
  start-temporal) start_temporal ;;
  stop-mariadb) private_db stop ;;
  start-mariadb) start_db ;;
  stop-glance) shared glance stop ;;
  start-glance) shared glance start ;;
  restart-osd) shared ceph restart-osd ;;
  restart-gateway) stop_bg gateway && stack_env && start_gateway "${2:-}" ;;
  *) usage 2,17 ;;
esac
