#!/usr/bin/env bash
# glance.sh — Debian's glance-api (OpenStack Zed) on 127.0.0.1 for development and tests:
# no Keystone (unauthenticated, admin context), sqlite database, one eventlet process, and one of
# two image stores: a local directory (GLANCE_STORE=file, the default) or, as most Ceph clouds
# keep images, RBD on deploy/ceph.sh's cluster (GLANCE_STORE=rbd: pool CEPH_IMAGES_POOL as
# client.glance, show_image_direct_url on, so an image's direct_url is rbd://<fsid>/<pool>/<id>/snap).
# The two are separate instances that can run at once; GLANCE_STORE selects the one a verb acts on.
#
# Usage: [GLANCE_STORE=file|rbd] deploy/glance.sh start|stop|status
#   start   write config, db_sync, start glance-api, wait for GET /healthcheck (idempotent)
#   stop    stop the glance-api this script started (its whole process group)
#   status  exit 0 when our glance-api runs and /healthcheck answers
#
# State: $IMAGEVOL_RUN_DIR/glance (default <repo>/.run/glance), with GLANCE_STORE=rbd
# $IMAGEVOL_RUN_DIR/glance-rbd: config, sqlite db, images (file store), logs, pid.
# Callers: `. $RUN/glance/env` sets GLANCE_URL, `. $RUN/glance-rbd/env` GLANCE_RBD_URL.
# Env: GLANCE_STORE (file), GLANCE_PORT (default 9292, with GLANCE_STORE=rbd 9293),
#      GLANCE_START_TIMEOUT (60 s), GLANCE_DEBUG (false).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STORE=${GLANCE_STORE:-file}
case "$STORE" in
  file) DIR=$RUN/glance PORT=${GLANCE_PORT:-9292} URL_VAR=GLANCE_URL BACKEND=fs DIRECT_URL=False ;;
  rbd) DIR=$RUN/glance-rbd PORT=${GLANCE_PORT:-9293} URL_VAR=GLANCE_RBD_URL BACKEND=rbd DIRECT_URL=True ;;
  *) die "GLANCE_STORE is file or rbd, not '$STORE'" ;;
esac
CONF=$DIR/glance-api.conf
PIDF=$DIR/glance-api.pid
URL=http://127.0.0.1:$PORT/
TIMEOUT=${GLANCE_START_TIMEOUT:-60}
# deploy/ceph.sh's state, for the rbd store
CEPH_DIR=$RUN/ceph
# Debian's console scripts (#!/usr/bin/python3), not whatever python3 is first on PATH
API=/usr/bin/glance-api
MANAGE=/usr/bin/glance-manage

# Keep another Python install's settings and user packages out of Debian's interpreter.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PYTHONNOUSERSITE=1

# pid from our pid file if it is a live glance-api running with our config (guards pid reuse)
gpid() {
  local pid
  pid=$(our_pid "$PIDF" "$CONF")
  [ -n "$pid" ] && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'glance-api$' && echo "$pid"
  return 0
}

healthy() { curl -fsS -m 3 -o /dev/null "${URL}healthcheck" 2>/dev/null; }

# ceph_conf: write the rbd store's ceph.conf, $DIR/ceph.conf: deploy/ceph.sh's cluster (its fsid
# and mons) as client.glance, whose keyring it names; set POOL to the images pool. Dies when Ceph
# was not set up (deploy/ceph.sh start writes its env file and client.glance's keyring).
ceph_conf() {
  local fsid mons
  [ -s "$CEPH_DIR/env" ] ||
    die "GLANCE_STORE=rbd needs deploy/ceph.sh's cluster, but $CEPH_DIR/env is missing: run deploy/ceph.sh start first"
  [ -s "$CEPH_DIR/keyring.glance" ] ||
    die "no $CEPH_DIR/keyring.glance (client.glance): run deploy/ceph.sh start again"
  fsid=$(sed -n 's/^fsid = //p' "$CEPH_DIR/ceph.conf")
  mons=$(sed -n 's/^mon_host = //p' "$CEPH_DIR/ceph.conf")
  if [ -z "$fsid" ] || [ -z "$mons" ]; then die "no fsid or mon_host in $CEPH_DIR/ceph.conf"; fi
  # shellcheck source=/dev/null # written at run time
  POOL=$(. "$CEPH_DIR/env" && echo "${CEPH_IMAGES_POOL:-images}")
  cat >"$DIR/ceph.conf" <<EOF
# Written by deploy/glance.sh on every start: deploy/ceph.sh's cluster as client.glance.
[global]
fsid = $fsid
mon_host = $mons
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
ms_bind_ipv6 = false

[client]
keyring = $CEPH_DIR/keyring.glance
# a long-lived client of librados inside glance-api: no admin socket, errors to its stderr log
admin_socket =
log_file =
EOF
}

# store_conf: the sections of the selected store (rbd: after ceph_conf)
store_conf() {
  case "$STORE" in
    file)
      cat <<EOF
