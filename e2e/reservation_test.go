//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
)

// waitFor polls cond until it holds, failing the test after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after 2 minutes", what)
		}
	}
}

// A reservation is its cache volume's row and its entry's row. When the entry's insert fails
// after the volume's (here: held by a trigger until the fill's context has ended, then refused),
// neither row stays: no cache volume of the internal project is left counting against its quota
// with no entry to evict it by.
func TestReservationRowsInsertedTogether(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("mysql", stack.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	imageID := uuid.NewString()
	blocker := "e2e_block_" + strings.ReplaceAll(imageID, "-", "")[:16]
	trigger := "e2e_refuse_" + strings.ReplaceAll(imageID, "-", "")[:16]
	hold, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hold.Close() })
	var got int
	if err := hold.QueryRowContext(ctx, "SELECT GET_LOCK(?, 10)", blocker).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take %s: %d, %v", blocker, got, err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TRIGGER %s BEFORE INSERT ON image_volume_cache_entries FOR EACH ROW
BEGIN
  IF NEW.image_id = '%s' THEN
    DO GET_LOCK('%s', 120);
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'entry insert refused by the test';
  END IF;
END`, trigger, imageID, blocker)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = db.Exec("DROP TRIGGER IF EXISTS " + trigger) })

	cfg := hostConfig("e2e-reserve-tx")
	acts := &activities.Activities{Store: stack.store, Storage: stack.ceph, Images: stack.glance, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	fillCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := acts.EvictLRU(fillCtx, contract.EvictInput{
			Image:          contract.ImageRef{ID: imageID, Size: 10 * mib, ContentHash: "sha512:" + imageID, UpdatedAt: time.Now().UTC()},
			FillWorkflowID: "e2e-fill-" + imageID,
		})
		done <- err
	}()
	blocked := func() bool {
		var n int
		// The waiting session shows the trigger's statement.
		err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND info LIKE ?",
			"%GET_LOCK('"+blocker+"'%").Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	waitFor(t, "the entry's insert to wait in the trigger", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the reservation ended before its entry's insert waited: %v", err)
		default:
		}
		return blocked()
	})
	cancel() // the fill's attempt ends (its timeout, say) while the insert waits
	if err := <-done; err == nil {
		t.Fatal("the reservation succeeded although its entry could not be inserted")
	}
	if _, err := hold.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", blocker); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused insert to end", func() bool { return !blocked() })

	entries, err := stack.store.ListEntriesOfImage(ctx, imageID)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("entries left: %+v", entries)
	}
	vols, err := stack.store.ListVolumes(ctx, cfg.CinderInternalTenantProject)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.ImageID == imageID {
			t.Fatalf("cache volume row %s (%s) left without its entry", v.ID, v.Status)
		}
	}
}
