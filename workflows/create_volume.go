// Package workflows holds imagevol's deterministic orchestration: CreateVolumeFromImage, one run
// per user volume (workflow ID = volume ID). Every side effect is an activity of package
// activities, run on the storage host's own task queue.
//
// Of imagevol's packages it may import contract, activities (for method references only) and
// models' constants; workflow code stays deterministic (checked by workflowcheck).
package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// Activity options, set once: short host steps retry quickly; long data steps heartbeat every
// second so that a dead worker is noticed within 6 s and the step moves to a live one (a
// restarted worker takes over its predecessor's steps at once: worker.takeOver).
var (
	retry = &temporal.RetryPolicy{
		InitialInterval:        time.Second,
		BackoffCoefficient:     2,
		MaximumInterval:        30 * time.Second,
		MaximumAttempts:        10,
		NonRetryableErrorTypes: contract.NonRetryable,
	}
	shortStep = workflow.ActivityOptions{StartToCloseTimeout: 2 * time.Minute, RetryPolicy: retry}
	// quickStep is a step of the provisioning path that takes well under a second (lookup, clone,
	// resize, snapshot). Its short timeout bounds what an attempt lost on the way (its result
	// dropped by an overloaded server, say) costs the provision: seen here as a 2-minute stall.
	quickStep = workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
	dataStep  = workflow.ActivityOptions{StartToCloseTimeout: 4 * time.Hour, HeartbeatTimeout: 6 * time.Second, RetryPolicy: retry}
	localStep = workflow.LocalActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
	// hitStep is the hit's one local step on the host: a host step's attempts and retries (a
	// local step's retries otherwise end with its first 30 s).
	hitStep = workflow.LocalActivityOptions{ScheduleToCloseTimeout: 5 * time.Minute, StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry}
)

// versionWaitCancelledSteps is the change after which a cancelled provision waits for its
// running host steps to end before its compensation.
const versionWaitCancelledSteps = "wait-cancelled-steps"

// versionFilledBy is the change after which a provision cloned from a fill's entry keeps naming
// that fill in its memo (contract.MemoFilledBy) after the wait ends.
const versionFilledBy = "memo-filled-by"

// versionStoreClone is the change after which an image the image service keeps as an RBD
// snapshot (contract.ImageRef.DirectURL) is cloned from there when it can be, before any
// download. Only runs of such images issue the new step.
const versionStoreClone = "image-store-clone"

// versionHitStep is the change after which a provision started on its storage host's own task
// queue makes a cache hit in one local step there (activities.ProvisionFromCache). Runs on the
// shared queue, all those recorded before it among them, keep their separate steps.
const versionHitStep = "hit-step"

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
func CreateVolumeFromImage(ctx workflow.Context, in contract.CreateVolumeInput) (res contract.CreateVolumeResult, err error) {
	res.VolumeID = in.VolumeID
	p, sizeErr := newProvision(ctx, in, &res)
	defer func() {
		if err != nil {
			err = p.compensate(ctx, err)
		}
	}()
	// Before any command, and only for sizes no recorded history has: replays are unchanged.
	if sizeErr != nil || p.sizeBytes == 0 {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("volume size %d GiB: %v", in.SizeGB, sizeErr), contract.ErrTypeInvalidSize, sizeErr)
	}
	// 1-6. The volume's content: a clone of the cache or of the image service's RBD snapshot
	// (depth: how many clone levels deep), or the image imported into it (depth 0). A hit in
	// one step has done 7 and 8 too.
	depth, err := p.content(ctx)
	if err != nil {
		return res, err
	}
	// 7. Extend to the requested size.
	if !p.hitDone {
		if err := workflow.ExecuteActivity(bound(p.host, in.Deadline), p.a.ExtendVolume, contract.ResizeInput{
			Pool: p.plan.Pool, Name: p.volume, SizeBytes: p.sizeBytes,
		}).Get(ctx, nil); err != nil {
			return res, err
		}
	}
	// 8. Available, then the optional flatten.
	return res, p.finish(ctx, depth)
}

