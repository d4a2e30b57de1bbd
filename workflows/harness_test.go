package workflows_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource/memsource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage/memstorage"
	"github.com/imagevol/imagevol/worker"
	"github.com/imagevol/imagevol/workflows"
)

// The host, pool and cluster of the harness's one storage host.
const (
	host     = "node1"
	pool     = "volumes"
	cluster  = "test-cluster"
	internal = "internal-project"
)

// harness runs the workflows on Temporal's test environment against the real activities, built
// on an in-memory storage and image source and an SQLite store in a temporary directory. Only
// Temporal itself is faked: fillClient starts the fills a provision asks for in test
// environments of their own.
type harness struct {
	t       *testing.T
	suite   testsuite.WorkflowTestSuite
	store   *models.Store
	storage *memstorage.Storage
	images  *memsource.Source
	acts    *activities.Activities
	fills   *fillClient
	// queue is where provisions start: the host's own queue, as the gateway starts them, or
	// the shared queue, as gateways before the one-step hit did.
	queue string

	mu     sync.Mutex
	envs   map[string]*testsuite.TestWorkflowEnvironment // running workflows, by ID
	phases map[string][]string                           // Phase search attribute upserts, by workflow ID
	memos  map[string][]map[string]any                   // memo upserts, by workflow ID
}

func newHarness(t *testing.T, edit func(*activities.Config)) *harness {
	t.Helper()
	store, err := models.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "imagevol.db"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := activities.Config{
		Host: host, ClusterName: cluster, Pool: pool,
		ImageVolumeCacheEnabled:     true,
		CinderInternalTenantProject: internal, CinderInternalTenantUser: "internal-user",
	}
	if edit != nil {
		edit(&cfg)
	}
	h := &harness{
		t: t, store: store, storage: memstorage.New(pool), images: memsource.New(),
		queue:  contract.HostQueue(host),
		envs:   map[string]*testsuite.TestWorkflowEnvironment{},
		phases: map[string][]string{}, memos: map[string][]map[string]any{},
	}
	h.suite.SetLogger(quietLogger{})
	h.fills = &fillClient{h: h, outcomes: map[string]fillOutcome{}, options: map[string]client.StartWorkflowOptions{}}
	h.acts = &activities.Activities{
		Store: store, Storage: h.storage, Images: h.images, Temporal: h.fills, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Identity: "test-worker",
	}
	return h
}

// newEnv is a test environment with the workflows and activities registered as the workers
// register them: every step but the local ones is bound to the host's task queue, so a step
// scheduled on another queue is not found.
func (h *harness) newEnv(id string) *testsuite.TestWorkflowEnvironment {
	env := h.suite.NewTestWorkflowEnvironment()
	env.SetWorkerOptions(sdkworker.Options{Interceptors: []interceptor.WorkerInterceptor{&typedErrors{}}})
	worker.RegisterWorkflows(env)
	env.RegisterActivity(h.acts)
	a := h.acts
	env.SetActivityTaskQueue(contract.HostQueue(host),
		a.LookupCache, a.EvictLRU, a.DownloadImage, a.ImportImage, a.CloneToCache, a.CloneVolume,
		a.ExtendVolume, a.FlattenVolume, a.RemoveImage, a.AbandonCacheFill, a.JoinFill, a.CloneFromImageStore)
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: id, TaskQueue: h.queue})
	env.SetTestTimeout(time.Minute)
	// The upserts are recorded (and still validated by the environment).
	env.OnUpsertTypedSearchAttributes(mock.Anything).Maybe().Run(func(args mock.Arguments) {
		if p, ok := args.Get(0).(temporal.SearchAttributes).GetKeyword(contract.SearchPhase); ok {
			h.mu.Lock()
			h.phases[id] = append(h.phases[id], p)
			h.mu.Unlock()
		}
	}).Return()
	env.OnUpsertMemo(mock.Anything).Maybe().Run(func(args mock.Arguments) {
		h.mu.Lock()
		h.memos[id] = append(h.memos[id], args.Get(0).(map[string]any))
		h.mu.Unlock()
	}).Return()
	h.mu.Lock()
	h.envs[id] = env
	h.mu.Unlock()
	return env
}

