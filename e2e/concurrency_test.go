//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
	"github.com/imagevol/imagevol/storage"
)

// twoHosts starts two storage hosts of the one Ceph cluster, each with its own pool and queue,
// and a gateway placing volumes on both.
func twoHosts(t *testing.T, prefix string) (h1, h2 string, api *apiClient) {
	t.Helper()
	h1, h2 = prefix+"-a", prefix+"-b"
	startHost(t, hostConfig(h1))
	c2 := hostConfig(h2)
	c2.Pool = stack.pool2
	startHost(t, c2)
	return h1, h2, newGateway(t, h1, h2)
}

// hostStats sums the cache counters of the given hosts.
func hostStats(s starter.CacheStats, hosts ...string) models.CacheStat {
	var sum models.CacheStat
	for _, h := range hosts {
		if hs := s.Hosts[h]; hs != nil {
			sum.Hits += hs.Hits
			sum.Misses += hs.Misses
			sum.Evictions += hs.Evictions
			sum.Downloads += hs.Downloads
			sum.BytesDownloaded += hs.BytesDownloaded
		}
	}
	return sum
}

// entriesOfImage lists every host's cache entries of one image.
func entriesOfImage(t *testing.T, imageID string) []models.CacheEntry {
	t.Helper()
	es, err := stack.store.ListEntriesOfImage(context.Background(), imageID)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// parentOf returns the parent of a volume's RBD image, read from Ceph in the volume's pool.
func parentOf(t *testing.T, volumeID string) (pool string, parent *storage.Parent) {
	t.Helper()
	v, err := stack.store.GetVolume(context.Background(), volumeID)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stack.ceph.Stat(context.Background(), v.Pool, contract.RBDName(volumeID))
	if err != nil {
		t.Fatalf("stat volume %s in %s: %v", volumeID, v.Pool, err)
	}
	return v.Pool, info.Parent
}

// 20 concurrent creates of one uncached image, spread over two hosts of the same cluster, share
// one fill: one Glance download, one cache entry, and 20 volumes with the image's bytes, each in
// its own host's pool and cloned (across pools for the second host) from the one cache volume.
func TestSingleFlightFillAcrossHosts(t *testing.T) {
	h1, h2, api := twoHosts(t, "e2e-burst")
	img := uploadImage(t, "burst", "raw", imageBytes(96*mib, 21, 2))

	ids := make([]string, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = api.startVolume(img.ID, 1, []string{h1, h2}[i%2])
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for i, id := range ids {
		v := api.waitVolume(id)
		if v.Status != models.StatusAvailable || v.Cache == models.CacheNotCached {
			t.Fatalf("volume %d: status %s cache %s (%s) error %q", i, v.Status, v.Cache, v.CacheReason, v.Error)
		}
		counts[v.Cache]++
	}
	es := entriesOfImage(t, img.ID)
	if len(es) != 1 || es[0].State != models.EntryReady {
		t.Fatalf("cache entries of the image: %+v; want exactly one, ready", es)
	}
	entry := es[0]
	st := hostStats(api.stats(), h1, h2)
	if st.Downloads != 1 || st.BytesDownloaded != img.Size {
		t.Fatalf("downloads %d of %d bytes; want exactly 1 of %d", st.Downloads, st.BytesDownloaded, img.Size)
	}
	want := storage.Parent{Pool: entry.Pool, Image: contract.RBDName(entry.VolumeID), Snapshot: contract.CacheSnapshot}
	crossPool := 0
	for i, id := range ids {
		pool, parent := parentOf(t, id)
		wantPool := map[string]string{h1: stack.pool, h2: stack.pool2}[[]string{h1, h2}[i%2]]
		if pool != wantPool || parent == nil || *parent != want {
			t.Fatalf("volume %d in pool %s with parent %+v; want pool %s, parent %+v", i, pool, parent, wantPool, want)
		}
		if pool != entry.Pool {
			crossPool++
		}
		if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
			t.Fatalf("volume %d: bytes differ from the image", i)
		}
	}
	if crossPool != 10 {
		t.Fatalf("%d volumes cloned across pools, want the 10 of the host without the entry", crossPool)
	}
	t.Logf("20 concurrent creates on 2 hosts: %v; 1 download of %d MiB, 1 entry on %s, %d cross-pool clones", counts, img.Size>>20, entry.Host, crossPool)
}

// Pre-warming fills the cache ahead of demand, as a workflow; a host of the same cluster then
// clones from that cache volume across pools instead of downloading, and the gateway places a
// volume with no host asked for on the host that caches its image.
func TestWarmCrossPoolHitAndPlacement(t *testing.T) {
	h1, h2, api := twoHosts(t, "e2e-warm")
	img := uploadImage(t, "warm", "raw", imageBytes(32*mib, 22, 2))

	var warm struct {
		WorkflowID string `json:"workflow_id"`
		Hosts      []struct {
			Host       string
			Cached     bool
			Downloaded bool
			Error      string
		}
	}
	if code := api.call("POST", "/v1/cache/warm?wait=true", fmt.Sprintf(`{"image_id":%q,"hosts":[%q]}`, img.ID, h1), &warm); code != http.StatusOK {
		t.Fatalf("warm: HTTP %d", code)
	}
	if len(warm.Hosts) != 1 || !warm.Hosts[0].Cached || !warm.Hosts[0].Downloaded || warm.Hosts[0].Error != "" {
		t.Fatalf("warm result %+v", warm)
	}
	es := entriesOfImage(t, img.ID)
	if len(es) != 1 || es[0].Host != h1 || es[0].State != models.EntryReady || es[0].Hits != 0 {
		t.Fatalf("entries after warm-up: %+v", es)
	}
	v := api.waitVolume(api.startVolume(img.ID, 1, h2))
	requireAvailable(t, v, models.CacheHit)
	if pool, parent := parentOf(t, v.ID); pool != stack.pool2 || parent == nil || parent.Pool != stack.pool {
		t.Fatalf("volume on %s: pool %s parent %+v; want a clone in %s of the cache in %s", h2, pool, parent, stack.pool2, stack.pool)
	}
	if got := volumeSHA512(t, v.ID, img.Size); got != img.HashValue {
		t.Fatal("cross-pool clone's bytes differ from the image")
	}
	// Asked without a host, the next volume lands where the image is cached.
	for range 2 {
		if v := api.createVolume(img.ID, 1); v.Host != h1 || v.Cache != models.CacheHit {
			t.Fatalf("placed on %s (cache %s); want %s, a hit", v.Host, v.Cache, h1)
		}
	}
	if st := hostStats(api.stats(), h1, h2); st.Downloads != 1 || st.Hits != 3 || st.Misses != 0 {
		t.Fatalf("stats %+v; want 1 download (the warm-up), 3 hits, no miss", st)
	}
	// A warm-up of a host that can already clone from the cluster's cache downloads nothing.
	if code := api.call("POST", "/v1/cache/warm?wait=true", fmt.Sprintf(`{"image_id":%q,"hosts":[%q]}`, img.ID, h2), &warm); code != http.StatusOK || !warm.Hosts[0].Cached || warm.Hosts[0].Downloaded {
		t.Fatalf("second warm-up: HTTP %d %+v", code, warm)
	}
	if code := api.call("POST", "/v1/cache/warm", `{"image_id":"`+img.ID+`","hosts":["nowhere"]}`, nil); code != http.StatusBadRequest {
		t.Fatalf("warm of an unknown host: HTTP %d, want 400", code)
	}
}
