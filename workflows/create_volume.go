// Package workflows holds imagevol's deterministic orchestration: CreateVolumeFromImage, one run
// per user volume (workflow ID = volume ID). Every side effect is an activity of package
// activities, run on the storage host's own task queue.
package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/models"
)

// TaskQueue is the shared queue of workflow tasks and host-independent steps.
const TaskQueue = "imagevol.workflows"

// HostQueue is the task queue of the steps that must run on a storage host.
func HostQueue(host string) string { return "imagevol.host." + host }

// CreateVolumeInput is one request to make a volume from an image.
type CreateVolumeInput struct {
	VolumeID string
	ImageID  string
	SizeGB   int
	Host     string
}

// CreateVolumeResult says how the volume was made.
type CreateVolumeResult struct {
	VolumeID    string
	Cache       string // hit, miss or not_cached
	CacheReason string
	Format      string
	Bytes       int64 // downloaded on a miss, by the attempt that finished
	ResumedFrom int64 // where that attempt resumed an interrupted download
	Flattened   bool
}

const gib = int64(1) << 30

// Activity options, set once: short host steps retry quickly; long data steps heartbeat so a
// dead worker is noticed within 20 s and the step moves to a live one.
var (
	retry = &temporal.RetryPolicy{
		InitialInterval:        time.Second,
		BackoffCoefficient:     2,
		MaximumInterval:        30 * time.Second,
		MaximumAttempts:        10,
		NonRetryableErrorTypes: activities.NonRetryable,
	}
	shortStep = workflow.ActivityOptions{StartToCloseTimeout: 2 * time.Minute, RetryPolicy: retry}
	dataStep  = workflow.ActivityOptions{StartToCloseTimeout: 4 * time.Hour, HeartbeatTimeout: 20 * time.Second, RetryPolicy: retry}
	localStep = workflow.LocalActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
)

