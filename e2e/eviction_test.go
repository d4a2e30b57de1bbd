//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// With room for one entry, creates of two images alternate concurrently, so every fill of one
// image wants to evict the other while its clones are being made. Leases keep an entry from
// being evicted under a clone: every volume ends available with its image's bytes, readable
// through its parent.
func TestEvictionRacingClones(t *testing.T) {
	host := "e2e-race"
	cfg := hostConfig(host)
	cfg.ImageVolumeCacheMaxCount = 1
	startHost(t, cfg)
	api := newGateway(t, host)
	imgs := []imagesource.Image{
		uploadImage(t, "race-x", "raw", imageBytes(16*mib, 31, 2)),
		uploadImage(t, "race-y", "raw", imageBytes(16*mib, 32, 2)),
	}
	var (
		mu      sync.Mutex
		results = map[string]int{}
	)
	for round := range 3 {
		ids := make([]string, 8)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i] = api.startVolume(imgs[i%2].ID, 1, "")
			}()
		}
		wg.Wait()
		for i, id := range ids {
			v := api.waitVolume(id)
			if v.Status != models.StatusAvailable {
				t.Fatalf("round %d volume %d: %s %q", round, i, v.Status, v.Error)
			}
			mu.Lock()
			results[v.Cache+" "+v.CacheReason]++
			mu.Unlock()
			if got := volumeSHA512(t, id, imgs[i%2].Size); got != imgs[i%2].HashValue {
				t.Fatalf("round %d volume %d: bytes differ from its image", round, i)
			}
		}
		if n := len(readyEntries(t, host)); n > 1 {
			t.Fatalf("round %d: %d ready entries with max_count 1", round, n)
		}
	}
	st := hostStats(api.stats(), host)
	if st.Evictions == 0 {
		t.Fatalf("no eviction happened (%+v): the race was not exercised", results)
	}
	t.Logf("24 creates of 2 images racing on a 1-entry cache: %v; %d evictions", results, st.Evictions)
}

func readyEntries(t *testing.T, host string) []models.CacheEntry {
	t.Helper()
	var out []models.CacheEntry
	for _, e := range entriesOf(t, host) {
		if e.State == models.EntryReady {
			out = append(out, e)
		}
	}
	return out
}

