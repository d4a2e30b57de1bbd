package contract

import (
	"errors"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/temporal"
)

// FillFailure is the result a fill's waiters see for the error that ended it.
func FillFailure(err error) FillResult {
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return FillResult{FailureType: ErrTypeDeadlineExceeded, FailureMessage: "the provision's deadline passed before its cache fill started"}
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return FillResult{FailureType: appErr.Type(), FailureMessage: appErr.Message()}
	}
	return FillResult{FailureType: "FillFailed", FailureMessage: err.Error()}
}

// FillWaiter is a workflow waiting on a fill: when the fill ends it signals the workflow
// FillDoneSignal with its result.
type FillWaiter struct {
	WorkflowID string
	// Token comes back in the FillDone, so that the waiter tells this wait's answer from
	// another's (an earlier wait of the same run, or a duplicate).
	Token string
}

// FillDone is the signal a fill sends each of its waiters when it ends.
type FillDone struct {
	FillWorkflowID string
	Token          string
	Result         FillResult
}

// FillWaitInput registers Waiter with the fill of Fill's content.
type FillWaitInput struct {
	Fill   FillInput
	Waiter FillWaiter
	// Rejoin is a waiter checking on a fill that has not answered yet: no fill is started.
	Rejoin bool
}

// FillWaitResult is the fill a waiter is registered with, or its outcome when it has closed.
type FillWaitResult struct {
	FillWorkflowID string
	// Closed says the fill has ended (or never ran) and will send nothing: Result is its outcome.
	Closed bool
	Result FillResult
}
