package models

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// dialects open a fresh store on each database these tests run on: the embedded SQLite file
// always, and MySQL (a database of its own, dropped at the end) when the tests are built with
// the "mysql" tag (mysql_test.go).
var dialects = map[string]func(t *testing.T) *Store{
	"sqlite": func(t *testing.T) *Store {
		s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "imagevol.db"), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	},
}

// openStores opens a fresh store on each database of dialects.
func openStores(t *testing.T) map[string]*Store {
	t.Helper()
	out := map[string]*Store{}
	for name, open := range dialects {
		out[name] = open(t)
	}
	return out
}

// A reservation whose entry cannot be inserted (its key is taken) leaves no cache volume row;
// only a filling entry becomes ready, never one being evicted.
func TestReserveCacheSlotAndReadyStates(t *testing.T) {
	ctx := context.Background()
	for name, s := range openStores(t) {
		t.Run(name, func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Second)
			slot := func(vol string) (*Volume, *CacheEntry) {
				return &Volume{ID: vol, ProjectID: "internal", Status: StatusCreating},
					&CacheEntry{Host: "h", Pool: "p", ImageID: "img", ImageUpdatedAt: now, ContentHash: "sha512:x",
						VolumeID: vol, SizeBytes: 10, LastUsed: now, State: EntryFilling}
			}
			v1, e1 := slot("vol-1")
			if err := s.ReserveCacheSlot(ctx, v1, e1); err != nil {
				t.Fatal(err)
			}
			v2, e2 := slot("vol-2")
			if err := s.ReserveCacheSlot(ctx, v2, e2); !errors.Is(err, ErrDuplicate) {
				t.Fatalf("second reservation of the key: err = %v, want ErrDuplicate", err)
			}
			if _, err := s.GetVolume(ctx, "vol-2"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the refused reservation's volume row: err = %v, want ErrNotFound", err)
			}
			if err := s.MarkCacheEntryReady(ctx, e1.ID, 5, 0, now); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkCacheEntryReady(ctx, e1.ID, 5, 0, now); err != nil {
				t.Fatalf("ready again (a retried step): %v", err)
			}
			if err := s.BeginEvict(ctx, e1.ID, now, true); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkCacheEntryReady(ctx, e1.ID, 5, 0, now); !errors.Is(err, ErrNotFound) {
				t.Fatalf("marking an evicting entry ready: err = %v, want ErrNotFound", err)
			}
			if e, err := s.GetCacheEntry(ctx, e1.ID); err != nil || e.State != EntryEvicting {
				t.Fatalf("entry after the refused ready: %+v, %v", e, err)
			}
		})
	}
}
