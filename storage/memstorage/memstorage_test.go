package memstorage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/imagevol/imagevol/storage"
)

var ctx = context.Background()

func write(t *testing.T, s *Storage, pool, name string, off int64, data []byte) {
	t.Helper()
	w, err := s.OpenWriter(ctx, pool, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, s *Storage, pool, name, snap string) []byte {
	t.Helper()
	b, err := s.ReadAll(pool, name, snap)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every method reports a missing image, and a name taken, with the sentinel errors.
func TestSentinelErrors(t *testing.T) {
	s := New("p")
	if err := s.Create(ctx, "p", "a", 10); err != nil {
		t.Fatal(err)
	}
	missing := storage.Parent{Pool: "p", Image: "a", Snapshot: "nosnap"}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"create existing", func() error { return s.Create(ctx, "p", "a", 10) }, storage.ErrExists},
		{"create in a missing pool", func() error { return s.Create(ctx, "q", "a", 10) }, storage.ErrNotFound},
		{"open writer", func() error { _, err := s.OpenWriter(ctx, "p", "x"); return err }, storage.ErrNotFound},
		{"open reader", func() error { _, err := s.OpenReader(ctx, "p", "x", ""); return err }, storage.ErrNotFound},
		{"open missing snapshot", func() error { _, err := s.OpenReader(ctx, "p", "a", "s"); return err }, storage.ErrNotFound},
		{"stat", func() error { _, err := s.Stat(ctx, "p", "x"); return err }, storage.ErrNotFound},
		{"grow", func() error { _, err := s.Grow(ctx, "p", "x", 1); return err }, storage.ErrNotFound},
		{"rename missing", func() error { return s.Rename(ctx, "p", "x", "y") }, storage.ErrNotFound},
		{"rename onto existing", func() error { return s.Rename(ctx, "p", "a", "a") }, storage.ErrExists},
		{"snapshot missing image", func() error { return s.CreateSnapshot(ctx, "p", "x", "s") }, storage.ErrNotFound},
		{"snapshot exists of missing", func() error { _, err := s.SnapshotExists(ctx, "p", "x", "s"); return err }, storage.ErrNotFound},
		{"clone of missing snapshot", func() error { return s.Clone(ctx, missing, "p", "c") }, storage.ErrNotFound},
		{"flatten", func() error { return s.Flatten(ctx, "p", "x") }, storage.ErrNotFound},
		{"remove", func() error { _, err := s.Remove(ctx, "p", "x"); return err }, storage.ErrNotFound},
		{"purge not trashed", func() error { return s.PurgeTrashed(ctx, "p", "a") }, storage.ErrNotFound},
		{"list missing pool", func() error { _, err := s.List(ctx, "q"); return err }, storage.ErrNotFound},
		{"used bytes", func() error { _, err := s.UsedBytes(ctx, "p", "x"); return err }, storage.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// Writes land where they are made, an image reads zeros where nothing was written, UsedBytes
// counts the blocks written (a thin image uses nothing), and Grow never shrinks.
func TestWriteReadGrowUsed(t *testing.T) {
	s := New()
	const size = 5*BlockSize + 100
	if err := s.Create(ctx, "p", "img", size); err != nil {
		t.Fatal(err)
	}
	if used, err := s.UsedBytes(ctx, "p", "img"); err != nil || used != 0 {
		t.Fatalf("thin image uses %d, %v", used, err)
	}
	data := bytes.Repeat([]byte("x"), BlockSize+10)
	write(t, s, "p", "img", BlockSize-5, data) // touches blocks 0, 1 and 2
	want := make([]byte, size)
	copy(want[BlockSize-5:], data)
	if got := content(t, s, "p", "img", ""); !bytes.Equal(got, want) {
		t.Fatal("content differs from what was written")
	}
	if used, _ := s.UsedBytes(ctx, "p", "img"); used != 3*BlockSize {
		t.Fatalf("used %d, want %d", used, 3*BlockSize)
	}
	w, _ := s.OpenWriter(ctx, "p", "img")
	if _, err := w.WriteAt([]byte("past"), size-2); err == nil {
		t.Fatal("a write past the end succeeded")
	}
	w.Close()
	r, _ := s.OpenReader(ctx, "p", "img", "")
	buf := make([]byte, 10)
	if n, err := r.ReadAt(buf, size-4); n != 4 || err == nil {
		t.Fatalf("read across the end: n=%d err=%v, want 4 and io.EOF", n, err)
	}
	r.Close()
	for _, tc := range []struct{ grow, before, after uint64 }{
		{size + 1000, size, size + 1000},
		{10, size + 1000, size + 1000}, // never shrinks
	} {
		before, err := s.Grow(ctx, "p", "img", tc.grow)
		info, _ := s.Stat(ctx, "p", "img")
		if err != nil || before != tc.before || info.Size != tc.after {
			t.Fatalf("Grow(%d) = %d, %v; size %d; want %d, size %d", tc.grow, before, err, info.Size, tc.before, tc.after)
		}
	}
	if err := s.Rename(ctx, "p", "img", "img2"); err != nil {
		t.Fatal(err)
	}
	if names, _ := s.List(ctx, "p"); !slices.Equal(names, []string{"img2"}) {
		t.Fatalf("after rename: %v", names)
	}
}

// A clone reads its parent's snapshot through, keeps its own writes, and does not see writes made
// to the parent after the snapshot; Flatten makes it independent with the same content.
func TestSnapshotsClonesFlatten(t *testing.T) {
	s := New()
	if err := s.Create(ctx, "cache", "base", 3*BlockSize); err != nil {
		t.Fatal(err)
	}
	write(t, s, "cache", "base", 0, bytes.Repeat([]byte("a"), 3*BlockSize))
	if err := s.CreateSnapshot(ctx, "cache", "base", "snap"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSnapshot(ctx, "cache", "base", "snap"); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second snapshot: %v", err)
	}
	if ok, err := s.SnapshotExists(ctx, "cache", "base", "snap"); !ok || err != nil {
		t.Fatalf("SnapshotExists = %v, %v", ok, err)
	}
	write(t, s, "cache", "base", 0, []byte("after the snapshot"))
	parent := storage.Parent{Pool: "cache", Image: "base", Snapshot: "snap"}
	if err := s.Clone(ctx, parent, "vols", "c"); err != nil { // across pools
		t.Fatal(err)
	}
	if err := s.Clone(ctx, parent, "vols", "c"); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second clone: %v", err)
	}
	info, err := s.Stat(ctx, "vols", "c")
	if err != nil || info.Parent == nil || *info.Parent != parent || info.Size != 3*BlockSize {
		t.Fatalf("clone: %+v, %v", info, err)
	}
	if used, _ := s.UsedBytes(ctx, "vols", "c"); used != 0 {
		t.Fatalf("a fresh clone uses %d bytes", used)
	}
	write(t, s, "vols", "c", BlockSize, []byte("mine"))
	want := bytes.Repeat([]byte("a"), 3*BlockSize)
	copy(want[BlockSize:], "mine")
	if got := content(t, s, "vols", "c", ""); !bytes.Equal(got, want) {
		t.Fatalf("clone content: %q...", got[:20])
	}
	if got := content(t, s, "cache", "base", "snap"); !bytes.Equal(got, bytes.Repeat([]byte("a"), 3*BlockSize)) {
		t.Fatal("the snapshot changed with the writes to its image")
	}
	// Grown past its parent, the clone reads zeros there.
	if _, err := s.Grow(ctx, "vols", "c", 4*BlockSize); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, BlockSize)...)
	if err := s.Flatten(ctx, "vols", "c"); err != nil {
		t.Fatal(err)
	}
	info, _ = s.Stat(ctx, "vols", "c")
	if info.Parent != nil {
		t.Fatalf("flattened clone still has parent %+v", info.Parent)
	}
	if got := content(t, s, "vols", "c", ""); !bytes.Equal(got, want) {
		t.Fatal("flatten changed the content")
	}
	if used, _ := s.UsedBytes(ctx, "vols", "c"); used != 3*BlockSize {
		t.Fatalf("flattened clone uses %d, want %d", used, 3*BlockSize)
	}
	// No clone left: the parent goes for good.
	if trashed, err := s.Remove(ctx, "cache", "base"); trashed || err != nil {
		t.Fatalf("Remove = %v, %v", trashed, err)
	}
}

