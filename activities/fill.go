package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// JoinFill starts the fill of an image into the cluster's cache, or joins the one already under
// way, and waits for its result, heartbeating. Every concurrent miss of the same content in the
// cluster waits on the same run, so the image is downloaded once. A failed fill is returned as
// a result (FailureType), not an error, so the provision can decide to download on its own.
//
// Waiting here holds one of the host's step slots for the whole fill, which the fill's own steps
// need too; provisions now register with the fill through RegisterFillWaiter instead. JoinFill
// stays for the runs that were already waiting in it.
func (a *Activities) JoinFill(ctx context.Context, in contract.FillInput) (contract.FillResult, error) {
	id := contract.FillWorkflowID(in.Cluster, in.Image.ID, in.Image.ContentHash)
	var run client.WorkflowRun
	if !in.Deadline.IsZero() && !time.Now().Before(in.Deadline) {
		// Past the provision's deadline (this is a retry, after a worker was gone): start no
		// new fill, take the outcome of the last one, whose failure names what went wrong.
		run = a.Temporal.GetWorkflow(ctx, id, "")
	} else {
		var err error
		if run, err = a.Temporal.ExecuteWorkflow(ctx, contract.FillOptions(id, in.Image.ID, in.Host), contract.FillWorkflow, in); err != nil {
			return contract.FillResult{}, fmt.Errorf("start cache fill %s: %w", id, err)
		}
	}
	// The details name the fill, so a status query can follow the provision into it.
	activity.RecordHeartbeat(ctx, id)
	stop := heartbeatEvery(ctx, heartbeatInterval, id)
	defer stop()
	return fillOutcome(ctx, run)
}

// fillOutcome waits for a fill's run to close and returns its outcome; a failed fill is a result
// (FailureType), not an error. Only ctx ending is an error.
func fillOutcome(ctx context.Context, run client.WorkflowRun) (contract.FillResult, error) {
	var res contract.FillResult
	err := run.Get(ctx, &res)
	if err == nil {
		return res, nil
	}
	if ctx.Err() != nil {
		return contract.FillResult{}, err
	}
	return contract.FillFailure(err), nil
}

// closedFillWait bounds how long RegisterFillWaiter waits for the result of a fill it found
// closed: the latest run under the fill's ID may be a new one, still running.
const closedFillWait = 5 * time.Second

// RegisterFillWaiter starts the fill of an image into the cluster's cache, or joins the run under
// way, with the waiter's registration as the signal of a SignalWithStart; the fill signals the
// waiter its result when it ends (contract.FillDoneSignal). It returns at once, so waiting on a fill holds
// no worker slot. Every concurrent miss of the same content in the cluster registers with the
// same run, so the image is downloaded once. With Rejoin, or past the provision's deadline, no
// fill is started: a run under way gets the registration again (a fill counts a waiter once), and
// a fill that has closed is answered from its outcome.
func (a *Activities) RegisterFillWaiter(ctx context.Context, in contract.FillWaitInput) (contract.FillWaitResult, error) {
	id := contract.FillWorkflowID(in.Fill.Cluster, in.Fill.Image.ID, in.Fill.Image.ContentHash)
	res := contract.FillWaitResult{FillWorkflowID: id}
	late := !in.Fill.Deadline.IsZero() && !time.Now().Before(in.Fill.Deadline)
	if !in.Rejoin && !late {
		if _, err := a.Temporal.SignalWithStartWorkflow(ctx, id, contract.FillJoinSignal, in.Waiter, contract.FillOptions(id, in.Fill.Image.ID, in.Fill.Host), contract.FillWorkflow, in.Fill); err != nil {
			return res, fmt.Errorf("start or join cache fill %s: %w", id, err)
		}
		return res, nil
	}
	err := a.Temporal.SignalWorkflow(ctx, id, "", contract.FillJoinSignal, in.Waiter)
	var notFound *serviceerror.NotFound
	switch {
	case err == nil:
		return res, nil
	case !errors.As(err, &notFound):
		return res, fmt.Errorf("join cache fill %s: %w", id, err)
	}
	// Closed, or never started: its outcome, unless a new run has started meanwhile (then the
	// waiter asks again later and registers with that one).
	wctx, cancel := context.WithTimeout(ctx, closedFillWait)
	defer cancel()
	out, err := fillOutcome(wctx, a.Temporal.GetWorkflow(wctx, id, ""))
	if err != nil {
		if ctx.Err() != nil {
			return res, err
		}
		return res, nil
	}
	res.Closed, res.Result = true, out
	return res, nil
}

// CloneToCache makes the imported cache volume a clone source: it snapshots it, records the
// bytes it really uses, and marks its entry ready and its volume available.
func (a *Activities) CloneToCache(ctx context.Context, in contract.CacheInput) (int64, error) {
	name := contract.RBDName(in.CacheVolumeID)
	err := a.Storage.CreateSnapshot(ctx, in.Pool, name, contract.CacheSnapshot)
	if err != nil && !errors.Is(err, storage.ErrExists) {
		return 0, err
	}
	used, err := a.Storage.UsedBytes(ctx, in.Pool, name)
	if err != nil {
		return 0, err
	}
	info, err := a.Storage.Stat(ctx, in.Pool, name)
	if err != nil {
		return 0, err
	}
	// The reservation was sized before the import; the limits hold on what is really used.
	if err := a.fitUsed(ctx, in.EntryID, int64(used), models.GiBCeil(int64(info.Size))); err != nil {
		return 0, err
	}
	// A cache volume cloned from the image service's store is one level deep: its clones count it.
	depth := 0
	if info.Parent != nil {
		depth = 1
	}
	if err := a.Store.MarkCacheEntryReady(ctx, in.EntryID, int64(used), depth, time.Now().UTC()); errors.Is(err, models.ErrNotFound) {
		// Evicted or dropped while filling: nothing to clone from; the waiting provisions
		// download on their own.
		return 0, nonRetryable(contract.ErrTypeCacheVolumeGone, "cache entry %d is no longer filling: %v", in.EntryID, err)
	} else if err != nil {
		return 0, err
	}
	err = a.Store.UpdateVolume(ctx, in.CacheVolumeID, map[string]any{
		"status": models.StatusAvailable, "size_gb": models.GiBCeil(int64(info.Size)),
	})
	return int64(used), err
}

// AbandonCacheFill undoes a reservation whose fill failed: the cache volume's images and rows.
func (a *Activities) AbandonCacheFill(ctx context.Context, entryID uint) error {
	e, err := a.Store.GetCacheEntry(ctx, entryID)
	if errors.Is(err, models.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if e.State == models.EntryReady {
		return nil // filled after all: keep it
	}
	if err := a.RemoveImage(ctx, contract.ImageName{Pool: e.Pool, Name: contract.RBDName(e.VolumeID)}); err != nil {
		return err
	}
	return a.Store.DeleteCacheEntry(ctx, e)
}