// CreateVolumeFromImage provisions one volume: lookup cache → (miss) evict LRU → download →
// import → clone-to-cache → clone → extend → optional flatten. A miss imports the image into a
// cache volume owned by the internal project and clones the user's volume from its snapshot, so
// every user volume is one clone level deep. An image that is not cached is imported straight
// into the user's volume. On failure every image the run created is removed and the volume is
// marked "error" with the cause.
func CreateVolumeFromImage(ctx workflow.Context, in CreateVolumeInput) (res CreateVolumeResult, err error) {
	var a *activities.Activities
	res.VolumeID = in.VolumeID
	host := workflow.WithActivityOptions(ctx, withQueue(shortStep, HostQueue(in.Host)))
	hostData := workflow.WithActivityOptions(ctx, withQueue(dataStep, HostQueue(in.Host)))
	local := workflow.WithLocalActivityOptions(ctx, localStep)
	setState := func(u activities.VolumeUpdate) error {
		u.VolumeID = in.VolumeID
		return workflow.ExecuteLocalActivity(local, a.SetVolumeState, u).Get(ctx, nil)
	}

	var plan activities.LookupResult
	var reservation activities.EvictResult
	volume := models.RBDName(in.VolumeID)
	defer func() {
		if err == nil {
			return
		}
		// Compensation runs even if the workflow was cancelled.
		cctx, _ := workflow.NewDisconnectedContext(ctx)
		chost := workflow.WithActivityOptions(cctx, withQueue(shortStep, HostQueue(in.Host)))
		if plan.Pool != "" {
			if cerr := workflow.ExecuteActivity(chost, a.RemoveImage, activities.ImageName{Pool: plan.Pool, Name: volume}).Get(cctx, nil); cerr != nil {
				workflow.GetLogger(ctx).Error("compensation: remove volume image failed", "error", cerr)
			}
		}
		if reservation.Reserved {
			if cerr := workflow.ExecuteActivity(chost, a.AbandonCacheFill, reservation.EntryID).Get(cctx, nil); cerr != nil {
				workflow.GetLogger(ctx).Error("compensation: abandon cache fill failed", "error", cerr)
			}
		}
		u := activities.VolumeUpdate{VolumeID: in.VolumeID, Status: models.StatusError, Error: errorMessage(err)}
		lctx := workflow.WithLocalActivityOptions(cctx, localStep)
		_ = workflow.ExecuteLocalActivity(lctx, a.SetVolumeState, u).Get(cctx, nil)
	}()

	// 1. Lookup cache.
	if err := workflow.ExecuteActivity(host, a.LookupCache, activities.LookupInput{
		VolumeID: in.VolumeID, ImageID: in.ImageID, SizeGB: in.SizeGB,
	}).Get(ctx, &plan); err != nil {
		return res, err
	}
	sizeBytes := int64(in.SizeGB) * gib

	switch {
	case plan.Hit:
		res.Cache = models.CacheHit
	case plan.Cacheable:
		// 2. Evict LRU entries until the image fits, and reserve its slot.
		if err := workflow.ExecuteActivity(host, a.EvictLRU, activities.EvictInput{
			Image: plan.Image, FillWorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID,
		}).Get(ctx, &reservation); err != nil {
			return res, err
		}
		if reservation.Reserved {
			res.Cache = models.CacheMiss
		} else {
			res.Cache, res.CacheReason = models.CacheNotCached, reservation.Reason
		}
	default:
		res.Cache, res.CacheReason = models.CacheNotCached, plan.Reason
	}
	if err := setState(activities.VolumeUpdate{Cache: res.Cache, CacheReason: res.CacheReason, Host: in.Host, Pool: plan.Pool}); err != nil {
		return res, err
	}

	if !plan.Hit {
		// 3-4. Download (verified, streamed into RBD) and import, into the cache volume when
		// the image is being cached, else straight into the user's volume.
		target := volume
		if reservation.Reserved {
			target = models.RBDName(reservation.CacheVolumeID)
		}
		var dl activities.DownloadResult
		if err := workflow.ExecuteActivity(hostData, a.DownloadImage, activities.DownloadInput{
			Image: plan.Image, Pool: plan.Pool, Target: target,
		}).Get(ctx, &dl); err != nil {
			return res, err
		}
		res.Bytes, res.ResumedFrom = dl.Bytes, dl.ResumedFrom
		var imp activities.ImportResult
		if err := workflow.ExecuteActivity(hostData, a.ImportImage, activities.ImportInput{
			Pool: plan.Pool, Target: target, MaxVirtualSize: sizeBytes,
		}).Get(ctx, &imp); err != nil {
			return res, err
		}
		res.Format = imp.Format
		if reservation.Reserved {
			// 5. Clone-to-cache: the cache volume becomes the root parent.
			if err := workflow.ExecuteActivity(host, a.CloneToCache, activities.CacheInput{
				EntryID: reservation.EntryID, Pool: plan.Pool, CacheVolumeID: reservation.CacheVolumeID,
			}).Get(ctx, nil); err != nil {
				return res, err
			}
			plan.Parent = activities.CacheParent(plan.Pool, reservation.CacheVolumeID)
		}
	}
	// 6. Clone the user's volume from the cache snapshot.
	if plan.Hit || reservation.Reserved {
		if err := workflow.ExecuteActivity(host, a.CloneVolume, activities.CloneInput{
			Parent: plan.Parent, Pool: plan.Pool, Name: volume,
		}).Get(ctx, nil); err != nil {
			return res, err
		}
	}
	// 7. Extend to the requested size.
	if err := workflow.ExecuteActivity(host, a.ExtendVolume, activities.ResizeInput{
		Pool: plan.Pool, Name: volume, SizeBytes: sizeBytes,
	}).Get(ctx, nil); err != nil {
		return res, err
	}
	if err := setState(activities.VolumeUpdate{Status: models.StatusAvailable, Flatten: pendingFlatten(plan, reservation)}); err != nil {
		return res, err
	}
	// 8. Optional flatten, after the volume is already usable (its status shows the flatten). A
	// failure here leaves a working clone behind, so it is recorded, not made the volume's error.
	if plan.Hit || reservation.Reserved {
		if flatten, _ := activities.ShouldFlatten(plan.FlattenPolicy, 1); flatten {
			if err := setState(activities.VolumeUpdate{Flatten: models.FlattenRunning}); err != nil {
				return res, err
			}
			state := models.FlattenDone
			if ferr := workflow.ExecuteActivity(hostData, a.FlattenVolume, activities.ImageName{Pool: plan.Pool, Name: volume}).Get(ctx, nil); ferr != nil {
				workflow.GetLogger(ctx).Error("flatten failed; the volume stays a clone", "error", ferr)
				state = models.FlattenFailed
			}
			res.Flattened = state == models.FlattenDone
			if err := setState(activities.VolumeUpdate{Flatten: state}); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// pendingFlatten is the flatten state a volume is made available with.
func pendingFlatten(plan activities.LookupResult, r activities.EvictResult) string {
	if flatten, _ := activities.ShouldFlatten(plan.FlattenPolicy, 1); flatten && (plan.Hit || r.Reserved) {
		return models.FlattenPending
	}
	return ""
}

func withQueue(o workflow.ActivityOptions, queue string) workflow.ActivityOptions {
	o.TaskQueue = queue
	return o
}

// errorMessage is the cause a user sees: the innermost application error's message.
func errorMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return fmt.Sprintf("%s: %s", appErr.Type(), appErr.Message())
	}
	return err.Error()
}
