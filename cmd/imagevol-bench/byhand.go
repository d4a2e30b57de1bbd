package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// The pipelines an operator would run by hand to make a volume from an image, the anchor a miss
// is compared with. Each fails when the bytes do not match the image's published sha512 ($WANT).
const (
	// Raw: download, hash and import at once; the sum is compared once all three are done.
	byHandRawScript = `set -euo pipefail
mkfifo "$DIR/fifo"
sha512sum <"$DIR/fifo" >"$DIR/sum" &
curl -sSf "$URL" | tee "$DIR/fifo" | rbd --conf "$CONF" import --no-progress - "$TARGET"
wait $!
read -r got _ <"$DIR/sum"
[ "$got" = "$WANT" ] || { echo "sha512 $got, expected $WANT" >&2; exit 3; }`
	// qcow2, as Cinder does it: download to a file, hash it, convert it into RBD.
	byHandQcow2Script = `set -euo pipefail
curl -sSf -o "$DIR/image" "$URL"
read -r got _ < <(sha512sum "$DIR/image")
[ "$got" = "$WANT" ] || { echo "sha512 $got, expected $WANT" >&2; exit 3; }
qemu-img convert -W -f qcow2 -O raw "$DIR/image" "rbd:$TARGET:conf=$CONF"`
)

// byHand runs one of the by-hand pipelines on a Glance image into pool/name and returns it as a
// stage (wall time and the machine's CPU). The RBD image and the scratch files are removed after.
func (b *bench) byHand(ctx context.Context, stage, script, imageID string, virtual int64, name string) (Stage, error) {
	img, err := b.gl.Image(ctx, imageID)
	if err != nil {
		return Stage{}, err
	}
	if img.HashAlgo != "sha512" || img.HashValue == "" {
		return Stage{}, fmt.Errorf("image %s publishes no sha512 (os_hash_algo %q)", imageID, img.HashAlgo)
	}
	dir, err := os.MkdirTemp(b.cfg.WorkDir, b.runID+"-byhand-")
	if err != nil {
		return Stage{}, err
	}
	defer os.RemoveAll(dir)
	if err := b.ceph.Remove(b.cfg.Pool, name); err != nil {
		return Stage{}, err
	}
	defer func() { _ = b.ceph.Remove(b.cfg.Pool, name) }()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = append(os.Environ(), "DIR="+dir, "URL="+b.cfg.GlanceURL+"/v2/images/"+imageID+"/file",
		"CONF="+b.ceph.Conf, "TARGET="+b.cfg.Pool+"/"+name, "WANT="+img.HashValue)
	return timeStage(stage, func() (int64, error) {
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %w: %s", stage, err, strings.TrimSpace(string(out)))
		}
		return virtual, nil
	})
}
