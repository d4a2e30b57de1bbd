package workflows

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/imagevol/imagevol/contract"
)

// bound gives the activity options of ctx the time left before deadline as their
// schedule-to-close timeout, and lets them retry as often as fits in it: a part that is down
// for less than the provision's deadline only delays it. A zero deadline changes nothing.
func bound(ctx workflow.Context, deadline time.Time) workflow.Context {
	return boundGrace(ctx, deadline, 0)
}

// boundGrace is bound with grace more time, for a step that waits on work bounded by the same
// deadline and should hear that work's own failure rather than time out first.
func boundGrace(ctx workflow.Context, deadline time.Time, grace time.Duration) workflow.Context {
	if deadline.IsZero() {
		return ctx
	}
	o := workflow.GetActivityOptions(ctx)
	o.ScheduleToCloseTimeout, o.StartToCloseTimeout, o.RetryPolicy = untilDeadline(ctx, deadline.Add(grace), o.StartToCloseTimeout, o.RetryPolicy)
	return workflow.WithActivityOptions(ctx, o)
}

// untilDeadline is a step's schedule-to-close and start-to-close timeouts and retry policy when it
// may retry until deadline. Past the deadline the step still runs once, briefly, so that its
// failure says so.
func untilDeadline(ctx workflow.Context, deadline time.Time, startToClose time.Duration, rp *temporal.RetryPolicy) (time.Duration, time.Duration, *temporal.RetryPolicy) {
	left := max(deadline.Sub(workflow.Now(ctx)), time.Second)
	if rp != nil {
		unlimited := *rp
		unlimited.MaximumAttempts = 0
		rp = &unlimited
	}
	return left, min(startToClose, left), rp
}

// boundLocal is bound for the local activity options of ctx.
func boundLocal(ctx workflow.Context, deadline time.Time) workflow.Context {
	if deadline.IsZero() {
		return ctx
	}
	o := workflow.GetLocalActivityOptions(ctx)
	o.ScheduleToCloseTimeout, o.StartToCloseTimeout, o.RetryPolicy = untilDeadline(ctx, deadline, o.StartToCloseTimeout, o.RetryPolicy)
	return workflow.WithLocalActivityOptions(ctx, o)
}

// expired reports whether so little of the provision's time is left that another retry would
// not fit: Temporal stops retrying a step once its next backoff would cross the deadline.
func expired(ctx workflow.Context, deadline time.Time) bool {
	return !deadline.IsZero() && !workflow.Now(ctx).Before(deadline.Add(-retry.MaximumInterval))
}

// pastDeadline turns a step's failure at the deadline into an ErrTypeDeadlineExceeded error
// that names the step and its last error (which names the part that was down). Other errors,
// final failures of the image itself among them, pass unchanged.
func pastDeadline(ctx workflow.Context, deadline time.Time, err error) error {
	if deadline.IsZero() || err == nil {
		return err
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && (appErr.NonRetryable() || slices.Contains(contract.NonRetryable, appErr.Type()) ||
		appErr.Type() == contract.ErrTypeDeadlineExceeded) {
		return err
	}
	var timeout *temporal.TimeoutError
	if !errors.As(err, &timeout) && !expired(ctx, deadline) {
		return err
	}
	step := "a step"
	var actErr *temporal.ActivityError
	if errors.As(err, &actErr) {
		step = actErr.ActivityType().Name
	}
	last := "no attempt finished (is the worker of its storage host running?)"
	if appErr != nil {
		last = "its last error: " + errorMessage(appErr)
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("not done by the provision's deadline %s: %s kept failing; %s", deadline.UTC().Format(time.RFC3339), step, last),
		contract.ErrTypeDeadlineExceeded, err)
}
