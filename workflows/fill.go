package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
)

// versionFillSignals is the change after which provisions wait on a fill by signal instead of
// inside the JoinFill activity, and fills answer their registered waiters when they end.
const versionFillSignals = "fill-waiters-by-signal"

// versionFillPhases is the change after which a fill moves its Phase search attribute along
// (downloading, importing, then available, not_cached or error).
const versionFillPhases = "fill-phases"

// FillCache puts an image's content into the cluster's cache, once: its workflow ID is
// contract.FillWorkflowID, and every provision that misses joins the run under way
// (activities.RegisterFillWaiter). It evicts LRU entries on the fill's host and reserves the
// slot, downloads and imports the image into a cache volume owned by the internal project,
// snapshots it and marks the entry ready. An image already cached anywhere in the cluster is not
// filled again. On failure the reservation and every image it made are removed. However it ends
// (but terminated), it signals its result to every workflow registered with it.
func FillCache(ctx workflow.Context, in contract.FillInput) (res contract.FillResult, err error) {
	var a *activities.Activities
	if workflow.GetVersion(ctx, versionFillSignals, workflow.DefaultVersion, 1) == 1 {
		// Declared first, so it runs last: after the compensation, with the final result.
		defer func() { answerWaiters(ctx, res, err) }()
	}
	// Runs recorded before show no phases: their commands stay as they were.
	var onStep func(phase string)
	if workflow.GetVersion(ctx, versionFillPhases, workflow.DefaultVersion, 1) == 1 {
		onStep = func(p string) { phase(ctx, p, "") }
		// Before answerWaiters (declared after it), so a waiter that looks finds the final phase.
		defer func() { phase(ctx, fillPhase(res, err), "") }()
	}
	host := workflow.WithActivityOptions(ctx, withQueue(shortStep, contract.HostQueue(in.Host)))
	hostData := workflow.WithActivityOptions(ctx, withQueue(dataStep, contract.HostQueue(in.Host)))

	// 1. Evict LRU entries until the image fits, and reserve its slot.
	var r contract.EvictResult
	if err := workflow.ExecuteActivity(bound(host, in.Deadline), a.EvictLRU, contract.EvictInput{
		Image: in.Image, FillWorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID,
	}).Get(ctx, &r); err != nil {
		return res, err
	}
	switch {
	case r.Ready:
		return contract.FillResult{Cached: true, Entry: r.Entry}, nil
	case !r.Reserved:
		return contract.FillResult{Reason: r.Reason}, nil
	}
	defer func() {
		if err == nil {
			return
		}
		err = pastDeadline(ctx, in.Deadline, err)
		// Compensation: drop the half-made cache volume and its reservation, even if cancelled.
		cctx, _ := workflow.NewDisconnectedContext(ctx)
		chost := workflow.WithActivityOptions(cctx, withQueue(shortStep, contract.HostQueue(in.Host)))
		if cerr := workflow.ExecuteActivity(chost, a.AbandonCacheFill, r.EntryID).Get(cctx, nil); cerr != nil {
			workflow.GetLogger(ctx).Error("compensation: abandon cache fill failed", "error", cerr)
		}
	}()

	// 2-3. Download (verified, streamed into RBD) and import into the cache volume, or clone it
	// from the image service's own RBD snapshot.
	ref := r.Entry
	var done contract.CreateVolumeResult
	plan := contract.LookupResult{Image: in.Image, Cluster: in.Cluster, Pool: ref.Pool}
	depth, err := importInto(hostData, in.Deadline, plan, contract.RBDName(ref.VolumeID), in.MaxVirtualSize, true, &done, onStep)
	if err != nil {
		return res, err
	}
	ref.Depth = depth
	// 4. Clone-to-cache: snapshot the cache volume, which becomes the root parent.
	quick := workflow.WithActivityOptions(ctx, withQueue(quickStep, contract.HostQueue(in.Host)))
	if err := workflow.ExecuteActivity(bound(quick, in.Deadline), a.CloneToCache, contract.CacheInput{
		EntryID: ref.EntryID, Pool: ref.Pool, CacheVolumeID: ref.VolumeID,
	}).Get(ctx, nil); err != nil {
		return res, err
	}
	return contract.FillResult{
		Cached: true, Entry: ref, Downloaded: done.Source != contract.SourceImageStore,
		Bytes: done.Bytes, ResumedFrom: done.ResumedFrom, Format: done.Format,
		Source: done.Source, SourceReason: done.CacheReason,
	}, nil
}

// fillPhase is the Phase a fill ends in.
func fillPhase(res contract.FillResult, err error) string {
	switch {
	case err != nil:
		return contract.PhaseError
	case res.Cached:
		return contract.PhaseAvailable
	}
	return contract.PhaseNotCached
}