// phasesOf are the Phases the workflow of that ID upserted, in order.
func (h *harness) phasesOf(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.phases[id]...)
}

// memosOf are the memo upserts of the workflow of that ID, in order.
func (h *harness) memosOf(id string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.memos[id]...)
}

func (h *harness) env(id string) *testsuite.TestWorkflowEnvironment {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.envs[id]
}

// image uploads an image of n bytes of recognisable raw data.
func (h *harness) image(id string, n int) []byte {
	data := rawData(id, n)
	h.images.Add(id, data)
	return data
}

func rawData(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "imagevol test data of %s, line %d\n", seed, i)
	}
	return b.Bytes()[:n]
}

// provision records a user volume's row, as the gateway does, and runs its provision to the end.
func (h *harness) provision(volumeID, imageID string, sizeGB int, edit func(*contract.CreateVolumeInput), setup func(*testsuite.TestWorkflowEnvironment)) (contract.CreateVolumeResult, error) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.store.CreateVolume(ctx, &models.Volume{
		ID: volumeID, ProjectID: "user-project", SizeGB: sizeGB, ImageID: imageID, Status: models.StatusCreating, WorkflowID: volumeID,
	}); err != nil {
		h.t.Fatal(err)
	}
	in := contract.CreateVolumeInput{VolumeID: volumeID, ImageID: imageID, SizeGB: sizeGB, Host: host}
	if edit != nil {
		edit(&in)
	}
	env := h.newEnv(volumeID)
	if setup != nil {
		setup(env)
	}
	env.ExecuteWorkflow(workflows.CreateVolumeFromImage, in)
	if !env.IsWorkflowCompleted() {
		h.t.Fatal("the provision did not complete")
	}
	var res contract.CreateVolumeResult
	err := env.GetWorkflowError()
	if err == nil {
		if gerr := env.GetWorkflowResult(&res); gerr != nil {
			h.t.Fatal(gerr)
		}
	}
	return res, err
}

func (h *harness) volume(id string) *models.Volume {
	h.t.Helper()
	v, err := h.store.GetVolume(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}

func (h *harness) entries() []models.CacheEntry {
	h.t.Helper()
	es, err := h.store.ListCacheEntries(context.Background(), "")
	if err != nil {
		h.t.Fatal(err)
	}
	return es
}

// readyEntry is the one cache entry, which must be ready.
func (h *harness) readyEntry() models.CacheEntry {
	h.t.Helper()
	es := h.entries()
	if len(es) != 1 || es[0].State != models.EntryReady {
		h.t.Fatalf("cache entries %+v, want one ready", es)
	}
	return es[0]
}

// checkData checks that the volume's image starts with data.
func (h *harness) checkData(volumeID string, data []byte) {
	h.t.Helper()
	r, err := h.storage.OpenReader(context.Background(), pool, contract.RBDName(volumeID), "")
	if err != nil {
		h.t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, len(data))
	if _, err := r.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		h.t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		h.t.Fatalf("volume %s does not hold the image's data", volumeID)
	}
}

// parentOf is the parent of the volume's image (nil: not a clone); the image must exist.
func (h *harness) parentOf(volumeID string) *contract.EntryRef {
	h.t.Helper()
	info, err := h.storage.Stat(context.Background(), pool, contract.RBDName(volumeID))
	if err != nil {
		h.t.Fatalf("volume %s's image: %v", volumeID, err)
	}
	if info.Parent == nil {
		return nil
	}
	if info.Parent.Snapshot != contract.CacheSnapshot {
		h.t.Fatalf("volume %s is a clone of snapshot %s", volumeID, info.Parent.Snapshot)
	}
	id := info.Parent.Image[len("volume-"):]
	return &contract.EntryRef{Pool: info.Parent.Pool, VolumeID: id}
}

// fillOutcome is how a fill ended.
type fillOutcome struct {
	res contract.FillResult
	err error
}

