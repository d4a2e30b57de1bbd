//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// glanceCall sends a raw request to Glance (no auth), for what the image client does not do.
func glanceCall(t *testing.T, method, path, contentType, body string) {
	t.Helper()
	req, err := http.NewRequest(method, strings.TrimSuffix(os.Getenv("GLANCE_URL"), "/")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("glance %s %s: HTTP %d", method, path, resp.StatusCode)
	}
}

// The cache key is the content hash: renaming an image keeps its entry. Deleting or deactivating
// an image in Glance invalidates its entries: the reconcile workflow, run by its Temporal
// Schedule, evicts them, and their clones keep working.
func TestInvalidationByReconcileSchedule(t *testing.T) {
	ctx := context.Background()
	host := "e2e-inval"
	cfg := hostConfig(host)
	cfg.SettleTime = time.Millisecond // judge the planted row and image below at once
	startHost(t, cfg)
	api := newGateway(t, host)
	a := uploadImage(t, "inval-a", "raw", imageBytes(8*mib, 61, 2))
	b := uploadImage(t, "inval-b", "raw", imageBytes(8*mib, 62, 2))
	va := api.createVolume(a.ID, 1)
	requireAvailable(t, va, models.CacheMiss)
	requireAvailable(t, api.createVolume(b.ID, 1), models.CacheMiss)

	// A metadata edit changes updated_at, not the content: still a hit.
	glanceCall(t, "PATCH", "/v2/images/"+a.ID, "application/openstack-images-v2.1-json-patch", `[{"op":"replace","path":"/name","value":"inval-a-renamed"}]`)
	requireAvailable(t, api.createVolume(a.ID, 1), models.CacheHit)

	glanceCall(t, "POST", "/v2/images/"+a.ID+"/actions/deactivate", "", "")
	if err := stack.glance.Delete(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	// A row left "creating" by a provision that no longer runs, and an image no row accounts for.
	stuck := &models.Volume{ID: uuid.NewString(), ProjectID: "project-e2e", Host: host, Pool: stack.pool,
		Status: models.StatusCreating, WorkflowID: "no-such-provision"}
	if err := stack.store.CreateVolume(ctx, stuck); err != nil {
		t.Fatal(err)
	}
	orphan := contract.RBDName(uuid.NewString())
	if err := stack.ceph.Create(ctx, stack.pool, orphan, uint64(mib)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = stack.ceph.Remove(context.Background(), stack.pool, orphan) })
	time.Sleep(10 * time.Millisecond)

	gw := &starter.Gateway{Store: stack.store, Temporal: stack.temporal, Hosts: []string{host}}
	if err := gw.EnsureReconcileSchedule(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	// A second gateway start updates the schedule instead of failing.
	if err := gw.EnsureReconcileSchedule(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	h := stack.temporal.ScheduleClient().GetHandle(ctx, contract.ReconcileScheduleID)
	t.Cleanup(func() { _ = h.Delete(context.Background()) })
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
		t.Fatal(err)
	}
	var runID string
	for deadline := time.Now().Add(time.Minute); runID == ""; time.Sleep(200 * time.Millisecond) {
		d, err := h.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(d.Info.RecentActions); n > 0 {
			runID = d.Info.RecentActions[n-1].StartWorkflowResult.WorkflowID
		}
		if time.Now().After(deadline) {
			t.Fatal("the triggered schedule started no reconcile run")
		}
	}
	var reports []contract.ReconcileReport
	if err := stack.temporal.GetWorkflow(ctx, runID, "").Get(ctx, &reports); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || len(reports[0].Invalidated) != 2 || len(reports[0].Problems) != 0 || len(reports[0].Stuck) != 1 ||
		!slices.Contains(reports[0].Orphans, stack.pool+"/"+orphan) {
		t.Fatalf("reconcile reports %+v; want both entries invalidated, the stuck volume fixed and the orphan reported", reports)
	}
	if v, err := stack.store.GetVolume(ctx, stuck.ID); err != nil || v.Status != models.StatusError {
		t.Fatalf("stuck volume after reconcile: %+v, %v", v, err)
	}
	if _, err := stack.ceph.Stat(ctx, stack.pool, orphan); err != nil {
		t.Fatalf("the orphan was removed, not just reported: %v", err)
	}
	var last starter.ReconcileLast
	if code := api.call("GET", "/v1/reconcile/last", "", &last); code != http.StatusOK || last.WorkflowID != runID || last.Running ||
		len(last.Hosts) != 1 || len(last.Hosts[0].Invalidated) != 2 {
		t.Fatalf("GET /v1/reconcile/last: HTTP %d %+v", code, last)
	}
	for _, img := range []string{a.ID, b.ID} {
		if es := entriesOfImage(t, img); len(es) != 0 {
			t.Fatalf("entries of %s left: %+v", img, es)
		}
	}
	if got := volumeSHA512(t, va.ID, a.Size); got != a.HashValue {
		t.Fatal("a clone lost its data when its image's entry was invalidated")
	}
	t.Logf("reconcile: %v", reports[0].Invalidated)
}
