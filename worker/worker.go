// Package worker runs imagevol's Temporal workers for one storage host: one polls the host's own
// task queue for the steps that touch its Ceph pool; one polls the shared queue for workflow
// tasks (and runs their local activities).
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/workflows"
)

// Options tunes the workers; zero values take the SDK's defaults.
type Options struct {
	// MaxConcurrentActivities bounds the host's concurrent steps (each download holds buffers).
	MaxConcurrentActivities int
	// Metrics, when set, times every step (activity attempt) of the host; nil records nothing.
	Metrics *metrics.Registry
}

// Start registers the workflows and the host's activities and starts polling. Stop the returned
// workers when done. Several hosts may run in one process, each with its own Activities.
func Start(c client.Client, acts *activities.Activities, opts Options) ([]sdkworker.Worker, error) {
	steps := []interceptor.WorkerInterceptor{&typedErrors{}}
	if i := opts.Metrics.StepInterceptor(acts.Config.Host); i != nil {
		steps = append(steps, i)
	}
	host := sdkworker.New(c, workflows.HostQueue(acts.Config.Host), sdkworker.Options{
		MaxConcurrentActivityExecutionSize: opts.MaxConcurrentActivities,
		DisableWorkflowWorker:              true,
		// Send a download's progress (its resume point) at least every second, not every
		// 80% of the heartbeat timeout: a crash then loses at most a second of work.
		MaxHeartbeatThrottleInterval: time.Second,
		Interceptors:                 steps,
	})
	host.RegisterActivity(acts)

	shared := sdkworker.New(c, workflows.TaskQueue, sdkworker.Options{LocalActivityWorkerOnly: true, Interceptors: steps})
	RegisterWorkflows(shared)
	// Local activities (volume state updates) run here; they only need the database.
	shared.RegisterActivity(acts)

	started := []sdkworker.Worker{}
	for _, w := range []sdkworker.Worker{host, shared} {
		if err := w.Start(); err != nil {
			for _, s := range started {
				s.Stop()
			}
			return nil, fmt.Errorf("worker: start: %w", err)
		}
		started = append(started, w)
	}
	return started, nil
}

// Registry is where workflows are registered: a worker, or a replayer of recorded histories.
type Registry interface {
	RegisterWorkflow(w any)
	RegisterWorkflowWithOptions(w any, options workflow.RegisterOptions)
}

// RegisterWorkflows registers every imagevol workflow on r, under the names they are started by.
func RegisterWorkflows(r Registry) {
	r.RegisterWorkflow(workflows.CreateVolumeFromImage)
	r.RegisterWorkflowWithOptions(workflows.FillCache, workflow.RegisterOptions{Name: activities.FillWorkflowName})
	r.RegisterWorkflow(workflows.WarmCache)
	r.RegisterWorkflow(workflows.EvictCacheEntry)
	r.RegisterWorkflow(workflows.ReconcileCache)
	r.RegisterWorkflow(workflows.DeleteVolume)
}

// Run starts the workers and blocks until ctx is done.
func Run(ctx context.Context, c client.Client, acts *activities.Activities, opts Options) error {
	ws, err := Start(c, acts, opts)
	if err != nil {
		return err
	}
	slog.Info("worker polling", "host", acts.Config.Host, "host_queue", workflows.HostQueue(acts.Config.Host), "workflow_queue", workflows.TaskQueue)
	<-ctx.Done()
	for _, w := range ws {
		w.Stop()
	}
	return nil
}