// answerWaiters signals the fill's result to every workflow registered with it (the join
// signals), even if the fill was cancelled. It drains the join signals until none is left, so
// that none that arrived before the fill closes goes unanswered.
func answerWaiters(ctx workflow.Context, res contract.FillResult, err error) {
	if err != nil {
		res = contract.FillFailure(err)
	}
	ctx, _ = workflow.NewDisconnectedContext(ctx)
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	joins := workflow.GetSignalChannel(ctx, contract.FillJoinSignal)
	answered := map[contract.FillWaiter]bool{}
	for {
		var sent []workflow.Future
		var w contract.FillWaiter
		for joins.ReceiveAsync(&w) {
			if answered[w] {
				continue
			}
			answered[w] = true
			sent = append(sent, workflow.SignalExternalWorkflow(ctx, w.WorkflowID, "", contract.FillDoneSignal,
				contract.FillDone{FillWorkflowID: id, Token: w.Token, Result: res}))
		}
		if len(sent) == 0 {
			return
		}
		for _, f := range sent {
			// A waiter that has closed (deleted, say) needs no answer.
			if serr := f.Get(ctx, nil); serr != nil {
				workflow.GetLogger(ctx).Info("fill result not delivered", "error", serr)
			}
		}
	}
}

// fillCheck is how often a workflow waiting on a fill that has not answered checks on it: a fill
// terminated, or recorded before fills answered their waiters, sends no signal.
const fillCheck = time.Minute

// fillGrace is how long past its deadline a provision waits for the fill it joined: the fill is
// bounded by the same deadline, so it reports its own failure first.
const fillGrace = time.Minute

// fillWaits are the fills a workflow waits on, and the answers they have signalled, by token.
type fillWaits struct {
	done    workflow.ReceiveChannel
	answers map[string]contract.FillResult
}

func newFillWaits(ctx workflow.Context) *fillWaits {
	return &fillWaits{done: workflow.GetSignalChannel(ctx, contract.FillDoneSignal), answers: map[string]contract.FillResult{}}
}

// drain records the answers already signalled.
func (f *fillWaits) drain() {
	var d contract.FillDone
	for f.done.ReceiveAsync(&d) {
		f.answers[d.Token] = d.Result
		d = contract.FillDone{}
	}
}

func (f *fillWaits) answered(token string) bool {
	_, ok := f.answers[token]
	return ok
}

// join starts or joins the fill of in's content, registered as a waiter under token, in a
// local activity that returns at once: no worker slot is held while the fill runs.
func (f *fillWaits) join(ctx workflow.Context, in contract.FillInput, token string) (string, error) {
	var a *activities.Activities
	var r contract.FillWaitResult
	lctx := workflow.WithLocalActivityOptions(ctx, localStep)
	waiter := contract.FillWaiter{WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID, Token: token}
	if err := workflow.ExecuteLocalActivity(lctx, a.RegisterFillWaiter, contract.FillWaitInput{Fill: in, Waiter: waiter}).Get(ctx, &r); err != nil {
		return "", err
	}
	if r.Closed {
		f.answers[token] = r.Result
	}
	return r.FillWorkflowID, nil
}

// wait returns the result of the fill joined under token, as the fill signals it. A fill that
// has not answered is checked every fillCheck (registering again with a run under way, reading
// the outcome of one that closed); one still running fillGrace past the deadline fails the wait.
func (f *fillWaits) wait(ctx workflow.Context, in contract.FillInput, token, fillID string, deadline time.Time) (contract.FillResult, error) {
	var a *activities.Activities
	lctx := workflow.WithLocalActivityOptions(ctx, localStep)
	waiter := contract.FillWaiter{WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID, Token: token}
	for {
		f.drain()
		if r, ok := f.answers[token]; ok {
			return r, nil
		}
		next, last := fillCheck, false
		if !deadline.IsZero() {
			if left := deadline.Add(fillGrace).Sub(workflow.Now(ctx)); left <= next {
				next, last = max(left, time.Second), true
			}
		}
		tctx, stopTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(tctx, next)
		fired := false
		var terr error
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(f.done, func(c workflow.ReceiveChannel, _ bool) {
			var d contract.FillDone
			c.Receive(ctx, &d)
			f.answers[d.Token] = d.Result
		})
		sel.AddFuture(timer, func(t workflow.Future) { fired, terr = true, t.Get(ctx, nil) })
		sel.Select(ctx)
		if !fired {
			stopTimer()
			continue
		}
		if terr != nil {
			return contract.FillResult{}, terr // cancelled
		}
		var r contract.FillWaitResult
		if err := workflow.ExecuteLocalActivity(lctx, a.RegisterFillWaiter, contract.FillWaitInput{Fill: in, Waiter: waiter, Rejoin: true}).Get(ctx, &r); err != nil {
			return contract.FillResult{}, err
		}
		if r.Closed {
			f.answers[token] = r.Result
			continue
		}
		if !last {
			continue
		}
		if f.drain(); f.answered(token) {
			continue
		}
		return contract.FillResult{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("not done by the provision's deadline %s: cache fill %s still running", deadline.UTC().Format(time.RFC3339), fillID),
			contract.ErrTypeDeadlineExceeded, nil)
	}
}
