//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
)

// stepEnv runs a host's activities one at a time, as a worker would, with an activity context.
func stepEnv(t *testing.T, acts *activities.Activities, interceptors ...interceptor.WorkerInterceptor) *testsuite.TestActivityEnvironment {
	t.Helper()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{Interceptors: interceptors})
	env.RegisterActivity(acts)
	return env
}

// hostActs is a host's activities without workers, for tests that call the steps themselves.
func hostActs(cfg activities.Config) *activities.Activities {
	return &activities.Activities{Store: stack.store, Storage: stack.ceph, Images: stack.glance, Temporal: stack.temporal,
		Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// reconcile runs one ReconcileHost pass as an activity and returns its report.
func reconcile(t *testing.T, env *testsuite.TestActivityEnvironment, acts *activities.Activities) contract.ReconcileReport {
	t.Helper()
	v, err := env.ExecuteActivity(acts.ReconcileHost)
	if err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	var rep contract.ReconcileReport
	if err := v.Get(&rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

func imageRef(img imagesource.Image) contract.ImageRef {
	return contract.ImageRef{ID: img.ID, Size: img.Size, VirtualSize: img.VirtualSize, HashAlgo: img.HashAlgo,
		HashValue: img.HashValue, Checksum: img.Checksum, ContentHash: img.ContentHash(), UpdatedAt: img.UpdatedAt}
}

// A fill terminated mid-download runs no compensation: its entry stays "filling", holding a
// slot, bytes, quota and its images. Reconcile asks Temporal whether the entry's fill still runs
// and, once it does not, removes its images and rows and reports it. The entry of a fill that
// still runs is left alone.
func TestReconcileRemovesEntryOfEndedFill(t *testing.T) {
	ctx := context.Background()
	host := "e2e-stuckfill"
	cfg := hostConfig(host)
	cfg.SettleTime = time.Millisecond
	acts := startHost(t, cfg)
	img := uploadImage(t, "stuckfill", "raw", imageBytes(512*mib, 91, 1))

	id := contract.FillWorkflowID(stack.fsid, img.ID, img.ContentHash())
	run, err := stack.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: contract.WorkflowQueue},
		contract.FillWorkflow, contract.FillInput{Cluster: stack.fsid, Host: host, Image: imageRef(img), MaxVirtualSize: gib})
	if err != nil {
		t.Fatal(err)
	}
	// Terminate the fill once it has reserved its entry and is writing the staging image.
	var entry models.CacheEntry
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if es := entriesOfImage(t, img.ID); len(es) == 1 {
			if es[0].State != models.EntryFilling {
				t.Fatalf("the fill finished before it could be terminated: %+v", es[0])
			}
			if _, err := stack.ceph.Stat(ctx, stack.pool, contract.StagingName(contract.RBDName(es[0].VolumeID))); err == nil {
				entry = es[0]
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the fill never started downloading")
		}
	}
	if err := stack.temporal.TerminateWorkflow(ctx, id, run.GetRunID(), "test: a fill ends without its cleanup"); err != nil {
		t.Fatal(err)
	}
	if e, err := stack.store.GetCacheEntry(ctx, entry.ID); err != nil || e.State != models.EntryFilling {
		t.Fatalf("after the termination the entry is %+v (%v); the test needs it still filling", e, err)
	}

	// A fill that still runs: its workflow waits for a host no worker serves, and its entry is
	// planted on this host.
	idle := "imagevol-fill-running-" + uuid.NewString()
	if _, err := stack.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: idle, TaskQueue: contract.WorkflowQueue},
		contract.FillWorkflow, contract.FillInput{Cluster: stack.fsid, Host: "e2e-stuckfill-nobody", Image: imageRef(img)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stack.temporal.TerminateWorkflow(context.Background(), idle, "", "test done") })
	old := time.Now().UTC().Add(-time.Hour)
	running := &models.CacheEntry{Host: host, ClusterName: stack.fsid, Pool: stack.pool, ImageID: uuid.NewString(),
		ImageUpdatedAt: old, ContentHash: "sha512:running", VolumeID: uuid.NewString(), SizeBytes: mib, LastUsed: old,
		State: models.EntryFilling, FillWorkflowID: idle, CreatedAt: old, UpdatedAt: old}
	if err := stack.store.InsertCacheEntry(ctx, running); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stack.store.DeleteCacheEntry(context.Background(), running) })

	env := stepEnv(t, acts)
	rep := reconcile(t, env, acts)
	if _, err := stack.store.GetCacheEntry(ctx, entry.ID); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("the entry of the terminated fill is still there after reconcile (%v); report %+v", err, rep)
	}
	if _, err := stack.store.GetVolume(ctx, entry.VolumeID); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("the cache volume row of the terminated fill is still there: %v", err)
	}
	for _, n := range []string{contract.RBDName(entry.VolumeID), contract.StagingName(contract.RBDName(entry.VolumeID))} {
		if _, err := stack.ceph.Stat(ctx, stack.pool, n); !isNotFound(err) {
			t.Fatalf("image %s of the terminated fill is still in the pool: %v", n, err)
		}
	}
	if e, err := stack.store.GetCacheEntry(ctx, running.ID); err != nil || e.State != models.EntryFilling {
		t.Fatalf("the entry of the running fill was touched: %+v, %v", e, err)
	}
	if len(rep.AbandonedFills) != 1 || !strings.Contains(rep.AbandonedFills[0], fmt.Sprintf("entry %d,", entry.ID)) || len(rep.Problems) != 0 {
		t.Fatalf("report %+v; want the terminated fill's entry, and only it, reported as abandoned", rep)
	}
	// The terminated fill's download may still have had its staging image open: then that image
	// went to the trash, recorded, and a later pass purges it once the download has stopped.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		ts, err := stack.store.ListTrashedImages(ctx, host)
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trashed images of the terminated fill never purged: %+v", ts)
		}
		rep = reconcile(t, env, acts)
	}
	for _, n := range []string{contract.RBDName(entry.VolumeID), contract.StagingName(contract.RBDName(entry.VolumeID))} {
		if err := stack.ceph.PurgeTrashed(ctx, stack.pool, n); !isNotFound(err) {
			t.Fatalf("image %s of the terminated fill left in the trash: %v", n, err)
		}
	}
}

