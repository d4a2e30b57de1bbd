package models

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Temporal retries a clone whose first attempt stalled: both attempts lease the entry under the
// same holder (the volume's name). The first attempt, ending late, releases its own lease only:
// the entry stays protected from eviction until the second attempt releases its lease too.
func TestLeaseReleasedByItsOwnAttemptOnly(t *testing.T) {
	for dialect, s := range openStores(t) {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now().UTC().Truncate(time.Second)
			e := &CacheEntry{Host: "h", Pool: "p", ImageID: "img", ImageUpdatedAt: now, ContentHash: "sha512:aa",
				VolumeID: "vol", SizeBytes: 1, LastUsed: now, State: EntryReady}
			if err := s.InsertCacheEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
			const holder = "volumes/volume-1"
			first, err := s.LeaseCacheEntry(ctx, e.ID, holder, now, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			second, err := s.LeaseCacheEntry(ctx, e.ID, holder, now.Add(time.Second), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if first == second {
				t.Fatalf("two leases share the token %q", first)
			}
			if err := s.ReleaseLease(ctx, e.ID, first); err != nil {
				t.Fatal(err)
			}
			if err := s.BeginEvict(ctx, e.ID, now.Add(2*time.Second), false); !errors.Is(err, ErrLeased) {
				t.Fatalf("eviction while the second attempt holds its lease: err = %v, want ErrLeased", err)
			}
			if err := s.ReleaseLease(ctx, e.ID, second); err != nil {
				t.Fatal(err)
			}
			if err := s.BeginEvict(ctx, e.ID, now.Add(2*time.Second), false); err != nil {
				t.Fatalf("eviction once both leases are released: %v", err)
			}
		})
	}
}

// A database at schema version 3 with a lease held upgrades to the token-keyed leases: the lease
// keeps protecting its entry, and its holder, used as its token, releases it.
func TestLeaseSurvivesTokenMigration(t *testing.T) {
	for dialect, s := range openStores(t) {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := s.db
			// Back to version 3: the old lease table, with one lease in it, and none of the later
			// changes.
			for _, q := range []string{
				"DROP TABLE cache_leases", "DROP TABLE trashed_images", "ALTER TABLE volumes DROP COLUMN image_metadata",
				"DELETE FROM schema_migrations WHERE version >= 4",
				"CREATE TABLE cache_leases (entry_id bigint, holder varchar(255), expires_at datetime(3), PRIMARY KEY (entry_id, holder))",
			} {
				if err := db.Exec(q).Error; err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			now := time.Now().UTC().Truncate(time.Second)
			e := &CacheEntry{Host: "h", Pool: "p", ImageID: "img", ImageUpdatedAt: now, ContentHash: "sha512:bb",
				VolumeID: "vol", SizeBytes: 1, LastUsed: now, State: EntryReady}
			if err := s.InsertCacheEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
			if err := db.Exec("INSERT INTO cache_leases (entry_id, holder, expires_at) VALUES (?, ?, ?)", e.ID, "volumes/volume-2", now.Add(time.Minute)).Error; err != nil {
				t.Fatal(err)
			}
			if err := Migrate(db); err != nil {
				t.Fatal(err)
			}
			if err := s.BeginEvict(ctx, e.ID, now, false); !errors.Is(err, ErrLeased) {
				t.Fatalf("eviction after the upgrade while the lease is held: err = %v, want ErrLeased", err)
			}
			if err := s.ReleaseLease(ctx, e.ID, "volumes/volume-2"); err != nil {
				t.Fatal(err)
			}
			if err := s.BeginEvict(ctx, e.ID, now, false); err != nil {
				t.Fatalf("eviction once the lease is released: %v", err)
			}
		})
	}
}

// A hit's lease counts the hit on its entry and in the host's counters in the same transaction,
// is refused on an entry that is not ready, and is released with the volume's row update.
func TestLeaseForHit(t *testing.T) {
	for dialect, s := range openStores(t) {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now().UTC().Truncate(time.Second)
			e := &CacheEntry{Host: "h", Pool: "p", ImageID: "img", ImageUpdatedAt: now, ContentHash: "sha512:aa",
				VolumeID: "vol", SizeBytes: 1, LastUsed: now, State: EntryReady}
			if err := s.InsertCacheEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateVolume(ctx, &Volume{ID: "user", ProjectID: "p", SizeGB: 1, Status: StatusCreating}); err != nil {
				t.Fatal(err)
			}
			token, err := s.LeaseCacheEntryForHit(ctx, e.ID, "p/volume-user", "h", now.Add(time.Second), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := s.GetCacheEntry(ctx, e.ID); got.Hits != 1 || !got.LastUsed.Equal(now.Add(time.Second)) {
				t.Fatalf("entry after the hit's lease: %+v", got)
			}
			if st, _ := s.Stats(ctx); len(st) != 1 || st[0].Hits != 1 {
				t.Fatalf("stats %+v", st)
			}
			if err := s.BeginEvict(ctx, e.ID, now, false); !errors.Is(err, ErrLeased) {
				t.Fatalf("eviction under the lease: %v", err)
			}
			if err := s.FinishHit(ctx, "user", map[string]any{"status": StatusAvailable}, e.ID, token); err != nil {
				t.Fatal(err)
			}
			if v, _ := s.GetVolume(ctx, "user"); v.Status != StatusAvailable {
				t.Fatalf("volume %+v", v)
			}
			if err := s.BeginEvict(ctx, e.ID, now, false); err != nil {
				t.Fatalf("eviction once the hit is done: %v", err)
			}
			if _, err := s.LeaseCacheEntryForHit(ctx, e.ID, "p/volume-other", "h", now, time.Minute); !errors.Is(err, ErrNotFound) {
				t.Fatalf("lease of an entry being evicted: %v", err)
			}
			if st, _ := s.Stats(ctx); st[0].Hits != 1 {
				t.Fatalf("a refused lease counted a hit: %+v", st)
			}
		})
	}
}
