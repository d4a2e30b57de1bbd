//go:build e2e

package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/worker"
)

// More concurrent misses of one image on one host than its worker has step slots: the
// provisions waiting on the fill hold no slot, so the fill's own steps (eviction, download,
// import, snapshot) still run, and every volume is made from one download well within its
// deadline.
func TestBurstOfMissesOnFewSlots(t *testing.T) {
	host := "e2e-fewslots"
	startHostWith(t, hostConfig(host), worker.Options{MaxConcurrentActivities: 2})
	// A short deadline, so that provisions stuck behind their own waiters fail in bounded time.
	const timeout = 2 * time.Minute
	api := newGatewayTimeout(t, timeout, host)
	img := uploadImage(t, "fewslots", "raw", imageBytes(32*mib, 91, 2))

	ids := make([]string, 3)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i] = api.startVolume(img.ID, 1, host) })
	}
	wg.Wait()
	for i, id := range ids {
		// waitVolume gives up after 5 minutes: the deadline (plus the waiters' minute of grace)
		// has passed by then, so a deadlocked burst ends in error or still creating.
		v := api.waitVolume(id)
		if v.Status != models.StatusAvailable || v.Cache == models.CacheNotCached {
			t.Fatalf("volume %d (%s): status %s, cache %s (%s), error %q", i, id, v.Status, v.Cache, v.CacheReason, v.Error)
		}
		if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
			t.Fatalf("volume %d (%s): bytes differ from the image", i, id)
		}
	}
	if st := hostStats(api.stats(), host); st.Downloads != 1 || st.BytesDownloaded != img.Size {
		t.Fatalf("downloads %d of %d bytes; want exactly 1 of %d", st.Downloads, st.BytesDownloaded, img.Size)
	}
	es := entriesOfImage(t, img.ID)
	if len(es) != 1 || es[0].State != models.EntryReady {
		t.Fatalf("cache entries of the image: %+v; want exactly one, ready", es)
	}
	t.Logf("3 concurrent misses on a host with 2 step slots: all available from 1 download")
}