// describeHook lets a test act between reconcile's listing of a volume and its verdict on it:
// it runs before Temporal is asked about the named workflow.
type describeHook struct {
	client.Client
	workflowID string
	before     func()
}

func (d *describeHook) DescribeWorkflowExecution(ctx context.Context, id, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	if id == d.workflowID {
		d.before()
	}
	return d.Client.DescribeWorkflowExecution(ctx, id, runID)
}

// Reconcile lists the volumes still "creating", then asks Temporal about each provision. A
// provision that finishes in between (its volume now "available") must not be turned to
// "error"; a volume still "creating" with no provision running is.
func TestReconcileKeepsVolumeFinishedMeanwhile(t *testing.T) {
	ctx := context.Background()
	host := "e2e-recvol"
	cfg := hostConfig(host)
	cfg.SettleTime = time.Millisecond
	old := time.Now().UTC().Add(-time.Hour)
	newVol := func() *models.Volume {
		v := &models.Volume{ID: uuid.NewString(), ProjectID: "project-e2e", Host: host, Pool: stack.pool, SizeGB: 1,
			Status: models.StatusCreating, CreatedAt: old, UpdatedAt: old}
		v.WorkflowID = v.ID
		if err := stack.store.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	finished, stuck := newVol(), newVol()
	acts := hostActs(cfg)
	acts.Temporal = &describeHook{Client: stack.temporal, workflowID: finished.WorkflowID, before: func() {
		// The provision completes now: its last step marks the volume available.
		if err := stack.store.UpdateVolume(ctx, finished.ID, map[string]any{"status": models.StatusAvailable}); err != nil {
			t.Error(err)
		}
	}}
	rep := reconcile(t, stepEnv(t, acts), acts)
	if v, err := stack.store.GetVolume(ctx, finished.ID); err != nil || v.Status != models.StatusAvailable {
		t.Fatalf("a volume whose provision finished during reconcile: %+v, %v; want it available", v, err)
	}
	if v, err := stack.store.GetVolume(ctx, stuck.ID); err != nil || v.Status != models.StatusError {
		t.Fatalf("a volume left creating with no provision: %+v, %v; want error", v, err)
	}
	if s := strings.Join(rep.Stuck, "\n"); strings.Contains(s, finished.ID) || !strings.Contains(s, stuck.ID) {
		t.Fatalf("reported stuck: %q; want %s only", rep.Stuck, stuck.ID)
	}
}

// heartbeats counts the heartbeats activities record, in all and those whose details name a
// cache entry or a volume.
type heartbeats struct {
	interceptor.WorkerInterceptorBase
	n, entries, volumes atomic.Int64
}

func (h *heartbeats) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &heartbeatsIn{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, h: h}
}

