package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
)

// Options of the operator workflows: a host whose worker is down is reported, not waited on
// forever; an eviction waits out the leases of clones in progress.
var (
	hostCheck = workflow.ActivityOptions{
		ScheduleToStartTimeout: time.Minute, StartToCloseTimeout: 30 * time.Minute, HeartbeatTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 3, NonRetryableErrorTypes: contract.NonRetryable},
	}
	evictStep = workflow.ActivityOptions{
		StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 200 * time.Millisecond, BackoffCoefficient: 2, MaximumInterval: 5 * time.Second,
			MaximumAttempts: 40, NonRetryableErrorTypes: contract.NonRetryable,
		},
	}
)

// WarmCache fills the cache for an image on every listed host, in parallel. Each host looks the
// cache up and, on a miss, joins the cluster's fill of the image, so hosts sharing a Ceph cluster
// share one download and one cache volume. It waits on the fills by signal, as provisions do.
func WarmCache(ctx workflow.Context, in contract.WarmInput) ([]contract.WarmHostResult, error) {
	var a *activities.Activities
	signalFill := workflow.GetVersion(ctx, versionFillSignals, workflow.DefaultVersion, 1) == 1
	type pending struct {
		host   string
		lookup workflow.Future
	}
	var ps []pending
	for _, h := range in.Hosts {
		hctx := workflow.WithActivityOptions(ctx, withQueue(hostCheck, contract.HostQueue(h)))
		ps = append(ps, pending{h, workflow.ExecuteActivity(hctx, a.LookupCache, contract.LookupInput{ImageID: in.ImageID, Prewarm: true})})
	}
	out := make([]contract.WarmHostResult, len(ps))
	fills := make([]workflow.Future, len(ps))
	// With signalFill, the fills joined by signal, and their tokens, by host.
	waits := newFillWaits(ctx)
	joined := make([]*contract.FillInput, len(ps))
	fillIDs, tokens := make([]string, len(ps)), make([]string, len(ps))
	for i, p := range ps {
		out[i].Host = p.host
		var plan contract.LookupResult
		if err := p.lookup.Get(ctx, &plan); err != nil {
			out[i].Error = errorMessage(err)
			continue
		}
		switch {
		case plan.Hit:
			out[i].Cached, out[i].Entry = true, plan.Entry
		case plan.Cacheable && signalFill:
			// Registered with the fill, the warm-up waits for its signal, holding no slot.
			fin := contract.FillInput{Cluster: plan.Cluster, Host: p.host, Image: plan.Image}
			tokens[i] = fmt.Sprintf("%s/%d", workflow.GetInfo(ctx).WorkflowExecution.RunID, i)
			id, err := waits.join(ctx, fin, tokens[i])
			if err != nil {
				out[i].Error = errorMessage(err)
				continue
			}
			joined[i], fillIDs[i] = &fin, id
		case plan.Cacheable:
			hctx := workflow.WithActivityOptions(ctx, withQueue(dataStep, contract.HostQueue(p.host)))
			fills[i] = workflow.ExecuteActivity(hctx, a.JoinFill, contract.FillInput{Cluster: plan.Cluster, Host: p.host, Image: plan.Image})
		default:
			out[i].Reason = plan.Reason
		}
	}
	for i, f := range fills {
		var fill contract.FillResult
		var err error
		switch {
		case joined[i] != nil:
			fill, err = waits.wait(ctx, *joined[i], tokens[i], fillIDs[i], time.Time{})
		case f != nil:
			err = f.Get(ctx, &fill)
		default:
			continue
		}
		if err != nil {
			out[i].Error = errorMessage(err)
			continue
		}
		out[i].Cached, out[i].Entry, out[i].Downloaded, out[i].Reason = fill.Cached, fill.Entry, fill.Downloaded, fill.Reason
		if fill.FailureType != "" {
			out[i].Error = fill.FailureType + ": " + fill.FailureMessage
		}
	}
	return out, nil
}

// EvictCacheEntry evicts one cache entry now, safely: it waits for clones in progress to
// release their leases, and a cache volume that clones still depend on goes to the trash.
func EvictCacheEntry(ctx workflow.Context, in contract.EvictCacheEntryInput) (contract.EvictEntryResult, error) {
	var a *activities.Activities
	var res contract.EvictEntryResult
	hctx := workflow.WithActivityOptions(ctx, withQueue(evictStep, contract.HostQueue(in.Host)))
	err := workflow.ExecuteActivity(hctx, a.EvictEntry, contract.EvictEntryInput{EntryID: in.EntryID, Force: in.Force}).Get(ctx, &res)
	return res, err
}

