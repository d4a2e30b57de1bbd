//go:build e2e

package e2e

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// requireFailed checks a volume ended in "error" with the typed cause, and that nothing of it is
// left in Ceph: no volume image, no staging image, no cache entry or cache volume of the image.
func requireFailed(t *testing.T, host string, v starter.VolumeView, errType string) {
	t.Helper()
	if v.Status != models.StatusError || !strings.Contains(v.Error, errType) {
		t.Fatalf("volume %s: status %s error %q; want error %s", v.ID, v.Status, v.Error, errType)
	}
	names, err := stack.ceph.List(context.Background(), stack.pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(n, v.ID) {
			t.Fatalf("image %s left behind by the failed volume", n)
		}
	}
	for _, e := range entriesOf(t, host) {
		if e.ImageID == v.ImageID {
			t.Fatalf("cache entry %+v left for a failed image", e)
		}
		for _, n := range names {
			if strings.Contains(n, e.VolumeID) && e.ImageID == v.ImageID {
				t.Fatalf("cache volume %s left behind", n)
			}
		}
	}
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

// Glance's stored bytes changed behind its back: the streamed hash does not match the published
// one, the volume fails with both hashes named, and nothing is cached or left half-made.
func TestHashMismatch(t *testing.T) {
	store := os.Getenv("GLANCE_STORE_DIR")
	if store == "" {
		t.Fatal("GLANCE_STORE_DIR is not set; run through `make test`")
	}
	host := "e2e-corrupt"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "corrupt", "raw", imageBytes(12*mib, 41, 1))
	f, err := os.OpenFile(filepath.Join(store, img.ID), os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open Glance's copy: %v", err)
	}
	if _, err := f.WriteAt([]byte("corrupted"), 5*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()

	v := api.createVolume(img.ID, 1)
	requireFailed(t, host, v, contract.ErrTypeHashMismatch)
	if !strings.Contains(v.Error, img.HashValue) {
		t.Fatalf("error %q does not name the expected hash", v.Error)
	}
}

// qcow2 bytes uploaded as "raw": the engine believes the bytes, converts them, and the volume
// holds the disk the qcow2 describes.
func TestLyingFormatIsConverted(t *testing.T) {
	host := "e2e-qcow2"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	raw := imageBytes(20*mib, 51, 3)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disk.raw"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2"))
	q, err := os.ReadFile(filepath.Join(dir, "disk.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	img := uploadImage(t, "qcow2-as-raw", "raw", q)

	v := api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	sum := sha512.Sum512(raw)
	if got := volumeSHA512(t, v.ID, int64(len(raw))); got != hex.EncodeToString(sum[:]) {
		t.Fatal("the volume does not hold the disk the qcow2 image describes")
	}
	// The cache holds the converted disk: a hit gets the same bytes.
	hit := api.createVolume(img.ID, 1)
	requireAvailable(t, hit, models.CacheHit)
	if got := volumeSHA512(t, hit.ID, int64(len(raw))); got != hex.EncodeToString(sum[:]) {
		t.Fatal("the cloned volume does not hold the converted disk")
	}
}

// A qcow2 that names a backing file would make the converter read a file of the host: refused.
func TestQcow2WithBackingFileIsRefused(t *testing.T) {
	host := "e2e-backing"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	data := qcow2WithBackingFile(t, 61)
	img := uploadImage(t, "backing", "qcow2", data)
	requireFailed(t, host, api.createVolume(img.ID, 1), contract.ErrTypeUnsafeImage)
}

// A qcow2 describing a 2 GiB disk cannot become a 1 GiB volume: the gateway refuses it when
// Glance knows the virtual size; when the image hides it (declared raw), the import finds it in
// the bytes and the volume fails with nothing left behind.
func TestVirtualSizeLargerThanVolume(t *testing.T) {
	host := "e2e-small"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	path := filepath.Join(t.TempDir(), "big.qcow2")
	qemuImg(t, "create", "-f", "qcow2", path, "2G")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img := uploadImage(t, "big-virtual", "qcow2", data)
	if img.VirtualSize != 2*gib {
		t.Fatalf("Glance reports virtual size %d for the qcow2, want 2 GiB", img.VirtualSize)
	}
	var out map[string]any
	body := `{"image_id":"` + img.ID + `","size_gb":1}`
	if code := api.call("POST", "/v1/volumes", body, &out); code != 400 {
		t.Fatalf("gateway answered %d for a 1 GiB volume of a 2 GiB image, want 400", code)
	}

	hidden := uploadImage(t, "big-virtual-as-raw", "raw", data)
	requireFailed(t, host, api.createVolume(hidden.ID, 1), contract.ErrTypeVolumeTooSmall)
}

// qcow2WithBackingFile is a qcow2 image whose header names a backing file on the local disk: the
// known trick to make a converter read a file of the host.
func qcow2WithBackingFile(t *testing.T, seed uint64) []byte {
	t.Helper()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, imageBytes(mib, seed, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay.qcow2")
	qemuImg(t, "create", "-f", "qcow2", "-b", base, "-F", "raw", overlay)
	data, err := os.ReadFile(overlay)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
