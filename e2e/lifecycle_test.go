//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// Deleting a volume still being created cancels its provision: the provision's compensation
// removes what it made and the row goes. The cache fill it was waiting on is shared with other
// provisions, so it goes on and the image ends cached.
func TestDeleteWhileCreatingCancels(t *testing.T) {
	ctx := context.Background()
	host := "e2e-cancel"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "cancel", "raw", imageBytes(512*mib, 71, 2))

	id := api.startVolume(img.ID, 1, "")
	// Wait until the provision is inside the fill's download.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		var v struct {
			Status   string
			Progress *struct{ Phase string }
		}
		api.call("GET", "/v1/volumes/"+id, "", &v)
		if v.Status != models.StatusCreating {
			t.Fatalf("volume became %s before it could be deleted mid-download", v.Status)
		}
		if v.Progress != nil && v.Progress.Phase == "DownloadImage" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no download seen")
		}
	}
	if code := api.call("DELETE", "/v1/volumes/"+id, "", nil); code != http.StatusAccepted {
		t.Fatalf("delete while creating: HTTP %d", code)
	}
	waitGone(t, api, id)
	for _, name := range []string{contract.RBDName(id), contract.StagingName(contract.RBDName(id))} {
		if _, err := stack.ceph.Stat(ctx, stack.pool, name); !isNotFound(err) {
			t.Fatalf("image %s left behind: %v", name, err)
		}
	}
	desc, err := stack.temporal.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.GetWorkflowExecutionInfo().GetStatus().String(); st != "Canceled" {
		t.Fatalf("provision ended %s, want Canceled", st)
	}
	// The shared fill was not cancelled with it.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		es := entriesOfImage(t, img.ID)
		if len(es) == 1 && es[0].State == models.EntryReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fill did not finish after its first requester was deleted: %+v", es)
		}
	}
	requireAvailable(t, api.createVolume(img.ID, 1), models.CacheHit)
}