type heartbeatsIn struct {
	interceptor.ActivityInboundInterceptorBase
	h *heartbeats
}

func (i *heartbeatsIn) Init(out interceptor.ActivityOutboundInterceptor) error {
	return i.Next.Init(&heartbeatsOut{ActivityOutboundInterceptorBase: interceptor.ActivityOutboundInterceptorBase{Next: out}, h: i.h})
}

type heartbeatsOut struct {
	interceptor.ActivityOutboundInterceptorBase
	h *heartbeats
}

func (o *heartbeatsOut) RecordHeartbeat(ctx context.Context, details ...any) {
	o.h.n.Add(1)
	if len(details) > 0 {
		if d, ok := details[0].(string); ok && strings.HasPrefix(d, "cache entry ") {
			o.h.entries.Add(1)
		} else if ok && strings.HasPrefix(d, "volume ") {
			o.h.volumes.Add(1)
		}
	}
	o.Next.RecordHeartbeat(ctx, details...)
}

// ReconcileHost runs under a heartbeat timeout of a minute, and a host may hold many entries and
// volumes, each needing a call to the image service or Temporal: it must heartbeat for each, not
// only after an invalidation, or every attempt on a large or slow host times out before the
// trash purge and the stuck-volume marking run.
func TestReconcileHeartbeatsPerEntry(t *testing.T) {
	ctx := context.Background()
	host := "e2e-recbeat"
	cfg := hostConfig(host)
	cfg.SettleTime = time.Millisecond
	img := uploadImage(t, "recbeat", "raw", imageBytes(mib, 93, 2))
	old := time.Now().UTC().Add(-time.Hour)
	const entries, volumes = 40, 5
	for i := range entries {
		// Valid entries of a live image: nothing to invalidate.
		e := &models.CacheEntry{Host: host, ClusterName: stack.fsid, Pool: "recbeat-" + uuid.NewString()[:8], ImageID: img.ID,
			ImageUpdatedAt: img.UpdatedAt, ContentHash: img.ContentHash(), VolumeID: uuid.NewString(), SizeBytes: img.Size,
			LastUsed: old.Add(time.Duration(i) * time.Second), State: models.EntryReady}
		if err := stack.store.InsertCacheEntry(ctx, e); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stack.store.DeleteCacheEntry(context.Background(), e) })
	}
	for range volumes {
		v := &models.Volume{ID: uuid.NewString(), ProjectID: "project-e2e", Host: host, Pool: stack.pool, SizeGB: 1,
			Status: models.StatusCreating, CreatedAt: old, UpdatedAt: old}
		v.WorkflowID = v.ID
		if err := stack.store.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	acts := hostActs(cfg)
	var hb heartbeats
	rep := reconcile(t, stepEnv(t, acts, &hb), acts)
	if rep.Checked != entries || len(rep.Invalidated) != 0 || len(rep.Stuck) != volumes {
		t.Fatalf("report %+v; want %d entries checked, none invalidated, %d volumes stuck", rep, entries, volumes)
	}
	if e, v := hb.entries.Load(), hb.volumes.Load(); e < entries || v < volumes {
		t.Fatalf("%d heartbeats in all, %d naming an entry, %d a volume, over %d entries and %d volumes; want one for each",
			hb.n.Load(), e, v, entries, volumes)
	}
	t.Logf("%d heartbeats over %d entries, %d volumes and the pool's images", hb.n.Load(), entries, volumes)
}

