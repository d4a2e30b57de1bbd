#!/usr/bin/env bash
# ceph.sh — single-node Ceph Pacific (1 mon "a", 1 mgr "x", 1 bluestore OSD on a sparse file)
# on 127.0.0.1 with cephx, for development and tests. No systemd, no containers.
#
# Usage: deploy/ceph.sh start|stop|status|purge|restart-osd
#   start   bootstrap on first use, start the daemons, create missing pools, wait until a write
#           to every pool succeeds; does nothing harmful when already running
#   stop    stop the daemons this script started (by pid file)
#   status  exit 0 when mon, mgr and osd run and the OSD is up
#   purge   stop, then delete all Ceph state
#   restart-osd  stop osd.0 (SIGTERM), start it again, wait until it is up and the CEPH_POOLS
#           take a write (fault tests; clients of the cluster stall meanwhile)
#
# State: $IMAGEVOL_RUN_DIR/ceph (default <repo>/.run/ceph). Callers: `. $RUN/ceph/env` sets CEPH_CONF,
# which is all rbd/rados/librados need (the [client] section names the admin keyring),
# IMAGEVOL_CEPH_USER/_KEYRING: client.imagevol, which the workers connect as (the rbd profile on
# the volume pools, read-only on the images pool), IMAGEVOL_CEPH_NOIMAGES_USER/_KEYRING:
# client.imagevol-noimages (the same without any grant on the images pool), and CEPH_IMAGES_POOL.
# The images pool is Glance's (deploy/glance.sh with GLANCE_STORE=rbd), which connects as
# client.glance (keyring.glance: the rbd profile on the images pool alone).
# Env: CEPH_POOLS (default "volumes"), CEPH_IMAGES_POOL ("images", always created; not one of
#      CEPH_POOLS), CEPH_PG_NUM (32), CEPH_OSD_SIZE (20G, first start only),
#      CEPH_MON_PORT (3300, msgr2) and CEPH_MON_PORT_V1 (6789): fixed at first start (in the monmap),
#      CEPH_START_TIMEOUT (120 s).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$RUN/ceph
CONF=$DIR/ceph.conf
KEYRING=$DIR/keyring.admin
PIDS=$DIR/run
MARK=$DIR/.imagevol-ceph
POOLS=${CEPH_POOLS:-volumes}
IMAGES=${CEPH_IMAGES_POOL:-images}
PG=${CEPH_PG_NUM:-32}
TIMEOUT=${CEPH_START_TIMEOUT:-120}
# Our commands always pass -c; a CEPH_CONF/CEPH_ARGS inherited from another cluster must not leak in.
unset CEPH_ARGS CEPH_CONF CEPH_KEYRING

# Bounded CLI calls: a missing mon must not hang us.
c() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }
# osds_up N: the cluster counts N OSDs up
osds_up() { c osd stat -f json 2>/dev/null | tr -d ' ' | grep -q "\"num_up_osds\":$1,"; }

need_bins() {
  local b missing=0
  for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool rados rbd uuidgen; do
    command -v "$b" >/dev/null || missing=1
  done
  [ $missing = 0 ] && return 0
  log "Ceph binaries missing; running install-deps.sh ceph"
  "$here/install-deps.sh" ceph
  for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool rados rbd uuidgen; do
    command -v "$b" >/dev/null || die "$b still missing after install-deps.sh"
  done
}

# pid of daemon NAME (mon.a, mgr.x, osd.0) if its pid file names a live ceph daemon started with
# our ceph.conf; empty otherwise (stale file, or the pid was reused by something else)
dpid() {
  local pid
  pid=$(our_pid "$PIDS/$1.pid" "$CONF")
  [ -n "$pid" ] || return 0
  case "$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)" in */ceph-"${1%%.*}" | ceph-"${1%%.*}") echo "$pid" ;; esac
}

# a mon we did not start (another cluster) may hold the port: refuse rather than join it
check_ports() {
  local p
  for p in "$@"; do
    if listening "$p"; then
      die "127.0.0.1:$p is taken by a process we did not start; choose CEPH_MON_PORT/CEPH_MON_PORT_V1"
    fi
  done
}

