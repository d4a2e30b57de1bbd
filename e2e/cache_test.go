//go:build e2e

package e2e

import (
	"context"
	"errors"
	"testing"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

func isNotFound(err error) bool { return errors.Is(err, storage.ErrNotFound) }

// A miss downloads the image into a new cache volume and clones the user's volume from its
// snapshot; the next request for the image is a copy-on-write clone of the same snapshot,
// extended to its own size. Both volumes hold exactly the image's bytes.
func TestMissThenHit(t *testing.T) {
	host := "e2e-hit"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	// Not a multiple of the 4 MiB block: the tail block is short.
	img := uploadImage(t, "miss-then-hit", "raw", imageBytes(24*mib+12345, 1, 8))

	first := api.createVolume(img.ID, 1)
	requireAvailable(t, first, models.CacheMiss)
	if first.Host != host || first.SizeGB != 1 {
		t.Fatalf("first volume: host %q size %d", first.Host, first.SizeGB)
	}
	es := entriesOf(t, host)
	if len(es) != 1 || es[0].ImageID != img.ID || es[0].State != models.EntryReady || es[0].ContentHash != img.ContentHash() {
		t.Fatalf("cache entries after the miss: %+v", es)
	}
	cacheVol, err := stack.store.GetVolume(context.Background(), es[0].VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	if cacheVol.ProjectID != "internal-project" || cacheVol.UserID != "internal-user" || cacheVol.Status != models.StatusAvailable {
		t.Fatalf("cache volume %+v: want owned by the internal project and available", cacheVol)
	}
	if got := volumeSHA512(t, first.ID, img.Size); got != img.HashValue {
		t.Fatalf("first volume's bytes differ from the image: sha512 %s, want %s", got, img.HashValue)
	}
	parent := storage.Parent{Pool: stack.pool, Image: contract.RBDName(es[0].VolumeID), Snapshot: contract.CacheSnapshot}
	if info := stat(t, contract.RBDName(first.ID)); info.Parent == nil || *info.Parent != parent || info.Size != uint64(gib) {
		t.Fatalf("first volume: parent %+v size %d; want clone of %+v, 1 GiB", info.Parent, info.Size, parent)
	}
	// Thin: the zero blocks were not written into the cache volume.
	if es[0].SizeBytes >= img.Size {
		t.Fatalf("cache entry uses %d bytes for a %d-byte image with holes", es[0].SizeBytes, img.Size)
	}

	second := api.createVolume(img.ID, 2)
	requireAvailable(t, second, models.CacheHit)
	info := stat(t, contract.RBDName(second.ID))
	if info.Parent == nil || *info.Parent != parent {
		t.Fatalf("second volume's parent %+v, want %+v", info.Parent, parent)
	}
	if info.Size != uint64(2*gib) {
		t.Fatalf("second volume is %d bytes, want 2 GiB", info.Size)
	}
	if got := volumeSHA512(t, second.ID, img.Size); got != img.HashValue {
		t.Fatalf("second volume's bytes differ from the image")
	}
	es = entriesOf(t, host)
	if len(es) != 1 || es[0].Hits != 1 {
		t.Fatalf("after the hit: entries %+v, want one with 1 hit", es)
	}
}

// With image_volume_cache_max_count = 2, a third image evicts the least recently used entry,
// not the oldest: a hit refreshes an entry. Volumes cloned from the evicted entry stay readable.
func TestEvictLRUByCount(t *testing.T) {
	host := "e2e-count"
	cfg := hostConfig(host)
	cfg.ImageVolumeCacheMaxCount = 2
	startHost(t, cfg)
	api := newGateway(t, host)
	a := uploadImage(t, "count-a", "raw", imageBytes(8*mib, 11, 2))
	b := uploadImage(t, "count-b", "raw", imageBytes(8*mib, 12, 2))
	c := uploadImage(t, "count-c", "raw", imageBytes(8*mib, 13, 2))

	volA := api.createVolume(a.ID, 1)
	requireAvailable(t, volA, models.CacheMiss)
	requireAvailable(t, api.createVolume(b.ID, 1), models.CacheMiss)
	requireAvailable(t, api.createVolume(a.ID, 1), models.CacheHit) // a is now the most recent
	requireAvailable(t, api.createVolume(c.ID, 1), models.CacheMiss)

	es := entriesOf(t, host)
	cached := map[string]bool{}
	for _, e := range es {
		cached[e.ImageID] = true
	}
	if len(es) != 2 || !cached[a.ID] || !cached[c.ID] {
		t.Fatalf("entries %+v: want a and c cached, b evicted", es)
	}
	requireAvailable(t, api.createVolume(b.ID, 1), models.CacheMiss) // b must be downloaded again
	if got := volumeSHA512(t, volA.ID, a.Size); got != a.HashValue {
		t.Fatal("a volume cloned before evictions lost its data")
	}
}

// With image_volume_cache_max_size_gb = 1, a second 520 MiB image evicts the first; an image
// bigger than the whole cache is not cached at all, and its volume is still made.
func TestEvictLRUBySizeAndTooBig(t *testing.T) {
	host := "e2e-size"
	cfg := hostConfig(host)
	cfg.ImageVolumeCacheMaxSizeGB = 1
	startHost(t, cfg)
	api := newGateway(t, host)
	first := uploadImage(t, "size-1", "raw", imageBytes(520*mib, 21, 1))
	second := uploadImage(t, "size-2", "raw", imageBytes(520*mib, 22, 1))

	requireAvailable(t, api.createVolume(first.ID, 1), models.CacheMiss)
	if es := entriesOf(t, host); len(es) != 1 || es[0].SizeBytes < 520*mib {
		t.Fatalf("entries after the first image: %+v", es)
	}
	requireAvailable(t, api.createVolume(second.ID, 1), models.CacheMiss)
	es := entriesOf(t, host)
	if len(es) != 1 || es[0].ImageID != second.ID {
		t.Fatalf("entries %+v: want only the second image, the first evicted for size", es)
	}
	if _, err := stack.ceph.Stat(context.Background(), stack.pool, contract.RBDName(es[0].VolumeID)); err != nil {
		t.Fatal(err)
	}

	// 1 GiB + 1 MiB, mostly holes: bigger than the whole cache.
	big := uploadImage(t, "too-big", "raw", imageBytes(gib+mib, 23, 64))
	v := api.createVolume(big.ID, 2)
	requireAvailable(t, v, models.CacheNotCached)
	if v.CacheReason != contract.ReasonTooBig {
		t.Fatalf("cache_reason %q, want %q", v.CacheReason, contract.ReasonTooBig)
	}
	if got := volumeSHA512(t, v.ID, big.Size); got != big.HashValue {
		t.Fatal("the uncached volume's bytes differ from the image")
	}
	if info := stat(t, contract.RBDName(v.ID)); info.Parent != nil || info.Size != uint64(2*gib) {
		t.Fatalf("uncached volume: parent %+v size %d; want no parent, 2 GiB", info.Parent, info.Size)
	}
	if es := entriesOf(t, host); len(es) != 1 || es[0].ImageID != second.ID {
		t.Fatalf("entries after the too-big image: %+v", es)
	}
}

// A cache volume deleted behind the engine's back is noticed on lookup: the next request
// downloads again and fills a new entry; volumes cloned from the old one keep their data.
func TestDeletedCacheVolumeFallsBackToDownload(t *testing.T) {
	host := "e2e-gone"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "gone", "raw", imageBytes(16*mib, 31, 2))

	v1 := api.createVolume(img.ID, 1)
	requireAvailable(t, v1, models.CacheMiss)
	old := entriesOf(t, host)
	if len(old) != 1 {
		t.Fatalf("entries %+v", old)
	}
	trashed, err := stack.ceph.Remove(context.Background(), stack.pool, contract.RBDName(old[0].VolumeID))
	if err != nil {
		t.Fatal(err)
	}
	if !trashed {
		t.Fatal("a cache volume with a clone was removed outright instead of moved to the trash")
	}

	v2 := api.createVolume(img.ID, 1)
	requireAvailable(t, v2, models.CacheMiss)
	now := entriesOf(t, host)
	if len(now) != 1 || now[0].ID == old[0].ID || now[0].VolumeID == old[0].VolumeID {
		t.Fatalf("entries after the fallback: %+v (old %+v)", now, old[0])
	}
	for _, id := range []string{v1.ID, v2.ID} {
		if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
			t.Fatalf("volume %s bytes differ from the image", id)
		}
	}
}

// Requests the gateway can refuse up front get a 400 and leave nothing behind.
func TestUnknownImage(t *testing.T) {
	api := newGateway(t, "e2e-unknown")
	var out map[string]any
	if code := api.call("POST", "/v1/volumes", `{"image_id":"00000000-0000-0000-0000-000000000000","size_gb":1}`, &out); code != 400 {
		t.Fatalf("unknown image: HTTP %d, want 400", code)
	}
	if code := api.call("POST", "/v1/volumes", `{"image_id":`, &out); code != 400 {
		t.Fatalf("malformed JSON: HTTP %d, want 400", code)
	}
}
