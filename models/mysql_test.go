package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// mysqlStore opens a Store on a MySQL database of its own, dropped when the test ends. The
// server is IMAGEVOL_TEST_DSN's (a DSN without a database name, as `make test` exports it).
func mysqlStore(t *testing.T) (*Store, *sql.DB) {
	t.Helper()
	dsn := os.Getenv("IMAGEVOL_TEST_DSN")
	if dsn == "" {
		t.Skip("IMAGEVOL_TEST_DSN is not set: no MySQL server to test against (make test sets it)")
	}
	root, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	name := fmt.Sprintf("imagevol_models_%d", time.Now().UnixNano())
	if _, err := root.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = root.Exec("DROP DATABASE " + name) })
	s, err := Open(context.Background(), dsn+name, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, root
}

// The reservation lock is released even when the caller's context expires while it is held:
// the release does not run on that context, so the pooled session does not keep the lock and
// the next reservation takes it at once.
func TestReservationLockReleasedAfterContextExpired(t *testing.T) {
	s, root := mysqlStore(t)
	lock := s.lockName(reservationLock)
	ctx, cancel := context.WithCancel(context.Background())
	held := false
	err := s.WithReservationLock(ctx, func() error {
		var holder sql.NullInt64
		if err := root.QueryRow("SELECT IS_USED_LOCK(?)", lock).Scan(&holder); err != nil {
			return err
		}
		held = holder.Valid
		cancel() // the activity's context ends while the lock is held
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || !held {
		t.Fatalf("locked function: err = %v, lock seen held = %v", err, held)
	}
	var holder sql.NullInt64
	if err := root.QueryRow("SELECT IS_USED_LOCK(?)", lock).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if holder.Valid {
		t.Fatalf("IS_USED_LOCK(%q) = connection %d after the locked function returned, want NULL", lock, holder.Int64)
	}
	// Another reservation takes it without waiting for GET_LOCK's timeout.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	ran := false
	if err := s.WithReservationLock(ctx2, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("next reservation: ran %v, err %v", ran, err)
	}
}

// A reservation whose entry cannot be inserted (its key is taken) leaves no cache volume row;
// only a filling entry becomes ready, never one being evicted.
func TestReserveCacheSlotAndReadyStates(t *testing.T) {
	ctx := context.Background()
	stores := map[string]func(t *testing.T) *Store{
		"sqlite": func(t *testing.T) *Store {
			s, err := Open(ctx, "", t.TempDir()+"/imagevol.db")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"mysql": func(t *testing.T) *Store { s, _ := mysqlStore(t); return s },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			s := open(t)
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
			if err := s.MarkCacheEntryReady(ctx, e1.ID, 5, now); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkCacheEntryReady(ctx, e1.ID, 5, now); err != nil {
				t.Fatalf("ready again (a retried step): %v", err)
			}
			if err := s.BeginEvict(ctx, e1.ID, now, true); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkCacheEntryReady(ctx, e1.ID, 5, now); !errors.Is(err, ErrNotFound) {
				t.Fatalf("marking an evicting entry ready: err = %v, want ErrNotFound", err)
			}
			if e, err := s.GetCacheEntry(ctx, e1.ID); err != nil || e.State != EntryEvicting {
				t.Fatalf("entry after the refused ready: %+v, %v", e, err)
			}
		})
	}
}