write_conf() {
  local fsid=$1 p2=$2 p1=$3 bytes
  bytes=$(numfmt --from=iec "${CEPH_OSD_SIZE:-20G}")
  cat >"$CONF" <<EOF
# Written by deploy/ceph.sh on first start; later starts reuse it (fsid and ports live in the monmap).
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$p2,v1:127.0.0.1:$p1]
mon_initial_members = a
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
# no legacy clients here; also keeps the matching HEALTH_WARN away
auth_allow_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
run_dir = $PIDS
crash_dir = $DIR/crash
log_file = $DIR/log/\$cluster-\$name.log
mon_cluster_log_file = $DIR/log/\$cluster.log
pid_file = $PIDS/\$name.pid
admin_socket = $PIDS/\$name.asok
# one OSD: replicas of 1, CRUSH picks OSDs (not hosts), no autoscaler or redundancy warnings
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_delete = true
osd_memory_target = 1073741824
# Ceph's default 1 s makes every snapshot/pool change wait ~1 s for the paxos commit
paxos_propose_interval = 0.05
# dev disks are often fuller than the mon's default 30%/5% (at 5% the mon stops)
mon_data_avail_warn = 2
mon_data_avail_crit = 1
# skip the restful/nfs mgr modules: nothing here uses them
mgr_initial_modules = iostat

[mon]
mon_data = $DIR/mon/\$cluster-\$id
keyring = \$mon_data/keyring

[mgr]
mgr_data = $DIR/mgr/\$cluster-\$id
keyring = \$mgr_data/keyring

[osd]
osd_data = $DIR/osd/\$cluster-\$id
keyring = \$osd_data/keyring
osd_objectstore = bluestore
# bluestore creates its block device as a sparse file of this size
bluestore_block_create = true
bluestore_block_size = $bytes
bluestore_fsck_on_mkfs = false

[client]
# lets librados/rbd/qemu-img work with nothing but CEPH_CONF
keyring = $KEYRING
rbd_default_clone_format = 2
# short-lived clients: no per-process sockets or logs
admin_socket =
log_file =
EOF
}

bootstrap() {
  local p2=${CEPH_MON_PORT:-3300} p1=${CEPH_MON_PORT_V1:-6789} fsid tmp mask
  [ ! -e "$DIR/mon/ceph-a" ] || die "$DIR holds a half-made cluster; run '$0 purge' and start again"
  check_ports "$p2" "$p1"
  log "creating a new cluster in $DIR"
  mkdir -p "$PIDS" "$DIR/log" "$DIR/crash" "$DIR/mon" "$DIR/mgr/ceph-x" "$DIR/osd/ceph-0"
  fsid=$(uuidgen)
  write_conf "$fsid" "$p2" "$p1"
  tmp=$DIR/mon-bootstrap.keyring
  # Keys, the monmap and the mon's store are made under umask 077 (ceph-authtool itself writes
  # 0600); the daemons started later keep the caller's umask.
  mask=$(umask)
  umask 077
  ceph-authtool -C "$tmp" -g -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool -C "$KEYRING" -g -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  # the mgr key is known to the mon from birth: no auth round trip needed later
  ceph-authtool -C "$DIR/mgr/ceph-x/keyring" -g -n mgr.x --cap mon 'allow profile mgr' \
    --cap osd 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$tmp" --import-keyring "$KEYRING" >/dev/null
  ceph-authtool "$tmp" --import-keyring "$DIR/mgr/ceph-x/keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$p2,v1:127.0.0.1:$p1]" \
    "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$tmp" \
    >>"$DIR/log/mkfs.log" 2>&1 || die "mon mkfs failed; see $DIR/log/"
  rm -f "$tmp" "$DIR/monmap"
  umask "$mask"
  touch "$MARK"
}

# launch a daemon (it forks itself and writes its own pid file) and wait for that pid file
launch() { # NAME CMD...
  local name=$1
  shift
  rm -f "$PIDS/$name.pid"
  "$@" -c "$CONF" </dev/null >>"$DIR/log/$name.stderr" 2>&1 || die "$name failed to start; see $DIR/log/"
  wait_until 30 prints dpid "$name" || die "$name wrote no pid file in 30 s; see $DIR/log/"
}

