# svc.sh — helpers shared by the scripts that run one service each for development and tests
# (ceph.sh, glance.sh, keystone.sh, mariadb.sh, temporal-pg.sh). Sourced, not executed:
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$here/svc.sh"
# Sets RUN (the state dir: $IMAGEVOL_RUN_DIR, default <repo>/.run; created, absolute) and T0 (when
# it was sourced, for took). Defines log/die (messages prefixed with the script's name), now_ms,
# took, alive, our_pid, spawn, wait_pid, wait_gone, stop_group, rss, server_status and usage.

RUN=${IMAGEVOL_RUN_DIR:-$(dirname "${BASH_SOURCE[0]}")/../.run}
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)

log() { echo "${0##*/}: $*" >&2; }
die() { log "$*"; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
T0=$(now_ms)
# took: the time since T0, e.g. 1.234s
took() { local ms=$(($(now_ms) - T0)); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }

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

# wait_pid PIDFN SECONDS: wait up to SECONDS until the script's function PIDFN prints a pid.
wait_pid() {
  local deadline=$(($(date +%s) + $2))
  until [ -n "$($1)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}

# wait_gone PID SECONDS: wait up to SECONDS for PID to exit; fails if it still runs then.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$1" || return 0
    sleep 0.1
  done
  ! alive "$1"
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
  if ! wait_gone "$pid" "$secs"; then
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

# usage LINES: print the script's header comment lines LINES (a sed range such as 2,14) without
# their "# ", to stderr, and exit 2.
usage() {
  sed -n "${1}p" "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
