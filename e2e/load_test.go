//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/worker"
)

// poolImages names the images of the run's two pools, as pool/name.
func poolImages(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, p := range []string{stack.pool, stack.pool2} {
		names, err := stack.ceph.List(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			out[p+"/"+n] = true
		}
	}
	return out
}

// 200 creates of 5 images on two hosts, 20 at a time, with caches of 3 entries a host, and again
// with 2 — tighter, so that the two hosts' 4 slots cannot hold the 5 images and evictions race
// the clones: every volume is made with its image's bytes, and the invariants hold at the end —
// at most max_count entries a host, no image cached twice in the cluster, and no orphan: every
// image the run added to the pools is a volume or cache volume the database knows, and no
// staging image is left.
//
// It runs on MySQL (MariaDB), and on the embedded SQLite default with each host and the gateway on
// a connection of its own to one file, as three processes of one machine would be: cache
// reservations must then be serialised by a lock that holds across them.
func TestLoadManyCreatesFewImages(t *testing.T) {
	for _, db := range []string{"mysql", "sqlite"} {
		for _, maxCount := range []int{3, 2} {
			t.Run(fmt.Sprintf("%s/max_count=%d", db, maxCount), func(t *testing.T) { loadManyCreates(t, db, maxCount) })
		}
	}
}

// loadStores gives the two hosts and the gateway their databases: the shared MySQL store, or
// three stores on one new SQLite file, whose volumes' images are removed when the test ends.
func loadStores(t *testing.T, db string) (host1, host2, gateway *models.Store) {
	if db == "mysql" {
		return stack.store, stack.store, stack.store
	}
	file := filepath.Join(t.TempDir(), "imagevol.db")
	var stores [3]*models.Store
	for i := range stores {
		s, err := models.Open(context.Background(), "sqlite:"+file, "")
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	// Cleanups run last-registered first: this one after the workers (started later) stop.
	t.Cleanup(func() {
		if err := (&env{store: stores[2], ceph: stack.ceph}).removeAllVolumes(context.Background()); err != nil {
			t.Errorf("remove the volumes of the SQLite run: %v", err)
		}
		for _, s := range stores {
			s.Close()
		}
	})
	return stores[0], stores[1], stores[2]
}

func loadManyCreates(t *testing.T, db string, maxCount int) {
	ctx := context.Background()
	h1, h2 := fmt.Sprintf("e2e-load-%s%d-a", db, maxCount), fmt.Sprintf("e2e-load-%s%d-b", db, maxCount)
	s1, s2, sg := loadStores(t, db)
	for _, h := range []struct {
		name, pool string
		store      *models.Store
	}{{h1, stack.pool, s1}, {h2, stack.pool2, s2}} {
		cfg := hostConfig(h.name)
		cfg.Pool = h.pool
		cfg.ImageVolumeCacheMaxCount = maxCount
		startHostOn(t, h.store, cfg, worker.Options{})
	}
	api := newGatewayOn(t, sg, 30*time.Minute, h1, h2)
	imgs := make([]imagesource.Image, 5)
	for i := range imgs {
		imgs[i] = uploadImage(t, fmt.Sprintf("load-%s%d-%d", db, maxCount, i), "raw", imageBytes(8*mib, uint64(100+10*maxCount+len(db)+i), 2))
	}
	before := poolImages(t)

	const n, inFlight = 200, 20
	ids := make([]string, n)
	results := map[string]int{}
	var mu sync.Mutex
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			// A spread over the images that is not a simple rotation, half placed by hand.
			host := ""
			if i%2 == 0 {
				host = []string{h1, h2}[(i/2)%2]
			}
			ids[i] = api.startVolume(imgs[(i*7+i/5)%5].ID, 1, host)
			v := api.waitVolume(ids[i])
			mu.Lock()
			results[v.Cache+" "+v.CacheReason]++
			mu.Unlock()
			if v.Status != models.StatusAvailable {
				t.Errorf("volume %d (%s): %s %q", i, ids[i], v.Status, v.Error)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Every 10th volume read back in full.
	for i := 0; i < n; i += 10 {
		img := imgs[(i*7+i/5)%5]
		if got := volumeSHA512On(t, sg, ids[i], img.Size); got != img.HashValue {
			t.Fatalf("volume %d: bytes differ from its image", i)
		}
	}

	cached := map[string]int{}
	for _, h := range []string{h1, h2} {
		var ready []models.CacheEntry
		for _, e := range entriesOn(t, sg, h) {
			if e.State == models.EntryReady {
				ready = append(ready, e)
			}
		}
		if len(ready) > maxCount {
			t.Fatalf("host %s holds %d ready entries, max_count %d", h, len(ready), maxCount)
		}
		for _, e := range ready {
			cached[e.ImageID+" "+e.ContentHash]++
		}
	}
	for k, c := range cached {
		if c > 1 {
			t.Fatalf("image %s cached %d times in the cluster", k, c)
		}
	}

	// No orphan among the images the run added.
	vols, err := sg.ListVolumes(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, v := range vols {
		known[v.Pool+"/"+contract.RBDName(v.ID)] = true
	}
	for img := range poolImages(t) {
		if before[img] {
			continue
		}
		if strings.HasSuffix(img, ".part") {
			t.Fatalf("staging image %s left behind", img)
		}
		if !known[img] {
			_, name, _ := strings.Cut(img, "/")
			row, err := sg.GetVolume(ctx, strings.TrimPrefix(name, "volume-"))
			t.Fatalf("orphan image %s: no volume row in its pool (row by id: %+v, %v)", img, row, err)
		}
	}
	for _, id := range ids {
		v, err := sg.GetVolume(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stack.ceph.Stat(ctx, v.Pool, contract.RBDName(id)); err != nil {
			t.Fatalf("volume %s has no image in %s: %v", id, v.Pool, err)
		}
	}
	st := hostStats(api.stats(), h1, h2)
	// With fewer slots in the cluster than images the cache must have been under pressure. (With
	// as many, a host that gets the first requests of more images than its max_count still
	// evicts: limits are per host, as in Cinder.)
	if 2*maxCount < len(imgs) && st.Evictions == 0 {
		t.Fatalf("no eviction in %v: the cache was never under pressure", results)
	}
	t.Logf("200 creates of 5 images on 2 hosts (%s, max_count %d): %v; %d downloads, %d evictions", db, maxCount, results, st.Downloads, st.Evictions)
}
