#!/usr/bin/env bash
# bench.sh — `make bench`: bring the stack up as `deploy/run.sh --no-demo --detach` does, but with
# two storage hosts on the one Ceph cluster (worker node1 on pool volumes, worker node2 on pool
# volumes2, gateway placing on both), run bin/imagevol-bench against it, and stop again only what
# this script started (services that were already running stay up).
#
# Then, unless BENCH_STANDALONE=0, it measures the cache hits again on the standalone Temporal
# server on PostgreSQL (deploy/temporal-pg.sh): the main stack's processes it started are
# stopped, the server is started (on a store of its own when it was not running), workers node1
# and node2 and a gateway on 127.0.0.1:8778 are started against it, and `imagevol-bench -only
# hits -row standalone` merges their figures into latest.json as its "standalone" row.
#
# Results: bench/results/latest.json, latest.md, hit_latency.png, miss_by_size.png (and
# standalone.json, the standalone run's own figures).
# Env: BENCH_QUICK=1       small sizes and counts, for development (a full run takes ~10-20 min)
#      BENCH_ARGS          extra imagevol-bench flags, e.g. "-keep-images", "-out DIR", or
#                          "-rounds 2 -cases warm-up,miss" to measure the misses alone
#      BENCH_STANDALONE=0  skip the standalone Temporal server's row
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GOTOOLCHAIN=local

"$here/install-deps.sh" all
make -C "$TOP" --no-print-directory build
(cd "$TOP" && go build -tags pacific -o bin/ ./cmd/imagevol-bench)

