# shellcheck shell=bash
# lib.sh — the one library of imagevol's deploy scripts (sourced, not executed):
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Sets here (deploy/), TOP (the repository), BIN, RUN (the state dir: $IMAGEVOL_RUN_DIR, default
# <repo>/.run; created, absolute, exported as IMAGEVOL_RUN_DIR) and T0 (when it was sourced).
# The service scripts (ceph, glance, keystone, mariadb, temporal-pg) each run one server of their
# own and speak through log/die; the stack scripts (run, stop, test, bench, faults,
# standalone-proof) run imagevol's binaries with pid files under $RUN/pids and logs under
# $RUN/log, and speak through say.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$here/.." && pwd)
BIN=$TOP/bin
RUN=${IMAGEVOL_RUN_DIR:-$TOP/.run}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
export IMAGEVOL_RUN_DIR=$RUN

say() { echo "imagevol: $*" >&2; }
# log and die: messages prefixed with the script's own name
log() { echo "${0##*/}: $*" >&2; }
die() { log "$*"; exit 1; }
# now_ms: the wall clock in milliseconds (without a fork; any locale's decimal separator)
now_ms() { echo $((${EPOCHREALTIME//[!0-9]/} / 1000)); }
T0=$(now_ms)
# took: the time since T0, e.g. 1.234s
took() { local ms=$(($(now_ms) - T0)); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }

# usage LINES: print the script's header comment lines LINES (a sed range such as 2,14) without
# their "# ", to stderr, and exit 2.
usage() {
  sed -n "${1}p" "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- waiting ------------------------------------------------------------------------------------

# wait_until [-i STEP] [-w GUARD] SECONDS [!] CMD...: run CMD every STEP seconds (default 0.1)
# until it succeeds (with "!": until it fails). Returns 1 once SECONDS of wall time have passed,
# and 2 as soon as GUARD (a command, split on spaces) fails: what is awaited can no longer come,
# e.g. because the process that should answer exited. Silent: callers word their own failures.
wait_until() {
  local step=0.1 guard=() end not=0
  while :; do
    case $1 in
      -i) step=$2 ;;
      -w) read -ra guard <<<"$2" ;;
      *) break ;;
    esac
    shift 2
  done
  end=$(($(now_ms) + $1 * 1000))
  shift
  [ "$1" != '!' ] || { not=1; shift; }
  while :; do
    if "$@"; then [ $not = 0 ]; else [ $not = 1 ]; fi && return 0
    [ ${#guard[@]} = 0 ] || "${guard[@]}" || return 2
    [ "$(now_ms)" -lt "$end" ] || return 1
    sleep "$step"
  done
}

# prints CMD...: CMD prints something (e.g. a pid function that finds the process)
prints() { [ -n "$("$@")" ]; }

# listening PORT: something accepts connections on 127.0.0.1:PORT (a bare TCP connect, bounded
# to 3 s: a server that would refuse our login still owns the port).
listening() {
  # shellcheck disable=SC2016 # $1 belongs to the inner shell
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# --- servers of the service scripts -------------------------------------------------------------

# alive PID: exists and is not a zombie (reaping can lag when PID 1 is not a real init)
alive() {
  local st
  st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# our_pid PIDFILE ARG...: the pid in PIDFILE if that process is alive and its command line has
# every ARG as a whole argument (guards against a stale file and pid reuse); nothing otherwise.
our_pid() {
  local f=$1 pid args a
  shift
  [ -s "$f" ] || return 0
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 0
  args=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
  for a in "$@"; do
    grep -qxF -- "$a" <<<"$args" || return 0
  done
  echo "$pid"
}

# spawn PIDFILE LOG CMD...: start CMD in the background in a new session and process group (so
# stop can signal it and anything it spawns at once), stdin from /dev/null, output appended to LOG.
# The inner shell writes its own pid to PIDFILE, which exec turns into CMD's.
spawn() {
  local pidf=$1 out=$2
  shift 2
  rm -f "$pidf"
  # shellcheck disable=SC2016 # $$ and $1 belong to the inner shell
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidf" "$@" </dev/null >>"$out" 2>&1 &
}

# stop_group PIDFILE PID SECONDS [NAME]: stop the server PID that PIDFILE names (PID empty: none
# of ours runs) and remove PIDFILE. The server was started with setsid: SIGTERM goes to its
# process group (to PID alone if it no longer leads one), SIGKILL after SECONDS.
# NAME, if given, names the server in the log lines.
stop_group() {
  local pidf=$1 pid=$2 secs=$3 name=${4:+$4 } pgid
  if [ -z "$pid" ]; then
    rm -f "$pidf"
    log "${name}not running (nothing of ours to stop)"
    return 0
  fi
  pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
  if [ "$pgid" = "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null || true; else kill -TERM "$pid"; fi
  if ! wait_until "$secs" ! alive "$pid"; then
    log "pid $pid ignored SIGTERM for $secs s; killing"
    if [ "$pgid" = "$pid" ]; then kill -KILL -- "-$pid" 2>/dev/null || true; else kill -KILL "$pid"; fi
  fi
  rm -f "$pidf"
  log "stopped ${name}pid $pid in $(took)"
}

# rss PID: its resident memory, e.g. 123456kB
rss() { awk '/^VmRSS/{print $2 $3}' "/proc/$1/status"; }

# server_status NAME PID WHERE PROBE: print the status line of server NAME and succeed when PID
# (empty: not running) runs and the script's `healthy` check passes. WHERE says where it serves,
# PROBE what healthy asks.
server_status() {
  local name=$1 pid=$2 where=$3 probe=$4
  [ -n "$pid" ] || { echo "$name not running"; return 1; }
  if healthy; then
    echo "$name running pid $pid rss $(rss "$pid") $where"
  else
    echo "$name pid $pid runs but $probe does not answer"
    return 1
  fi
}

# --- imagevol's processes, for the stack scripts ------------------------------------------------

# pid_of NAME: the pid in $RUN/pids/NAME.pid if it is alive and runs a binary of ours.
pid_of() {
  local f=$RUN/pids/$1.pid pid
  [ -s "$f" ] || return 0
  pid=$(<"$f")
  alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$BIN/" && echo "$pid"
  return 0
}

# running NAME: pid_of NAME finds it
running() { prints pid_of "$1"; }

# start_bg NAME CMD...: start CMD in the background with its log under $RUN/log.
start_bg() {
  local name=$1
  shift
  if running "$name"; then
    say "$name already running (pid $(pid_of "$name"))"
    return 0
  fi
  mkdir -p "$RUN/pids" "$RUN/log"
  setsid "$@" >>"$RUN/log/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name.pid"
}

# stop_bg NAME: SIGTERM, then SIGKILL after 20 s.
stop_bg() {
  local pid
  pid=$(pid_of "$1")
  rm -f "$RUN/pids/$1.pid.stopping"
  if [ -z "$pid" ]; then
    rm -f "$RUN/pids/$1.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait_until 20 ! running "$1" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$RUN/pids/$1.pid"
  say "stopped $1 (pid $pid)"
}

# exited NAME: report that NAME (started by start_bg) exited, with its log's tail
exited() {
  tail -n 30 "$RUN/log/$1.log" >&2
  say "$1 exited; log: $RUN/log/$1.log"
}

# settle NAME...: give processes just started by start_bg half a second to fail at start-up;
# fails for the first of them that exited.
settle() {
  local name
  sleep 0.5
  for name in "$@"; do
    running "$name" || { exited "$name"; return 1; }
  done
}

# wait_running NAME SECONDS CMD...: wait_until CMD succeeds while NAME (started by start_bg)
# runs. If NAME exits first, report it (exited) and return 2; 1 after SECONDS.
wait_running() {
  local name=$1 rc=0
  wait_until -w "running $name" "${@:2}" || rc=$?
  [ $rc != 2 ] || exited "$name"
  return $rc
}

# wait_http URL SECONDS NAME: wait until URL answers (any HTTP status) while NAME runs.
wait_http() {
  wait_running "$3" "$2" curl -s -o /dev/null "$1" && return 0
  [ $? = 2 ] || say "$3 did not answer at $1 in $2 s; log: $RUN/log/$3.log"
  return 1
}

# http_200 URL: URL answers 200
http_200() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; }

# wait_ready URL SECONDS PART: wait until the gateway's /readyz at URL answers 200 (every storage
# host has a live worker); PART is the process to blame, with its log tail, if it dies meanwhile.
wait_ready() {
  wait_running "$3" "$2" http_200 "$1" && return 0
  [ $? = 2 ] || say "not ready in $2 s: $(curl -s "$1")"
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

# load_env SERVICE...: source $RUN/SERVICE/env, the exports deploy/SERVICE.sh start wrote, of each
# (RUN=DIR load_env ...: those of the run dir DIR).
load_env() {
  local s
  for s in "$@"; do
    # shellcheck source=/dev/null # written at run time
    . "$RUN/$s/env"
  done
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

# service SERVICE VERB: deploy/<SERVICE>.sh VERB, where SERVICE glance is glance.sh's file-store
# instance and glance-rbd its rbd-store one (GLANCE_STORE=rbd, on GLANCE_RBD_PORT, default 9293;
# its env file is $RUN/glance-rbd/env, which load_env glance-rbd reads).
service() {
  case "$1" in
    glance) GLANCE_STORE="file" "$here/glance.sh" "${@:2}" ;;
    glance-rbd) GLANCE_STORE=rbd GLANCE_PORT=${GLANCE_RBD_PORT:-9293} "$here/glance.sh" "${@:2}" ;;
    *) "$here/$1.sh" "${@:2}" ;;
  esac
}

# up SERVICE PATTERN: `service SERVICE status` prints a line matching PATTERN, i.e. its daemon
# is up, healthy or not. One the caller did not start is never the caller's to stop.
up() {
  local out
  out=$(service "$1" status 2>/dev/null || true)
  grep -qE "$2" <<<"$out"
}

# need_disk GIB WHAT: say how much room the file system of $RUN has, and stop with that as the
# reason when it is less than GIB GiB: a store that fills up mid-run fails tests far from the cause
# (Glance answers 413, an OSD stops writing).
need_disk() {
  local avail
  mkdir -p "$RUN"
  avail=$(df -Pk "$RUN" | awk 'NR == 2 { print int($4 / 1048576) }')
  log "disk: ${avail} GiB free under $RUN ($2 needs about $1 GiB)"
  [ "$avail" -ge "$1" ] || die "only ${avail} GiB free under $RUN; $2 needs about $1 GiB: free some space first"
}