// fillClient stands in for the Temporal client of the activities: SignalWithStartWorkflow runs
// the fill (FillCache, registered as the workers register it) to its end in a test environment
// of its own, with the waiter's join signal, and the fill's answer to its waiters
// (SignalExternalWorkflow) is delivered to the waiting provision's environment. The fill thus
// runs within the provision's RegisterFillWaiter step; a fill that has closed is found by
// GetWorkflow, as Temporal keeps its outcome.
type fillClient struct {
	client.Client // nil: any other call panics
	h             *harness

	mu       sync.Mutex
	started  []string // fill workflow IDs, in the order they ran
	outcomes map[string]fillOutcome
	options  map[string]client.StartWorkflowOptions // the options each fill was last started with
}

// Options are the start options the fill of that ID was last started with.
func (c *fillClient) Options(id string) client.StartWorkflowOptions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.options[id]
}

func (c *fillClient) Started() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.started...)
}

func (c *fillClient) SignalWithStartWorkflow(_ context.Context, id, signal string, signalArg any, opts client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	h := c.h
	if wf != contract.FillWorkflow || signal != contract.FillJoinSignal || opts.ID != id || opts.TaskQueue != contract.HostQueue(host) {
		return nil, fmt.Errorf("unexpected SignalWithStartWorkflow(%s, %s, %v, %+v)", id, signal, wf, opts)
	}
	env := h.newEnv(id)
	if err := env.SetTypedSearchAttributesOnStart(opts.TypedSearchAttributes); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.options[id] = opts
	c.mu.Unlock()
	env.RegisterDelayedCallback(func() { env.SignalWorkflow(signal, signalArg) }, 0)
	env.OnSignalExternalWorkflow(mock.Anything, mock.Anything, "", contract.FillDoneSignal, mock.Anything).Return(
		func(_, workflowID, _, signalName string, arg any) error {
			waiter := h.env(workflowID)
			if waiter == nil {
				return serviceerror.NewNotFound("no such workflow " + workflowID)
			}
			waiter.SignalWorkflow(signalName, arg)
			return nil
		})
	env.ExecuteWorkflow(contract.FillWorkflow, args...)
	var out fillOutcome
	if out.err = env.GetWorkflowError(); out.err == nil {
		out.err = env.GetWorkflowResult(&out.res)
	}
	c.mu.Lock()
	c.started = append(c.started, id)
	c.outcomes[id] = out
	c.mu.Unlock()
	return fillRun{id: id, out: out}, nil
}

// SignalWorkflow finds every fill closed: each ran to its end when it was started.
func (c *fillClient) SignalWorkflow(_ context.Context, id, _, _ string, _ any) error {
	return serviceerror.NewNotFound("workflow " + id + " is closed")
}

func (c *fillClient) GetWorkflow(_ context.Context, id, _ string) client.WorkflowRun {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, ok := c.outcomes[id]
	if !ok {
		out.err = serviceerror.NewNotFound("workflow " + id + " not found")
	}
	return fillRun{id: id, out: out}
}

type fillRun struct {
	client.WorkflowRun
	id  string
	out fillOutcome
}

func (r fillRun) GetID() string    { return r.id }
func (r fillRun) GetRunID() string { return "run-" + r.id }
func (r fillRun) Get(_ context.Context, ptr any) error {
	if r.out.err != nil {
		return r.out.err
	}
	if p, ok := ptr.(*contract.FillResult); ok {
		*p = r.out.res
	}
	return nil
}

// typedErrors is the workers' interceptor (worker.Start): it types the retryable errors of a
// known cause, so that a deadline's error names the part that was down. It also gives any other
// plain Go error the type a real server's round trip gives it (the error's Go type name), which
// the test environment, passing errors in memory, leaves empty.
type typedErrors struct {
	interceptor.WorkerInterceptorBase
}

func (*typedErrors) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &typedInbound{}
	i.Next = next
	return i
}

type typedInbound struct {
	interceptor.ActivityInboundInterceptorBase
}

func (i *typedInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	res, err := i.Next.ExecuteActivity(ctx, in)
	err = contract.TypedError(err)
	var appErr *temporal.ApplicationError
	var canceled *temporal.CanceledError
	if err != nil && !errors.As(err, &appErr) && !errors.As(err, &canceled) {
		t := reflect.TypeOf(err)
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		err = temporal.NewApplicationErrorWithCause(err.Error(), t.Name(), err)
	}
	return res, err
}

// quietLogger drops the SDK's logs.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
