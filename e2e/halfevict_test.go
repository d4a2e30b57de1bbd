//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/imagevol/imagevol/models"
)

// An eviction that crashed half-way leaves its entry "evicting", its cache volume not yet
// removed. A later fill of the same content (same fill workflow ID) must not take that entry
// over as its own reservation and mark it ready: while the eviction may still be running the
// provision downloads without the cache; once it is stale the fill finishes it and fills a new
// entry. Either way the bytes are downloaded afresh and the volume holds the image.
func TestFillAfterHalfEviction(t *testing.T) {
	ctx := context.Background()
	host := "e2e-halfevict"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "halfevict", "raw", imageBytes(8*mib, 71, 2))
	requireAvailable(t, api.createVolume(img.ID, 1), models.CacheMiss)
	es := entriesOf(t, host)
	if len(es) != 1 || es[0].State != models.EntryReady {
		t.Fatalf("entries after the first fill: %+v", es)
	}
	old := es[0]
	// The crash: the entry is marked evicting, and nothing else happens.
	if err := stack.store.BeginEvict(ctx, old.ID, time.Now().UTC(), true); err != nil {
		t.Fatal(err)
	}

	downloads := hostStats(api.stats(), host).Downloads
	v := api.createVolume(img.ID, 1)
	if v.Status != models.StatusAvailable {
		t.Fatalf("volume after the half eviction: %s %q", v.Status, v.Error)
	}
	if got := volumeSHA512(t, v.ID, img.Size); got != img.HashValue {
		t.Fatal("the volume made after the half eviction does not hold the image")
	}
	if got := hostStats(api.stats(), host).Downloads; got != downloads+1 {
		t.Fatalf("downloads %d after the half eviction, want %d: the image was not downloaded afresh", got, downloads+1)
	}
	if e, err := stack.store.GetCacheEntry(ctx, old.ID); err != nil || e.State != models.EntryEvicting {
		t.Fatalf("the half-evicted entry: %+v, %v; want it still evicting", e, err)
	}

	// Once the eviction is stale (its process is gone), the next fill finishes it and fills anew.
	db, err := sql.Open("mysql", stack.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "UPDATE image_volume_cache_entries SET updated_at = ? WHERE id = ?",
		time.Now().UTC().Add(-models.EvictionStale-time.Minute), old.ID); err != nil {
		t.Fatal(err)
	}
	downloads = hostStats(api.stats(), host).Downloads
	v = api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	if got := volumeSHA512(t, v.ID, img.Size); got != img.HashValue {
		t.Fatal("the volume filled after the stale eviction does not hold the image")
	}
	if got := hostStats(api.stats(), host).Downloads; got != downloads+1 {
		t.Fatalf("downloads %d after the stale eviction, want %d", got, downloads+1)
	}
	if _, err := stack.store.GetCacheEntry(ctx, old.ID); err == nil {
		t.Fatal("the stale evicting entry is still there")
	}
	es = entriesOf(t, host)
	if len(es) != 1 || es[0].State != models.EntryReady || es[0].VolumeID == old.VolumeID {
		t.Fatalf("entries after the stale eviction: %+v; want one new ready entry", es)
	}
}