// provision is one run of CreateVolumeFromImage: its input, the contexts its steps run in, and
// what it has found so far.
type provision struct {
	a          *activities.Activities // nil: activities are referenced by method
	in         contract.CreateVolumeInput
	res        *contract.CreateVolumeResult
	signalFill bool // wait on a fill by signal (runs recorded before: in JoinFill)
	filledBy   bool // name the fill the volume was cloned from in the memo (MemoFilledBy)
	hitStep    bool // look up, and make a hit, in one local step on the host (versionHitStep)
	hitDone    bool // that step made the volume: cloned, grown and recorded available
	host       workflow.Context
	hostData   workflow.Context
	local      workflow.Context
	hostLocal  workflow.Context // the hit step's, on the host's own worker
	volume     string           // the volume's RBD image
	sizeBytes  int64
	plan       contract.LookupResult // the last lookup's
}

// newProvision sets up a run's step options. Runs recorded before a change keep the commands
// they issued: the version markers come first, in this order.
func newProvision(ctx workflow.Context, in contract.CreateVolumeInput, res *contract.CreateVolumeResult) (*provision, error) {
	p := &provision{in: in, res: res, volume: contract.RBDName(in.VolumeID)}
	hostOpts, dataOpts := withQueue(quickStep, contract.HostQueue(in.Host)), withQueue(dataStep, contract.HostQueue(in.Host))
	// Only a run on the host's own queue has its local steps on the host: no run recorded
	// before versionHitStep is there, and every earlier change applies to those after it, so
	// they record one marker instead of four.
	if workflow.GetInfo(ctx).TaskQueueName == contract.HostQueue(in.Host) &&
		workflow.GetVersion(ctx, versionHitStep, workflow.DefaultVersion, 1) == 1 {
		p.hitStep, p.signalFill, p.filledBy = true, true, true
		hostOpts.WaitForCancellation, dataOpts.WaitForCancellation = true, true
	} else {
		p.signalFill = workflow.GetVersion(ctx, versionFillSignals, workflow.DefaultVersion, 1) == 1
		if workflow.GetVersion(ctx, versionWaitCancelledSteps, workflow.DefaultVersion, 1) == 1 {
			// A cancelled step that makes the volume's image (a clone does not heartbeat, so it
			// never hears of the cancel) is waited for: the compensation that removes the image
			// must not run before the step is done creating it.
			hostOpts.WaitForCancellation, dataOpts.WaitForCancellation = true, true
		}
		p.filledBy = workflow.GetVersion(ctx, versionFilledBy, workflow.DefaultVersion, 1) == 1
	}
	p.host = workflow.WithActivityOptions(ctx, hostOpts)
	p.hostData = workflow.WithActivityOptions(ctx, dataOpts)
	p.local = workflow.WithLocalActivityOptions(ctx, localStep)
	p.hostLocal = workflow.WithLocalActivityOptions(ctx, hitStep)
	var err error
	p.sizeBytes, err = models.GiBToBytes(int64(in.SizeGB))
	return p, err
}

// setState updates the volume's row.
func (p *provision) setState(ctx workflow.Context, u contract.VolumeUpdate) error {
	u.VolumeID = p.in.VolumeID
	return workflow.ExecuteLocalActivity(p.local, p.a.SetVolumeState, u).Get(ctx, nil)
}

