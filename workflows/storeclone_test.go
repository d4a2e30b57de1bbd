package workflows_test

import (
	"context"
	"testing"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/memsource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
	"github.com/imagevol/imagevol/storage/memstorage"
)

const (
	storeFSID = "7c1e2a9b-3d4f-4a5b-8c6d-0e1f2a3b4c5d"
	storePool = "images"
)

// storeHarness is a harness whose image service keeps its images in the cluster's images pool,
// as Glance's rbd store does, and shows their direct URL.
func storeHarness(t *testing.T, edit func(*activities.Config)) *harness {
	h := newHarness(t, func(c *activities.Config) {
		c.ImageStorePools = []string{storePool}
		if edit != nil {
			edit(c)
		}
	})
	h.storage = memstorage.New(pool, storePool)
	h.acts.Storage, h.acts.FSID = h.storage, storeFSID
	return h
}

// storeImage adds an image to the image service and its bytes to the images pool, as an RBD
// image named by its ID with a snapshot "snap", and returns the bytes.
func (h *harness) storeImage(id string, n int) []byte {
	h.t.Helper()
	data := h.image(id, n)
	ctx := context.Background()
	if err := h.storage.Create(ctx, storePool, id, uint64(n)); err != nil {
		h.t.Fatal(err)
	}
	w, _ := h.storage.OpenWriter(ctx, storePool, id)
	if _, err := w.WriteAt(data, 0); err != nil {
		h.t.Fatal(err)
	}
	w.Close()
	if err := h.storage.CreateSnapshot(ctx, storePool, id, "snap"); err != nil {
		h.t.Fatal(err)
	}
	if err := h.images.Update(id, func(img *imagesource.Image) {
		img.DirectURL = "rbd://" + storeFSID + "/" + storePool + "/" + id + "/snap"
	}); err != nil {
		h.t.Fatal(err)
	}
	return data
}

func (h *harness) storageParent(volumeID string) *storage.Parent {
	h.t.Helper()
	info, err := h.storage.Stat(context.Background(), pool, contract.RBDName(volumeID))
	if err != nil {
		h.t.Fatal(err)
	}
	return info.Parent
}

// The first volume of an image kept in the cluster's images pool is made without a download:
// the cache volume is a clone of the image service's snapshot, the volume a clone of the cache's,
// two levels deep; a hit clones from the same entry, and the flatten policy counts both levels.
func TestProvisionFromImageStore(t *testing.T) {
	h := storeHarness(t, func(c *activities.Config) { c.FlattenPolicy = "depth>1" })
	data := h.storeImage("img", imageSize)

	res, err := h.provision("vol-1", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheMiss || res.Source != contract.SourceImageStore || res.Bytes != 0 || res.Format != "raw" || res.CacheReason != "" {
		t.Fatalf("first provision: %+v", res)
	}
	if n := h.images.Calls(memsource.MethodOpen); n != 0 {
		t.Fatalf("the image was downloaded %d times", n)
	}
	e := h.readyEntry()
	if e.CloneDepth != 1 {
		t.Fatalf("entry depth %d, want 1", e.CloneDepth)
	}
	want := storage.Parent{Pool: storePool, Image: "img", Snapshot: "snap"}
	if p := h.storageParent(e.VolumeID); p == nil || *p != want {
		t.Fatalf("cache volume's parent %+v, want %+v", p, want)
	}
	// Two levels deep: depth>1 flattens the user's volume.
	if !res.Flattened || h.storageParent("vol-1") != nil {
		t.Fatalf("vol-1 not flattened: %+v", res)
	}
	h.checkData("vol-1", data)

	res, err = h.provision("vol-2", "img", 1, nil, nil)
	if err != nil || res.Cache != models.CacheHit || !res.Flattened {
		t.Fatalf("second provision: %+v, %v", res, err)
	}
	h.checkData("vol-2", data)
	stats, _ := h.store.Stats(context.Background())
	if len(stats) != 1 || stats[0].Downloads != 0 || stats[0].BytesDownloaded != 0 {
		t.Fatalf("stats %+v", stats)
	}
}

// With the cache off, the volume itself is the clone of the image service's snapshot, one level
// deep (depth>1 leaves it a clone).
func TestProvisionFromImageStoreNotCached(t *testing.T) {
	h := storeHarness(t, func(c *activities.Config) { c.ImageVolumeCacheEnabled, c.FlattenPolicy = false, "depth>1" })
	data := h.storeImage("img", imageSize)
	res, err := h.provision("vol", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheNotCached || res.Source != contract.SourceImageStore || res.Flattened || res.Bytes != 0 {
		t.Fatalf("result %+v", res)
	}
	if p := h.storageParent("vol"); p == nil || p.Pool != storePool || p.Image != "img" {
		t.Fatalf("parent %+v", p)
	}
	h.checkData("vol", data)
}

// An image whose location is on another cluster is downloaded, and the volume says why.
func TestProvisionFromImageStoreOtherCluster(t *testing.T) {
	h := storeHarness(t, nil)
	data := h.storeImage("img", imageSize)
	h.acts.FSID = "another-cluster"
	res, err := h.provision("vol", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheMiss || res.Source != contract.SourceDownload || res.Bytes != imageSize || res.CacheReason != contract.ReasonStoreOtherCluster {
		t.Fatalf("result %+v", res)
	}
	if v := h.volume("vol"); v.CacheReason != contract.ReasonStoreOtherCluster {
		t.Fatalf("row %+v", v)
	}
	h.checkData("vol", data)
	if e := h.readyEntry(); e.CloneDepth != 0 {
		t.Fatalf("a downloaded entry at depth %d", e.CloneDepth)
	}
}
