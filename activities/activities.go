package activities

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// Activities carries the dependencies of every step of one storage host.
type Activities struct {
	Store   *models.Store
	Storage storage.Storage
	Images  imagesource.Source
	// Temporal starts and awaits the single-flight cache fills (JoinFill).
	Temporal client.Client
	Config   Config
	Logger   *slog.Logger
	// Metrics counts cache events and imported bytes for Prometheus; nil counts nothing.
	Metrics *metrics.Registry
	// Converter runs the host's qemu-img conversions; nil: one made from Config on first use.
	Converter *Converter
	// Identity names this worker process in a download's progress (worker.HostIdentity), and
	// FenceWriter, when set, is given the writer of the progress a download resumes from before
	// it opens the staging image: a dead writer still holds the image's exclusive lock until
	// its Ceph client is fenced.
	Identity    string
	FenceWriter func(writer string)
	// FSID is the fsid of the Ceph cluster Storage is on: only images the image service keeps
	// in this cluster are cloned from its store (CloneFromImageStore). Empty: none is.
	FSID string

	convOnce sync.Once
	conv     *Converter
	convErr  error
}

func nonRetryable(errType, format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), errType, nil)
}

func (a *Activities) log(ctx context.Context) *slog.Logger {
	l := a.Logger
	if l == nil {
		l = slog.Default()
	}
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		l = l.With("workflow_id", info.WorkflowExecution.ID, "activity", info.ActivityType.Name, "attempt", info.Attempt)
		// A provision's and a deletion's workflow IDs name their volume; other workflows
		// (fills, evictions) log the volumes they touch themselves.
		if id, ok := contract.DeletedVolume(info.WorkflowExecution.ID); ok && info.WorkflowType.Name == contract.DeleteVolumeWorkflow {
			l = l.With("volume_id", id)
		} else if info.WorkflowType.Name == contract.CreateVolumeWorkflow {
			l = l.With("volume_id", info.WorkflowExecution.ID)
		}
	}
	return l.With("host", a.Config.Host)
}

// heartbeatInterval is how often a long step heartbeats: well inside the data steps' heartbeat
// timeout (workflows' dataStep), which is kept short so that a step of a worker that died is
// retried elsewhere within seconds. The SDK sends at most one heartbeat a second anyway.
const heartbeatInterval = time.Second

// heartbeatEvery records a heartbeat with details every interval until the returned func runs.
func heartbeatEvery(ctx context.Context, interval time.Duration, details any) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				heartbeat(ctx, details)
			}
		}
	}()
	return func() { close(done) }
}

// heartbeat records a heartbeat when ctx is an activity's: some steps also run inside others.
func heartbeat(ctx context.Context, details any) {
	if activity.IsActivity(ctx) {
		activity.RecordHeartbeat(ctx, details)
	}
}
