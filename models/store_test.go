package models

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// The embedded SQLite default: migrations apply once and again as a no-op, the cache key is
// unique, and usage and LRU order come out of the queries.
func TestStoreSQLite(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "imagevol.db")
	s, err := Open(ctx, "", file)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, "sqlite:"+file, "") // reopening re-runs Migrate: nothing to do
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Dialect() != "sqlite" {
		t.Fatalf("dialect %s", s.Dialect())
	}

	now := time.Now().UTC().Truncate(time.Second)
	entry := func(image string, used time.Duration, size int64) *CacheEntry {
		return &CacheEntry{
			Host: "h", Pool: "p", ImageID: image, ImageUpdatedAt: now, ContentHash: "sha512:" + image,
			VolumeID: "vol-" + image, SizeBytes: size, LastUsed: now.Add(used), State: EntryReady,
		}
	}
	for _, e := range []*CacheEntry{entry("a", -time.Minute, 10), entry("b", -time.Hour, 20), entry("c", 0, 30)} {
		if err := s.InsertCacheEntry(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.InsertCacheEntry(ctx, entry("a", 0, 1)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("second entry for the same key: err = %v, want ErrDuplicate", err)
	}
	u, err := s.CacheUsage(ctx, "h", "p")
	if err != nil || u.Count != 3 || u.Bytes != 60 {
		t.Fatalf("usage %+v, %v", u, err)
	}
	es, err := s.ListCacheEntries(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].ImageID != "b" || es[1].ImageID != "a" || es[2].ImageID != "c" {
		t.Fatalf("LRU order %v", es)
	}
	if err := s.TouchCacheEntry(ctx, es[0].ID, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCacheEntry(ctx, es[0].ID)
	if err != nil || got.Hits != 1 || !got.LastUsed.Equal(now.Add(time.Hour)) {
		t.Fatalf("after touch: %+v, %v", got, err)
	}
	if err := s.DeleteCacheEntry(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCacheEntry(ctx, got.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted entry: err = %v", err)
	}
	if _, err := s.GetVolume(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing volume: err = %v", err)
	}
}

// A status moves only from the status its mover read: of a deletion and an extension that both
// read "available", the second to write finds the volume moved and is refused.
func TestSetVolumeStatusFrom(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "", filepath.Join(t.TempDir(), "imagevol.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := &Volume{ID: "v1", ProjectID: "p", ImageID: "img", SizeGB: 1, Status: StatusAvailable}
	if err := s.CreateVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		from, to string
		moved    bool
		after    string // the status then
	}{
		{StatusAvailable, StatusExtending, true, StatusExtending},
		{StatusAvailable, StatusDeleting, false, StatusExtending}, // read "available" before the extension began
		{StatusExtending, StatusAvailable, true, StatusAvailable},
		{StatusAvailable, StatusDeleting, true, StatusDeleting},
	} {
		moved, err := s.SetVolumeStatusFrom(ctx, "v1", step.from, step.to)
		if err != nil || moved != step.moved {
			t.Fatalf("%s -> %s: moved %v, %v; want %v", step.from, step.to, moved, err, step.moved)
		}
		got, err := s.GetVolume(ctx, "v1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != step.after {
			t.Fatalf("%s -> %s: status %s, want %s", step.from, step.to, got.Status, step.after)
		}
	}
}
