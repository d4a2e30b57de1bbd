#!/usr/bin/env bash
# bench.sh — `make bench`: bring the stack up as `deploy/run.sh --no-demo --detach` does, but with
# two storage hosts on the one Ceph cluster (worker node1 on pool volumes, worker node2 on pool
# volumes2, gateway placing on both), run bin/imagevol-bench against it, and stop again only what
# this script started (services that were already running stay up).
#
# Results: bench/results/latest.json, latest.md, hit_latency.png, miss_by_size.png.
# Env: BENCH_QUICK=1  small sizes and counts, for development (a full run takes ~10-20 min)
#      BENCH_ARGS     extra imagevol-bench flags, e.g. "-keep-images", "-out DIR", or
#                     "-rounds 2 -cases warm-up,miss" to measure the misses alone
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GOTOOLCHAIN=local

"$here/install-deps.sh" all
make -C "$TOP" --no-print-directory build
(cd "$TOP" && go build -tags pacific -o bin/ ./cmd/imagevol-bench)

started=()    # services of ceph.sh/glance.sh this script started
started_bg=() # processes under $RUN/pids this script started

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$? i s other
  set +e
  for ((i = ${#started_bg[@]} - 1; i >= 0; i--)); do stop_bg "${started_bg[i]}"; done
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
"$(command -v mariadb || command -v mysql)" -h 127.0.0.1 -u root -e 'DROP DATABASE IF EXISTS imagevol_bench; CREATE DATABASE imagevol_bench'
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
bg worker-node1 "$BIN/imagevol-worker" --host node1 --pool volumes
bg worker-node2 "$BIN/imagevol-worker" --host node2 --pool volumes2
# no quotas: the burst alone makes 50 volumes of one project
bg gateway "$BIN/imagevol-gateway" --hosts node1,node2 --default-quota-volumes -1 --default-quota-gigabytes -1
wait_http http://127.0.0.1:8776/healthz 60 gateway
# node3 (pool volumes3) reads its images from the Glance on RBD, behind a gateway of its own.
GLANCE_URL=$GLANCE_RBD_URL bg worker-node3 "$BIN/imagevol-worker" --host node3 --pool volumes3
GLANCE_URL=$GLANCE_RBD_URL bg gateway-store "$BIN/imagevol-gateway" --hosts node3 --listen 127.0.0.1:8777 \
  --default-quota-volumes -1 --default-quota-gigabytes -1
wait_http http://127.0.0.1:8777/healthz 60 gateway-store
export IMAGEVOL_STORE_URL=http://127.0.0.1:8777 GLANCE_RBD_URL GLANCE_RBD_LOG
settle worker-node1 worker-node2 worker-node3 || exit 1
if ! tr '\0' ' ' <"/proc/$(pid_of gateway)/cmdline" | grep -q 'node2'; then
  say "warning: the gateway was already running and was not started with --hosts node1,node2; the burst may not reach node2"
fi
say "stack up: gateway http://127.0.0.1:8776 (hosts node1, node2), Temporal UI http://127.0.0.1:8233"

out=$TOP/bench/results
# shellcheck disable=SC2206 # BENCH_ARGS is a list of flags
extra=(${BENCH_ARGS:-})
# An -out in BENCH_ARGS wins (the last flag does); the table shown at the end is read from there.
for ((i = 0; i < ${#extra[@]}; i++)); do
  case ${extra[i]} in
  -out | --out) out=${extra[i + 1]:-$out} ;;
  -out=* | --out=*) out=${extra[i]#*=} ;;
  esac
done
args=(-out "$TOP/bench/results" -work "$RUN/bench" -run-dir "$RUN")
[ "${BENCH_QUICK:-}" != 1 ] || args+=(-quick)
args+=("${extra[@]}")
cd "$TOP"
t0=$(date +%s)
rc=0
"$BIN/imagevol-bench" "${args[@]}" || rc=$?
[ ! -s "$out/latest.md" ] || sed -n '/^| figure/,/^$/p' "$out/latest.md" >&2
say "benchmark finished in $(($(date +%s) - t0)) s (exit $rc); results in $out (latest.md)"
exit "$rc"
