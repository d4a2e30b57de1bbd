#!/usr/bin/env bash
# install-deps.sh — installs, non-interactively, only the Debian packages imagevol needs that are
# missing: Ceph (server + CLI), the librados/librbd headers go-ceph builds against, qemu-img with
# its RBD driver and bubblewrap to confine it, and Debian's glance-api (with the Ceph bindings of
# its rbd store). Safe to run again: it does
# nothing when all is present.
# Optionally (not part of "all"), Debian's chromium, which `make ui-screenshot` drives headless,
# and Keystone's Python package (python3-keystone, no service of its own), which
# deploy/keystone.sh runs for the Keystone tests, PostgreSQL for deploy/temporal-pg.sh, and
# Debian's shellcheck, the linter that `make vet` and `make test` run on the shell scripts, and
# OpenStack's own command-line clients (cinder, openstack), which the e2e tests drive unchanged.
#
# "unit" is what the unit tests need without any service: the headers go-ceph builds against,
# qemu-img (the format inspector is tested against its images) and the sandbox's bubblewrap.
#
# Usage: deploy/install-deps.sh [unit|ceph|glance|chromium|keystone|postgresql|shellcheck|clients|all]
#        (default all)
set -euo pipefail

want=${1:-all}
log() { echo "install-deps: $*" >&2; }

# bubblewrap: the worker runs qemu-img in a bwrap sandbox and refuses to start without it.
ceph_pkgs=(ceph-mon ceph-mgr ceph-osd ceph-common librados-dev librbd-dev pkg-config gcc qemu-utils qemu-block-extra uuid-runtime bubblewrap)
# python3-rbd and python3-rados: the rbd store of glance_store (deploy/glance.sh GLANCE_STORE=rbd)
# imports them, and glance-api does not depend on them.
glance_pkgs=(glance-api python3-rbd python3-rados)
chromium_pkgs=(chromium)
# The library only: Debian's "keystone" package would add dbconfig-common questions, uwsgi and an
# init script that serves on 5000; deploy/keystone.sh runs keystone-manage and the WSGI app itself.
keystone_pkgs=(python3-keystone)
# The standalone Temporal server's store (deploy/temporal-pg.sh); the package creates cluster "main".
postgresql_pkgs=(postgresql)
shellcheck_pkgs=(shellcheck)
# Debian's python3-cinderclient (`cinder`) and python3-openstackclient (`openstack`).
clients_pkgs=(python3-cinderclient python3-openstackclient)
unit_pkgs=(librados-dev librbd-dev pkg-config gcc qemu-utils bubblewrap)

missing=()
check() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
}
case "$want" in
  ceph) check "${ceph_pkgs[@]}" ;;
  glance) check "${glance_pkgs[@]}" ;;
  chromium) check "${chromium_pkgs[@]}" ;;
  keystone) check "${keystone_pkgs[@]}" ;;
  postgresql) check "${postgresql_pkgs[@]}" ;;
  shellcheck) check "${shellcheck_pkgs[@]}" ;;
  clients) check "${clients_pkgs[@]}" ;;
  unit) check "${unit_pkgs[@]}" ;;
  all) check "${ceph_pkgs[@]}" "${glance_pkgs[@]}" ;;
  *) echo "usage: $0 [unit|ceph|glance|chromium|keystone|postgresql|shellcheck|clients|all]" >&2; exit 2 ;;
esac
[ ${#missing[@]} -gt 0 ] || exit 0
[ "$(id -u)" = 0 ] || { log "missing ${missing[*]}; run this script as root to install them"; exit 1; }

log "installing ${missing[*]}"
# Glance's debconf questions all default to "no", but preseed them so that no database,
# message queue, Keystone or endpoint registration is attempted.
debconf-set-selections <<'SEL'
glance-common glance/configure_db boolean false
glance-common glance/configure_rabbit boolean false
glance-common glance/configure_ksat boolean false
glance-api glance/configure_api-endpoint boolean false
SEL
# Package scripts must not start services: we start our own, on loopback, under .run/.
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  policy=1
fi
trap '[ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT

# A private archive dir: some machines clean /var/cache/apt/archives while apt runs.
archives=$(mktemp -d /tmp/imagevol-apt.XXXXXX)
mkdir -p "$archives/partial"
# Another apt run (an unattended upgrade, say) holds the lock for a while: wait for it.
apt_opts=(-o DPkg::Lock::Timeout=600 -o "Dir::Cache::Archives=$archives/" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

export DEBIAN_FRONTEND=noninteractive
# The lists may be absent or stale on a new machine; one update is cheap next to the install.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get install -y -qq --no-install-recommends "${apt_opts[@]}" "${missing[@]}" >/tmp/imagevol-apt.log 2>&1 || {
  tail -n 40 /tmp/imagevol-apt.log >&2
  log "apt-get install failed"
  exit 1
}
rm -rf "$archives"
log "installed ${#missing[@]} packages"