// An image whose snapshot has clones goes to the trash; the clones keep reading it and name it as
// before; PurgeTrashed refuses while a clone remains, and succeeds after the last one is gone.
func TestRemoveToTrashAndPurge(t *testing.T) {
	s := New()
	if err := s.Create(ctx, "p", "cache", 2*BlockSize); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("cache!"), BlockSize/3)
	write(t, s, "p", "cache", 0, data)
	if err := s.CreateSnapshot(ctx, "p", "cache", "s"); err != nil {
		t.Fatal(err)
	}
	parent := storage.Parent{Pool: "p", Image: "cache", Snapshot: "s"}
	for _, c := range []string{"v1", "v2"} {
		if err := s.Clone(ctx, parent, "p", c); err != nil {
			t.Fatal(err)
		}
	}
	trashed, err := s.Remove(ctx, "p", "cache")
	if err != nil || !trashed {
		t.Fatalf("Remove = %v, %v; want trashed", trashed, err)
	}
	if s.Exists("p", "cache") || !slices.Equal(s.Trashed("p"), []string{"cache"}) {
		t.Fatalf("images %v, trash %v", s.Images("p"), s.Trashed("p"))
	}
	if err := s.Clone(ctx, parent, "p", "v3"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("clone of a trashed image: %v", err)
	}
	if info, _ := s.Stat(ctx, "p", "v1"); info.Parent == nil || *info.Parent != parent {
		t.Fatalf("clone's parent after the trash: %+v", info.Parent)
	}
	if got := content(t, s, "p", "v1", ""); !bytes.Equal(got[:len(data)], data) {
		t.Fatal("a clone of a trashed image lost its data")
	}
	steps := []struct {
		remove string
		want   error
	}{{"v1", storage.ErrInUse}, {"v2", nil}}
	for _, st := range steps {
		if trashed, err := s.Remove(ctx, "p", st.remove); trashed || err != nil {
			t.Fatalf("remove clone %s: %v, %v", st.remove, trashed, err)
		}
		if err := s.PurgeTrashed(ctx, "p", "cache"); !errors.Is(err, st.want) && !(st.want == nil && err == nil) {
			t.Fatalf("purge after removing %s: %v, want %v", st.remove, err, st.want)
		}
	}
	if len(s.Trashed("p")) != 0 {
		t.Fatalf("trash after purge: %v", s.Trashed("p"))
	}
	if err := s.PurgeTrashed(ctx, "p", "cache"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("purge again: %v", err)
	}
}