// content makes the volume's image (steps 1 to 6) and reports its clone depth: 0 when it holds
// its data, 1 for a clone of a cache entry (2 when that entry is itself a clone of the image
// service's snapshot) or of the image service's snapshot.
func (p *provision) content(ctx workflow.Context) (depth int, err error) {
	in, res := p.in, p.res
	lookupIn := contract.LookupInput{VolumeID: in.VolumeID, ImageID: in.ImageID, SizeGB: in.SizeGB, Image: in.Image, ImageRead: in.ImageRead}
	first := 1
	if p.hitStep {
		// 1 (and on a hit 6-8). Lookup cache, and make a hit right away, in one local step.
		var hit contract.HitResult
		if err := workflow.ExecuteLocalActivity(boundLocal(p.hostLocal, in.Deadline), p.a.ProvisionFromCache, contract.HitInput{
			Lookup: lookupIn, Name: p.volume, SizeBytes: p.sizeBytes, MaxLookups: maxLookups,
		}).Get(ctx, &hit); err != nil {
			return 0, err
		}
		p.plan = hit.Plan
		switch {
		case hit.Done:
			res.Cache, res.CacheReason, p.hitDone = models.CacheHit, p.plan.Reason, true
			return hit.Depth, nil
		case hit.Evicted:
			return p.withoutCache(ctx)
		}
		// A miss: on with this lookup's plan.
		first = 2
	}
	for lookup := 1; ; lookup++ {
		// 1. Lookup cache.
		if lookup >= first {
			if err := workflow.ExecuteActivity(bound(p.host, in.Deadline), p.a.LookupCache, lookupIn).Get(ctx, &p.plan); err != nil {
				return 0, err
			}
		}
		var source *contract.EntryRef // the cache entry to clone from, if any
		res.Cache, res.CacheReason = models.CacheNotCached, p.plan.Reason
		switch {
		case p.plan.Hit:
			res.Cache, source = models.CacheHit, &p.plan.Entry
		case p.plan.Cacheable:
			// 2-5. Join the cluster's one fill of this content (evict LRU, download, import,
			// clone-to-cache), started by whichever provision missed first.
			if source, err = p.fill(ctx, lookup); err != nil {
				return 0, err
			}
		}
		if !p.plan.Hit {
			// A miss takes a while: show its cache result now. A hit records it with the
			// final status, one local step less on the fast path.
			if err := p.showCache(ctx); err != nil {
				return 0, err
			}
		}
		if source == nil {
			// 3-4. Not cached: download (verified, streamed into RBD) and import straight into
			// the user's volume.
			return importInto(p.hostData, in.Deadline, p.plan, p.volume, p.sizeBytes, false, res, nil)
		}
		// 6. Clone the user's volume from the cache snapshot, under a lease on the entry.
		err := workflow.ExecuteActivity(bound(p.host, in.Deadline), p.a.CloneVolume, contract.CloneInput{Entry: *source, Pool: p.plan.Pool, Name: p.volume}).Get(ctx, nil)
		var appErr *temporal.ApplicationError
		if err == nil {
			return 1 + source.Depth, nil
		}
		if !errors.As(err, &appErr) || appErr.Type() != contract.ErrTypeCacheVolumeGone {
			return 0, err
		}
		if lookup < maxLookups {
			// Evicted between lookup and clone: look again (another fill, or another entry).
			continue
		}
		return p.withoutCache(ctx)
	}
}

// withoutCache makes the volume without the cache, which keeps losing its image to eviction.
func (p *provision) withoutCache(ctx workflow.Context) (int, error) {
	p.res.Cache, p.res.CacheReason = models.CacheNotCached, contract.ReasonEvicted
	if err := p.showCache(ctx); err != nil {
		return 0, err
	}
	return importInto(p.hostData, p.in.Deadline, p.plan, p.volume, p.sizeBytes, false, p.res, nil)
}

// showCache records the cache result so far, and where the volume is made.
func (p *provision) showCache(ctx workflow.Context) error {
	return p.setState(ctx, contract.VolumeUpdate{Cache: p.res.Cache, CacheReason: p.res.CacheReason, Host: p.in.Host, Pool: p.plan.Pool})
}

// fill waits on the cluster's fill of the image (steps 2 to 5) and returns the entry to clone
// from, or nil when the volume is to be made without the cache (res says why). lookup numbers
// the wait, so that its answer is told from an earlier one's.
func (p *provision) fill(ctx workflow.Context, lookup int) (*contract.EntryRef, error) {
	in, res := p.in, p.res
	phase(ctx, contract.PhaseFilling, models.CacheMiss)
	var fill contract.FillResult
	fin := contract.FillInput{Cluster: p.plan.Cluster, Host: in.Host, Image: p.plan.Image, MaxVirtualSize: p.sizeBytes, Deadline: in.Deadline}
	if p.signalFill {
		// Registered with the fill, the provision waits for its signal, holding no worker slot
		// the fill's own steps need.
		var err error
		if fill, err = awaitFill(ctx, fin, fmt.Sprintf("%s/%d", workflow.GetInfo(ctx).WorkflowExecution.RunID, lookup), p.filledBy); err != nil {
			return nil, err
		}
	} else if err := workflow.ExecuteActivity(boundGrace(p.hostData, in.Deadline, fillGrace), p.a.JoinFill, fin).Get(ctx, &fill); err != nil {
		// The fill is bounded by the deadline of the provision that starts it; its waiters give
		// it a minute more, so that it reports its own failure first.
		return nil, err
	}
	switch {
	case fill.FailureType != "" && contract.IsImageFault(fill.FailureType):
		return nil, temporal.NewNonRetryableApplicationError(fill.FailureMessage, fill.FailureType, nil)
	case fill.FailureType != "" && expired(ctx, in.Deadline):
		// No time is left to download without the cache: the fill's failure (which names the
		// part that failed it) is the provision's.
		return nil, temporal.NewNonRetryableApplicationError("cache fill: "+fill.FailureMessage, fill.FailureType, nil)
	case fill.FailureType != "":
		// The cache could not be filled, but the volume can still be made by download.
		workflow.GetLogger(ctx).Warn("cache fill failed; downloading without the cache", "type", fill.FailureType, "error", fill.FailureMessage)
		res.CacheReason = contract.ReasonFillFailed
	case fill.Cached:
		res.Cache = models.CacheMiss
		res.Bytes, res.ResumedFrom, res.Format, res.Source = fill.Bytes, fill.ResumedFrom, fill.Format, fill.Source
		if res.CacheReason == "" {
			res.CacheReason = fill.SourceReason
		}
		return &fill.Entry, nil
	default:
		res.CacheReason = fill.Reason
	}
	return nil, nil
}

