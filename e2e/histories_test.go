//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	sdkworker "go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/worker"
)

// histRecordEnv, set to 1, makes TestRecordedHistoriesReplay write every history it replays to
// histDir, where workflows' TestReplayRecordedHistories replays them without any service.
// histPrefixEnv names the files with a prefix, so that histories of a new version of the
// workflow code are added next to those of the old one instead of replacing them.
const (
	histRecordEnv = "IMAGEVOL_RECORD_HISTORIES"
	histPrefixEnv = "IMAGEVOL_RECORD_PREFIX"
	histDir       = "../workflows/testdata/histories"
)

// histRun is one workflow run to record: its file name, workflow ID, workflow type and the
// event that must close it.
type histRun struct {
	name, id, workflowType string
	closedBy               enumspb.EventType
}

// Every kind of run the provision and fill workflows make — a miss and the fill it joins, a hit,
// an eviction, a failure with compensation, one fill shared by two requests and a deletion of a
// volume being created — replays against
// the current workflow code, registered as the worker registers it. This is what keeps a change
// to workflow code from breaking the runs in flight when it is deployed.
func TestRecordedHistoriesReplay(t *testing.T) {
	host, evictHost := "e2e-hist", "e2e-hist-evict"
	startHost(t, hostConfig(host))
	ecfg := hostConfig(evictHost)
	ecfg.ImageVolumeCacheMaxCount = 1
	startHost(t, ecfg)
	api := newGateway(t, host, evictHost)
	fillID := func(img imagesource.Image) string {
		return contract.FillWorkflowID(stack.fsid, img.ID, img.ContentHash())
	}
	const create, fill = contract.CreateVolumeWorkflow, contract.FillWorkflow
	completed, failed := enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
	var runs []histRun

	// A miss, which fills the cache, then a hit.
	img := uploadImage(t, "hist-miss", "raw", imageBytes(16*mib, 81, 2))
	miss := api.waitVolume(api.startVolume(img.ID, 1, host))
	requireAvailable(t, miss, models.CacheMiss)
	hit := api.waitVolume(api.startVolume(img.ID, 1, host))
	requireAvailable(t, hit, models.CacheHit)
	runs = append(runs,
		histRun{"cache-miss", miss.ID, create, completed},
		histRun{"cache-miss-fill", fillID(img), fill, completed},
		histRun{"cache-hit", hit.ID, create, completed})

	// With room for one entry, a second image's fill evicts the first.
	x := uploadImage(t, "hist-evict-x", "raw", imageBytes(8*mib, 82, 2))
	y := uploadImage(t, "hist-evict-y", "raw", imageBytes(8*mib, 83, 2))
	requireAvailable(t, api.waitVolume(api.startVolume(x.ID, 1, evictHost)), models.CacheMiss)
	vy := api.waitVolume(api.startVolume(y.ID, 1, evictHost))
	requireAvailable(t, vy, models.CacheMiss)
	if ready := readyEntries(t, evictHost); len(ready) != 1 || ready[0].ImageID != y.ID {
		t.Fatalf("ready entries after the second fill: %+v, want only %s's", ready, y.ID)
	}
	if st := hostStats(api.stats(), evictHost); st.Evictions != 1 {
		t.Fatalf("%d evictions on %s, want 1", st.Evictions, evictHost)
	}
	runs = append(runs,
		histRun{"eviction", vy.ID, create, completed},
		histRun{"eviction-fill", fillID(y), fill, completed})

	// A qcow2 naming a backing file, uploaded as raw: the fill's import refuses it, the fill
	// drops its reservation and the provision removes its volume and records the error.
	data := qcow2WithBackingFile(t, 84)
	unsafe := uploadImage(t, "hist-unsafe", "raw", data)
	bad := api.waitVolume(api.startVolume(unsafe.ID, 1, host))
	requireFailed(t, host, bad, contract.ErrTypeUnsafeImage)
	runs = append(runs,
		histRun{"unsafe-image", bad.ID, create, failed},
		histRun{"unsafe-image-fill", fillID(unsafe), fill, failed})

	// Two concurrent requests of an uncached image share one fill: both are misses (a request
	// that came after the fill would be a hit), and the fill ran once.
	shared := uploadImage(t, "hist-shared", "raw", imageBytes(64*mib, 85, 2))
	ids := make([]string, 2)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() { ids[i] = api.startVolume(shared.ID, 1, host) })
	}
	wg.Wait()
	for i, id := range ids {
		requireAvailable(t, api.waitVolume(id), models.CacheMiss)
		runs = append(runs, histRun{[]string{"shared-fill-first", "shared-fill-second"}[i], id, create, completed})
	}
	histRequireOneRun(t, fillID(shared))
	runs = append(runs, histRun{"shared-fill", fillID(shared), fill, completed})

	// A volume deleted as soon as it is requested: the deletion cancels its provision, waits for
	// it to close and removes what it made.
	gone := api.startVolume(img.ID, 1, host)
	if code := api.call("DELETE", "/v1/volumes/"+gone, "", nil); code != http.StatusAccepted {
		t.Fatalf("delete %s: HTTP %d", gone, code)
	}
	waitGone(t, api, gone)
	runs = append(runs, histRun{"delete-while-creating", contract.DeleteWorkflowID(gone), contract.DeleteVolumeWorkflow, completed})

	replayer := histReplayer()
	record := os.Getenv(histRecordEnv) == "1"
	for _, r := range runs {
		hist := histFetch(t, r)
		if err := replayer.ReplayWorkflowHistory(nil, hist); err != nil {
			t.Errorf("%s (%s): replay: %v", r.name, r.id, err)
			continue
		}
		if !record {
			continue
		}
		path := filepath.Join(histDir, os.Getenv(histPrefixEnv)+r.name+".json")
		js, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(js, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		// What was written must be what the file replayer reads.
		if err := replayer.ReplayWorkflowHistoryFromJSONFile(nil, path); err != nil {
			t.Errorf("%s: replay of %s: %v", r.name, path, err)
		}
		t.Logf("recorded %s: %d events of %s", path, len(hist.Events), r.id)
	}
}