[fs]
filesystem_store_datadir = $DIR/images/
EOF
      ;;
    rbd)
      cat <<EOF
[rbd]
rbd_store_pool = $POOL
rbd_store_user = glance
rbd_store_ceph_conf = $DIR/ceph.conf
# MiB: the RBD object size of the images
rbd_store_chunk_size = 8
# seconds; 0 would wait librados's default (5 min) when the mons do not answer
rados_connect_timeout = 30
EOF
      ;;
  esac
}

write_conf() {
  mkdir -p "$DIR"/{staging,tasks,lock,log,image-cache}
  if [ "$STORE" = file ]; then mkdir -p "$DIR/images"; else ceph_conf; fi
  cat >"$CONF" <<EOF
# Written by deploy/glance.sh on every start (GLANCE_STORE=$STORE).
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $PORT
# 0 = serve from the one eventlet process: a single pid to manage, enough for tests
workers = 0
debug = ${GLANCE_DEBUG:-false}
log_file = $DIR/log/glance-api.log
use_stderr = false
image_cache_dir = $DIR/image-cache
# 1 TiB
image_size_cap = 1099511627776
# the one store: fs (file) or rbd
enabled_backends = $BACKEND:$STORE
# rbd: GET /v2/images/<id> shows the image's location, rbd://<fsid>/<pool>/<id>/snap
show_image_direct_url = $DIRECT_URL

[glance_store]
default_backend = $BACKEND

$(store_conf)

[database]
connection = sqlite:///$DIR/glance.sqlite

[os_glance_staging_store]
filesystem_store_datadir = $DIR/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $DIR/tasks/

[oslo_concurrency]
lock_path = $DIR/lock

[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
# Only publicize_image is changed: without Keystone every request is one anonymous user, and
# making an image public (as an operator would) must be possible for imagevol's tests and demo.
policy_file = $DIR/policy.yaml

[paste_deploy]
config_file = $DIR/glance-api-paste.ini
# empty flavor selects the [pipeline:glance-api] pipeline: unauthenticated-context, no Keystone
flavor =

[oslo_messaging_notifications]
driver = noop
EOF
  printf '"publicize_image": ""\n' >"$DIR/policy.yaml"
  # Debian's pipelines, but the healthcheck "disable" file must live in our dir, not /etc
  sed "s#^disable_by_file_path = .*#disable_by_file_path = $DIR/healthcheck_disable#" \
    /etc/glance/glance-api-paste.ini >"$DIR/glance-api-paste.ini"
}

write_env() {
  {
    printf 'export %s=%s\n' "$URL_VAR" "$URL"
    # its access log: the tests and the benchmark count the image downloads it served
    [ "$STORE" = file ] || printf 'export GLANCE_RBD_LOG=%q\n' "$DIR/log/glance-api.log"
  } >"$DIR/env"
}

cmd_start() {
  local pid
  if [ ! -x "$API" ] || [ ! -x "$MANAGE" ] || [ ! -e /etc/glance/glance-api-paste.ini ]; then
    log "glance-api not installed; running install-deps.sh glance"
    "$here/install-deps.sh" glance
    [ -x "$API" ] || die "$API still missing after install-deps.sh"
  fi
  pid=$(gpid)
  if [ -z "$pid" ]; then
    healthy && die "something we did not start already answers on 127.0.0.1:$PORT; set GLANCE_PORT"
    write_conf
    "$MANAGE" --config-file "$CONF" db_sync >"$DIR/log/db_sync.log" 2>&1 ||
      { tail -n 20 "$DIR/log/db_sync.log" >&2; die "db_sync failed; see $DIR/log/db_sync.log"; }
    log "db_sync done ($(took))"
    # New session and process group: stop can signal glance and anything it spawns at once.
    spawn "$PIDF" "$DIR/log/glance-api.stdout" "$API" --config-file "$CONF"
    wait_until -i 0.05 5 prints gpid || die "glance-api did not start; see $DIR/log/"
    pid=$(gpid)
  fi
  wait_until -w "prints gpid" "$TIMEOUT" healthy || case $? in
    2)
      tail -n 20 "$DIR/log/glance-api.stdout" "$DIR/log/glance-api.log" >&2 2>/dev/null || true
      die "glance-api exited during start-up; see $DIR/log/"
      ;;
    *)
      cmd_stop
      die "no answer from ${URL}healthcheck in ${TIMEOUT}s; see $DIR/log/"
      ;;
  esac
  write_env
  log "ready in $(took): pid $pid $URL; env: $DIR/env"
}

# glance-api leads its own process group (setsid): SIGTERM to the group, SIGKILL after 15 s
cmd_stop() { stop_group "$PIDF" "$(gpid)" 15; }

cmd_status() { server_status glance-api "$(gpid)" "$URL" "${URL}healthcheck"; }

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage 2,21 ;;
esac
