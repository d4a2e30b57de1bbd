package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/temporal"
)

// CancelProvision cancels a volume's provision still running and waits until its run has closed,
// heartbeating: the provision's own compensation then removes what it made, and the deletion
// that asked goes on with nothing in flight. A provision already closed (or never started) is
// not an error. Deletions now cancel and wait in workflow code (AwaitProvisionClosed), holding no
// slot of the host; this step stays for the runs recorded before.
func (a *Activities) CancelProvision(ctx context.Context, workflowID string) error {
	err := a.Temporal.CancelWorkflow(ctx, workflowID, "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		return nil
	case err != nil && !isAlreadyClosed(err):
		return fmt.Errorf("cancel provision %s: %w", workflowID, err)
	}
	defer heartbeatEvery(ctx, heartbeatInterval, workflowID)()
	// The run ends canceled, or failed or completed if it was about to: any end will do.
	_ = a.Temporal.GetWorkflow(ctx, workflowID, "").Get(ctx, nil)
	return ctx.Err()
}

// provisionWait bounds one AwaitProvisionClosed: the deletion asks again until the run closes.
const provisionWait = 5 * time.Second

// AwaitProvisionClosed waits a few seconds for a provision's run to close and reports whether it
// has (a run that never started counts as closed). It is a local activity of the deletion, which
// calls it again until the answer is yes.
func (a *Activities) AwaitProvisionClosed(ctx context.Context, workflowID string) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, provisionWait)
	defer cancel()
	// The run ends canceled, or failed or completed if it was about to: any end will do.
	err := a.Temporal.GetWorkflow(wctx, workflowID, "").Get(wctx, nil)
	var ended *temporal.WorkflowExecutionError
	var notFound *serviceerror.NotFound
	switch {
	case err == nil, errors.As(err, &ended), errors.As(err, &notFound):
		return true, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	case wctx.Err() != nil:
		return false, nil
	}
	return false, fmt.Errorf("await provision %s: %w", workflowID, err)
}

// isAlreadyClosed tells the error Temporal gives when cancelling a run that has closed.
func isAlreadyClosed(err error) bool {
	var fp *serviceerror.FailedPrecondition
	return errors.As(err, &fp)
}
