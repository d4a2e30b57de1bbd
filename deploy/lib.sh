# lib.sh — helpers shared by imagevol's run scripts (sourced, not executed): background processes
# with pid files under $RUN/pids, stopped only when the pid still runs our own binary.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$here/.." && pwd)
RUN=${IMAGEVOL_RUN_DIR:-$TOP/.run}
mkdir -p "$RUN/pids" "$RUN/log"
RUN=$(cd "$RUN" && pwd)
export IMAGEVOL_RUN_DIR=$RUN
BIN=$TOP/bin

say() { echo "imagevol: $*" >&2; }

# pid_of NAME: the pid in $RUN/pids/NAME.pid if it is alive and runs a binary of ours.
pid_of() {
  local f=$RUN/pids/$1.pid pid st
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  st=$(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$st" ] && [ "$st" != Z ] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$BIN/" && echo "$pid"
  return 0
}

# start_bg NAME CMD...: start CMD in the background with its log under $RUN/log.
start_bg() {
  local name=$1
  shift
  if [ -n "$(pid_of "$name")" ]; then
    say "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  setsid "$@" >>"$RUN/log/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name.pid"
}

# stop_bg NAME: SIGTERM, then SIGKILL after 20 s.
stop_bg() {
  local pid i
  pid=$(pid_of "$1")
  rm -f "$RUN/pids/$1.pid.stopping"
  if [ -z "$pid" ]; then
    rm -f "$RUN/pids/$1.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    [ -n "$(pid_of "$1")" ] || break
    sleep 0.1
  done
  [ -z "$(pid_of "$1")" ] || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/pids/$1.pid"
  say "stopped $1 (pid $pid)"
}

# wait_http URL SECONDS NAME: wait until URL answers (any HTTP status).
wait_http() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -s -o /dev/null "$1" && return 0
    [ -n "$(pid_of "$3")" ] || { tail -n 30 "$RUN/log/$3.log" >&2; say "$3 exited; log: $RUN/log/$3.log"; return 1; }
    sleep 0.1
  done
  say "$3 did not answer at $1 in $2 s; log: $RUN/log/$3.log"
  return 1
}

# wait_ready URL SECONDS PART: wait until the gateway's /readyz at URL answers 200 (every storage
# host has a live worker); PART is the process to blame, with its log tail, if it dies meanwhile.
wait_ready() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    [ -n "$(pid_of "$3")" ] || { tail -n 30 "$RUN/log/$3.log" >&2; say "$3 exited; log: $RUN/log/$3.log"; return 1; }
    sleep 0.1
  done
  say "not ready in $2 s: $(curl -s "$1")"
  return 1
}

# keep_token FILE: print the token kept in FILE, making it (random, mode 0600) the first time.
keep_token() {
  [ -s "$1" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$1")
  chmod 600 "$1"
  cat "$1"
}

# write_run_env: three API tokens (made once, kept in $RUN/token*) and the gateway's tokens file
# $RUN/tokens of "token project role" lines: IMAGEVOL_TOKEN a member of project demo,
# IMAGEVOL_OTHER_TOKEN a member of demo2, IMAGEVOL_ADMIN_TOKEN an operator (run.sh's gateway
# reads it with --tokens). Exports IMAGEVOL_TOKEN and IMAGEVOL_PROJECT (for imagevolctl, and for a
# gateway started without a tokens file), and writes $RUN/env with the tokens and the addresses
# of a running stack, for `. .run/env && bin/imagevolctl ...`. Everything holding a token is mode
# 0600. Needs GLANCE_URL and CEPH_CONF.
write_run_env() {
  local other admin
  IMAGEVOL_TOKEN=$(keep_token "$RUN/token")
  other=$(keep_token "$RUN/token.demo2")
  admin=$(keep_token "$RUN/token.admin")
  (
    umask 077
    printf '%s demo member\n%s demo2 member\n%s admin admin\n' "$IMAGEVOL_TOKEN" "$other" "$admin" >"$RUN/tokens"
    cat >"$RUN/env" <<ENV
export IMAGEVOL_URL=http://127.0.0.1:8776
export IMAGEVOL_TOKEN=$IMAGEVOL_TOKEN
export IMAGEVOL_OTHER_TOKEN=$other
export IMAGEVOL_ADMIN_TOKEN=$admin
export GLANCE_URL=$GLANCE_URL
export TEMPORAL_UI_URL=http://127.0.0.1:8233
export CEPH_CONF=$CEPH_CONF
export IMAGEVOL_RUN_DIR=$RUN
ENV
  )
  # Files made by an older version of this script kept the umask's mode.
  chmod 600 "$RUN/tokens" "$RUN/env"
  export IMAGEVOL_TOKEN IMAGEVOL_PROJECT=demo
}

# others_running SCRIPTS: the pid of another deploy/<script>.sh (SCRIPTS: an alternation such as
# "test|run"; leave out the caller's own name, whose subshells match it too) or of a Go test
# binary, any of which may be using the shared services.
others_running() {
  local pid
  for pid in $(pgrep -f "deploy/($1)\.sh|\.test -test\." || true); do
    [ "$pid" != "$$" ] && { echo "$pid"; return 0; }
  done
  return 1
}

# up SERVICE PATTERN: deploy/<SERVICE>.sh status prints a line matching PATTERN, i.e. its daemon
# is up, healthy or not. One the caller did not start is never the caller's to stop.
up() {
  local out
  out=$("$here/$1.sh" status 2>/dev/null || true)
  grep -qE "$2" <<<"$out"
}