// histReplayer replays with every workflow registered as worker.Start registers it.
func histReplayer() sdkworker.WorkflowReplayer {
	r := sdkworker.NewWorkflowReplayer()
	worker.RegisterWorkflows(r)
	return r
}

// histFetch waits for the latest run of r.id to close and returns its whole history, checked to
// be a run of the expected type closed by the expected event.
func histFetch(t *testing.T, r histRun) *historypb.History {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := stack.temporal.GetWorkflow(ctx, r.id, "")
	// A failed run returns its failure here; the closing event is checked below.
	_ = run.Get(ctx, nil)
	hist := &historypb.History{}
	it := stack.temporal.GetWorkflowHistory(ctx, r.id, run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatalf("%s: history of %s: %v", r.name, r.id, err)
		}
		hist.Events = append(hist.Events, ev)
	}
	if len(hist.Events) < 2 {
		t.Fatalf("%s: history of %s has %d events", r.name, r.id, len(hist.Events))
	}
	first, last := hist.Events[0], hist.Events[len(hist.Events)-1]
	if got := first.GetWorkflowExecutionStartedEventAttributes().GetWorkflowType().GetName(); got != r.workflowType {
		t.Fatalf("%s: %s is a %q run, want %q", r.name, r.id, got, r.workflowType)
	}
	if last.GetEventType() != r.closedBy {
		t.Fatalf("%s: %s ends with %s, want %s", r.name, r.id, last.GetEventType(), r.closedBy)
	}
	return hist
}

// histRequireOneRun checks that a workflow ID has exactly one run, closed. Visibility lags the
// history a little, so it waits until the closed run is listed.
func histRequireOneRun(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := stack.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: stack.namespace, Query: "WorkflowId = '" + id + "'",
		})
		if err != nil {
			t.Fatal(err)
		}
		closed := 0
		for _, e := range resp.Executions {
			if e.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				closed++
			}
		}
		if len(resp.Executions) == closed && closed > 0 {
			if closed != 1 {
				t.Fatalf("%d runs of %s, want the one shared fill", closed, id)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runs of %s listed: %d, closed %d", id, len(resp.Executions), closed)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
