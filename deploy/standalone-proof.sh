#!/usr/bin/env bash
# standalone-proof.sh — `make standalone-proof`: imagevol against a standalone Temporal server on
# PostgreSQL (deploy/temporal-pg.sh, not the dev server), with its cache rows in MariaDB and two
# storage hosts, each with its own worker: node1 on pool volumes, node2 on pool volumes2.
#
# It installs and starts what is missing (Ceph with pools volumes and volumes2, Glance, MariaDB,
# the standalone Temporal server), builds imagevol, makes a MariaDB database of its own, runs
# imagevol-migrate --temporal-setup (schema, namespace "imagevol", search attributes), starts one
# gateway (127.0.0.1:8796) and the two workers from one YAML config file, uploads two 64 MiB
# random raw images to Glance and provisions, per host, a miss and then a hit, plus a hit on each
# host from the other host's cache volume. Every volume must become available; its bytes, read
# back from RBD, must hash to the image's sha512; its workflow must be completed in PostgreSQL's
# visibility store, have its execution row in the store, and replay against the workflow code.
# Then it deletes the volumes and evicts the cache entries through the API, checks no image of
# theirs is left in the pools or their trash, deletes the Glance images and the database, and
# stops what it started (services already running stay up). It exits non-zero on any failure.
#
# Report: $IMAGEVOL_RUN_DIR/standalone-proof/report.txt (also printed).
# Env: PROOF_WAIT (seconds a wave of volumes may take to become available, default 180).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GOTOOLCHAIN=local

T0=$SECONDS
DIR=$RUN/standalone-proof
API=http://127.0.0.1:8796
NAMESPACE=imagevol
DB_NAME=imagevol_proof
WAIT=${PROOF_WAIT:-180}
IMAGE_MIB=64
PY=/usr/bin/python3
mkdir -p "$DIR"
rm -f "$DIR/report.txt" "$DIR"/replay-*.txt "$DIR/export.err"

started=()     # services of ceph.sh/glance.sh/mariadb.sh this script started
started_bg=()  # processes under $RUN/pids this script started
temporal_pg="" # set when this script started deploy/temporal-pg.sh's server
db_made=""
images=()   # Glance images uploaded
volumes=()  # volume IDs created
cache_vols=() # the volume IDs of their cache entries
failed=0
reported=""

fail() { say "FAIL: $*"; failed=1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# jget KEY... < JSON: the values of top-level keys, one per line ("" for a missing one).
jget() {
  "$PY" -c 'import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = d.get(k)
    print("" if v is None else v)' "$@"
}

# api METHOD PATH [BODY]: the gateway's answer, body then the HTTP status on a line of its own.
api() {
  local args=(-sS -m 30 -X "$1" -H "Authorization: Bearer $TOKEN" -w '\n%{http_code}')
  [ $# -lt 3 ] || args+=(-H 'Content-Type: application/json' -d "$3")
  curl "${args[@]}" "$API$2"
}
body() { sed '$d' <<<"$1"; }
code() { tail -n 1 <<<"$1"; }

rbdc() { timeout 120 rbd -c "$CEPH_CONF" "$@"; }
pool_of() { case "$1" in node1) echo volumes ;; node2) echo volumes2 ;; esac; }

# cache_entries: the cache entries of the proof's images, one a line:
# ID VOLUME_ID HOST POOL IMAGE_ID HITS STATE
cache_entries() {
  local r
  r=$(api GET /v1/cache) && [ "$(code "$r")" = 200 ] || return 1
  body "$r" | "$PY" -c 'import json, sys
imgs = set(sys.argv[1:])
for e in json.load(sys.stdin)["entries"] or []:
    if e["image_id"] in imgs:
        print(e["id"], e["volume_id"], e["host"], e["pool"], e["image_id"], e["hits"], e["state"])' "${images[@]}"
}


