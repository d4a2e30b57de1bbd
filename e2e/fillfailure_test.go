//go:build e2e

package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// TestCancelledFillFallsBackToDownload: a cache fill that fails for a reason other than the
// image (here an operator cancels it mid-download, as from the Temporal UI) does not fail the
// volume waiting on it: the volume is downloaded on its own, and the fill leaves nothing.
func TestCancelledFillFallsBackToDownload(t *testing.T) {
	ctx := context.Background()
	host := "fill-cancel"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "fill-cancel", "raw", imageBytes(256*mib, 83, 2))
	before, err := stack.ceph.List(ctx, stack.pool)
	if err != nil {
		t.Fatal(err)
	}

	id := api.startVolume(img.ID, 1, "")
	waitFillDownloading(t, api, id)
	fillID := contract.FillWorkflowID(stack.fsid, img.ID, img.ContentHash())
	if err := stack.temporal.CancelWorkflow(ctx, fillID, ""); err != nil {
		t.Fatalf("cancel fill %s: %v", fillID, err)
	}

	v := api.waitVolume(id)
	requireAvailable(t, v, models.CacheNotCached)
	if v.CacheReason != contract.ReasonFillFailed {
		t.Fatalf("cache_reason %q, want %q", v.CacheReason, contract.ReasonFillFailed)
	}
	if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
		t.Fatalf("volume sha512 %s…, image %s…", got[:16], img.HashValue[:16])
	}
	var canceled *temporal.CanceledError
	if err := stack.temporal.GetWorkflow(ctx, fillID, "").Get(ctx, nil); !errors.As(err, &canceled) {
		t.Fatalf("fill ended with %v, want cancelled", err)
	}
	// The fill's compensation dropped its reservation and its half-written cache volume: the
	// only new image in the pool is the user's volume.
	if es := entriesOfImage(t, img.ID); len(es) != 0 {
		t.Fatalf("cache entries after the cancelled fill: %+v", es)
	}
	after, err := stack.ceph.List(ctx, stack.pool)
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, name := range after {
		if !slices.Contains(before, name) {
			added = append(added, name)
		}
	}
	if len(added) != 1 || added[0] != contract.RBDName(id) {
		t.Fatalf("new images in pool %s: %v, want only %s", stack.pool, added, contract.RBDName(id))
	}
	t.Logf("fill cancelled mid-download; volume %s available by direct download (cache_reason %s), sha512 ok, no entry, no image left", id, v.CacheReason)
}

// A fill terminated mid-download (as from the Temporal UI) ends without answering the provisions
// registered with it: they find out when they next check on it, and download on their own.
func TestTerminatedFillFallsBackToDownload(t *testing.T) {
	ctx := context.Background()
	host := "fill-terminate"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "fill-terminate", "raw", imageBytes(256*mib, 84, 2))

	id := api.startVolume(img.ID, 1, "")
	waitFillDownloading(t, api, id)
	fillID := contract.FillWorkflowID(stack.fsid, img.ID, img.ContentHash())
	if err := stack.temporal.TerminateWorkflow(ctx, fillID, "", "e2e: fill terminated"); err != nil {
		t.Fatalf("terminate fill %s: %v", fillID, err)
	}
	// A terminated fill runs no compensation: its half-written cache volume is left to the
	// test's cleanup (rows) and removed here (staging image).
	t.Cleanup(func() {
		for _, e := range entriesOfImage(t, img.ID) {
			_, _ = stack.ceph.Remove(ctx, e.Pool, contract.StagingName(contract.RBDName(e.VolumeID)))
		}
	})

	v := api.waitVolume(id)
	requireAvailable(t, v, models.CacheNotCached)
	if v.CacheReason != contract.ReasonFillFailed {
		t.Fatalf("cache_reason %q, want %q", v.CacheReason, contract.ReasonFillFailed)
	}
	if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
		t.Fatalf("volume sha512 %s…, image %s…", got[:16], img.HashValue[:16])
	}
	t.Logf("fill terminated mid-download; volume %s available by direct download (cache_reason %s)", id, v.CacheReason)
}

// waitFillDownloading polls the volume until the fill it waits on has downloaded some bytes; it
// fails if the volume settles first.
func waitFillDownloading(t *testing.T, api *apiClient, id string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var v struct {
			Status   string
			Progress *struct {
				Phase     string
				BytesDone int64 `json:"bytes_done"`
			}
		}
		api.call("GET", "/v1/volumes/"+id, "", &v)
		if v.Status != models.StatusCreating {
			t.Fatalf("volume became %s before its fill could be stopped", v.Status)
		}
		if v.Progress != nil && v.Progress.Phase == "DownloadImage" && v.Progress.BytesDone > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no fill download seen")
		}
	}
}
