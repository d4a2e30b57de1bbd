#!/usr/bin/env bash
# keystone.sh — Debian's Keystone (OpenStack Zed, python3-keystone) on 127.0.0.1 for development
# and tests: sqlite database, Fernet tokens, the public WSGI app in one single-threaded Python process.
# Then, idempotently: project "service" with user "imagevol" (role service: may validate other
# users' tokens), projects "demo" and "other" each with a user of the same name (role member),
# an "image" service whose public endpoint is $GLANCE_URL, and imagevol's gateway as the
# block-storage service (types block-storage and volumev3) at $IMAGEVOL_URL/v3/%(project_id)s,
# as Cinder's, all in RegionOne.
#
# Usage: deploy/keystone.sh start|stop|status
#   start   write config, db_sync, keys, bootstrap, serve, wait for GET /v3, set up (idempotent)
#   stop    stop the Keystone this script started (its whole process group)
#   status  exit 0 when our Keystone runs and /v3 answers
#
# State: $IMAGEVOL_RUN_DIR/keystone (default <repo>/.run/keystone): config, sqlite db, key
# repositories, passwords, logs, pid. Callers: `. $RUN/keystone/env` sets KEYSTONE_URL, the
# users' passwords and project IDs; $RUN/keystone/clouds.yaml has clouds imagevol, demo, other.
# Env: KEYSTONE_PORT (default 5000), KEYSTONE_START_TIMEOUT (60 s), KEYSTONE_DEBUG (false),
#      GLANCE_URL (http://127.0.0.1:9292/), IMAGEVOL_URL (the gateway, http://127.0.0.1:8776),
#      KEYSTONE_ADMIN_PASSWORD (default: generated once).
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$RUN/keystone
CONF=$DIR/keystone.conf
PIDF=$DIR/keystone.pid
SERVE=$DIR/keystone-serve.py
PORT=${KEYSTONE_PORT:-5000}
URL=http://127.0.0.1:$PORT/v3
TIMEOUT=${KEYSTONE_START_TIMEOUT:-60}
# the image endpoint: $GLANCE_URL, else the one deploy/glance.sh last wrote, else its default
if [ -z "${GLANCE_URL:-}" ] && [ -s "$RUN/glance/env" ]; then
  GLANCE_URL=$(load_env glance && echo "${GLANCE_URL:-}")