start_mon() {
  if [ -z "$(dpid mon.a)" ]; then
    # shellcheck disable=SC2046 # two port numbers
    check_ports $(sed -n 's/^mon_host = \[v2:127\.0\.0\.1:\([0-9]*\),v1:127\.0\.0\.1:\([0-9]*\)\]/\1 \2/p' "$CONF")
    launch mon.a ceph-mon -i a
  fi
  wait_until -i 0.5 "$TIMEOUT" c mon stat >/dev/null 2>&1 || die "mon does not answer; see $DIR/log/ceph-mon.a.log"
}

make_osd() {
  local uuid
  uuid=$(uuidgen)
  [ "$(c osd new "$uuid")" = 0 ] || die "expected the first OSD to get id 0"
  # Keys are created 0600 (the ceph CLI writes -o files with the umask's mode).
  (umask 077 && c auth get-or-create osd.0 mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' \
    -o "$DIR/osd/ceph-0/keyring")
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >>"$DIR/log/mkfs.log" 2>&1 ||
    die "osd mkfs failed; see $DIR/log/mkfs.log"
  touch "$DIR/osd/ceph-0/.imagevol-ready"
}

start_osd() {
  [ -e "$DIR/osd/ceph-0/.imagevol-ready" ] || make_osd
  [ -n "$(dpid osd.0)" ] || launch osd.0 ceph-osd -i 0
  wait_until -i 0.5 "$TIMEOUT" osds_up 1 || die "osd.0 not up after ${TIMEOUT}s; see $DIR/log/ceph-osd.0.log"
}

ensure_pools() {
  local detail pool
  # one CLI call (each costs ~0.3 s of Python start-up): "pool 2 'volumes' replicated ... application rbd"
  detail=$(c osd pool ls detail)
  for pool in $POOLS $IMAGES; do
    if ! grep -qF -- " '$pool' " <<<"$detail"; then
      c osd pool create "$pool" "$PG" "$PG" replicated >/dev/null 2>&1 || die "cannot create pool $pool"
      c osd pool set "$pool" size 1 --yes-i-really-mean-it >/dev/null 2>&1
      c osd pool set "$pool" min_size 1 >/dev/null 2>&1
      log "created pool $pool"
    fi
    # also repairs a pool whose init was interrupted by an earlier start
    grep -F -- " '$pool' " <<<"$detail" | grep -qE 'application ([^ ]*,)?rbd(,| |$)' ||
      timeout 60 rbd -c "$CONF" pool init "$pool"
    # a write returns only once the pool's PGs are active
    timeout "$TIMEOUT" rados -c "$CONF" -p "$pool" put .imagevol-probe /dev/null ||
      die "pool $pool not writable"
    rados -c "$CONF" -p "$pool" rm .imagevol-probe
  done
}

# ensure_user NAME CAPS...: the cephx user client.NAME with exactly CAPS (entity/cap pairs, as
# `ceph auth` takes them) and its keyring $DIR/keyring.NAME. One call when the user is new or
# unchanged; the caps an older start gave are replaced. The keyring is made 0600 before the key is
# in it (umask), and one an older version of this script left readable is narrowed.
ensure_user() {
  local name=$1 keyring=$DIR/keyring.$1
  shift
  if ! (umask 077 && c auth get-or-create "client.$name" "$@" -o "$keyring" >/dev/null 2>&1); then
    c auth caps "client.$name" "$@" >/dev/null 2>&1 || die "cannot set the caps of client.$name"
    (umask 077 && c auth get "client.$name" -o "$keyring" >/dev/null 2>&1) ||
      die "cannot write the keyring of client.$name"
  fi
  chmod 600 "$keyring"
}

# ensure_clients: the users of the cluster beside client.admin, none with admin rights.
#   client.imagevol, the user workers connect as: the rbd profile on every volume pool, and on the
#     mgr for its task queue (flatten); on the images pool only rbd-read-only, which still lets it
#     clone a volume from an image's snapshot (the profile grants the child attach/detach calls).
#   client.imagevol-noimages: the same without any grant on the images pool (tests of a worker
#     that cannot read Glance's pool).
#   client.glance: Glance's rbd store, the rbd profile on the images pool alone.
ensure_clients() {
  local pool vols=""
  # every rbd pool of the cluster, not just this start's CEPH_POOLS: a start with fewer pools
  # must not take a pool away from workers that use it
  for pool in $(c osd pool ls detail | sed -n "s/^pool [0-9]* '\([^']*\)'.*application rbd.*/\1/p"); do
    [ "$pool" = "$IMAGES" ] || vols+="${vols:+, }profile rbd pool=$pool"
  done
  ensure_user imagevol mon 'profile rbd' osd "${vols:+$vols, }profile rbd-read-only pool=$IMAGES" mgr 'profile rbd'
  ensure_user imagevol-noimages mon 'profile rbd' osd "$vols" mgr 'profile rbd'
  ensure_user glance mon 'profile rbd' osd "profile rbd pool=$IMAGES"
  chmod 600 "$KEYRING"
}

write_env() {
  {
    printf 'export CEPH_CONF=%q\n' "$CONF"
    # the worker's own Ceph user; tools and tests keep client.admin
    printf 'export IMAGEVOL_CEPH_USER=imagevol IMAGEVOL_CEPH_KEYRING=%q\n' "$DIR/keyring.imagevol"
    # a worker's user without access to Glance's pool, for the tests of that case
    printf 'export IMAGEVOL_CEPH_NOIMAGES_USER=imagevol-noimages IMAGEVOL_CEPH_NOIMAGES_KEYRING=%q\n' \
      "$DIR/keyring.imagevol-noimages"
    printf 'export CEPH_IMAGES_POOL=%q\n' "$IMAGES"
  } >"$DIR/env"
}

cmd_start() {
  case " $POOLS " in *" $IMAGES "*) die "CEPH_POOLS names the images pool $IMAGES (CEPH_IMAGES_POOL)" ;; esac
  need_bins
  [ -e "$MARK" ] || bootstrap
  start_mon
  # mgr is not on the I/O path; start it without waiting for it
  [ -n "$(dpid mgr.x)" ] || launch mgr.x ceph-mgr -i x
  start_osd
  log "osd up ($(took))"
  ensure_pools
  ensure_clients
  write_env
  log "ready in $(took): pools [$POOLS], images pool $IMAGES; env: $DIR/env"
}

