package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
)

// CancelProvision cancels a volume's provision still running and waits until its run has closed,
// heartbeating: the provision's own compensation then removes what it made, and the deletion
// that asked goes on with nothing in flight. A provision already closed (or never started) is
// not an error.
func (a *Activities) CancelProvision(ctx context.Context, workflowID string) error {
	err := a.Temporal.CancelWorkflow(ctx, workflowID, "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
		return nil
	case err != nil && !isAlreadyClosed(err):
		return fmt.Errorf("cancel provision %s: %w", workflowID, err)
	}
	defer heartbeatEvery(ctx, 5*time.Second, workflowID)()
	// The run ends canceled, or failed or completed if it was about to: any end will do.
	_ = a.Temporal.GetWorkflow(ctx, workflowID, "").Get(ctx, nil)
	return ctx.Err()
}

// isAlreadyClosed tells the error Temporal gives when cancelling a run that has closed.
func isAlreadyClosed(err error) bool {
	var fp *serviceerror.FailedPrecondition
	return errors.As(err, &fp)
}