// A user's image still open by a client (a watcher) cannot be deleted: RemoveImage moves it to
// the RBD trash. It must be recorded there, and reconcile purges it once it is closed.
func TestRemoveImageOfBusyImageIsPurgedLater(t *testing.T) {
	ctx := context.Background()
	host := "e2e-busy"
	acts := hostActs(hostConfig(host))
	env := stepEnv(t, acts)
	name := contract.RBDName("busy-" + uuid.NewString())
	if err := stack.ceph.Create(ctx, stack.pool, name, uint64(64*mib)); err != nil {
		t.Fatal(err)
	}
	w, err := stack.ceph.OpenWriter(ctx, stack.pool, name)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			w.Close()
		}
		_, _ = stack.ceph.Remove(context.Background(), stack.pool, name)
		_ = stack.ceph.PurgeTrashed(context.Background(), stack.pool, name)
	})
	if _, err := w.WriteAt(imageBytes(mib, 94, 1), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ExecuteActivity(acts.RemoveImage, contract.ImageName{Pool: stack.pool, Name: name}); err != nil {
		t.Fatalf("remove a busy image: %v", err)
	}
	if _, err := stack.ceph.Stat(ctx, stack.pool, name); !isNotFound(err) {
		t.Fatalf("the busy image is still in the pool: %v", err)
	}
	if ts, err := stack.store.ListTrashedImages(ctx, host); err != nil || len(ts) != 1 || ts[0].Pool != stack.pool || ts[0].Name != name {
		t.Fatalf("trashed images recorded: %+v (%v); want %s", ts, err, name)
	}
	// A second removal (a retried compensation) finds it in the trash, still busy: recorded once.
	if _, err := env.ExecuteActivity(acts.RemoveImage, contract.ImageName{Pool: stack.pool, Name: name}); err != nil {
		t.Fatalf("remove a busy image again: %v", err)
	}
	if rep := reconcile(t, env, acts); rep.PurgedImages != 0 || len(rep.TrashedBusy) != 1 {
		t.Fatalf("reconcile while the image is open: %+v; want it reported busy, not purged", rep)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	rep := reconcile(t, env, acts)
	if err := stack.ceph.PurgeTrashed(ctx, stack.pool, name); !isNotFound(err) {
		t.Fatalf("the image was still in the trash after it was closed and reconcile ran (purge: %v); report %+v", err, rep)
	}
	if ts, err := stack.store.ListTrashedImages(ctx, host); err != nil || len(ts) != 0 || rep.PurgedImages != 1 {
		t.Fatalf("after the purge: rows %+v (%v), report %+v; want no row and one image purged", ts, err, rep)
	}
}

// A clone whose result is lost, then an eviction of its entry (its cache volume goes to the
// trash, the clone depending on it): the retried CloneVolume must recognise its own clone and
// succeed, not report a conflict that makes the provision's compensation delete a good volume.
func TestCloneRetryAfterEvictionKeepsClone(t *testing.T) {
	host := "e2e-cloneretry"
	acts := startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "cloneretry", "raw", imageBytes(4*mib, 95, 2))
	requireAvailable(t, api.createVolume(img.ID, 1), models.CacheMiss)
	e := entriesOfImage(t, img.ID)[0]
	env := stepEnv(t, acts)
	id := "cloneretry-" + uuid.NewString()
	in := contract.CloneInput{Entry: contract.EntryRef{EntryID: e.ID, Host: e.Host, Pool: e.Pool, VolumeID: e.VolumeID},
		Pool: stack.pool, Name: contract.RBDName(id)}
	t.Cleanup(func() { _, _ = stack.ceph.Remove(context.Background(), stack.pool, in.Name) })
	if _, err := env.ExecuteActivity(acts.CloneVolume, in); err != nil {
		t.Fatal(err)
	}
	// The attempt's result is lost; meanwhile the entry is evicted.
	v, err := env.ExecuteActivity(acts.EvictEntry, contract.EvictEntryInput{EntryID: e.ID, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	var ev contract.EvictEntryResult
	if err := v.Get(&ev); err != nil || !ev.Evicted || !ev.Trashed {
		t.Fatalf("eviction %+v (%v); want the cache volume trashed", ev, err)
	}
	if _, err := env.ExecuteActivity(acts.CloneVolume, in); err != nil {
		var appErr *temporal.ApplicationError
		errors.As(err, &appErr)
		t.Fatalf("the retried clone failed (%v, type %q); it should recognise its own clone", err, appErr.Type())
	}
	info := stat(t, in.Name)
	if info.Parent == nil || info.Parent.Pool != e.Pool || info.Parent.Image != contract.RBDName(e.VolumeID) {
		t.Fatalf("the clone's parent is %+v", info.Parent)
	}
	if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
		t.Fatal("the kept clone's bytes differ from the image")
	}
}
