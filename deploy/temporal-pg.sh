#!/usr/bin/env bash
# temporal-pg.sh — a standalone Temporal server on PostgreSQL, as a real cluster runs it (not the
# dev server): Temporal's own server binary built from the go.temporal.io/server version go.mod
# pins, its four services in one process on 127.0.0.1, frontend gRPC on 127.0.0.1:7433, default
# and visibility stores on the machine's PostgreSQL through the postgres12 SQL plugin.
#
# Usage: deploy/temporal-pg.sh start|stop|status|drop|psql|psql-visibility
#   start    build bin/temporal-server and bin/temporal-sql-tool unless built from the version
#            go.mod requires; start PostgreSQL if it is installed but down; create the role and the two databases
#            and apply Temporal's postgresql/v12 schemas with temporal-sql-tool; write the config;
#            start the server and wait until its frontend answers (idempotent)
#   stop     stop the server this script started, and PostgreSQL if start had to start it
#   status   exit 0 when our server runs and its frontend answers
#   drop     stop the server if it runs, drop the two databases and the role (PostgreSQL stays up)
#   psql ARGS..., psql-visibility ARGS...   psql on the store or the visibility database
# The namespace and imagevol's search attributes are registered by `imagevol-migrate
# --temporal-setup` against TEMPORAL_PG_ADDRESS (docs/deploy.md).
#
# State: $IMAGEVOL_RUN_DIR/temporal-pg (default <repo>/.run/temporal-pg): config, logs, pid, env.
# Callers: `. $RUN/temporal-pg/env` sets TEMPORAL_PG_ADDRESS (frontend host:port) and
# TEMPORAL_PG_HTTP (the frontend's HTTP API).
# Env: TEMPORAL_PG_PORT (frontend gRPC, default 7433; the other services take the next 8 ports),
#      TEMPORAL_PG_DB (default imagevol_temporal; visibility: <db>_visibility),
#      PG_PORT (PostgreSQL on 127.0.0.1, default 5432), TEMPORAL_PG_START_TIMEOUT (120 s),
#      TEMPORAL_PG_LOG_LEVEL (warn).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$RUN/temporal-pg
CONF=$DIR/temporal.yaml
DYNCONF=$DIR/dynamicconfig.yaml
PIDF=$DIR/temporal-server.pid
PGMARK=$DIR/postgresql-started-here
SERVER=$TOP/bin/temporal-server
SQLTOOL=$TOP/bin/temporal-sql-tool
PORT=${TEMPORAL_PG_PORT:-7433}
HTTP_PORT=$((PORT + 4))
ADDR=127.0.0.1:$PORT
HTTP_URL=http://127.0.0.1:$HTTP_PORT
DB=${TEMPORAL_PG_DB:-imagevol_temporal}
VISDB=${DB}_visibility
ROLE=$DB
PGPORT_=${PG_PORT:-5432}
TIMEOUT=${TEMPORAL_PG_START_TIMEOUT:-120}
# Fixed once the store exists: a server with another count refuses the database.
SHARDS=4

# pid from our pid file if it is a live temporal-server started with our config (guards pid reuse)
tpid() { our_pid "$PIDF" "$SERVER" "$CONF"; }

healthy() { curl -fsS -m 3 -o /dev/null "$HTTP_URL/api/v1/system-info" 2>/dev/null; }

# --- PostgreSQL ----------------------------------------------------------------------------------

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PGPORT_" -t 3 >/dev/null 2>&1; }

# admin_psql <SQL: psql as the superuser postgres: over TCP where that needs no password
# (trust), else through the local socket as the postgres system user (peer, Debian's default).
admin_psql() {
  if PGCONNECT_TIMEOUT=5 psql -X -q -h 127.0.0.1 -p "$PGPORT_" -U postgres -d postgres -w -Atc 'select 1' >/dev/null 2>&1; then
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT_" -U postgres -d postgres -w -At
  elif [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT_" -d postgres -At)
  else
    die "cannot log in to PostgreSQL on 127.0.0.1:$PGPORT_ as postgres (needs trust on 127.0.0.1, or root for the local socket)"
  fi
}

# The role's password, made by start and kept in $DIR/pg-password.
password() {
  [ -s "$DIR/pg-password" ] || die "no $DIR/pg-password: run start first"
  cat "$DIR/pg-password"
}

# role_psql DB ARGS...: psql as our role on DB
role_psql() {
  local db=$1
  shift
  [ -s "$DIR/pg-password" ] || die "no $DIR/pg-password: run start first"
  PGPASSWORD=$(password) PGCONNECT_TIMEOUT=10 psql -X -q -h 127.0.0.1 -p "$PGPORT_" -U "$ROLE" -d "$db" -w "$@"
}

ensure_postgres() {
  local ver
  if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    pg_ready || "$here/install-deps.sh" postgresql
  fi
  { command -v psql && command -v pg_isready; } >/dev/null ||
    die "PostgreSQL client missing: install PostgreSQL first (Debian: apt-get install postgresql)"
  pg_ready && return 0
  ver=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1 || true)
  { [ -n "$ver" ] && [ -d "/etc/postgresql/$ver/main" ] && command -v pg_ctlcluster >/dev/null; } ||
    die "no PostgreSQL answers on 127.0.0.1:$PGPORT_ and no cluster is installed: install PostgreSQL first (Debian: apt-get install postgresql)"
  log "PostgreSQL $ver/main is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || die "pg_ctlcluster $ver main start failed"
  echo "$ver" >"$PGMARK"
  wait_until 30 pg_ready || die "PostgreSQL $ver/main started but does not answer on 127.0.0.1:$PGPORT_"
}

