//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"go.temporal.io/sdk/testsuite"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
)

// Every step run twice leaves the same end state as once: what a retried activity relies on.
// Each step runs against real Ceph, Glance and MySQL; after each pair the pool's images of this
// provision, their parents and sizes, and the cache rows are compared.
func TestEveryStepTwice(t *testing.T) {
	host := "e2e-twice"
	cfg := hostConfig(host)
	acts := &activities.Activities{Store: stack.store, Storage: stack.ceph, Images: stack.glance, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	img := uploadImage(t, "twice", "raw", imageBytes(9*mib+1, 81, 2))
	volume := contract.RBDName("twice-" + img.ID)
	ctx := context.Background()

	// state describes everything this provision can have touched.
	state := func(cacheVolumeID string) string {
		names, err := stack.ceph.List(ctx, stack.pool)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		slices.Sort(names)
		for _, n := range names {
			if !strings.Contains(n, img.ID) && (cacheVolumeID == "" || !strings.Contains(n, cacheVolumeID)) {
				continue
			}
			info := stat(t, n)
			fmt.Fprintf(&b, "%s size=%d parent=%v\n", n, info.Size, info.Parent)
		}
		for _, e := range entriesOf(t, host) {
			fmt.Fprintf(&b, "entry %d %s %s state=%s hits=%d\n", e.ID, e.ImageID, e.VolumeID, e.State, e.Hits)
		}
		return b.String()
	}
	twice := func(name, cacheVolumeID string, fn, in, out any) {
		t.Helper()
		var states []string
		for i := 0; i < 2; i++ {
			v, err := env.ExecuteActivity(fn, in)
			if err != nil {
				t.Fatalf("%s, run %d: %v", name, i+1, err)
			}
			if out != nil && v.HasValue() {
				if err := v.Get(out); err != nil {
					t.Fatal(err)
				}
			}
			states = append(states, state(cacheVolumeID))
		}
		if states[0] != states[1] {
			t.Fatalf("%s: state after the second run differs:\n%s---\n%s", name, states[0], states[1])
		}
		t.Logf("%s twice: same end state", name)
	}

	var plan contract.LookupResult
	twice("LookupCache", "", acts.LookupCache, contract.LookupInput{VolumeID: "v", ImageID: img.ID, SizeGB: 1}, &plan)
	if plan.Hit || !plan.Cacheable {
		t.Fatalf("plan %+v", plan)
	}
	var res contract.EvictResult
	twice("EvictLRU", "", acts.EvictLRU, contract.EvictInput{Image: plan.Image, FillWorkflowID: "wf-twice"}, &res)
	if !res.Reserved {
		t.Fatalf("no reservation: %+v", res)
	}
	cacheVol := contract.RBDName(res.CacheVolumeID)
	var dl contract.DownloadResult
	twice("DownloadImage", res.CacheVolumeID, acts.DownloadImage, contract.DownloadInput{Image: plan.Image, Pool: stack.pool, Target: cacheVol}, &dl)
	var imp contract.ImportResult
	twice("ImportImage", res.CacheVolumeID, acts.ImportImage, contract.ImportInput{Pool: stack.pool, Target: cacheVol, MaxVirtualSize: gib}, &imp)
	var used int64
	twice("CloneToCache", res.CacheVolumeID, acts.CloneToCache, contract.CacheInput{EntryID: res.EntryID, Pool: stack.pool, CacheVolumeID: res.CacheVolumeID}, &used)
	parent := res.Entry.Parent()
	twice("CloneVolume", res.CacheVolumeID, acts.CloneVolume, contract.CloneInput{Entry: res.Entry, Pool: stack.pool, Name: volume}, nil)
	twice("ExtendVolume", res.CacheVolumeID, acts.ExtendVolume, contract.ResizeInput{Pool: stack.pool, Name: volume, SizeBytes: 2 * gib}, nil)
	if info := stat(t, volume); info.Size != uint64(2*gib) || info.Parent == nil || *info.Parent != parent {
		t.Fatalf("volume after clone and extend: %+v", info)
	}
	twice("FlattenVolume", res.CacheVolumeID, acts.FlattenVolume, contract.ImageName{Pool: stack.pool, Name: volume}, nil)
	if info := stat(t, volume); info.Parent != nil {
		t.Fatalf("volume still has parent %+v after flatten", info.Parent)
	}
	if got := volumeSHA512(t, "twice-"+img.ID, img.Size); got != img.HashValue {
		t.Fatal("the flattened volume's bytes differ from the image")
	}
	twice("AbandonCacheFill of a ready entry", res.CacheVolumeID, acts.AbandonCacheFill, res.EntryID, nil)
	twice("RemoveImage", res.CacheVolumeID, acts.RemoveImage, contract.ImageName{Pool: stack.pool, Name: volume}, nil)
	if _, err := stack.ceph.Stat(ctx, stack.pool, volume); !isNotFound(err) {
		t.Fatalf("volume image still there after RemoveImage: %v", err)
	}
}