# teardown: remove what the proof made (through the API while the gateway runs, then whatever
# is left directly in RBD), then stop what it started.
teardown() {
  local rc=$? i s other r id vol ids=() leftovers=() pool n=0 evicted=0
  set +e
  trap - EXIT INT TERM
  if [ -n "$(pid_of sp-gateway)" ]; then
    for id in "${volumes[@]}"; do
      r=$(api DELETE "/v1/volumes/$id")
      case "$(code "$r")" in 202 | 204 | 404) ;; *) fail "delete volume $id: $(code "$r") $(body "$r")" ;; esac
    done
    i=$((SECONDS + 60))
    while :; do
      n=0
      for id in "${volumes[@]}"; do [ "$(code "$(api GET "/v1/volumes/$id")")" = 404 ] || n=$((n + 1)); done
      [ "$n" = 0 ] || [ "$SECONDS" -ge "$i" ] && break
      sleep 0.2
    done
    [ "$n" = 0 ] || fail "$n volumes still there 60 s after DELETE"
    # The cache entries of the proof's images: evicted now (their clones are gone).
    r=$(cache_entries) || fail "could not list the cache entries"
    while read -r id vol _; do
      [ -n "$id" ] || continue
      [[ " ${cache_vols[*]} " == *" $vol "* ]] || cache_vols+=("$vol")
      r=$(api DELETE "/v1/cache/$id?force=true")
      case "$(code "$r")" in
        200 | 202) evicted=$((evicted + 1)) ;; # 202: the eviction outlived the request; waited on below
        *) fail "evict cache entry $id: $(code "$r") $(body "$r")" ;;
      esac
    done <<<"$r"
    i=$((SECONDS + 60))
    while [ "$evicted" -gt 0 ]; do
      n=$(cache_entries | grep -c . || true)
      [ "$n" = 0 ] && break
      [ "$SECONDS" -lt "$i" ] || { fail "$n cache entries of the proof's images still listed 60 s after eviction"; break; }
      sleep 0.2
    done
  fi
  # Every cache volume seen, whether the API evicted it or not.
  ids=("${volumes[@]}" "${cache_vols[@]}")
  # Nothing of the proof may be left in the shared pools or their trash: remove what is, and fail.
  if [ ${#ids[@]} -gt 0 ] && [ -n "${CEPH_CONF:-}" ]; then
    for pool in volumes volumes2; do
      for id in "${ids[@]}"; do
        while read -r s; do
          [ -n "$s" ] || continue
          leftovers+=("$pool/$s")
          rbdc snap purge "$pool/$s" >/dev/null 2>&1
          rbdc rm "$pool/$s" >/dev/null 2>&1
        done < <(rbdc ls "$pool" 2>/dev/null | grep -F -- "$id")
        while read -r s; do
          [ -n "$s" ] || continue
          leftovers+=("$pool trash ${s#* }")
          rbdc trash rm --force "$pool/${s%% *}" >/dev/null 2>&1
        done < <(rbdc trash ls "$pool" 2>/dev/null | grep -F -- "$id")
      done
    done
  fi
  [ ${#leftovers[@]} = 0 ] || fail "left in RBD after deleting through the API (now removed): ${leftovers[*]}"
  for id in "${images[@]}"; do
    curl -sS -m 30 -o /dev/null -X DELETE "${GLANCE_URL%/}/v2/images/$id" || fail "delete Glance image $id"
  done
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
    "$here/$s.sh" stop >/dev/null 2>&1 || true
    say "stopped $s"
  done
  [ "$rc" != 0 ] || [ "$failed" = 0 ] || rc=1
  if [ -n "$reported" ]; then
    {
      echo "teardown: ${#volumes[@]} volumes deleted and $evicted cache entries evicted through the API;" \
        "$([ ${#leftovers[@]} = 0 ] && echo "no image of theirs left in volumes, volumes2 or their trash" || echo "LEFTOVERS: ${leftovers[*]}")"
      echo "result: $([ "$rc" = 0 ] && echo PASS || echo FAIL), wall time $((SECONDS - T0)) s"
    } | tee -a "$DIR/report.txt"
  fi
  say "standalone proof $([ "$rc" = 0 ] && echo passed || echo FAILED) in $((SECONDS - T0)) s"
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
"$here/glance.sh" start
"$here/mariadb.sh" status >/dev/null 2>&1 || started+=(mariadb)
"$here/mariadb.sh" start
. "$RUN/ceph/env"
. "$RUN/glance/env"
. "$RUN/mariadb/env"

# A Temporal store of its own when this script starts the server; one already running is used
# as it is (every check below is scoped to this run's workflows).
if ! "$here/temporal-pg.sh" status >/dev/null 2>&1; then
  temporal_pg=1
  pg_isready -q -h 127.0.0.1 -p "${PG_PORT:-5432}" -t 3 2>/dev/null && "$here/temporal-pg.sh" drop >/dev/null 2>&1 || true
fi
"$here/temporal-pg.sh" start
. "$RUN/temporal-pg/env"

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
  [ -n "$(pid_of "$1")" ] && { say "$1 is already running (pid $(pid_of "$1")): stop it first"; exit 1; }
  started_bg+=("$1")
  start_bg "$@"
}
if (exec 3<>"/dev/tcp/127.0.0.1/${API##*:}") 2>/dev/null; then say "127.0.0.1:${API##*:} is already taken"; exit 1; fi
bg sp-worker-node1 "${proc_env[@]}" "$BIN/imagevol-worker" --host node1 --pool volumes
bg sp-worker-node2 "${proc_env[@]}" "$BIN/imagevol-worker" --host node2 --pool volumes2
bg sp-gateway "${proc_env[@]}" "$BIN/imagevol-gateway"
wait_http "$API/healthz" 60 sp-gateway
sleep 0.5
for w in sp-worker-node1 sp-worker-node2; do
  [ -n "$(pid_of "$w")" ] || { tail -n 30 "$RUN/log/$w.log" >&2; say "$w exited"; exit 1; }
done
say "gateway $API, workers node1 (volumes) and node2 (volumes2), Temporal $TEMPORAL_PG_ADDRESS namespace $NAMESPACE"

# --- images ---------------------------------------------------------------------------------------

declare -A sha
upload() {
  local name=$1 f=$DIR/$1.raw id r st algo hash i
  head -c "${IMAGE_MIB}M" /dev/urandom >"$f"
  sha[$name]=$(sha512sum "$f" | cut -d' ' -f1)
  r=$(curl -fsS -m 30 -X POST "${GLANCE_URL%/}/v2/images" -H 'Content-Type: application/json' \
    -d "{\"name\":\"imagevol-proof-$name\",\"disk_format\":\"raw\",\"container_format\":\"bare\",\"visibility\":\"community\"}")
  id=$(jget id <<<"$r")
  [ -n "$id" ] || { say "Glance did not create an image: $r"; exit 1; }
  images+=("$id")
  curl -fsS -m 120 -X PUT "${GLANCE_URL%/}/v2/images/$id/file" -H 'Content-Type: application/octet-stream' --data-binary @"$f"
  for ((i = 0; i < 300; i++)); do
    { read -r st; read -r algo; read -r hash; } < <(curl -fsS -m 10 "${GLANCE_URL%/}/v2/images/$id" | jget status os_hash_algo os_hash_value) || true
    [ "$st" = active ] && break
    sleep 0.1
  done
  [ "$st" = active ] || { say "image $name is $st, not active, 30 s after upload"; exit 1; }
  [ "$algo" = sha512 ] && [ "$hash" = "${sha[$name]}" ] ||
    { say "Glance's $algo $hash for image $name is not the file's sha512 ${sha[$name]}"; exit 1; }
  rm -f "$f"
  image_id[$name]=$id
  say "image $name: $id, $IMAGE_MIB MiB raw, sha512 ${hash:0:16}… (Glance os_hash_value matches)"
}
declare -A image_id
upload A
upload B

# --- provisions -----------------------------------------------------------------------------------

declare -A v_name v_host v_image v_start v_secs v_cache v_wf
# create NAME IMAGE HOST: POST /v1/volumes pinned to HOST; the volume's ID in $last.
create() {
  local r id
  r=$(api POST /v1/volumes "{\"image_id\":\"${image_id[$2]}\",\"size_gb\":1,\"name\":\"proof-$1\",\"host\":\"$3\"}")
  [ "$(code "$r")" = 202 ] || { say "create $1: $(code "$r") $(body "$r")"; exit 1; }
  id=$(body "$r" | jget id)
  volumes+=("$id")
  v_name[$id]=$1 v_host[$id]=$3 v_image[$id]=$2 v_start[$id]=$(now_ms)
  last=$id
}

# wait_wave ID...: until every one is available (fails on error or after $WAIT s).
wait_wave() {
  local deadline=$((SECONDS + WAIT)) pending=("$@") next id r st err
  while [ ${#pending[@]} -gt 0 ]; do
    next=()
    for id in "${pending[@]}"; do
      r=$(api GET "/v1/volumes/$id")
      st="" err=""
      { read -r st; read -r "v_cache[$id]"; read -r "v_wf[$id]"; read -r err; } < <(body "$r" | jget status cache workflow_id error 2>/dev/null) || true
      [ "$(code "$r")" = 200 ] || { say "GET volume ${v_name[$id]}: $(code "$r") $(body "$r")"; exit 1; }
      case "$st" in
        available) v_secs[$id]=$(($(now_ms) - v_start[$id])) ;;
        error) say "volume ${v_name[$id]} ($id) failed: $err"; exit 1 ;;
        *) next+=("$id") ;;
      esac
    done
    pending=("${next[@]}")
    [ ${#pending[@]} = 0 ] && break
    [ "$SECONDS" -lt "$deadline" ] || { say "not available after $WAIT s: ${pending[*]}"; exit 1; }
    sleep 0.2
  done
}

# Wave 1: the first volume of each image, on its own host: both misses, at once.
create a-node1-miss A node1 && a1=$last
create b-node2-miss B node2 && b1=$last
wait_wave "$a1" "$b1"
# Wave 2: hits on each host, and each image on the other host, cloned across pools.
create a-node1-hit A node1 && a2=$last
create b-node2-hit B node2 && b2=$last
create a-node2-cross A node2 && a3=$last
create b-node1-cross B node1 && b3=$last
wait_wave "$a2" "$b2" "$a3" "$b3"
declare -A want_cache=([$a1]=miss [$b1]=miss [$a2]=hit [$b2]=hit [$a3]=hit [$b3]=hit)

# --- checks ---------------------------------------------------------------------------------------

declare -A v_bytes v_pg v_replay
bytes=$((IMAGE_MIB * 1024 * 1024))
for id in "${volumes[@]}"; do
  # The volume's first bytes, read back from its RBD image, against the image's sha512.
  got=$(set +o pipefail; rbdc export --no-progress "$(pool_of "${v_host[$id]}")/volume-$id" - 2>"$DIR/export.err" | head -c "$bytes" | sha512sum | cut -d' ' -f1)
  if [ "$got" = "${sha[${v_image[$id]}]}" ]; then
    v_bytes[$id]=ok
  else
    v_bytes[$id]=MISMATCH
    fail "volume ${v_name[$id]}: RBD bytes hash to ${got:0:16}…, not the image's sha512; rbd export: $(grep -v 'error writing to destination' "$DIR/export.err" | tail -n 2)"
  fi
  [ "${v_cache[$id]}" = "${want_cache[$id]}" ] || fail "volume ${v_name[$id]}: cache ${v_cache[$id]}, want ${want_cache[$id]}"
  [ "${v_wf[$id]}" = "$id" ] || fail "volume ${v_name[$id]}: the gateway gives workflow ID '${v_wf[$id]}'"
  # The workflow in PostgreSQL: its closed record in the visibility store (status 2 = completed),
  # its execution row in the store.
  vis=$("$here/temporal-pg.sh" psql-visibility -Atc "SELECT workflow_type_name || ' ' || status || ' ' || (SELECT count(*) FROM jsonb_object_keys(search_attributes)) FROM executions_visibility WHERE workflow_id = '${v_wf[$id]}'")
  rows=$("$here/temporal-pg.sh" psql -Atc "SELECT count(*) FROM executions WHERE workflow_id = '${v_wf[$id]}'")
  read -r wtype wstatus nattr <<<"$vis"
  if [ "$wtype" = CreateVolumeFromImage ] && [ "$wstatus" = 2 ] && [ "${rows:-0}" -ge 1 ]; then
    v_pg[$id]="completed, $nattr search attrs, $rows execution row"
  else
    v_pg[$id]="visibility '$vis', executions $rows"
    fail "volume ${v_name[$id]}: workflow ${v_wf[$id]} in PostgreSQL: visibility '$vis', execution rows $rows"
  fi
  # Its history, fetched from the standalone frontend, replays against the workflow code.
  if timeout 60 "$BIN/imagevol-worker" replay --address "$TEMPORAL_PG_ADDRESS" --namespace "$NAMESPACE" "${v_wf[$id]}" >"$DIR/replay-$id.txt" 2>&1; then
    v_replay[$id]=ok
  else
    v_replay[$id]=FAILED
    fail "volume ${v_name[$id]}: imagevol-worker replay failed: $(tail -n 3 "$DIR/replay-$id.txt")"
  fi
done
# The cache: one entry per image, on the host that missed it, each hit twice (once on its own
# host, once from the other).
entries=$(cache_entries) || { say "could not list the cache entries"; exit 1; }
while read -r _ vol _; do [ -z "$vol" ] || cache_vols+=("$vol"); done <<<"$entries"
cache_report=$(while read -r eid vol host pool img hits state; do
  [ -n "$eid" ] || continue
  for n in A B; do [ "${image_id[$n]}" = "$img" ] && break; done
  echo "entry $eid: image $n on $host/$pool, cache volume $vol, $hits hits, $state"
done <<<"$entries")
want_entries=$(printf '%s\n' "node1 volumes ${image_id[A]} 2 ready" "node2 volumes2 ${image_id[B]} 2 ready")
got_entries=$(awk '{print $3, $4, $5, $6, $7}' <<<"$entries" | sort)
[ "$got_entries" = "$want_entries" ] || fail "cache entries are not A on node1/volumes and B on node2/volumes2, 2 hits each, ready: $entries"
fills=$("$here/temporal-pg.sh" psql-visibility -Atc "SELECT workflow_type_name || ':' || count(*) FROM executions_visibility WHERE status = 2 GROUP BY workflow_type_name ORDER BY workflow_type_name" | paste -sd ' ')

# --- report ---------------------------------------------------------------------------------------

{
  echo "imagevol standalone proof, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "Temporal: $("$TOP/bin/temporal-server" --version 2>/dev/null | head -n 1) at $TEMPORAL_PG_ADDRESS, namespace $NAMESPACE;" \
    "store and visibility on PostgreSQL $("$here/temporal-pg.sh" psql -Atc 'SHOW server_version' | cut -d' ' -f1) (postgres12 plugin)"
  echo "cache rows: $("$mysql_bin" -h 127.0.0.1 -u root -Nse 'SELECT version()') database $DB_NAME;" \
    "workers: node1 on pool volumes, node2 on pool volumes2, as Ceph client.${IMAGEVOL_CEPH_USER:-admin}; images A ${image_id[A]}, B ${image_id[B]} ($IMAGE_MIB MiB raw, random)"
  printf '%-14s %-36s %-6s %-8s %-5s %8s  %-5s %-42s %s\n' volume id host pool cache seconds bytes "workflow in PostgreSQL" replay
  for id in "${volumes[@]}"; do
    printf '%-14s %-36s %-6s %-8s %-5s %8s  %-5s %-42s %s\n' "${v_name[$id]}" "$id" "${v_host[$id]}" \
      "$(pool_of "${v_host[$id]}")" "${v_cache[$id]}" "$(printf '%d.%03d' $((v_secs[$id] / 1000)) $((v_secs[$id] % 1000)))" \
      "${v_bytes[$id]}" "${v_pg[$id]}" "${v_replay[$id]}"
  done
  echo "$cache_report"
  echo "completed workflows in the visibility store: $fills"
  echo "checks: $([ "$failed" = 0 ] && echo passed || echo FAILED) $((SECONDS - T0)) s after the start"
} | tee "$DIR/report.txt"
reported=1
[ "$failed" = 0 ]