fi
IMAGE_URL=${GLANCE_URL:-http://127.0.0.1:9292/}
# the volume endpoint: imagevol's gateway, where `make run` serves it (IMAGEVOL_LISTEN's default)
VOLUME_URL=${IMAGEVOL_URL:-http://127.0.0.1:8776}
REGION=RegionOne
# Debian's interpreter and console script, not whatever python3 is first on PATH
PY=/usr/bin/python3
MANAGE=/usr/bin/keystone-manage

# Keep another Python install's settings and user packages out of Debian's interpreter.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PYTHONNOUSERSITE=1

# pid from our pid file if it is a live server running our script (guards pid reuse)
kpid() { our_pid "$PIDF" "$SERVE"; }

# GET /v3 answers with Keystone's version document
installed() { dpkg-query -W -f='${Status}' python3-keystone 2>/dev/null | grep -q 'install ok installed'; }

healthy() { curl -fsS -m 3 "$URL" 2>/dev/null | grep -q '"id": *"v3' ; }

write_conf() {
  mkdir -p "$DIR"/{log,fernet-keys,credential-keys}
  chmod 700 "$DIR"/fernet-keys "$DIR"/credential-keys
  cat >"$CONF" <<EOF
# Written by deploy/keystone.sh on every start.
[DEFAULT]
debug = ${KEYSTONE_DEBUG:-false}
log_file = $DIR/log/keystone.log
use_stderr = false

[database]
connection = sqlite:///$DIR/keystone.sqlite

[token]
provider = fernet
# 1 h, Keystone's default
expiration = 3600

[fernet_tokens]
key_repository = $DIR/fernet-keys/

[fernet_receipts]
key_repository = $DIR/fernet-keys/

[credential]
key_repository = $DIR/credential-keys/

[identity]
# bcrypt's cheapest cost: a password check in milliseconds, for tests; never in production
password_hash_rounds = 4

[cache]
# In-process cache: one process serves every request, so each write invalidates what it changes.
# Without it a token validation runs some 200 SQL queries.
enabled = true
backend = dogpile.cache.memory

[oslo_messaging_notifications]
driver = noop
EOF
  # The WSGI app in a threaded wsgiref server on loopback: no uwsgi, no Apache.
  cat >"$SERVE" <<'EOF'
# Written by deploy/keystone.sh: serves Keystone's public WSGI app, one request at a time
# (threads would have concurrent writers lock the sqlite database).
import sys
import wsgiref.simple_server as wss

from keystone.server.wsgi import initialize_public_application

host, port = sys.argv[1], int(sys.argv[2])
# oslo.config parses the command line: leave it only the program name
del sys.argv[1:]
app = initialize_public_application()
srv = wss.make_server(host, port, app)
print("keystone listening on http://%s:%d/" % (host, port), flush=True)
srv.serve_forever()
EOF
}

# passwords, generated once and kept (mode 600) so that a restart keeps the same credentials
load_passwords() {
  local f=$DIR/passwords
  mkdir -p "$DIR"
  if [ ! -s "$f" ]; then
    (
      umask 077
      for u in ADMIN IMAGEVOL DEMO OTHER; do
        printf 'KS_%s=%s\n' "$u" "$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
      done >"$f"
    )
  fi
  # shellcheck source=/dev/null # made just above
  . "$f"
  KS_ADMIN=${KEYSTONE_ADMIN_PASSWORD:-$KS_ADMIN}
}

manage() {
  local what=$1
  shift
  timeout "$TIMEOUT" "$MANAGE" --config-file "$CONF" "$@" >>"$DIR/log/manage.log" 2>&1 ||
    { tail -n 20 "$DIR/log/manage.log" >&2; die "keystone-manage $what failed; see $DIR/log/manage.log"; }
}

# setup creates, if missing, the projects, users, roles, grants and the image endpoint, with
# plain Keystone v3 requests from one short stdlib script (one process instead of a curl and
# a JSON parser per call). It prints shell assignments of the project IDs.
setup() {
  KS_URL=$URL KS_REGION=$REGION KS_IMAGE_URL=$IMAGE_URL KS_VOLUME_URL=$VOLUME_URL KS_ADMIN=$KS_ADMIN KS_IMAGEVOL=$KS_IMAGEVOL \
    KS_DEMO=$KS_DEMO KS_OTHER=$KS_OTHER timeout "$TIMEOUT" "$PY" - <<'EOF'
import json, os, sys, urllib.error, urllib.parse, urllib.request

url, env = os.environ["KS_URL"], os.environ
token = None

def call(method, path, body=None, ok=(200, 201, 204)):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            data = resp.read()
            return resp.status, resp.headers, (json.loads(data) if data else None)
    except urllib.error.HTTPError as e:
        if e.code in ok:
            return e.code, e.headers, None
        sys.exit("keystone.sh setup: %s %s: HTTP %d %s" % (method, path, e.code, e.read()[:300]))

q = urllib.parse.quote
_, hdr, _ = call("POST", "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": env["KS_ADMIN"]}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
token = hdr["X-Subject-Token"]

def one(kind, query, create):
    _, _, found = call("GET", "/%s?%s" % (kind, query))
    if found[kind]:
        return found[kind][0]
    _, _, made = call("POST", "/" + kind, {kind[:-1]: create})
    return made[kind[:-1]]

ids = {}
role = {r: one("roles", "name=" + r, {"name": r})["id"] for r in ("service", "member")}
for project, user, pw, r in (("service", "imagevol", "KS_IMAGEVOL", "service"),
                             ("demo", "demo", "KS_DEMO", "member"),
                             ("other", "other", "KS_OTHER", "member")):
    p = one("projects", "domain_id=default&name=" + q(project),
            {"name": project, "domain_id": "default", "description": "imagevol tests"})
    u = one("users", "domain_id=default&name=" + q(user),
            {"name": user, "domain_id": "default", "password": env[pw], "default_project_id": p["id"]})
    # the password of a user kept from an earlier run follows the passwords file
    call("PATCH", "/users/" + u["id"], {"user": {"password": env[pw], "enabled": True}})
    call("PUT", "/projects/%s/users/%s/roles/%s" % (p["id"], u["id"], role[r]))
    ids[project] = p["id"]

def endpoint(kind, name, description, target):
    svc = one("services", "type=" + kind, {"type": kind, "name": name, "description": description})
    _, _, eps = call("GET", "/endpoints?service_id=%s&interface=public" % svc["id"])
    eps = [e for e in eps["endpoints"] if e.get("region_id") == env["KS_REGION"]]
    if not eps:
        call("POST", "/endpoints", {"endpoint": {"service_id": svc["id"], "interface": "public",
                                                "region_id": env["KS_REGION"], "url": target}})
    elif eps[0]["url"] != target:
        call("PATCH", "/endpoints/" + eps[0]["id"], {"endpoint": {"url": target}})

endpoint("image", "glance", "Glance", env["KS_IMAGE_URL"])
# imagevol's gateway as Cinder's v3 API, under both of its service types: "block-storage" is
# the official one, "volumev3" what cinderclient and openstackclient ask the catalog for.
volume_url = env["KS_VOLUME_URL"].rstrip("/") + "/v3/%(project_id)s"
for kind in ("block-storage", "volumev3"):
    endpoint(kind, "cinderv3", "imagevol (Cinder v3 API)", volume_url)

for k, v in ids.items():
    print("KS_PROJECT_%s=%s" % (k.upper(), v))
EOF
}

write_env() {
  local ids=$1
  eval "$ids"
  (
    umask 077
    cat >"$DIR/env" <<EOF
export KEYSTONE_URL=$URL
export KEYSTONE_REGION=$REGION
export KEYSTONE_CLOUDS_FILE=$DIR/clouds.yaml
export KEYSTONE_ADMIN_PASSWORD=$KS_ADMIN
export KEYSTONE_IMAGEVOL_PASSWORD=$KS_IMAGEVOL
export KEYSTONE_DEMO_PASSWORD=$KS_DEMO
export KEYSTONE_OTHER_PASSWORD=$KS_OTHER
export KEYSTONE_SERVICE_PROJECT_ID=$KS_PROJECT_SERVICE
export KEYSTONE_DEMO_PROJECT_ID=$KS_PROJECT_DEMO
export KEYSTONE_OTHER_PROJECT_ID=$KS_PROJECT_OTHER
EOF
    cloud() {
      cat <<EOF
  $1:
    region_name: $REGION
    interface: public
    identity_api_version: 3
    auth:
      auth_url: $URL
      username: $2
      password: $3
      project_name: $4
      user_domain_name: Default
      project_domain_name: Default
EOF
    }
    {
      echo "# Written by deploy/keystone.sh: the users it set up in the Keystone at $URL."
      echo "clouds:"
      cloud imagevol imagevol "$KS_IMAGEVOL" service
      cloud demo demo "$KS_DEMO" demo
      cloud other other "$KS_OTHER" other
    } >"$DIR/clouds.yaml"
  )
  # umask covers new files; these may be left from a version that made them readable
  chmod 600 "$DIR/env" "$DIR/clouds.yaml" "$DIR/passwords"
}

cmd_start() {
  local pid t ids stamp
  if [ ! -x "$MANAGE" ] || ! installed; then
    log "keystone not installed; running install-deps.sh keystone"
    "$here/install-deps.sh" keystone
    [ -x "$MANAGE" ] || die "$MANAGE still missing after install-deps.sh"
  fi
  load_passwords
  pid=$(kpid)
  if [ -n "$pid" ] && [ "$(cat "$DIR/port" 2>/dev/null)" != "$PORT" ]; then
    die "our keystone (pid $pid) serves port $(cat "$DIR/port" 2>/dev/null), not $PORT: stop it first"
  fi
  if [ -z "$pid" ]; then
    healthy && die "something we did not start already answers on 127.0.0.1:$PORT; set KEYSTONE_PORT"
    write_conf
    : >"$DIR/log/manage.log"
    # Each keystone-manage run imports all of Keystone (seconds of CPU): db_sync and bootstrap
    # run again only when the package, the URL or the admin password changed since the last.
    stamp="$(dpkg-query -W -f='${Version}' python3-keystone) $URL $(printf %s "$KS_ADMIN" | sha256sum | cut -c1-16)"
    # Keys first: bootstrap checks that tokens can be issued.
    [ -e "$DIR/fernet-keys/0" ] || manage fernet_setup fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    [ -e "$DIR/credential-keys/0" ] || manage credential_setup credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
    if [ ! -s "$DIR/keystone.sqlite" ] || [ "$(cat "$DIR/bootstrapped" 2>/dev/null)" != "$stamp" ]; then
      rm -f "$DIR/bootstrapped"
      manage db_sync db_sync
      log "db_sync done ($(took))"
      # bootstrap is idempotent: it (re)sets the admin password, roles and identity endpoints.
      # The password goes in the environment, not on a command line others can read.
      (
        export OS_BOOTSTRAP_PASSWORD=$KS_ADMIN
        manage bootstrap bootstrap --bootstrap-username admin \
          --bootstrap-project-name admin --bootstrap-role-name admin --bootstrap-service-name keystone \
          --bootstrap-region-id "$REGION" --bootstrap-public-url "$URL" --bootstrap-internal-url "$URL"
      )
      echo "$stamp" >"$DIR/bootstrapped"
      log "bootstrap done ($(took))"
    fi
    # Write-ahead log: a reader does not make a write fail with "database is locked" (kept in
    # the file; set again in case the file is new).
    "$PY" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")' \
      "$DIR/keystone.sqlite" || die "could not set the sqlite database's journal mode"
    echo "$PORT" >"$DIR/port"
    # New session and process group: stop signals the server and anything it spawns at once.
    OS_KEYSTONE_CONFIG_DIR=$DIR OS_KEYSTONE_CONFIG_FILES=keystone.conf \
      spawn "$PIDF" "$DIR/log/keystone.stdout" "$PY" "$SERVE" 127.0.0.1 "$PORT"
    wait_until -i 0.05 5 prints kpid || die "keystone did not start; see $DIR/log/"
    pid=$(kpid)
  fi
  wait_until -w "prints kpid" "$TIMEOUT" healthy || case $? in
    2)
      tail -n 20 "$DIR/log/keystone.stdout" "$DIR/log/keystone.log" >&2 2>/dev/null || true
      die "keystone exited during start-up; see $DIR/log/"
      ;;
    *)
      cmd_stop
      die "no answer from $URL in ${TIMEOUT}s; see $DIR/log/"
      ;;
  esac
  log "serving $URL ($(took))"
  t=$(now_ms)
  ids=$(setup) || die "setting up projects, users and the image and volume endpoints failed"
  write_env "$ids"
  log "projects, users, image endpoint ($IMAGE_URL) and volume endpoint ($VOLUME_URL) set up in $(($(now_ms) - t)) ms"
  log "ready in $(took): pid $pid $URL; env: $DIR/env, clouds: $DIR/clouds.yaml"
}

# the server leads its own process group (setsid): SIGTERM to the group, SIGKILL after 15 s
cmd_stop() { stop_group "$PIDF" "$(kpid)" 15; }

cmd_status() { server_status keystone "$(kpid)" "$URL" "$URL"; }

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage 2,20 ;;
esac
