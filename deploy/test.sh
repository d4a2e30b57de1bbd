#!/usr/bin/env bash
# test.sh — `make test`: install what is missing, start Ceph, Glance (one on a file store, one on
# Ceph's images pool), a MySQL-protocol server and Keystone (each only if not already running), run
# vet and every test against them, and stop again what this script started. One Ceph and the two
# Glances serve all test packages; Temporal runs in-process (temporaltest) in the one integration
# package; the standalone proof at the end runs Temporal's own server on PostgreSQL.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The OSD's block file is sparse, but BlueStore's allocator moves on to fresh space rather than
# reuse freed space, so the file grows towards its full size over a run: 12 GiB bounds it (the
# tests hold at most about 5 GiB in Ceph at once). With Glance's stores (the fault suite's 1 GiB
# images, one case at a time) and Go's caches, a run needs at most about 14 GiB.
export CEPH_OSD_SIZE=${CEPH_OSD_SIZE:-12G}
need_disk 14 "make test"
"$here/install-deps.sh" all
# e2e/observability_test.go screenshots the gateway's status page with headless Chromium.
"$here/install-deps.sh" chromium
# `make shellcheck`, below beside go vet.
"$here/install-deps.sh" shellcheck
# e2e/clients_test.go drives Debian's cinder and openstack commands against the gateway.
"$here/install-deps.sh" clients

# A second pool lets the tests run two storage hosts on the one cluster.
export CEPH_POOLS=${CEPH_POOLS:-volumes volumes2}
started=()
cleanup() {
  local s
  for s in "${started[@]}"; do service "$s" stop >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
# glance-rbd (Glance on Ceph's images pool, after Ceph) answers on GLANCE_RBD_PORT (9293).
for s in ceph glance glance-rbd mariadb keystone; do
  service "$s" status >/dev/null 2>&1 || started+=("$s")
  # start is idempotent: it also writes the env file of a service that was already up.
  service "$s" start
done
# keystone's env is for e2e/keystone_test.go: KEYSTONE_URL, the test users' passwords and
# project IDs, clouds.yaml
load_env ceph glance glance-rbd mariadb keystone
export CEPH_CONF GLANCE_URL IMAGEVOL_TEST_DSN
# Glance on RBD, the images pool, and the worker user that may not read that pool
export GLANCE_RBD_URL GLANCE_RBD_LOG CEPH_IMAGES_POOL IMAGEVOL_CEPH_NOIMAGES_USER IMAGEVOL_CEPH_NOIMAGES_KEYRING
export GLANCE_STORE_DIR=$RUN/glance/images

cd "$TOP"
export GOFLAGS="${GOFLAGS:-} -tags=pacific"
go vet -tags 'pacific e2e mysql' ./...
# Temporal's analyzer: workflow code must stay deterministic (exit 3 names the offending call).
go run go.temporal.io/sdk/contrib/tools/workflowcheck@v0.4.0 ./workflows/...
make --no-print-directory shellcheck
go test -tags 'pacific e2e mysql' -count=1 -timeout 45m "$@" ./...
# Fuzz the detector of untrusted image headers briefly: its seed corpus already ran above as unit
# tests, and 20 s of mutations keeps `make test` quick; long runs are done by hand.
go test -run '^$' -fuzz '^FuzzDetect$' -fuzztime 20s ./importer/
# The fault suite last, alone: it restarts the OSD and stops Glance, which nothing else may be
# using then. It brings up and stops its own Temporal, MariaDB, worker and gateway.
"$here/faults.sh"
# The engine against a standalone Temporal server on PostgreSQL (not the dev server), with two
# workers for two storage hosts: issue-level proof that the production path works.
"$here/standalone-proof.sh"