stop_one() {
  local name=$1 pid
  pid=$(dpid "$name")
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 30 ! alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 30 s; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

cmd_stop() {
  [ -e "$MARK" ] || { log "no cluster in $DIR; nothing to stop"; return 0; }
  # OSD first: it reports its shutdown to the still-running mon
  stop_one osd.0
  stop_one mgr.x
  stop_one mon.a
  log "stopped in $(took)"
}

cmd_status() {
  [ -e "$MARK" ] || { echo "no cluster in $DIR"; return 1; }
  local n pid rc=0 health
  for n in mon.a mgr.x osd.0; do
    pid=$(dpid "$n")
    if [ -n "$pid" ]; then
      echo "$n running pid $pid rss $(rss "$pid")"
    else
      echo "$n not running"
      rc=1
    fi
  done
  [ -n "$(dpid mon.a)" ] || return 1
  c -s || return 1
  osds_up 1 || rc=1
  health=$(c health 2>/dev/null || echo unknown)
  case "$health" in HEALTH_OK* | HEALTH_WARN*) ;; *) rc=1 ;; esac
  return $rc
}

cmd_purge() {
  if [ ! -e "$MARK" ]; then
    [ -e "$DIR" ] && die "$DIR was not made by this script; not deleting it"
    return 0
  fi
  cmd_stop
  rm -rf "$DIR"
  log "deleted $DIR"
}

cmd_restart_osd() {
  [ -e "$MARK" ] || die "no cluster in $DIR"
  [ -n "$(dpid mon.a)" ] || die "mon.a is not running; use start"
  stop_one osd.0
  # the OSD reports its shutdown to the mon: wait for that, so "up" below is the new process
  wait_until -i 0.5 "$TIMEOUT" osds_up 0 || true
  start_osd
  ensure_pools
  log "osd.0 restarted in $(took)"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  purge) cmd_purge ;;
  restart-osd) cmd_restart_osd ;;
  *) usage 2,23 ;;
esac
