#!/usr/bin/env bash
# mariadb.sh — make a MySQL-protocol server available on 127.0.0.1 (user root, empty password) for
# tests. If something already answers on the port, use it and change nothing; otherwise run our own
# mariadbd (installing mariadb-server first if needed, as root).
#
# Usage: deploy/mariadb.sh start|stop|status
#   start   use the server already on the port, or start our own and wait until root can log in
#   stop    stop our own mariadbd only; a server we did not start is left alone
#   status  exit 0 when a server answers on the port (ours or not)
#
# State (own server only): $IMAGEVOL_RUN_DIR/mariadb (default <repo>/.run/mariadb): data, logs, pid.
# Callers: `. $RUN/mariadb/env` sets IMAGEVOL_TEST_DSN (go-sql-driver form).
# Env: MARIADB_PORT (default 3306), MARIADB_START_TIMEOUT (60 s).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$RUN/mariadb
DATA=$DIR/data
PIDF=$DIR/mariadbd.pid
PORT=${MARIADB_PORT:-3306}
TIMEOUT=${MARIADB_START_TIMEOUT:-60}
# unix socket paths are limited to 108 bytes; fall back to a short per-port path
SOCK=$DIR/mariadbd.sock
[ ${#SOCK} -lt 100 ] || SOCK=${TMPDIR:-/tmp}/imagevol-mariadb-$PORT.sock

# first match on PATH or in the sbin dirs (not on a non-root PATH)
find_bin() {
  local n d
  for n in "$@"; do
    command -v "$n" 2>/dev/null && return 0
    for d in /usr/sbin /usr/local/sbin; do [ -x "$d/$n" ] && { echo "$d/$n"; return 0; }; done
  done
  return 1
}

# pid of our mariadbd: from its pid file, alive, and started on our datadir (guards pid reuse)
mpid() { our_pid "$PIDF" "--datadir=$DATA"; }

# is anything listening on the port? (a ping needs a client that may not be installed yet)
answers() { listening "$PORT"; }

# our own server is up once it answers a ping on its socket (as the password-less root@localhost)
own_ready() {
  local admin
  admin=$(find_bin mariadb-admin mysqladmin) || return 1
  "$admin" --no-defaults -S "$SOCK" -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

# our own server is up: its pid file names it, and it answers on its socket and on the port
own_up() { [ -n "$(mpid)" ] && own_ready && answers; }
# own_starting PID: our server, started as PID, may still come up (PID or the server runs)
own_starting() { alive "$1" || [ -n "$(mpid)" ]; }

# can root with an empty password log in over TCP?
root_ok() {
  local cli
  cli=$(find_bin mariadb mysql) || return 1
  "$cli" --no-defaults -h127.0.0.1 -P"$PORT" -uroot --connect-timeout=3 -Nse 'SELECT 1' >/dev/null 2>&1
}

write_env() {
  mkdir -p "$DIR"
  printf "export IMAGEVOL_TEST_DSN='root@tcp(127.0.0.1:%s)/'\n" "$PORT" >"$DIR/env"
}

install_server() {
  [ "$(id -u)" = 0 ] || die "mariadb-server is not installed; run this as root to install it"
  log "installing mariadb-server"
  # the package must not start its own service on 3306: we start ours below
  local policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold mariadb-server
  } >"${TMPDIR:-/tmp}/imagevol-mariadb-apt.log" 2>&1 || rc=$?
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { tail -n 30 "${TMPDIR:-/tmp}/imagevol-mariadb-apt.log" >&2; die "apt-get failed"; }
}

cmd_start() {
  local pid server installdb client user=()
  if [ -n "$(mpid)" ]; then
    { answers && own_ready; } || die "our mariadbd (pid $(mpid)) runs but does not answer on 127.0.0.1:$PORT"
    write_env
    log "our mariadbd already runs on 127.0.0.1:$PORT (pid $(mpid))"
    return 0
  fi
  if answers; then
    write_env
    log "a server we did not start already answers on 127.0.0.1:$PORT; using it, changing nothing"
    root_ok || log "warning: root with an empty password cannot log in there over TCP"
    return 0
  fi

  # either one missing means the package is missing
  { server=$(find_bin mariadbd mysqld) && installdb=$(find_bin mariadb-install-db mysql_install_db); } ||
    { install_server; server=$(find_bin mariadbd mysqld); installdb=$(find_bin mariadb-install-db mysql_install_db); }
  client=$(find_bin mariadb mysql) || die "no mariadb client found"
  # mariadbd refuses to run as root unless told to
  [ "$(id -u)" != 0 ] || user=(--user=root)

  mkdir -p "$DIR/log"
  if [ ! -d "$DATA/mysql" ]; then
    rm -rf "$DATA"
    "$installdb" --no-defaults --datadir="$DATA" "${user[@]}" --auth-root-authentication-method=normal \
      --skip-test-db --skip-name-resolve >"$DIR/log/install-db.log" 2>&1 ||
      { tail -n 20 "$DIR/log/install-db.log" >&2; die "mariadb-install-db failed"; }
    log "initialised $DATA ($(took))"
  fi

  rm -f "$PIDF"
  # --no-defaults: the system's /etc/mysql settings (socket, datadir, port) must not apply
  setsid "$server" --no-defaults --datadir="$DATA" "${user[@]}" --bind-address=127.0.0.1 \
    --port="$PORT" --socket="$SOCK" --pid-file="$PIDF" --log-error="$DIR/log/error.log" \
    --skip-name-resolve --innodb-buffer-pool-size=128M </dev/null >>"$DIR/log/stdout.log" 2>&1 &
  wait_until -w "own_starting $!" "$TIMEOUT" own_up || case $? in
    2)
      tail -n 20 "$DIR/log/error.log" >&2 2>/dev/null || true
      die "mariadbd exited during start-up; see $DIR/log/error.log"
      ;;
    *)
      cmd_stop
      die "mariadbd not answering on 127.0.0.1:$PORT after ${TIMEOUT}s"
      ;;
  esac
  pid=$(mpid)
  # with --skip-name-resolve, TCP logins match root@127.0.0.1, not root@localhost: make sure it
  # exists (over the socket, as the password-less root@localhost that install-db created)
  if ! root_ok; then
    "$client" --no-defaults -S "$SOCK" -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
      GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
      die "cannot create root@127.0.0.1"
    root_ok || die "root@127.0.0.1 still cannot log in over TCP"
  fi
  write_env
  log "our mariadbd ready in $(took): pid $pid 127.0.0.1:$PORT; env: $DIR/env"
}

cmd_stop() {
  local pid
  pid=$(mpid)
  if [ -z "$pid" ]; then
    rm -f "$PIDF"
    if answers; then
      log "the server on 127.0.0.1:$PORT was not started by us; leaving it alone"
    else
      log "not running (nothing of ours to stop)"
    fi
    return 0
  fi
  kill -TERM "$pid"
  # InnoDB flushes on shutdown: allow it time
  if ! wait_until 60 ! alive "$pid"; then
    log "mariadbd (pid $pid) still running after 60 s; killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDF"
  log "stopped our mariadbd (pid $pid) in $(took)"
}

cmd_status() {
  local pid
  pid=$(mpid)
  if answers; then
    if [ -n "$pid" ]; then
      echo "our mariadbd answers on 127.0.0.1:$PORT (pid $pid)"
    else
      echo "a server we did not start answers on 127.0.0.1:$PORT"
    fi
    return 0
  fi
  if [ -n "$pid" ]; then echo "our mariadbd (pid $pid) runs but does not answer"; else echo "nothing answers on 127.0.0.1:$PORT"; fi
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage 2,14 ;;
esac
