package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
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
func (a *Activities) reconcileVolumes(ctx context.Context, rep *contract.ReconcileReport) error {
	vols, err := a.Store.ListVolumesOn(ctx, a.Config.Host, models.StatusCreating, models.StatusDeleting)
	if err != nil {
		return err
	}
	for _, v := range vols {
		heartbeat(ctx, "volume "+v.ID)
		if time.Since(v.UpdatedAt) < a.settle() || a.Temporal == nil {
			continue
		}
		id := v.WorkflowID
		if v.Status == models.StatusDeleting {
			id = contract.DeleteWorkflowID(v.ID)
		}
		running, err := a.workflowRunning(ctx, id)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("volume %s: %v", v.ID, err))
			continue
		}
		switch {
		case running:
		case v.Status == models.StatusCreating:
			// Only if still creating: the provision may have finished since the listing.
			msg := fmt.Sprintf("Reconciled: the provision %s ended without finishing the volume", id)
			failed, err := a.Store.FailCreatingVolume(ctx, v.ID, msg)
			if err != nil {
				return err
			}
			if !failed {
				continue
			}
			rep.Stuck = append(rep.Stuck, fmt.Sprintf("volume %s: creating with no provision running, marked error", v.ID))
		default:
			rep.Problems = append(rep.Problems, fmt.Sprintf("volume %s: deleting with no deletion running; delete it again", v.ID))
		}
	}
	return nil
}

// reconcileFill removes an entry left "filling" by a fill that no longer runs — terminated, past
// its run timeout, or whose compensation kept failing — with its staging and cache images and
// its rows: nothing else would, and it holds a slot, bytes and quota. The check and the change
// of state happen under the reservation lock, where a fill reserves or adopts its entry: a fill
// running then keeps its entry, and one started afterwards finds it no longer filling.
func (a *Activities) reconcileFill(ctx context.Context, e *models.CacheEntry, rep *contract.ReconcileReport) {
	if time.Since(e.UpdatedAt) < a.settle() || a.Temporal == nil {
		return
	}
	running := false
	err := a.Store.WithReservationLock(ctx, func() error {
		if e.FillWorkflowID != "" {
			var err error
			if running, err = a.workflowRunning(ctx, e.FillWorkflowID); err != nil || running {
				return err
			}
		}
		return a.Store.BeginAbandonFill(ctx, e.ID)
	})
	switch {
	case running, errors.Is(err, models.ErrNotFound):
		return // still filling, or filled or removed since the listing
	case err != nil:
		rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (filling): %v", e.ID, err))
		return
	}
	if err := a.RemoveImage(ctx, contract.ImageName{Pool: e.Pool, Name: contract.RBDName(e.VolumeID)}); err != nil {
		// The entry stays "evicting": a later pass takes it over once the eviction is stale.
		rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (fill ended): %v", e.ID, err))
		return
	}
	if err := a.Store.DeleteCacheEntry(ctx, e); err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (fill ended): %v", e.ID, err))
		return
	}
	a.log(ctx).Info("removed the entry of a fill no longer running", "entry", e.ID, "image_id", e.ImageID, "fill", e.FillWorkflowID)
	rep.AbandonedFills = append(rep.AbandonedFills, fmt.Sprintf("entry %d, image %s: its fill %s no longer runs", e.ID, e.ImageID, e.FillWorkflowID))
}

// purgeTrashedImages deletes for good the busy images this host sent to the trash (see
// RemoveImage) that are free now; those still busy are reported.
func (a *Activities) purgeTrashedImages(ctx context.Context, rep *contract.ReconcileReport) error {
	ts, err := a.Store.ListTrashedImages(ctx, a.Config.Host)
	if err != nil {
		return err
	}
	for _, t := range ts {
		heartbeat(ctx, "trashed image "+t.Name)
		err := a.Storage.PurgeTrashed(ctx, t.Pool, t.Name)
		switch {
		case errors.Is(err, storage.ErrInUse):
			rep.TrashedBusy = append(rep.TrashedBusy, t.Pool+"/"+t.Name)
			continue
		case err != nil && !errors.Is(err, storage.ErrNotFound):
			rep.Problems = append(rep.Problems, fmt.Sprintf("trashed image %s/%s: %v", t.Pool, t.Name, err))
			continue
		}
		if err := a.Store.DeleteTrashedImage(ctx, t.ID); err != nil {
			return err
		}
		rep.PurgedImages++
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
func (a *Activities) findOrphans(ctx context.Context, rep *contract.ReconcileReport) error {
	names, err := a.Storage.List(ctx, a.Config.Pool)
	if err != nil {
		return err
	}
	known, err := a.Store.KnownVolumeIDs(ctx)
	if err != nil {
		return err
	}
	for _, n := range names {
		heartbeat(ctx, "image "+n)
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

// ReconcileHost checks this host's cache and volumes against the image service, Temporal and
// Ceph: entries of images deleted, deactivated or re-uploaded with other content are evicted,
// evictions a crash left half-done are finished, entries left "filling" by a fill no longer
// running are removed with their images, volumes left "creating" by a provision no longer
// running are marked error, images no row accounts for are reported, and trashed cache volumes
// without clones and busy images trashed since they were deleted are purged. An entry being
// cloned from is left for the next pass. It heartbeats for every entry, volume and image it
// looks at, so a large host does not outlive its heartbeat timeout.
func (a *Activities) ReconcileHost(ctx context.Context) (contract.ReconcileReport, error) {
	rep := contract.ReconcileReport{Host: a.Config.Host}
	entries, err := a.Store.ListCacheEntries(ctx, a.Config.Host)
	if err != nil {
		return rep, err
	}
	for i := range entries {
		e := &entries[i]
		heartbeat(ctx, fmt.Sprintf("cache entry %d", e.ID))
		if e.State == models.EntryFilling {
			a.reconcileFill(ctx, e, &rep)
			continue
		}
		rep.Checked++
		why := ""
		if e.State == models.EntryEvicting {
			if time.Since(e.UpdatedAt) < models.EvictionStale {
				continue // an eviction in progress
			}
			why = "eviction left half-done"
			// An abandoned fill interrupted half-way may have left its staging image too.
			if err := a.removeOrTrash(ctx, e.Pool, contract.StagingName(contract.RBDName(e.VolumeID))); err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (%s): %v", e.ID, why, err))
				continue
			}
		} else {
			img, err := a.Images.Get(ctx, e.ImageID)
			switch {
			case errors.Is(err, imagesource.ErrNotFound):
				why = "image deleted"
			case err != nil:
				rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d: image service: %v", e.ID, err))
				continue
			case img.Status != imagesource.StatusActive:
				why = "image " + img.Status
			case img.ContentHash() != e.ContentHash:
				why = "image content changed"
			}
		}
		if why == "" {
			continue
		}
		if _, err := a.evict(ctx, e, true); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (%s): %v", e.ID, why, err))
			continue
		}
		rep.Invalidated = append(rep.Invalidated, fmt.Sprintf("entry %d, image %s: %s", e.ID, e.ImageID, why))
	}
	if err := a.reconcileVolumes(ctx, &rep); err != nil {
		return rep, err
	}
	if err := a.findOrphans(ctx, &rep); err != nil {
		return rep, err
	}
	if err := a.purgeTrashedImages(ctx, &rep); err != nil {
		return rep, err
	}
	rep.Purged, err = a.PurgeTrash(ctx)
	return rep, err
}