// An open image is busy: removing it sends it to the trash, which cannot purge it until it is
// closed.
func TestRemoveOpenImage(t *testing.T) {
	s := New()
	if err := s.Create(ctx, "p", "a", 1); err != nil {
		t.Fatal(err)
	}
	r, _ := s.OpenReader(ctx, "p", "a", "")
	if trashed, err := s.Remove(ctx, "p", "a"); !trashed || err != nil {
		t.Fatalf("remove of an open image: %v, %v; want trashed", trashed, err)
	}
	if err := s.PurgeTrashed(ctx, "p", "a"); !errors.Is(err, storage.ErrInUse) {
		t.Fatalf("purge of an open image: %v", err)
	}
	r.Close()
	if err := s.PurgeTrashed(ctx, "p", "a"); err != nil {
		t.Fatalf("purge once closed: %v", err)
	}
	if err := s.Create(ctx, "p", "b", 1); err != nil {
		t.Fatal(err)
	}
	release, err := s.Open("p", "b")
	if err != nil {
		t.Fatal(err)
	}
	if s.OpenHandles("p", "b") != 1 {
		t.Fatal("Open not counted")
	}
	release()
	release()
	if trashed, err := s.Remove(ctx, "p", "b"); trashed || err != nil {
		t.Fatalf("remove of a closed image: %v, %v", trashed, err)
	}
}

// FailNext fails the next calls of a method, one error each, before they do anything; Hook
// sees every call and may fail it or act on the storage meanwhile.
func TestFaults(t *testing.T) {
	s := New()
	boom := errors.New("boom")
	s.FailNext(MethodCreate, boom)
	s.FailNext(MethodCreate, storage.ErrInUse)
	for _, want := range []error{boom, storage.ErrInUse, nil} {
		if err := s.Create(ctx, "p", "a", 1); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("Create: %v, want %v", err, want)
		}
	}
	if n := s.Calls(MethodCreate); n != 3 {
		t.Fatalf("Calls = %d", n)
	}
	// A hook that removes the parent just before a clone: the clone finds it gone.
	if err := s.CreateSnapshot(ctx, "p", "a", "s"); err != nil {
		t.Fatal(err)
	}
	var seen []Call
	s.Hook(func(c Call) error {
		seen = append(seen, c)
		if c.Method == MethodClone {
			if _, err := s.Remove(ctx, c.Parent.Pool, c.Parent.Image); err != nil {
				return err
			}
		}
		return nil
	})
	err := s.Clone(ctx, storage.Parent{Pool: "p", Image: "a", Snapshot: "s"}, "p", "c")
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("clone after the hook removed its parent: %v", err)
	}
	if len(seen) != 2 || seen[0].Method != MethodClone || seen[1].Method != MethodRemove {
		t.Fatalf("hook saw %+v", seen)
	}
	s.Hook(nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Create(cctx, "p", "b", 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Create on a cancelled context: %v", err)
	}
}

// Concurrent writers on distinct ranges, and concurrent creates, clones and removes, are safe
// (run with -race).
func TestConcurrent(t *testing.T) {
	s := New()
	const n = 16
	if err := s.Create(ctx, "p", "big", n*BlockSize); err != nil {
		t.Fatal(err)
	}
	w, _ := s.OpenWriter(ctx, "p", "big")
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.WriteAt(bytes.Repeat([]byte{byte(i)}, BlockSize), int64(i*BlockSize)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	w.Close()
	if err := s.CreateSnapshot(ctx, "p", "big", "s"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%d", i)
			if err := s.Clone(ctx, storage.Parent{Pool: "p", Image: "big", Snapshot: "s"}, "p", name); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.ReadAll("p", name, ""); err != nil {
				t.Error(err)
			}
			if _, err := s.Remove(ctx, "p", name); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got := content(t, s, "p", "big", "s")
	for i := range n {
		if got[i*BlockSize] != byte(i) || got[(i+1)*BlockSize-1] != byte(i) {
			t.Fatalf("block %d holds %d", i, got[i*BlockSize])
		}
	}
	if trashed, err := s.Remove(ctx, "p", "big"); trashed || err != nil {
		t.Fatalf("Remove with all clones gone: %v, %v", trashed, err)
	}
}