# The role owns both databases; the schemas are applied as it, so no superuser is needed later.
ensure_databases() {
  local pw db
  [ -s "$DIR/pg-password" ] || (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/pg-password")
  pw=$(password)
  admin_psql <<SQL
SELECT format('CREATE ROLE %I LOGIN', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE "$ROLE" LOGIN PASSWORD '$pw';
SELECT format('CREATE DATABASE %I OWNER %I', '$DB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$VISDB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$VISDB') \gexec
SQL
  for db in "$DB:temporal" "$VISDB:visibility"; do
    apply_schema "${db%%:*}" "postgresql/v12/${db#*:}"
  done
}

# apply_schema DB NAME: the versioning tables on a new database, then every versioned step of the
# schema embedded in temporal-sql-tool up to the newest (nothing to do when it is there already).
apply_schema() {
  local db=$1 name=$2 tool
  tool=("$SQLTOOL" --ep 127.0.0.1 -p "$PGPORT_" -u "$ROLE" --pw "$(password)" --pl postgres12 --db "$db")
  if [ -z "$(role_psql "$db" -Atc "SELECT to_regclass('schema_version')")" ]; then
    "${tool[@]}" setup-schema -v 0.0 >>"$DIR/log/sql-tool.log" 2>&1 ||
      { tail -n 20 "$DIR/log/sql-tool.log" >&2; die "setup-schema on $db failed; see $DIR/log/sql-tool.log"; }
  fi
  "${tool[@]}" update-schema --schema-name "$name" >>"$DIR/log/sql-tool.log" 2>&1 ||
    { tail -n 20 "$DIR/log/sql-tool.log" >&2; die "update-schema $name on $db failed; see $DIR/log/sql-tool.log"; }
  log "$db: schema $name at version $(role_psql "$db" -Atc 'SELECT curr_version FROM schema_version')"
}

# --- server ----------------------------------------------------------------------------------------

# build: both binaries, unless they are already built from the server version go.mod requires
# (a cold build takes minutes; the linker alone, tens of seconds).
build() {
  local b pkg want
  want=$(cd "$TOP" && GOTOOLCHAIN=local go list -m -f '{{.Version}}' go.temporal.io/server) ||
    die "go list -m go.temporal.io/server failed"
  for b in "$SERVER:go.temporal.io/server/cmd/server" "$SQLTOOL:go.temporal.io/server/cmd/tools/sql"; do
    pkg=${b#*:}
    b=${b%%:*}
    if [ -x "$b" ] && [ "$(go version -m "$b" 2>/dev/null | awk '$1 == "mod" {print $3}')" = "$want" ]; then
      continue
    fi
    log "building $(basename "$b") from $pkg@$want"
    (cd "$TOP" && GOTOOLCHAIN=local go build -o "$b" "$pkg") || die "go build $pkg failed"
  done
}

write_conf() {
  local pw
  pw=$(password)
  mkdir -p "$DIR/log"
  # Same tuning as the dev server (devtemporal.DynamicConfig): no ~50 ms wait per dispatch hop,
  # one task queue partition.
  cat >"$DYNCONF" <<EOF
# Written by deploy/temporal-pg.sh on every start.
history.transferProcessorMaxPollRPS:
  - value: 10000
matching.numTaskqueueReadPartitions:
  - value: 1
matching.numTaskqueueWritePartitions:
  - value: 1
EOF
  (umask 077 && cat >"$CONF") <<EOF
# Written by deploy/temporal-pg.sh on every start.
log:
  stdout: true
  level: ${TEMPORAL_PG_LOG_LEVEL:-warn}
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: $SHARDS
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: $DB
        connectAddr: 127.0.0.1:$PGPORT_
        connectProtocol: tcp
        user: $ROLE
        password: $pw
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: $VISDB
        connectAddr: 127.0.0.1:$PGPORT_
        connectProtocol: tcp
        user: $ROLE
        password: $pw
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
services:
  frontend:
    rpc:
      grpcPort: $PORT
      membershipPort: $((PORT + 5))
      bindOnIP: 127.0.0.1
      httpPort: $HTTP_PORT
  history:
    rpc:
      grpcPort: $((PORT + 1))
      membershipPort: $((PORT + 6))
      bindOnIP: 127.0.0.1
  matching:
    rpc:
      grpcPort: $((PORT + 2))
      membershipPort: $((PORT + 7))
      bindOnIP: 127.0.0.1
  worker:
    rpc:
      grpcPort: $((PORT + 3))
      membershipPort: $((PORT + 8))
      bindOnIP: 127.0.0.1
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: $ADDR
dcRedirectionPolicy:
  policy: noop
archival:
  history:
    state: disabled
  visibility:
    state: disabled
namespaceDefaults:
  archival:
    history:
      state: disabled
    visibility:
      state: disabled
publicClient:
  hostPort: $ADDR
dynamicConfigClient:
  filepath: $DYNCONF
  pollInterval: 10s
EOF
}

write_env() {
  printf 'export TEMPORAL_PG_ADDRESS=%s\nexport TEMPORAL_PG_HTTP=%s\n' "$ADDR" "$HTTP_URL" >"$DIR/env"
}

ports_free() {
  local p
  for ((p = PORT; p <= PORT + 8; p++)); do
    if listening "$p"; then
      die "127.0.0.1:$p is already taken by something we did not start; set TEMPORAL_PG_PORT"
    fi
  done
}

cmd_start() {
  local pid
  mkdir -p "$DIR/log"
  build
  pid=$(tpid)
  if [ -z "$pid" ]; then
    ports_free
    ensure_postgres
    ensure_databases
    write_conf
    # This server is the only member of its cluster: members recorded by an earlier run would
    # be taken as ring seeds and split the ring for a while after a quick restart.
    role_psql "$DB" -Atc 'DELETE FROM cluster_membership' >/dev/null
    spawn "$PIDF" "$DIR/log/temporal-server.log" "$SERVER" --config-file "$CONF" --allow-no-auth start
    wait_until -i 0.05 5 prints tpid || die "temporal-server did not start; see $DIR/log/temporal-server.log"
    pid=$(tpid)
  fi
  wait_until -i 0.2 -w "prints tpid" "$TIMEOUT" healthy || case $? in
    2)
      tail -n 30 "$DIR/log/temporal-server.log" >&2 || true
      die "temporal-server exited during start-up; see $DIR/log/temporal-server.log"
      ;;
    *)
      stop_server
      die "frontend did not answer at $HTTP_URL in ${TIMEOUT}s; see $DIR/log/temporal-server.log"
      ;;
  esac
  write_env
  log "ready in $(took): pid $pid frontend $ADDR (HTTP $HTTP_URL), stores $DB and $VISDB on 127.0.0.1:$PGPORT_; env: $DIR/env"
}

# the server leads its own process group (setsid): SIGTERM to the group, SIGKILL after 30 s
stop_server() { stop_group "$PIDF" "$(tpid)" 30 temporal-server; }

cmd_stop() {
  local ver
  stop_server
  if [ -s "$PGMARK" ]; then
    ver=$(<"$PGMARK")
    pg_ctlcluster --skip-systemctl-redirect "$ver" main stop || log "pg_ctlcluster $ver main stop failed"
    rm -f "$PGMARK"
    log "stopped PostgreSQL $ver/main (started by temporal-pg.sh start)"
  fi
}

cmd_status() { server_status temporal-server "$(tpid)" "frontend $ADDR" "$HTTP_URL"; }

cmd_drop() {
  stop_server
  pg_ready || die "no PostgreSQL answers on 127.0.0.1:$PGPORT_"
  admin_psql <<SQL
DROP DATABASE IF EXISTS "$DB";
DROP DATABASE IF EXISTS "$VISDB";
DROP ROLE IF EXISTS "$ROLE";
SQL
  rm -f "$DIR/pg-password"
  log "dropped databases $DB, $VISDB and role $ROLE"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  drop) cmd_drop ;;
  psql) shift; role_psql "$DB" "$@" ;;
  psql-visibility) shift; role_psql "$VISDB" "$@" ;;
  *) usage 2,25 ;;
esac
