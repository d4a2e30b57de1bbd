#!/usr/bin/env bash
# ui-screenshot.sh — `make ui-screenshot`: with the `make run` stack up, upload a small image to
# Glance, provision two volumes from it (a cache miss, then a hit) and take a headless Chromium
# screenshot of the Temporal UI's workflow list filtered by that image's ImageID search attribute.
# Installs Debian's chromium first if it is missing.
#
# Usage: deploy/ui-screenshot.sh [OUTPUT.png]   (default docs/ui-filtered-by-image.png)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=${1:-$TOP/docs/ui-filtered-by-image.png}
gateway=http://127.0.0.1:8776
ui=http://127.0.0.1:8233

# Any HTTP answer will do: a 503 from /healthz still means the stack is there to report on.
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$gateway/healthz" || true)
if [ "$code" = 000 ] || [ -z "$code" ]; then
  say "the gateway at $gateway is not answering; start the stack first: make run (or deploy/run.sh --detach)"
  exit 1
fi
[ -s "$RUN/env" ] || { say "$RUN/env is missing; start the stack with make run"; exit 1; }
# shellcheck source=/dev/null # written by run.sh
. "$RUN/env"

command -v chromium >/dev/null || "$here/install-deps.sh" chromium
[ -x "$BIN/imagevolctl" ] || (cd "$TOP" && GOTOOLCHAIN=local go build -tags pacific -o "$BIN/" ./cmd/imagevolctl)

work=$(mktemp -d /tmp/imagevol-ui.XXXXXX)
trap 'rm -rf "$work"' EXIT

# 8 MiB disk: 1 MiB of random data every 2 MiB; its own bytes, so the first volume is a miss.
img=$work/disk.raw
truncate -s 8M "$img"
for i in 0 2 4 6; do
  head -c 1M /dev/urandom | dd of="$img" bs=1M seek="$i" conv=notrunc status=none
done
id=$(curl -fsS -X POST "${GLANCE_URL%/}/v2/images" -H 'Content-Type: application/json' \
  -d '{"name":"imagevol-ui-screenshot","disk_format":"raw","container_format":"bare","visibility":"community"}' | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
[ -n "$id" ] || { say "Glance at $GLANCE_URL did not create an image"; exit 1; }
curl -fsS -X PUT "${GLANCE_URL%/}/v2/images/$id/file" -H 'Content-Type: application/octet-stream' --data-binary @"$img"
say "image $id uploaded to Glance"
"$BIN/imagevolctl" create --image "$id" --size 1 --name ui-miss --wait
"$BIN/imagevolctl" create --image "$id" --size 1 --name ui-hit --wait

# Visibility is updated after the runs close; wait until the list the page asks for has both, so
# the screenshot does not catch it half-filled.
query="ImageID%3D%22$id%22"
both_listed() {
  local n
  n=$(curl -fsS "$ui/api/v1/namespaces/default/workflows?query=$query" 2>/dev/null | grep -o '"workflowId"' | wc -l || true)
  [ "${n:-0}" -ge 2 ]
}
wait_until -i 0.2 20 both_listed || true

url="$ui/namespaces/default/workflows?query=$query"
mkdir -p "$(dirname "$out")"
rm -f "$out"
profile=$work/chromium-profile
mkdir -p "$profile"
# No sandbox: this runs as root. Virtual time lets the UI's requests and rendering finish before
# the shot without a fixed sleep.
if ! timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1600,900 --virtual-time-budget=8000 \
  --screenshot="$out" "$url" >"$work/chromium.log" 2>&1 || [ ! -s "$out" ]; then
  tail -n 20 "$work/chromium.log" >&2
  say "chromium did not write $out"
  exit 1
fi
say "screenshot of $url written to $out"
