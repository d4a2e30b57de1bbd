// Package worker runs imagevol's Temporal workers for one storage host: one polls the host's own
// task queue for the steps that touch its Ceph pool and for the workflow tasks of the provisions
// made on the host; one polls the shared queue for every other workflow task (and runs their
// local activities).
//
// Of imagevol's packages it may import activities, workflows, contract, config, models, metrics and
// storage/rbd.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/workflows"
)

// Options tunes the workers; zero values take the SDK's defaults.
type Options struct {
	// MaxConcurrentActivities bounds the host's concurrent steps (each download holds buffers).
	MaxConcurrentActivities int
	// Metrics, when set, times every step (activity attempt) of the host; nil records nothing.
	Metrics *metrics.Registry
	// Namespace is the Temporal namespace of the client: Run needs it to take over the steps a
	// crashed predecessor of this worker left running.
	Namespace string
	// CephAddr is the address of the worker's Ceph client, published in its identity; Fence
	// blocklists such an address. With both, a restarted worker fences its dead predecessor's
	// client so that the images it was writing are unlocked at once.
	CephAddr string
	Fence    func(addr string) error
	// Health, when set, is marked running once the workers poll and stopping when Run stops
	// them; the command serves it at /healthz.
	Health *Health
}

// StopTimeout is how long a stopping worker lets the steps it is running finish before the SDK
// cancels them (sdkworker.Options.WorkerStopTimeout; the SDK's default, 0, cancels them at
// once). Most steps are seconds long, so a deploy or restart then loses none of them; a long
// download that outlasts it is cancelled and resumes from its last heartbeat on another worker
// (or on this host's successor), as after a crash. It stays under the 60 s grace period the
// Kubernetes manifests and systemd's default 90 s give the process before killing it.
const StopTimeout = 30 * time.Second

// Start registers the workflows and the host's activities and starts polling. Stop the returned
// workers when done. Several hosts may run in one process, each with its own Activities.
func Start(c client.Client, acts *activities.Activities, opts Options) ([]sdkworker.Worker, error) {
	steps := []interceptor.WorkerInterceptor{&typedErrors{}}
	if i := opts.Metrics.StepInterceptor(acts.Config.Host); i != nil {
		steps = append(steps, i)
	}
	machine, _ := os.Hostname()
	// The host's queue carries its steps and the workflow tasks of the provisions made on it
	// (contract.ProvisionOptions), whose local steps then run here, next to the pool.
	host := sdkworker.New(c, contract.HostQueue(acts.Config.Host), sdkworker.Options{
		// Names host, machine and process, so that a successor can take over after a crash.
		Identity:                           HostIdentity(acts.Config.Host, machine, os.Getpid(), opts.CephAddr),
		MaxConcurrentActivityExecutionSize: opts.MaxConcurrentActivities,
		// Send a download's progress (its resume point) at least every second, not every
		// 80% of the heartbeat timeout: a crash then loses at most a second of work.
		MaxHeartbeatThrottleInterval: time.Second,
		Interceptors:                 steps,
		WorkerStopTimeout:            StopTimeout,
	})
	RegisterWorkflows(host)
	host.RegisterActivity(acts)

	shared := sdkworker.New(c, contract.WorkflowQueue, sdkworker.Options{LocalActivityWorkerOnly: true, Interceptors: steps, WorkerStopTimeout: StopTimeout})
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
	r.RegisterWorkflowWithOptions(workflows.FillCache, workflow.RegisterOptions{Name: contract.FillWorkflow})
	r.RegisterWorkflow(workflows.WarmCache)
	r.RegisterWorkflow(workflows.EvictCacheEntry)
	r.RegisterWorkflow(workflows.ReconcileCache)
	r.RegisterWorkflow(workflows.DeleteVolume)
	r.RegisterWorkflow(workflows.ExtendVolume)
}

// Run starts the workers, takes over the steps a crashed worker process of the same host on
// this machine left running, and blocks until ctx is done.
func Run(ctx context.Context, c client.Client, acts *activities.Activities, opts Options) error {
	ws, err := Start(c, acts, opts)
	if err != nil {
		return err
	}
	opts.Health.SetRunning()
	slog.Info("worker polling", "host", acts.Config.Host, "host_queue", contract.HostQueue(acts.Config.Host), "workflow_queue", contract.WorkflowQueue)
	if opts.Namespace != "" {
		// In the background: polling has started, and the steps it fails are retried here.
		go func() {
			machine, _ := os.Hostname()
			log := slog.With("host", acts.Config.Host)
			n, err := takeOver(ctx, c, opts.Namespace, acts.Config.Host, machine, os.Getpid(), processAlive, opts.Fence, log)
			if err != nil {
				log.Warn("takeover of a crashed worker's steps incomplete; they resume after their heartbeat timeout", "err", err)
			}
			log.Info("takeover done", "steps_retried", n)
		}()
	}
	<-ctx.Done()
	opts.Health.SetStopping()
	slog.Info("worker stopping: running steps may finish", "host", acts.Config.Host, "stop_timeout", StopTimeout.String())
	for _, w := range ws {
		w.Stop()
	}
	return nil
}