// A pinned entry is never evicted for room: the next image is not cached and says why. Unpinned,
// it is evicted; its volume, which a clone still needs, waits in the RBD trash with its bytes
// reported as trashed, and is purged when that clone is deleted.
func TestPinEvictTrashAndPurge(t *testing.T) {
	host := "e2e-pin"
	cfg := hostConfig(host)
	cfg.ImageVolumeCacheMaxCount = 1
	startHost(t, cfg)
	api := newGateway(t, host)
	x := uploadImage(t, "pin-x", "raw", imageBytes(16*mib, 41, 2))
	y := uploadImage(t, "pin-y", "raw", imageBytes(16*mib, 42, 2))

	vx := api.createVolume(x.ID, 1)
	requireAvailable(t, vx, models.CacheMiss)
	ex := entriesOfImage(t, x.ID)[0]
	var view starter.CacheEntryView
	if code := api.call("POST", fmt.Sprintf("/v1/cache/%d/pin", ex.ID), "", &view); code != http.StatusOK || !view.Pinned {
		t.Fatalf("pin: HTTP %d %+v", code, view)
	}
	vy := api.createVolume(y.ID, 1)
	requireAvailable(t, vy, models.CacheNotCached)
	if vy.CacheReason != contract.ReasonFull {
		t.Fatalf("cache_reason %q with the only slot pinned, want %q", vy.CacheReason, contract.ReasonFull)
	}
	if code := api.call("DELETE", fmt.Sprintf("/v1/cache/%d", ex.ID), "", nil); code != http.StatusConflict {
		t.Fatalf("evicting a pinned entry: HTTP %d, want 409", code)
	}
	if code := api.call("DELETE", fmt.Sprintf("/v1/cache/%d/pin", ex.ID), "", &view); code != http.StatusOK || view.Pinned {
		t.Fatalf("unpin: HTTP %d %+v", code, view)
	}
	vy2 := api.createVolume(y.ID, 1)
	requireAvailable(t, vy2, models.CacheMiss)
	if es := entriesOfImage(t, x.ID); len(es) != 0 {
		t.Fatalf("x still cached after y took the only slot: %+v", es)
	}
	trash, err := stack.store.ListTrashed(context.Background(), host)
	if err != nil || len(trash) != 1 || trash[0].VolumeID != ex.VolumeID {
		t.Fatalf("trashed cache volumes %+v (%v); want x's", trash, err)
	}
	if hs := api.stats().Hosts[host]; hs == nil || hs.Entries != 1 || hs.BytesTrashed != ex.SizeBytes {
		t.Fatalf("host stats %+v; want 1 entry and x's %d bytes reported as trashed", hs, ex.SizeBytes)
	}
	// x's clone still reads the image through its trashed parent.
	if got := volumeSHA512(t, vx.ID, x.Size); got != x.HashValue {
		t.Fatal("x's clone lost its data when its cache volume was evicted")
	}
	// Deleting that last clone purges the trashed parent.
	if code := api.call("DELETE", "/v1/volumes/"+vx.ID, "", nil); code != http.StatusAccepted {
		t.Fatalf("delete volume: HTTP %d", code)
	}
	waitGone(t, api, vx.ID)
	if trash, _ := stack.store.ListTrashed(context.Background(), host); len(trash) != 0 {
		t.Fatalf("trash rows left after the last clone went: %+v", trash)
	}
	if err := stack.ceph.PurgeTrashed(context.Background(), stack.pool, contract.RBDName(ex.VolumeID)); !isNotFound(err) {
		t.Fatalf("x's cache volume still in the RBD trash: %v", err)
	}
	// An operator eviction of an entry with a clone: the volume goes to the trash, the clone keeps working.
	ey := entriesOfImage(t, y.ID)[0]
	var ev struct{ Evicted, Trashed bool }
	if code := api.call("DELETE", fmt.Sprintf("/v1/cache/%d", ey.ID), "", &ev); code != http.StatusOK || !ev.Evicted || !ev.Trashed {
		t.Fatalf("evict y: HTTP %d %+v", code, ev)
	}
	if got := volumeSHA512(t, vy2.ID, y.Size); got != y.HashValue {
		t.Fatal("y's clone lost its data when its cache entry was evicted")
	}
	if st := hostStats(api.stats(), host); st.Evictions != 2 {
		t.Fatalf("evictions %d, want 2", st.Evictions)
	}
}

// waitGone waits until a deleted volume is no longer found.
func waitGone(t *testing.T, api *apiClient, id string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for api.call("GET", "/v1/volumes/"+id, "", nil) != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatalf("volume %s still there a minute after its deletion", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := stack.ceph.Stat(context.Background(), stack.pool, contract.RBDName(id)); !isNotFound(err) {
		t.Fatalf("deleted volume's image still in Ceph: %v", err)
	}
}

// Cache volumes count against the internal project's quota: with room for one volume and the
// entry that holds it pinned, the next image is not cached with cache_reason "quota"; once it
// is unpinned, eviction makes room.
func TestInternalProjectQuota(t *testing.T) {
	host := "e2e-quota"
	cfg := hostConfig(host)
	cfg.CinderInternalTenantProject = "internal-quota"
	cfg.InternalQuotaVolumes = 1
	startHost(t, cfg)
	api := newGateway(t, host)
	x := uploadImage(t, "quota-x", "raw", imageBytes(8*mib, 51, 2))
	y := uploadImage(t, "quota-y", "raw", imageBytes(8*mib, 52, 2))

	requireAvailable(t, api.createVolume(x.ID, 1), models.CacheMiss)
	ex := entriesOfImage(t, x.ID)[0]
	if err := stack.store.SetPinned(context.Background(), ex.ID, true); err != nil {
		t.Fatal(err)
	}
	v := api.createVolume(y.ID, 1)
	requireAvailable(t, v, models.CacheNotCached)
	if v.CacheReason != contract.ReasonQuota {
		t.Fatalf("cache_reason %q, want %q", v.CacheReason, contract.ReasonQuota)
	}
	if err := stack.store.SetPinned(context.Background(), ex.ID, false); err != nil {
		t.Fatal(err)
	}
	requireAvailable(t, api.createVolume(y.ID, 1), models.CacheMiss)
	if u, _ := stack.store.ProjectUsage(context.Background(), "internal-quota"); u.Volumes != 1 {
		t.Fatalf("internal project holds %d volumes, quota 1", u.Volumes)
	}
}
