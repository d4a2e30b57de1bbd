//go:build e2e

package e2e

import (
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/imagevol/imagevol/models"
)

// A compressed qcow2 downloads as a few MiB but uses its whole disk once imported. With
// max_size_gb 1, its 1 GiB + 64 MiB of data must not be cached: the limit holds on the bytes the
// cache volume uses, not on the download. Glance knows the virtual size of an image declared
// qcow2, so it is refused before the fill; declared raw, the size shows only after the import,
// which then gives the entry up. Either way the volume holds the disk the image describes.
func TestCacheLimitOnUsedSize(t *testing.T) {
	const disk = gib + 64*mib
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Every 64 KiB cluster holds data (its own number, repeated): nothing is zero, all compresses.
	cluster := make([]byte, 64<<10)
	h := sha512.New()
	for c := int64(0); c < disk/int64(len(cluster)); c++ {
		for i := 0; i < len(cluster); i += 8 {
			binary.LittleEndian.PutUint64(cluster[i:], uint64(c)+1)
		}
		h.Write(cluster)
		if _, err := f.Write(cluster); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))
	qcow := filepath.Join(dir, "disk.qcow2")
	qemuImg(t, "convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcow)
	os.Remove(raw)
	data, err := os.ReadFile(qcow)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) > 64*mib {
		t.Fatalf("the compressed image is %d bytes; the test needs it small", len(data))
	}

	for _, tc := range []struct {
		name, diskFormat string
	}{
		{"virtual size known", "qcow2"},
		{"virtual size hidden", "raw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := "e2e-usedsize-" + tc.diskFormat
			cfg := hostConfig(host)
			cfg.ImageVolumeCacheMaxSizeGB = 1
			startHost(t, cfg)
			api := newGateway(t, host)
			img := uploadImage(t, "usedsize-"+tc.diskFormat, tc.diskFormat, data)
			v := api.createVolume(img.ID, 2)
			if v.Status != models.StatusAvailable {
				t.Fatalf("volume %s: %s %q", v.ID, v.Status, v.Error)
			}
			var cached int64
			for _, e := range entriesOf(t, host) {
				cached += e.SizeBytes
			}
			if cached > gib {
				t.Fatalf("the cache holds %d bytes with max_size_gb 1 (volume cache %q, reason %q)", cached, v.Cache, v.CacheReason)
			}
			if v.Cache != models.CacheNotCached || v.CacheReason == "" {
				t.Fatalf("volume cache %q reason %q; want not cached, with a reason", v.Cache, v.CacheReason)
			}
			if got := volumeSHA512(t, v.ID, disk); got != want {
				t.Fatal("the volume does not hold the disk the image describes")
			}
			t.Logf("download %d bytes, virtual size per Glance %d: cache reason %q", img.Size, img.VirtualSize, v.CacheReason)
		})
	}
}
