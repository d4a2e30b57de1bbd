package activities

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/importer/testimages"
	"github.com/imagevol/imagevol/storage"
	"github.com/imagevol/imagevol/storage/memstorage"
)

const (
	tFSID       = "5a0d4c1e-8f31-4b7e-a6f2-93c1d0e4b7a8"
	tImagesPool = "images"
)

// storeImage puts an image into the in-memory images pool as Glance's rbd store lays it out: an
// RBD image named by the image ID with the bytes, and its snapshot "snap".
func storeImage(t *testing.T, s *memstorage.Storage, id string, b []byte) {
	t.Helper()
	ctx := context.Background()
	if err := s.Create(ctx, tImagesPool, id, uint64(len(b))); err != nil {
		t.Fatal(err)
	}
	w, err := s.OpenWriter(ctx, tImagesPool, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := s.CreateSnapshot(ctx, tImagesPool, id, "snap"); err != nil {
		t.Fatal(err)
	}
}

func TestCloneFromImageStore(t *testing.T) {
	raw := data("store", 256<<10)
	loc := func(fsid, pool, image string) string { return fmt.Sprintf("rbd://%s/%s/%s/snap", fsid, pool, image) }
	for _, tc := range []struct {
		name      string
		bytes     []byte // what the store's snapshot holds
		size      int64  // the size Glance publishes; 0: len(bytes)
		url       func(id string) string
		flatten   bool  // worker.image_store.flatten_cache, on a cache fill
		readErr   error // the store's snapshot cannot be opened
		maxSize   int64
		want      string // the reason; "" means cloned
		wantType  string // a failure instead of a result
		wantDepth int
	}{
		{name: "raw image on this cluster", bytes: raw, url: func(id string) string { return loc(tFSID, tImagesPool, id) }, wantDepth: 1},
		{name: "flattened for the cache", bytes: raw, url: func(id string) string { return loc(tFSID, tImagesPool, id) }, flatten: true, wantDepth: 0},
		{name: "another cluster", bytes: raw, url: func(id string) string { return loc("0e2b7d9c-1111-4222-8333-944455556666", tImagesPool, id) },
			want: contract.ReasonStoreOtherCluster},
		{name: "a volume pool named by a forged location", bytes: raw, url: func(id string) string { return loc(tFSID, tPool, id) },
			want: contract.ReasonStorePoolNotAllowed},
		{name: "another image's location", bytes: raw, url: func(string) string { return loc(tFSID, tImagesPool, "someone-elses") },
			want: contract.ReasonStoreLocation},
		{name: "no snapshot in the location", bytes: raw, url: func(id string) string { return "rbd://" + tImagesPool + "/" + id },
			want: contract.ReasonStoreLocation},
		{name: "a disk format to convert", bytes: testimages.Signature("qed"), url: func(id string) string { return loc(tFSID, tImagesPool, id) },
			want: contract.ReasonStoreNotRaw},
		{name: "size other than published", bytes: raw, size: int64(len(raw)) - 512, url: func(id string) string { return loc(tFSID, tImagesPool, id) },
			want: contract.ReasonStoreSizeMismatch},
		{name: "snapshot missing", url: func(id string) string { return loc(tFSID, tImagesPool, id) },
			want: contract.ReasonStoreMissing},
		{name: "no read access", bytes: raw, url: func(id string) string { return loc(tFSID, tImagesPool, id) },
			readErr: fmt.Errorf("rbd: open: %w", storage.ErrPermission), want: contract.ReasonStoreNoAccess},
		{name: "larger than the volume", bytes: raw, url: func(id string) string { return loc(tFSID, tImagesPool, id) },
			maxSize: int64(len(raw)) - 1, wantType: contract.ErrTypeVolumeTooSmall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) {
				c.ImageStorePools = []string{tImagesPool}
				c.ImageStoreFlattenCache = tc.flatten
			})
			f.storage = memstorage.New(tPool, "volumes2", tImagesPool)
			f.a.Storage, f.a.FSID = f.storage, tFSID
			id := "img-" + tc.name
			size := tc.size
			if tc.bytes != nil {
				storeImage(t, f.storage, id, tc.bytes)
				if size == 0 {
					size = int64(len(tc.bytes))
				}
			}
			if tc.readErr != nil {
				f.storage.FailNext("OpenReader", tc.readErr)
			}
			in := contract.StoreCloneInput{
				Image: contract.ImageRef{ID: id, Size: size, DirectURL: tc.url(id)},
				Pool:  tPool, Target: contract.RBDName("v1"), MaxVirtualSize: tc.maxSize, ForCache: true,
			}
			res, err := run[contract.StoreCloneResult](f, nil, f.a.CloneFromImageStore, in)
			if tc.wantType != "" {
				if errType(err) != tc.wantType {
					t.Fatalf("err %v, want type %s", err, tc.wantType)
				}
				f.wantAbsent(in.Target)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" {
				if res.Cloned || res.Reason != tc.want {
					t.Fatalf("result %+v, want not cloned for %s", res, tc.want)
				}
				f.wantAbsent(in.Target)
				return
			}
			if !res.Cloned || res.Depth != tc.wantDepth || res.Format != "raw" {
				t.Fatalf("result %+v, want cloned raw at depth %d", res, tc.wantDepth)
			}
			f.wantStoreClone(in.Target, id, tc.bytes, tc.wantDepth)
			// Crash recovery: a retried attempt finds its own clone and reports the same.
			again, err := run[contract.StoreCloneResult](f, nil, f.a.CloneFromImageStore, in)
			if err != nil || again != res {
				t.Fatalf("again: %+v, %v; want %+v", again, err, res)
			}
			if n := f.storage.Calls("Clone"); n != 1 {
				t.Errorf("%d clones, want 1", n)
			}
		})
	}
}

