package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/models"
)

// FillCache puts an image's content into the cluster's cache, once: its workflow ID is
// activities.FillWorkflowID, and every provision that misses joins the run under way
// (activities.JoinFill). It evicts LRU entries on the fill's host and reserves the slot,
// downloads and imports the image into a cache volume owned by the internal project, snapshots
// it and marks the entry ready. An image already cached anywhere in the cluster is not filled
// again. On failure the reservation and every image it made are removed.
func FillCache(ctx workflow.Context, in activities.FillInput) (res activities.FillResult, err error) {
	var a *activities.Activities
	host := workflow.WithActivityOptions(ctx, withQueue(shortStep, HostQueue(in.Host)))
	hostData := workflow.WithActivityOptions(ctx, withQueue(dataStep, HostQueue(in.Host)))

	// 1. Evict LRU entries until the image fits, and reserve its slot.
	var r activities.EvictResult
	if err := workflow.ExecuteActivity(bound(host, in.Deadline), a.EvictLRU, activities.EvictInput{
		Image: in.Image, FillWorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID,
	}).Get(ctx, &r); err != nil {
		return res, err
	}
	switch {
	case r.Ready:
		return activities.FillResult{Cached: true, Entry: r.Entry}, nil
	case !r.Reserved:
		return activities.FillResult{Reason: r.Reason}, nil
	}
	defer func() {
		if err == nil {
			return
		}
		err = pastDeadline(ctx, in.Deadline, err)
		// Compensation: drop the half-made cache volume and its reservation, even if cancelled.
		cctx, _ := workflow.NewDisconnectedContext(ctx)
		chost := workflow.WithActivityOptions(cctx, withQueue(shortStep, HostQueue(in.Host)))
		if cerr := workflow.ExecuteActivity(chost, a.AbandonCacheFill, r.EntryID).Get(cctx, nil); cerr != nil {
			workflow.GetLogger(ctx).Error("compensation: abandon cache fill failed", "error", cerr)
		}
	}()

	// 2-3. Download (verified, streamed into RBD) and import into the cache volume.
	ref := r.Entry
	var done CreateVolumeResult
	plan := activities.LookupResult{Image: in.Image, Cluster: in.Cluster, Pool: ref.Pool}
	if err := importInto(hostData, in.Deadline, plan, models.RBDName(ref.VolumeID), in.MaxVirtualSize, &done); err != nil {
		return res, err
	}
	// 4. Clone-to-cache: snapshot the cache volume, which becomes the root parent.
	quick := workflow.WithActivityOptions(ctx, withQueue(quickStep, HostQueue(in.Host)))
	if err := workflow.ExecuteActivity(bound(quick, in.Deadline), a.CloneToCache, activities.CacheInput{
		EntryID: ref.EntryID, Pool: ref.Pool, CacheVolumeID: ref.VolumeID,
	}).Get(ctx, nil); err != nil {
		return res, err
	}
	return activities.FillResult{
		Cached: true, Entry: ref, Downloaded: true,
		Bytes: done.Bytes, ResumedFrom: done.ResumedFrom, Format: done.Format,
	}, nil
}
