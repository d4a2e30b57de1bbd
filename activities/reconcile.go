package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"

	"github.com/imagevol/imagevol/models"
)

// settle is how old a row or an image must be before reconcile judges it: younger ones may
// belong to a provision that is just starting (the gateway writes the row, then starts the run).
func (a *Activities) settle() time.Duration {
	if a.Config.SettleTime > 0 {
		return a.Config.SettleTime
	}
	return 5 * time.Minute
}

// reconcileVolumes marks "error" the volumes of this host still "creating" whose provision is no
// longer running — a run terminated by hand, or lost with its history — since nothing would
// ever finish them. Volumes "deleting" with no deletion running are reported.
func (a *Activities) reconcileVolumes(ctx context.Context, rep *ReconcileReport) error {
	vols, err := a.Store.ListVolumesOn(ctx, a.Config.Host, models.StatusCreating, models.StatusDeleting)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if time.Since(v.UpdatedAt) < a.settle() || a.Temporal == nil {
			continue
		}
		id := v.WorkflowID
		if v.Status == models.StatusDeleting {
			id = "imagevol-delete-" + v.ID
		}
		running, err := a.workflowRunning(ctx, id)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("volume %s: %v", v.ID, err))
			continue
		}
		switch {
		case running:
		case v.Status == models.StatusCreating:
			msg := fmt.Sprintf("Reconciled: the provision %s ended without finishing the volume", id)
			if err := a.Store.UpdateVolume(ctx, v.ID, map[string]any{"status": models.StatusError, "error": msg}); err != nil {
				return err
			}
			rep.Stuck = append(rep.Stuck, fmt.Sprintf("volume %s: creating with no provision running, marked error", v.ID))
		default:
			rep.Problems = append(rep.Problems, fmt.Sprintf("volume %s: deleting with no deletion running; delete it again", v.ID))
		}
	}
	return nil
}

// workflowRunning reports whether the latest run of a workflow is still running.
func (a *Activities) workflowRunning(ctx context.Context, id string) (bool, error) {
	desc, err := a.Temporal.DescribeWorkflowExecution(ctx, id, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return desc.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
}

// findOrphans reports images of this host's pool named like a volume (or its staging image) that
// no volume row or trashed cache volume accounts for. They are reported, not removed: a pool
// may be shared with another deployment whose rows live elsewhere.
func (a *Activities) findOrphans(ctx context.Context, rep *ReconcileReport) error {
	names, err := a.Storage.List(ctx, a.Config.Pool)
	if err != nil {
		return err
	}
	known, err := a.Store.KnownVolumeIDs(ctx)
	if err != nil {
		return err
	}
	for _, n := range names {
		id, ok := strings.CutPrefix(strings.TrimSuffix(n, ".part"), "volume-")
		if !ok || known[id] {
			continue
		}
		info, err := a.Storage.Stat(ctx, a.Config.Pool, n)
		if err != nil || info.Created.IsZero() || time.Since(info.Created) < a.settle() {
			continue // gone meanwhile, or young enough to belong to a provision starting now
		}
		rep.Orphans = append(rep.Orphans, a.Config.Pool+"/"+n)
	}
	return nil
}