// finish marks the volume available (step 8), then flattens a clone if the policy asks for it,
// after the volume is already usable (its status shows the flatten). A failed flatten leaves a
// working clone behind, so it is recorded, not made the volume's error.
func (p *provision) finish(ctx workflow.Context, depth int) error {
	res := p.res
	flatten := false
	if depth > 0 {
		flatten, _ = activities.ShouldFlatten(p.plan.FlattenPolicy, depth)
	}
	pending := ""
	if flatten {
		pending = models.FlattenPending
	}
	if !p.hitDone { // a hit's step recorded it already
		if err := p.setState(ctx, contract.VolumeUpdate{
			Status: models.StatusAvailable, Flatten: pending, Cache: res.Cache, CacheReason: res.CacheReason, Host: p.in.Host, Pool: p.plan.Pool,
		}); err != nil {
			return err
		}
	}
	phase(ctx, contract.PhaseAvailable, res.Cache)
	if !flatten {
		return nil
	}
	if err := p.setState(ctx, contract.VolumeUpdate{Flatten: models.FlattenRunning}); err != nil {
		return err
	}
	state := models.FlattenDone
	if ferr := workflow.ExecuteActivity(p.hostData, p.a.FlattenVolume, contract.ImageName{Pool: p.plan.Pool, Name: p.volume}).Get(ctx, nil); ferr != nil {
		workflow.GetLogger(ctx).Error("flatten failed; the volume stays a clone", "error", ferr)
		state = models.FlattenFailed
	}
	res.Flattened = state == models.FlattenDone
	return p.setState(ctx, contract.VolumeUpdate{Flatten: state})
}

// compensate undoes a failed run, even a cancelled one: it removes the volume's image (once a
// lookup has named its pool) and marks the volume in error with the cause, which it returns
// (a step that kept failing until the deadline is reported as such).
func (p *provision) compensate(ctx workflow.Context, err error) error {
	err = pastDeadline(ctx, p.in.Deadline, err)
	cctx, _ := workflow.NewDisconnectedContext(ctx)
	chost := workflow.WithActivityOptions(cctx, withQueue(shortStep, contract.HostQueue(p.in.Host)))
	if p.plan.Pool != "" || p.hitStep {
		// A failed hit step returns no plan: an empty pool is the host's own.
		if cerr := workflow.ExecuteActivity(chost, p.a.RemoveImage, contract.ImageName{Pool: p.plan.Pool, Name: p.volume}).Get(cctx, nil); cerr != nil {
			workflow.GetLogger(ctx).Error("compensation: remove volume image failed", "error", cerr)
		}
	}
	phase(cctx, contract.PhaseError, p.res.Cache)
	u := contract.VolumeUpdate{VolumeID: p.in.VolumeID, Status: models.StatusError, Error: errorMessage(err)}
	lctx := workflow.WithLocalActivityOptions(cctx, localStep)
	_ = workflow.ExecuteLocalActivity(lctx, p.a.SetVolumeState, u).Get(cctx, nil)
	return err
}

