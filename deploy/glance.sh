#!/usr/bin/env bash
# glance.sh — Debian's glance-api (OpenStack Zed) on 127.0.0.1 for development and tests:
# no Keystone (unauthenticated, admin context), sqlite database, local file store, one eventlet
# process.
#
# Usage: deploy/glance.sh start|stop|status
#   start   write config, db_sync, start glance-api, wait for GET /healthcheck (idempotent)
#   stop    stop the glance-api this script started (its whole process group)
#   status  exit 0 when our glance-api runs and /healthcheck answers
#
# State: $IMAGEVOL_RUN_DIR/glance (default <repo>/.run/glance): config, sqlite db, images, logs, pid.
# Callers: `. $RUN/glance/env` sets GLANCE_URL.
# Env: GLANCE_PORT (default 9292), GLANCE_START_TIMEOUT (60 s), GLANCE_DEBUG (false).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$RUN/glance
CONF=$DIR/glance-api.conf
PIDF=$DIR/glance-api.pid
PORT=${GLANCE_PORT:-9292}
URL=http://127.0.0.1:$PORT/
TIMEOUT=${GLANCE_START_TIMEOUT:-60}
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

write_conf() {
  mkdir -p "$DIR"/{images,staging,tasks,lock,log,image-cache}
  cat >"$CONF" <<EOF
# Written by deploy/glance.sh on every start.
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $PORT
# 0 = serve from the one eventlet process: a single pid to manage, enough for tests
workers = 0
debug = ${GLANCE_DEBUG:-false}
log_file = $DIR/log/glance-api.log
use_stderr = false
enabled_backends = fs:file
image_cache_dir = $DIR/image-cache
# 1 TiB
image_size_cap = 1099511627776

[database]
connection = sqlite:///$DIR/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $DIR/images/

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
  printf 'export GLANCE_URL=%s\n' "$URL" >"$DIR/env"
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
  *) usage 2,14 ;;
esac