started=()    # services of ceph.sh/glance.sh this script started
started_bg=() # processes under $RUN/pids this script started
SA=$RUN/bench-standalone # the standalone row's pids, logs and scratch: RUN of its processes
sa_bg=()                 # processes under $SA/pids this script started
sa_temporal=""           # set when this script started deploy/temporal-pg.sh's server
sa_db=""                 # set once the standalone row's database was made

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$? i s other
  set +e
  stop_ours
  standalone_down
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    s=${started[i]}
    if other=$(others_running "test|run"); then
      say "leaving $s running: pid $other (deploy/test.sh or run.sh) may be using it"
      continue
    fi
    service "$s" stop >/dev/null 2>&1 || true
    say "stopped $s"
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop_ours: stop the main stack's processes this script started.
stop_ours() {
  local i
  for ((i = ${#started_bg[@]} - 1; i >= 0; i--)); do stop_bg "${started_bg[i]}"; done
  started_bg=()
}

up ceph '^mon\.a running' || started+=(ceph)
# start is idempotent; it also creates volumes2 and volumes3 on a cluster that was already running.
CEPH_POOLS="volumes volumes2 volumes3" "$here/ceph.sh" start
up glance 'pid [0-9]' || started+=(glance)
service glance start
# A Glance whose store is the cluster's images pool, for the miss that clones instead of downloading.
up glance-rbd 'pid [0-9]' || started+=(glance-rbd)
service glance-rbd start
load_env ceph glance glance-rbd
# Cache rows in MySQL (MariaDB) through gorm, as the engine is deployed, in a database of its own
# made afresh for the run.
"$here/mariadb.sh" status >/dev/null 2>&1 || started+=(mariadb)
"$here/mariadb.sh" start
load_env mariadb
mysql_bin=$(command -v mariadb || command -v mysql)
"$mysql_bin" -h 127.0.0.1 -u root -e 'DROP DATABASE IF EXISTS imagevol_bench; CREATE DATABASE imagevol_bench'
export IMAGEVOL_DB_DSN="${IMAGEVOL_TEST_DSN}imagevol_bench"

# The same token and env file as run.sh, so `. .run/env && bin/imagevolctl list` works meanwhile.
write_run_env

# bg NAME CMD...: start_bg, remembering NAME when it was not already running.
bg() {
  [ -n "$(pid_of "$1")" ] || started_bg+=("$1")
  start_bg "$@"
}
mkdir -p "$RUN/temporal"
bg temporal "$BIN/imagevol-devserver" --db "$RUN/temporal/temporal.db" --ip 127.0.0.1 --port 7233 --ui-port 8233
wait_http http://127.0.0.1:8233/ 120 temporal
# Metrics for the SDK's failure counters the lost-result check reads (the gateway serves its own).
bg worker-node1 "$BIN/imagevol-worker" --host node1 --pool volumes --metrics-listen 127.0.0.1:9481
bg worker-node2 "$BIN/imagevol-worker" --host node2 --pool volumes2 --metrics-listen 127.0.0.1:9482
# no quotas: the burst alone makes 50 volumes of one project
bg gateway "$BIN/imagevol-gateway" --hosts node1,node2 --default-quota-volumes -1 --default-quota-gigabytes -1
wait_http http://127.0.0.1:8776/healthz 60 gateway
# node3 (pool volumes3) reads its images from the Glance on RBD, behind a gateway of its own.
GLANCE_URL=$GLANCE_RBD_URL bg worker-node3 "$BIN/imagevol-worker" --host node3 --pool volumes3 --metrics-listen 127.0.0.1:9483
GLANCE_URL=$GLANCE_RBD_URL bg gateway-store "$BIN/imagevol-gateway" --hosts node3 --listen 127.0.0.1:8777 \
  --default-quota-volumes -1 --default-quota-gigabytes -1
wait_http http://127.0.0.1:8777/healthz 60 gateway-store
export IMAGEVOL_STORE_URL=http://127.0.0.1:8777 GLANCE_RBD_URL GLANCE_RBD_LOG
settle worker-node1 worker-node2 worker-node3 || exit 1
if ! tr '\0' ' ' <"/proc/$(pid_of gateway)/cmdline" | grep -q 'node2'; then
  say "warning: the gateway was already running and was not started with --hosts node1,node2; the burst may not reach node2"
fi
say "stack up: gateway http://127.0.0.1:8776 (hosts node1, node2), Temporal UI http://127.0.0.1:8233"

# shellcheck disable=SC2206 # BENCH_ARGS is a list of flags
extra=(${BENCH_ARGS:-})
out=$TOP/bench/results
for ((i = 0; i < ${#extra[@]} - 1; i++)); do
  [ "${extra[i]}" != -out ] || out=${extra[i + 1]}
done
common=(-out "$out" -work "$RUN/bench")
[ "${BENCH_QUICK:-}" != 1 ] || common+=(-quick)
# Every worker's and gateway's SDK counters, node3's and the store gateway's included.
metrics=http://127.0.0.1:8776/metrics,http://127.0.0.1:8777/metrics
metrics+=,http://127.0.0.1:9481/metrics,http://127.0.0.1:9482/metrics,http://127.0.0.1:9483/metrics
logs=$RUN/log/worker-node1.log,$RUN/log/worker-node2.log,$RUN/log/worker-node3.log
logs+=,$RUN/log/gateway.log,$RUN/log/gateway-store.log,$RUN/log/temporal.log
cd "$TOP"
t0=$(date +%s)
rc=0
"$BIN/imagevol-bench" "${common[@]}" -run-dir "$RUN" -sdk-metrics "$metrics" -logs "$logs" "${extra[@]}" || rc=$?
say "benchmark finished in $(($(date +%s) - t0)) s (exit $rc)"

# standalone_up: the standalone Temporal server, a database, and workers and a gateway against
# them, as the main stack's but with their pids and logs under $SA.
standalone_up() {
  local ns=imagevol db=imagevol_bench_sa
  if ! "$here/temporal-pg.sh" status >/dev/null 2>&1; then
    sa_temporal=1
    if pg_isready -q -h 127.0.0.1 -p "${PG_PORT:-5432}" -t 3 2>/dev/null; then
      "$here/temporal-pg.sh" drop >/dev/null 2>&1 || true
    fi
  fi
  "$here/temporal-pg.sh" start
  load_env temporal-pg
  "$mysql_bin" -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  sa_db=$db
  export IMAGEVOL_TEMPORAL_ADDRESS=$TEMPORAL_PG_ADDRESS IMAGEVOL_TEMPORAL_NAMESPACE=$ns
  export IMAGEVOL_DB_DSN=${IMAGEVOL_TEST_DSN}$db IMAGEVOL_RECONCILE_EVERY=0s
  "$BIN/imagevol-migrate" --temporal-setup --retention 24h >&2
  sa_bg=(worker-node1 worker-node2 gateway)
  RUN=$SA start_bg worker-node1 "$BIN/imagevol-worker" --host node1 --pool volumes --metrics-listen 127.0.0.1:9491
  RUN=$SA start_bg worker-node2 "$BIN/imagevol-worker" --host node2 --pool volumes2 --metrics-listen 127.0.0.1:9492
  RUN=$SA start_bg gateway "$BIN/imagevol-gateway" --hosts node1,node2 --listen 127.0.0.1:8778 \
    --default-quota-volumes -1 --default-quota-gigabytes -1
  RUN=$SA wait_http http://127.0.0.1:8778/healthz 60 gateway || return 1
  RUN=$SA settle worker-node1 worker-node2 || return 1
  say "standalone: gateway http://127.0.0.1:8778, Temporal $TEMPORAL_PG_ADDRESS namespace $ns"
}

# standalone_down: stop what standalone_up started, drop its database, and the Temporal server's
# store and the server when this script started it.
# shellcheck disable=SC2317 # also run by the EXIT trap
standalone_down() {
  local i
  for ((i = ${#sa_bg[@]} - 1; i >= 0; i--)); do RUN=$SA stop_bg "${sa_bg[i]}"; done
  sa_bg=()
  [ -z "$sa_db" ] || "$mysql_bin" -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $sa_db"
  sa_db=""
  if [ -n "$sa_temporal" ]; then
    "$here/temporal-pg.sh" drop >/dev/null 2>&1
    "$here/temporal-pg.sh" stop >/dev/null 2>&1
    say "stopped the standalone Temporal server and dropped its store"
  fi
  sa_temporal=""
}

if [ "${BENCH_STANDALONE:-1}" != 0 ]; then
  t1=$(date +%s)
  # The idle dev server and workers would count in the standalone run's CPU per hit.
  stop_ours
  mkdir -p "$SA"
  src=0
  if standalone_up; then
    "$BIN/imagevol-bench" "${common[@]}" -run-dir "$SA" -only hits -row standalone \
      -gateway http://127.0.0.1:8778 -temporal "$TEMPORAL_PG_ADDRESS" -namespace imagevol \
      -sdk-metrics http://127.0.0.1:8778/metrics,http://127.0.0.1:9491/metrics,http://127.0.0.1:9492/metrics \
      -logs "$SA/log/worker-node1.log,$SA/log/worker-node2.log,$SA/log/gateway.log,$RUN/temporal-pg/log/temporal-server.log" \
      "${extra[@]}" || src=$?
  else
    src=1
  fi
  standalone_down
  say "standalone row finished in $(($(date +%s) - t1)) s (exit $src)"
  [ "$src" = 0 ] || [ "$rc" != 0 ] || rc=$src
fi
[ ! -s "$out/latest.md" ] || sed -n '/^| figure/,/^$/p;/^| stack/,/^$/p' "$out/latest.md" >&2
say "results in $out (latest.md)"
exit "$rc"
