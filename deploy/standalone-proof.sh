#!/usr/bin/env bash
# standalone-proof.sh — `make standalone-proof`: imagevol against a standalone Temporal server on
# PostgreSQL (deploy/temporal-pg.sh, not the dev server), with its cache rows in MariaDB and two
# storage hosts, each with its own worker: node1 on pool volumes, node2 on pool volumes2.
#
# It installs and starts what is missing (Ceph with pools volumes and volumes2, Glance, MariaDB,
# the standalone Temporal server), builds imagevol, makes a MariaDB database of its own, runs
# imagevol-migrate --temporal-setup (schema, namespace "imagevol", search attributes), starts one
# gateway (127.0.0.1:8796) and the two workers from one YAML config file, and runs the checks of
# ./standaloneproof/ against them (PROOF_* and the services' env carry the addresses and token):
# two 64 MiB random raw images uploaded to Glance and provisioned, per host, a miss and then a
# hit, plus a hit on each host from the other host's cache volume. Every volume must become
# available; its bytes, read back from RBD, must hash to the image's sha512; its workflow must be
# completed in PostgreSQL's visibility store, have its execution row in the store, and replay
# against the workflow code. Then the test deletes the volumes and evicts the cache entries
# through the API, checks no image of theirs is left in the pools or their trash, and deletes the
# Glance images; this script drops the database and stops what it started (services already
# running stay up). It exits non-zero on any failure.
#
# Report: $IMAGEVOL_RUN_DIR/standalone-proof/report.txt (also printed).
# Env: PROOF_WAIT (seconds a wave of volumes may take to become available, default 180).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GOTOOLCHAIN=local

start=$SECONDS
DIR=$RUN/standalone-proof
API=http://127.0.0.1:8796
NAMESPACE=imagevol
DB_NAME=imagevol_proof
mkdir -p "$DIR"
rm -f "$DIR/report.txt" "$DIR"/replay-*.txt "$DIR/export.err"

started=()     # services of ceph.sh/glance.sh/mariadb.sh this script started
started_bg=()  # processes under $RUN/pids this script started
temporal_pg="" # set when this script started deploy/temporal-pg.sh's server
db_made=""
failed=0

fail() { say "FAIL: $*"; failed=1; }