// ReconcileCache checks every host's cache against the image service and Ceph (see
// activities.ReconcileHost), all hosts in parallel. It runs on a Temporal Schedule; a host that
// does not answer is reported in its entry and checked again on the next run.
func ReconcileCache(ctx workflow.Context, in contract.ReconcileInput) ([]contract.ReconcileReport, error) {
	var a *activities.Activities
	fs := make([]workflow.Future, len(in.Hosts))
	for i, h := range in.Hosts {
		hctx := workflow.WithActivityOptions(ctx, withQueue(hostCheck, contract.HostQueue(h)))
		fs[i] = workflow.ExecuteActivity(hctx, a.ReconcileHost)
	}
	out := make([]contract.ReconcileReport, len(fs))
	for i, f := range fs {
		if err := f.Get(ctx, &out[i]); err != nil {
			out[i] = contract.ReconcileReport{Host: in.Hosts[i], Problems: []string{errorMessage(err)}}
		}
	}
	return out, nil
}

// versionDeleteAfterProvision is the change after which a deletion waits in workflow code for
// the provision it cancels to close, then removes the volume's image whatever the provision did.
const versionDeleteAfterProvision = "delete-after-provision"

// DeleteVolume removes a volume's RBD image — and its parent, an evicted cache volume in the
// trash, when this was its last clone — then the volume's row. A provision still running is
// cancelled first and waited for until it has closed; whether it finished, failed or was
// cancelled, nothing is made under the volume's name after that, so the removal leaves nothing.
func DeleteVolume(ctx workflow.Context, in contract.DeleteVolumeInput) (contract.RemoveVolumeResult, error) {
	var a *activities.Activities
	var res contract.RemoveVolumeResult
	if workflow.GetVersion(ctx, versionDeleteAfterProvision, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return deleteVolumeV0(ctx, in)
	}
	if in.Provision != "" {
		if err := stopProvision(ctx, in.Provision); err != nil {
			return res, err
		}
	}
	if in.Host != "" {
		hctx := workflow.WithActivityOptions(ctx, withQueue(shortStep, contract.HostQueue(in.Host)))
		if err := workflow.ExecuteActivity(hctx, a.RemoveVolume, contract.ImageName{Pool: in.Pool, Name: contract.RBDName(in.VolumeID)}).Get(ctx, &res); err != nil {
			return res, err
		}
	}
	lctx := workflow.WithLocalActivityOptions(ctx, localStep)
	return res, workflow.ExecuteLocalActivity(lctx, a.DeleteVolumeRow, in.VolumeID).Get(ctx, nil)
}

// stopProvision cancels a provision and returns once its run has closed. The wait is in
// workflow code (short local checks), so it holds no slot of the host whose steps the
// provision's compensation needs.
func stopProvision(ctx workflow.Context, id string) error {
	var a *activities.Activities
	// A run that has closed, or never started, refuses the cancel: nothing to stop then.
	if err := workflow.RequestCancelExternalWorkflow(ctx, id, "").Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Info("provision not cancelled", "provision", id, "error", err)
	}
	lctx := workflow.WithLocalActivityOptions(ctx, localStep)
	for {
		var closed bool
		if err := workflow.ExecuteLocalActivity(lctx, a.AwaitProvisionClosed, id).Get(ctx, &closed); err != nil {
			return err
		}
		if closed {
			return nil
		}
	}
}

// deleteVolumeV0 is DeleteVolume as runs recorded before versionDeleteAfterProvision issue it.
func deleteVolumeV0(ctx workflow.Context, in contract.DeleteVolumeInput) (contract.RemoveVolumeResult, error) {
	var a *activities.Activities
	var res contract.RemoveVolumeResult
	if in.Provision != "" && in.Host != "" {
		hctx := workflow.WithActivityOptions(ctx, withQueue(dataStep, contract.HostQueue(in.Host)))
		if err := workflow.ExecuteActivity(hctx, a.CancelProvision, in.Provision).Get(ctx, nil); err != nil {
			return res, err
		}
	}
	if in.Pool != "" && in.Host != "" {
		hctx := workflow.WithActivityOptions(ctx, withQueue(shortStep, contract.HostQueue(in.Host)))
		if err := workflow.ExecuteActivity(hctx, a.RemoveVolume, contract.ImageName{Pool: in.Pool, Name: contract.RBDName(in.VolumeID)}).Get(ctx, &res); err != nil {
			return res, err
		}
	}
	lctx := workflow.WithLocalActivityOptions(ctx, localStep)
	return res, workflow.ExecuteLocalActivity(lctx, a.DeleteVolumeRow, in.VolumeID).Get(ctx, nil)
}
