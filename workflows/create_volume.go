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
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
)

// TaskQueue is the shared queue of workflow tasks and host-independent steps.
const TaskQueue = activities.WorkflowQueue

// HostQueue is the task queue of the steps that must run on a storage host.
func HostQueue(host string) string { return "imagevol.host." + host }

// CreateVolumeInput is one request to make a volume from an image.
type CreateVolumeInput struct {
	VolumeID string
	ImageID  string
	SizeGB   int
	Host     string
	// Image is the metadata the gateway read when it accepted the request, at ImageRead; the
	// cache lookup uses it while fresh instead of asking the image service again.
	Image     *imagesource.Image
	ImageRead time.Time
	// Deadline bounds the whole provision: every step retries until it, and a step still
	// failing then fails the volume with ErrTypeDeadlineExceeded and the step's last error.
	// Zero means no deadline (each step then gives up after its own retries).
	Deadline time.Time
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

// ErrTypeInvalidSize fails a provision whose size in GiB has more bytes than an int64 holds.
// The gateway never starts one (its max_volume_size_gb is far below); the check keeps the
// workflow from wrapping the size around if one is started some other way.
const ErrTypeInvalidSize = "InvalidVolumeSize"

// Activity options, set once: short host steps retry quickly; long data steps heartbeat every
// second so that a dead worker is noticed within 6 s and the step moves to a live one (a
// restarted worker takes over its predecessor's steps at once: worker.takeOver).
var (
	retry = &temporal.RetryPolicy{
		InitialInterval:        time.Second,
		BackoffCoefficient:     2,
		MaximumInterval:        30 * time.Second,
		MaximumAttempts:        10,
		NonRetryableErrorTypes: activities.NonRetryable,
	}
	shortStep = workflow.ActivityOptions{StartToCloseTimeout: 2 * time.Minute, RetryPolicy: retry}
	// quickStep is a step of the provisioning path that takes well under a second (lookup, clone,
	// resize, snapshot). Its short timeout bounds what an attempt lost on the way (its result
	// dropped by an overloaded server, say) costs the provision: seen here as a 2-minute stall.
	quickStep = workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
	dataStep  = workflow.ActivityOptions{StartToCloseTimeout: 4 * time.Hour, HeartbeatTimeout: 6 * time.Second, RetryPolicy: retry}
	localStep = workflow.LocalActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
)

// versionWaitCancelledSteps is the change after which a cancelled provision waits for its
// running host steps to end before its compensation.
const versionWaitCancelledSteps = "wait-cancelled-steps"

// maxLookups bounds how often a provision looks the cache up again after the entry it was
// about to clone from was evicted.
const maxLookups = 3

// CreateVolumeFromImage provisions one volume: lookup cache → (miss) join the cluster's fill of
// the image (evict LRU, download, import, clone-to-cache) → clone → extend → optional flatten.
// A fill imports the image into a cache volume owned by the internal project, and user volumes
// are clones of its snapshot, so every user volume is one clone level deep. Concurrent misses of
// one image share one fill. An image that is not cached is imported straight into the user's
// volume. On failure every image the run created is removed and the volume is marked "error"
// with the cause.
func CreateVolumeFromImage(ctx workflow.Context, in CreateVolumeInput) (res CreateVolumeResult, err error) {
	var a *activities.Activities
	res.VolumeID = in.VolumeID
	// Runs recorded before these changes keep the commands they issued.
	signalFill := workflow.GetVersion(ctx, versionFillSignals, workflow.DefaultVersion, 1) == 1
	hostOpts, dataOpts := withQueue(quickStep, HostQueue(in.Host)), withQueue(dataStep, HostQueue(in.Host))
	if workflow.GetVersion(ctx, versionWaitCancelledSteps, workflow.DefaultVersion, 1) == 1 {
		// A cancelled step that makes the volume's image (a clone does not heartbeat, so it
		// never hears of the cancel) is waited for: the compensation that removes the image must
		// not run before the step is done creating it.
		hostOpts.WaitForCancellation, dataOpts.WaitForCancellation = true, true
	}
	host := workflow.WithActivityOptions(ctx, hostOpts)
	hostData := workflow.WithActivityOptions(ctx, dataOpts)
	local := workflow.WithLocalActivityOptions(ctx, localStep)
	setState := func(u activities.VolumeUpdate) error {
		u.VolumeID = in.VolumeID
		return workflow.ExecuteLocalActivity(local, a.SetVolumeState, u).Get(ctx, nil)
	}

	var plan activities.LookupResult
	volume := models.RBDName(in.VolumeID)
	sizeBytes, sizeErr := models.GiBToBytes(int64(in.SizeGB))
	defer func() {
		if err == nil {
			return
		}
		err = pastDeadline(ctx, in.Deadline, err)
		// Compensation runs even if the workflow was cancelled.
		cctx, _ := workflow.NewDisconnectedContext(ctx)
		chost := workflow.WithActivityOptions(cctx, withQueue(shortStep, HostQueue(in.Host)))
		if plan.Pool != "" {
			if cerr := workflow.ExecuteActivity(chost, a.RemoveImage, activities.ImageName{Pool: plan.Pool, Name: volume}).Get(cctx, nil); cerr != nil {
				workflow.GetLogger(ctx).Error("compensation: remove volume image failed", "error", cerr)
			}
		}
		phase(cctx, PhaseError, res.Cache)
		u := activities.VolumeUpdate{VolumeID: in.VolumeID, Status: models.StatusError, Error: errorMessage(err)}
		lctx := workflow.WithLocalActivityOptions(cctx, localStep)
		_ = workflow.ExecuteLocalActivity(lctx, a.SetVolumeState, u).Get(cctx, nil)
	}()

	// Before any command, and only for sizes no recorded history has: replays are unchanged.
	if sizeErr != nil || sizeBytes == 0 {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("volume size %d GiB: %v", in.SizeGB, sizeErr), ErrTypeInvalidSize, sizeErr)
	}

	var source *activities.EntryRef // the cache entry the volume is cloned from, if any
	for lookup := 1; source == nil; lookup++ {
		// 1. Lookup cache.
		if err := workflow.ExecuteActivity(bound(host, in.Deadline), a.LookupCache, activities.LookupInput{
			VolumeID: in.VolumeID, ImageID: in.ImageID, SizeGB: in.SizeGB, Image: in.Image, ImageRead: in.ImageRead,
		}).Get(ctx, &plan); err != nil {
			return res, err
		}
		res.Cache, res.CacheReason = models.CacheNotCached, plan.Reason
		switch {
		case plan.Hit:
			res.Cache, source = models.CacheHit, &plan.Entry
		case plan.Cacheable:
			// 2-5. Join the cluster's one fill of this content (evict LRU, download, import,
			// clone-to-cache), started by whichever provision missed first.
			phase(ctx, PhaseFilling, models.CacheMiss)
			var fill activities.FillResult
			fin := activities.FillInput{Cluster: plan.Cluster, Host: in.Host, Image: plan.Image, MaxVirtualSize: sizeBytes, Deadline: in.Deadline}
			if signalFill {
				// Registered with the fill, the provision waits for its signal, holding no
				// worker slot the fill's own steps need.
				if fill, err = awaitFill(ctx, fin, fmt.Sprintf("%s/%d", workflow.GetInfo(ctx).WorkflowExecution.RunID, lookup)); err != nil {
					return res, err
				}
			} else if err := workflow.ExecuteActivity(boundGrace(hostData, in.Deadline, fillGrace), a.JoinFill, fin).Get(ctx, &fill); err != nil {
				// The fill is bounded by the deadline of the provision that starts it; its
				// waiters give it a minute more, so that it reports its own failure first.
				return res, err
			}
			switch {
			case fill.FailureType != "" && activities.IsImageFault(fill.FailureType):
				return res, temporal.NewNonRetryableApplicationError(fill.FailureMessage, fill.FailureType, nil)
			case fill.FailureType != "" && expired(ctx, in.Deadline):
				// No time is left to download without the cache: the fill's failure (which
				// names the part that failed it) is the provision's.
				return res, temporal.NewNonRetryableApplicationError("cache fill: "+fill.FailureMessage, fill.FailureType, nil)
			case fill.FailureType != "":
				// The cache could not be filled, but the volume can still be made by download.
				workflow.GetLogger(ctx).Warn("cache fill failed; downloading without the cache", "type", fill.FailureType, "error", fill.FailureMessage)
				res.CacheReason = activities.ReasonFillFailed
			case fill.Cached:
				res.Cache, source = models.CacheMiss, &fill.Entry
				res.Bytes, res.ResumedFrom, res.Format = fill.Bytes, fill.ResumedFrom, fill.Format
			default:
				res.CacheReason = fill.Reason
			}
		}
		if !plan.Hit {
			// A miss takes a while: show its cache result now. A hit records it with the
			// final status, one local step less on the fast path.
			if err := setState(activities.VolumeUpdate{Cache: res.Cache, CacheReason: res.CacheReason, Host: in.Host, Pool: plan.Pool}); err != nil {
				return res, err
			}
		}
		if source == nil {
			// 3-4. Not cached: download (verified, streamed into RBD) and import straight into
			// the user's volume.
			if err := importInto(hostData, in.Deadline, plan, volume, sizeBytes, &res); err != nil {
				return res, err
			}
			break
		}
		// 6. Clone the user's volume from the cache snapshot, under a lease on the entry.
		err := workflow.ExecuteActivity(bound(host, in.Deadline), a.CloneVolume, activities.CloneInput{Entry: *source, Pool: plan.Pool, Name: volume}).Get(ctx, nil)
		var appErr *temporal.ApplicationError
		if err != nil && errors.As(err, &appErr) && appErr.Type() == activities.ErrTypeCacheVolumeGone {
			source = nil
			if lookup < maxLookups {
				// Evicted between lookup and clone: look again (another fill, or another entry).
				continue
			}
			// The cache keeps losing this image to eviction: make the volume without it.
			res.Cache, res.CacheReason = models.CacheNotCached, activities.ReasonEvicted
			if err := setState(activities.VolumeUpdate{Cache: res.Cache, CacheReason: res.CacheReason, Host: in.Host, Pool: plan.Pool}); err != nil {
				return res, err
			}
			if err := importInto(hostData, in.Deadline, plan, volume, sizeBytes, &res); err != nil {
				return res, err
			}
			break
		}
		if err != nil {
			return res, err
		}
		break
	}
	// 7. Extend to the requested size.
	if err := workflow.ExecuteActivity(bound(host, in.Deadline), a.ExtendVolume, activities.ResizeInput{
		Pool: plan.Pool, Name: volume, SizeBytes: sizeBytes,
	}).Get(ctx, nil); err != nil {
		return res, err
	}
	flatten := false
	if source != nil {
		flatten, _ = activities.ShouldFlatten(plan.FlattenPolicy, 1)
	}
	pending := ""
	if flatten {
		pending = models.FlattenPending
	}
	if err := setState(activities.VolumeUpdate{
		Status: models.StatusAvailable, Flatten: pending, Cache: res.Cache, CacheReason: res.CacheReason, Host: in.Host, Pool: plan.Pool,
	}); err != nil {
		return res, err
	}
	phase(ctx, PhaseAvailable, res.Cache)
	// 8. Optional flatten, after the volume is already usable (its status shows the flatten). A
	// failure here leaves a working clone behind, so it is recorded, not made the volume's error.
	if flatten {
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
	return res, nil
}

// awaitFill starts or joins the fill of in's content and waits for its result, registered under
// token. While it waits, the provision's memo names the fill, so that a status query can follow
// the provision into the fill's steps.
func awaitFill(ctx workflow.Context, in activities.FillInput, token string) (activities.FillResult, error) {
	waits := newFillWaits(ctx)
	fillID, err := waits.join(ctx, in, token)
	if err != nil {
		return activities.FillResult{}, err
	}
	if !waits.answered(token) {
		setMemo(ctx, MemoFill, fillID)
		defer setMemo(ctx, MemoFill, "")
	}
	return waits.wait(ctx, in, token, fillID, in.Deadline)
}

// MemoFill is the memo key naming the fill a provision is waiting on ("" when none).
const MemoFill = "fill"

// setMemo sets one key of the workflow's memo; a failure is logged, never the provision's.
func setMemo(ctx workflow.Context, key, value string) {
	if err := workflow.UpsertMemo(ctx, map[string]any{key: value}); err != nil {
		workflow.GetLogger(ctx).Warn("memo not updated", "key", key, "error", err)
	}
}

// importInto downloads the image and imports it into the RBD image target (a user volume, or a
// cache volume during a fill), recording what it did in res.
func importInto(ctx workflow.Context, deadline time.Time, plan activities.LookupResult, target string, maxVirtualSize int64, res *CreateVolumeResult) error {
	var a *activities.Activities
	var dl activities.DownloadResult
	if err := workflow.ExecuteActivity(bound(ctx, deadline), a.DownloadImage, activities.DownloadInput{
		Image: plan.Image, Pool: plan.Pool, Target: target,
	}).Get(ctx, &dl); err != nil {
		return err
	}
	res.Bytes, res.ResumedFrom = dl.Bytes, dl.ResumedFrom
	var imp activities.ImportResult
	if err := workflow.ExecuteActivity(bound(ctx, deadline), a.ImportImage, activities.ImportInput{
		Pool: plan.Pool, Target: target, MaxVirtualSize: maxVirtualSize,
	}).Get(ctx, &imp); err != nil {
		return err
	}
	res.Format = imp.Format
	return nil
}

// phase records the provision's phase and cache result in its search attributes. A failure to
// do so is logged: it must not fail the provision.
func phase(ctx workflow.Context, p, cache string) {
	updates := []temporal.SearchAttributeUpdate{SearchPhase.ValueSet(p)}
	if cache != "" {
		updates = append(updates, SearchCacheResult.ValueSet(cache))
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("search attributes not updated", "error", err)
	}
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