// A target that exists and is not the store's clone is never taken for one.
func TestCloneFromImageStoreConflict(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ImageStorePools = []string{tImagesPool} })
	f.storage = memstorage.New(tPool, tImagesPool)
	f.a.Storage, f.a.FSID = f.storage, tFSID
	raw := data("conflict", 64<<10)
	storeImage(t, f.storage, "img", raw)
	target := contract.RBDName("v1")
	if err := f.storage.Create(context.Background(), tPool, target, 4096); err != nil {
		t.Fatal(err)
	}
	_, err := run[contract.StoreCloneResult](f, nil, f.a.CloneFromImageStore, contract.StoreCloneInput{
		Image: contract.ImageRef{ID: "img", Size: int64(len(raw)), DirectURL: "rbd://" + tFSID + "/images/img/snap"},
		Pool:  tPool, Target: target,
	})
	if errType(err) != contract.ErrTypeConflictingImage {
		t.Fatalf("err %v, want %s", err, contract.ErrTypeConflictingImage)
	}
}

func (f *fixture) wantAbsent(name string) {
	f.t.Helper()
	if _, err := f.storage.Stat(context.Background(), tPool, name); err == nil {
		f.t.Errorf("%s exists; nothing should have been made", name)
	}
}

// wantStoreClone checks that name holds want and is a clone of the store's snapshot of id (depth
// 1), or holds it itself (depth 0).
func (f *fixture) wantStoreClone(name, id string, want []byte, depth int) {
	f.t.Helper()
	ctx := context.Background()
	info, err := f.storage.Stat(ctx, tPool, name)
	if err != nil {
		f.t.Fatal(err)
	}
	switch {
	case depth == 1 && (info.Parent == nil || *info.Parent != storage.Parent{Pool: tImagesPool, Image: id, Snapshot: "snap"}):
		f.t.Errorf("parent %+v, want %s/%s@snap", info.Parent, tImagesPool, id)
	case depth == 0 && info.Parent != nil:
		f.t.Errorf("parent %+v, want none (flattened)", info.Parent)
	}
	r, err := f.storage.OpenReader(ctx, tPool, name, "")
	if err != nil {
		f.t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(io.NewSectionReader(r, 0, int64(len(want))))
	if err != nil || !bytes.Equal(got, want) {
		f.t.Errorf("data differs from the store's (err %v)", err)
	}
}