# teardown: stop what the proof started (the test has removed what it made, through the API
# and, for what the API left, directly in RBD).
# shellcheck disable=SC2317 # run by the EXIT trap
teardown() {
  local rc=$? i s other
  set +e
  trap - EXIT INT TERM
  for ((i = ${#started_bg[@]} - 1; i >= 0; i--)); do stop_bg "${started_bg[i]}"; done
  if [ -n "$temporal_pg" ]; then
    "$here/temporal-pg.sh" drop >/dev/null 2>&1 || fail "temporal-pg.sh drop"
    "$here/temporal-pg.sh" stop >/dev/null 2>&1
    say "stopped the standalone Temporal server and dropped its databases"
  fi
  if [ -n "$db_made" ]; then
    "$(command -v mariadb || command -v mysql)" -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $DB_NAME" || fail "drop $DB_NAME"
  fi
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    s=${started[i]}
    if other=$(others_running "test|run|bench|faults"); then
      say "leaving $s running: pid $other may be using it"
      continue
    fi
    service "$s" stop >/dev/null 2>&1 || true
    say "stopped $s"
  done
  [ "$rc" != 0 ] || [ "$failed" = 0 ] || rc=1
  say "standalone proof $([ "$rc" = 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- services -------------------------------------------------------------------------------------

"$here/install-deps.sh" all
make -C "$TOP" --no-print-directory build

up ceph '^mon\.a running' || started+=(ceph)
# start is idempotent; it also creates volumes2 on a cluster that was already running.
CEPH_POOLS="volumes volumes2" "$here/ceph.sh" start
up glance 'pid [0-9]' || started+=(glance)
service glance start
"$here/mariadb.sh" status >/dev/null 2>&1 || started+=(mariadb)
"$here/mariadb.sh" start
load_env ceph glance mariadb

# A Temporal store of its own when this script starts the server; one already running is used
# as it is (every check below is scoped to this run's workflows).
if ! "$here/temporal-pg.sh" status >/dev/null 2>&1; then
  temporal_pg=1
  if pg_isready -q -h 127.0.0.1 -p "${PG_PORT:-5432}" -t 3 2>/dev/null; then
    "$here/temporal-pg.sh" drop >/dev/null 2>&1 || true
  fi
fi
"$here/temporal-pg.sh" start
load_env temporal-pg

mysql_bin=$(command -v mariadb || command -v mysql)
"$mysql_bin" -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME CHARACTER SET utf8mb4"
db_made=1

# --- imagevol -------------------------------------------------------------------------------------

# The proof's one token acts for project proof and, as it also drives the cache routes, is an
# operator's. The gateway refuses a tokens file others may read: both files are made 0600.
TOKEN=$(keep_token "$DIR/token")
(umask 077 && echo "$TOKEN proof admin" >"$DIR/tokens")
chmod 600 "$DIR/tokens"
# One file for the gateway and both workers, as deployed (docs/deploy.md); the DSN, as a secret,
# comes from the environment; each worker's host and pool from its flags.
cat >"$DIR/imagevol.yaml" <<EOF
# Written by deploy/standalone-proof.sh.
temporal:
  address: $TEMPORAL_PG_ADDRESS
  namespace: $NAMESPACE
glance:
  url: $GLANCE_URL
gateway:
  listen: ${API#http://}
  hosts: [node1, node2]
  tokens_file: $DIR/tokens
  temporal_ui: ""
  reconcile_every: 0s
worker:
  ceph_conf: $CEPH_CONF
  # its own Ceph user (deploy/ceph.sh makes it): the rbd profile on the pools, nothing more
  ceph_user: $IMAGEVOL_CEPH_USER
  ceph_keyring: $IMAGEVOL_CEPH_KEYRING
  cache:
    enabled: true
  max_concurrent_activities: 8
EOF
# Only this file and the DSN: none of the caller's IMAGEVOL_*, GLANCE_* or CEPH_* settings.
proc_env=(env -i "PATH=$PATH" "HOME=${HOME:-$DIR}" "IMAGEVOL_CONFIG=$DIR/imagevol.yaml"
  "IMAGEVOL_DB_DSN=${IMAGEVOL_TEST_DSN}$DB_NAME" "IMAGEVOL_RUN_DIR=$DIR")

"${proc_env[@]}" "$BIN/imagevol-migrate" --temporal-setup --retention 24h | tee "$DIR/migrate.txt" >&2

bg() {
  ! running "$1" || { say "$1 is already running (pid $(pid_of "$1")): stop it first"; exit 1; }
  started_bg+=("$1")
  start_bg "$@"
}
if listening "${API##*:}"; then say "127.0.0.1:${API##*:} is already taken"; exit 1; fi
bg sp-worker-node1 "${proc_env[@]}" "$BIN/imagevol-worker" --host node1 --pool volumes
bg sp-worker-node2 "${proc_env[@]}" "$BIN/imagevol-worker" --host node2 --pool volumes2
bg sp-gateway "${proc_env[@]}" "$BIN/imagevol-gateway"
wait_http "$API/healthz" 60 sp-gateway
settle sp-worker-node1 sp-worker-node2 || exit 1
say "gateway $API, workers node1 (volumes) and node2 (volumes2), Temporal $TEMPORAL_PG_ADDRESS namespace $NAMESPACE"

# --- checks -------------------------------------------------------------------------------------

# The checks, and the removal of the volumes, cache entries and images they make, are Go
# (./standaloneproof/); they read the stack's addresses and the token from the environment.
export PROOF_API=$API PROOF_TOKEN=$TOKEN PROOF_DIR=$DIR PROOF_NAMESPACE=$NAMESPACE PROOF_DB=$DB_NAME
export CEPH_CONF GLANCE_URL TEMPORAL_PG_ADDRESS
cd "$TOP"
go test -tags 'pacific standalone' -count=1 -v -timeout 30m ./standaloneproof/
