//go:build e2e

package e2e

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	cephrbd "github.com/ceph/go-ceph/rbd"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// A volume deleted as soon as it is requested, while its provision clones it from a warm cache
// entry: whether the delete lands before, during or after the clone, once every provision and
// deletion has closed nothing of the volume is left — no RBD image named after it, no row, and
// no clone of the cache snapshot.
func TestDeleteDuringHitLeavesNothing(t *testing.T) {
	ctx := context.Background()
	host := "e2e-delrace"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "delrace", "raw", imageBytes(16*mib, 93, 2))
	requireAvailable(t, api.createVolume(img.ID, 1), models.CacheMiss)
	es := readyEntries(t, host)
	if len(es) != 1 {
		t.Fatalf("ready entries after the warm-up: %+v", es)
	}
	entry := es[0]

	const n = 50
	ids := make([]string, n)
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Go(func() {
			for i := w; i < n; i += 5 {
				ids[i] = api.startVolume(img.ID, 1, host)
				if i%10 == 9 {
					// Some deletes come once the volume is made.
					api.waitVolume(ids[i])
				}
				if code := api.call("DELETE", "/v1/volumes/"+ids[i], "", nil); code != http.StatusAccepted {
					t.Errorf("delete %s: HTTP %d", ids[i], code)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Every provision and every deletion closes.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for _, id := range ids {
		for _, wf := range []string{id, contract.DeleteWorkflowID(id)} {
			if err := stack.temporal.GetWorkflow(wctx, wf, "").Get(wctx, nil); err != nil && wctx.Err() != nil {
				t.Fatalf("workflow %s not closed: %v", wf, err)
			}
		}
	}

	var left []string
	for _, id := range ids {
		if _, err := stack.store.GetVolume(ctx, id); !errors.Is(err, models.ErrNotFound) {
			left = append(left, "row "+id)
		}
	}
	names, err := stack.ceph.List(ctx, stack.pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(name, id) }) {
			left = append(left, "image "+stack.pool+"/"+name)
		}
	}
	for _, child := range snapshotChildren(t, entry.Pool, contract.RBDName(entry.VolumeID), contract.CacheSnapshot) {
		if slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(child, id) }) {
			left = append(left, "clone "+child)
		}
	}
	if len(left) > 0 {
		t.Fatalf("left behind by %d volumes created and deleted at once: %v", n, left)
	}
	t.Logf("%d volumes created and deleted at once: no image, row or clone left", n)
}

// snapshotChildren lists pool/name of the RBD images cloned from pool/image@snap.
func snapshotChildren(t *testing.T, pool, image, snap string) []string {
	t.Helper()
	conn, err := rados.NewConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.ReadConfigFile(os.Getenv("CEPH_CONF")); err != nil {
		t.Fatal(err)
	}
	if err := conn.Connect(); err != nil {
		t.Fatal(err)
	}
	defer conn.Shutdown()
	ioctx, err := conn.OpenIOContext(pool)
	if err != nil {
		t.Fatal(err)
	}
	defer ioctx.Destroy()
	img, err := cephrbd.OpenImageReadOnly(ioctx, image, snap)
	if err != nil {
		t.Fatalf("open %s/%s@%s: %v", pool, image, snap, err)
	}
	defer img.Close()
	pools, images, err := img.ListChildren()
	if err != nil {
		t.Fatalf("children of %s/%s@%s: %v", pool, image, snap, err)
	}
	out := make([]string, len(images))
	for i := range images {
		out[i] = pools[i] + "/" + images[i]
	}
	return out
}