// awaitFill starts or joins the fill of in's content and waits for its result, registered under
// token. While it waits, the provision's memo names the fill (MemoFill), so that a status query
// can follow the provision into the fill's steps. With filledBy, a fill that cached the content
// stays named after the wait (MemoFilledBy), so the volume names the fill it was cloned from.
func awaitFill(ctx workflow.Context, in contract.FillInput, token string, filledBy bool) (contract.FillResult, error) {
	waits := newFillWaits(ctx)
	fillID, err := waits.join(ctx, in, token)
	if err != nil {
		return contract.FillResult{}, err
	}
	waiting := !waits.answered(token)
	if waiting {
		setMemo(ctx, contract.MemoFill, fillID)
	}
	if !filledBy {
		// Runs recorded before MemoFilledBy: the one upsert they issued when the wait ended.
		if waiting {
			defer setMemo(ctx, contract.MemoFill, "")
		}
		return waits.wait(ctx, in, token, fillID, in.Deadline)
	}
	res, err := waits.wait(ctx, in, token, fillID, in.Deadline)
	memo := map[string]any{}
	if waiting {
		memo[contract.MemoFill] = ""
	}
	if err == nil && res.Cached {
		memo[contract.MemoFilledBy] = fillID
	}
	if len(memo) > 0 {
		upsertMemo(ctx, memo)
	}
	return res, err
}

// setMemo sets one key of the workflow's memo; a failure is logged, never the provision's.
func setMemo(ctx workflow.Context, key, value string) {
	upsertMemo(ctx, map[string]any{key: value})
}

// upsertMemo sets keys of the workflow's memo; a failure is logged, never the provision's.
func upsertMemo(ctx workflow.Context, memo map[string]any) {
	if err := workflow.UpsertMemo(ctx, memo); err != nil {
		workflow.GetLogger(ctx).Warn("memo not updated", "memo", memo, "error", err)
	}
}

// importInto makes the RBD image target (a user volume, or with forCache a cache volume during a
// fill) from the image, recording what it did in res, and returns its clone depth. An image the
// image service keeps as an RBD snapshot on this cluster is cloned from there when it can be
// (depth 1); otherwise (and with res.CacheReason saying why, if nothing else does) it is
// downloaded and imported (depth 0).
//
// onStep, if not nil, is told of each download step (contract.PhaseDownloading,
// contract.PhaseImporting) before it starts.
func importInto(ctx workflow.Context, deadline time.Time, plan contract.LookupResult, target string, maxVirtualSize int64, forCache bool, res *contract.CreateVolumeResult, onStep func(phase string)) (int, error) {
	var a *activities.Activities
	if strings.HasPrefix(plan.Image.DirectURL, "rbd://") && workflow.GetVersion(ctx, versionStoreClone, workflow.DefaultVersion, 1) == 1 {
		var sc contract.StoreCloneResult
		if err := workflow.ExecuteActivity(bound(ctx, deadline), a.CloneFromImageStore, contract.StoreCloneInput{
			Image: plan.Image, Pool: plan.Pool, Target: target, MaxVirtualSize: maxVirtualSize, ForCache: forCache,
		}).Get(ctx, &sc); err != nil {
			return 0, err
		}
		if sc.Cloned {
			res.Format, res.Source = sc.Format, contract.SourceImageStore
			return sc.Depth, nil
		}
		if res.CacheReason == "" {
			res.CacheReason = sc.Reason
		}
	}
	if onStep != nil {
		onStep(contract.PhaseDownloading)
	}
	var dl contract.DownloadResult
	if err := workflow.ExecuteActivity(bound(ctx, deadline), a.DownloadImage, contract.DownloadInput{
		Image: plan.Image, Pool: plan.Pool, Target: target,
	}).Get(ctx, &dl); err != nil {
		return 0, err
	}
	res.Bytes, res.ResumedFrom = dl.Bytes, dl.ResumedFrom
	if onStep != nil {
		onStep(contract.PhaseImporting)
	}
	var imp contract.ImportResult
	if err := workflow.ExecuteActivity(bound(ctx, deadline), a.ImportImage, contract.ImportInput{
		Pool: plan.Pool, Target: target, MaxVirtualSize: maxVirtualSize,
	}).Get(ctx, &imp); err != nil {
		return 0, err
	}
	res.Format = imp.Format
	if plan.Image.DirectURL != "" {
		res.Source = contract.SourceDownload
	}
	return 0, nil
}

// phase records the provision's phase and cache result in its search attributes. A failure to
// do so is logged: it must not fail the provision.
func phase(ctx workflow.Context, p, cache string) {
	updates := []temporal.SearchAttributeUpdate{contract.SearchPhase.ValueSet(p)}
	if cache != "" {
		updates = append(updates, contract.SearchCacheResult.ValueSet(cache))
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
