package starter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/converter"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// retryWait bounds how long a retry waits for the failed run to close: the run marks the volume
// "error" in its compensation a moment before the run itself fails, and until it has failed its
// workflow ID cannot be reused.
const retryWait = 15 * time.Second

// provisionRoutes serves the retry of failed provisions.
func (g *Gateway) provisionRoutes(mux *http.ServeMux) {
	g.handle(mux, "POST /v1/volumes/{id}/retry", g.retryVolume)
}

// retryVolume starts a new run of a failed volume's provision, under the same workflow ID, with
// the input and search attributes of the failed run.
func (g *Gateway) retryVolume(w http.ResponseWriter, r *http.Request) {
	v, err := g.ownVolume(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, busy := g.retrying.LoadOrStore(v.ID, true); busy {
		writeError(w, apiErr(http.StatusConflict, "volume_busy", "a retry of volume %s is already being started", v.ID))
		return
	}
	defer g.retrying.Delete(v.ID)
	allowWait(w, retryWait)
	runID, err := g.retry(r.Context(), v)
	if err != nil {
		writeError(w, err)
		return
	}
	g.logCtx(r.Context()).Info("provision retried", "volume_id", v.ID, "workflow_id", v.WorkflowID, "run_id", runID)
	writeJSON(w, http.StatusAccepted, map[string]string{
		"id": v.ID, "status": models.StatusCreating, "workflow_id": v.WorkflowID, "run_id": runID,
	})
}

func (g *Gateway) retry(ctx context.Context, v *models.Volume) (string, error) {
	if v.Status != models.StatusError {
		return "", apiErr(http.StatusConflict, "volume_not_failed", "volume %s is %s; only a volume in error can be retried", v.ID, v.Status)
	}
	// A retry provisions the image again: the project must still be allowed to use it. An
	// image that is gone or unreadable now is left to the run, which fails on it as before.
	if img, err := g.Images.Get(ctx, v.ImageID); err == nil {
		if ok, err := g.canUse(ctx, v.ProjectID, img); err != nil || !ok {
			if err == nil {
				err = imageNotFound(v.ImageID)
			}
			return "", err
		}
	}
	wfID := v.WorkflowID
	if wfID == "" {
		wfID = v.ID
	}
	if err := g.awaitClosed(ctx, wfID); err != nil {
		return "", err
	}
	in, attrs, err := g.firstInput(ctx, wfID)
	if err != nil {
		return "", err
	}
	if in == nil {
		// The first run never started (Temporal refused it): rebuild what create would have sent.
		in = &contract.CreateVolumeInput{VolumeID: v.ID, ImageID: v.ImageID, SizeGB: v.SizeGB, Host: v.Host}
		attrs = nil
	}
	// The image may have changed since the first run: make the lookup read it again.
	in.Image, in.ImageRead = nil, time.Time{}
	// A retry has the whole timeout again.
	in.Deadline = g.deadline(time.Now())

	opts := provisionOptions(ctx, wfID, in.Host)
	if attrs != nil {
		// The untyped map takes the recorded payloads as they are (type metadata included); the
		// typed one would need every attribute's type known here.
		opts.SearchAttributes = attrs
	} else {
		opts.TypedSearchAttributes = contract.ProvisionSearch(v.ImageID, v.Host, v.ProjectID)
	}

	// Reset the row before the run starts, so the run's own updates are never overwritten.
	reset := map[string]any{"status": models.StatusCreating, "error": "", "cache": "", "cache_reason": "", "flatten": ""}
	if err := g.Store.UpdateVolume(ctx, v.ID, reset); err != nil {
		return "", err
	}
	run, err := g.Temporal.ExecuteWorkflow(ctx, opts, contract.CreateVolumeWorkflow, *in)
	if err != nil {
		var started *serviceerror.WorkflowExecutionAlreadyStarted
		if errors.As(err, &started) && g.running(ctx, wfID) {
			// Another gateway's retry won: its run owns the row now.
			return "", apiErr(http.StatusConflict, "volume_busy", "workflow %s is already running again", wfID)
		}
		// Nothing was started: put the failed state back so the volume can be retried again.
		_ = g.Store.UpdateVolume(context.WithoutCancel(ctx), v.ID, map[string]any{
			"status": v.Status, "error": v.Error, "cache": v.Cache, "cache_reason": v.CacheReason, "flatten": v.Flatten,
		})
		if started != nil {
			return "", apiErr(http.StatusConflict, "volume_busy", "workflow %s cannot run again: %v", wfID, err)
		}
		return "", apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start provisioning: %v", err)
	}
	return run.GetRunID(), nil
}

// running says whether the latest run of a workflow is running.
func (g *Gateway) running(ctx context.Context, wfID string) bool {
	desc, err := g.Temporal.DescribeWorkflowExecution(ctx, wfID, "")
	return err == nil && desc.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING
}

// awaitClosed waits, up to retryWait, for the latest run of a workflow to close. A workflow
// Temporal does not know is closed as far as a retry is concerned.
func (g *Gateway) awaitClosed(ctx context.Context, wfID string) error {
	desc, err := g.Temporal.DescribeWorkflowExecution(ctx, wfID, "")
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return nil
	case err != nil:
		return apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not read workflow %s: %v", wfID, err)
	case desc.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING:
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, retryWait)
	defer cancel()
	// The run's own failure is the expected outcome; only whether it closed matters.
	_ = g.Temporal.GetWorkflow(wctx, wfID, desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()).Get(wctx, nil)
	if wctx.Err() != nil && ctx.Err() == nil {
		return apiErr(http.StatusConflict, "volume_busy", "the last run of workflow %s is still running", wfID)
	}
	return ctx.Err()
}

// firstInput reads the input and start search attributes of a provision from the
// WorkflowExecutionStarted event of its latest run; a retried run was started with the first
// run's input, so that is the first run's too. It returns nil when Temporal has no run of it.
func (g *Gateway) firstInput(ctx context.Context, wfID string) (*contract.CreateVolumeInput, map[string]any, error) {
	it := g.Temporal.GetWorkflowHistory(ctx, wfID, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	if !it.HasNext() {
		return nil, nil, nil
	}
	ev, err := it.Next()
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return nil, nil, nil
	case err != nil:
		return nil, nil, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not read the history of workflow %s: %v", wfID, err)
	}
	started := startedAttributes(ev)
	if started == nil {
		return nil, nil, fmt.Errorf("workflow %s: history starts with %s, not WorkflowExecutionStarted", wfID, ev.GetEventType())
	}
	var in contract.CreateVolumeInput
	if err := converter.GetDefaultDataConverter().FromPayloads(started.GetInput(), &in); err != nil {
		return nil, nil, fmt.Errorf("workflow %s: decode its input: %w", wfID, err)
	}
	var attrs map[string]any
	if fields := started.GetSearchAttributes().GetIndexedFields(); len(fields) > 0 {
		attrs = make(map[string]any, len(fields))
		for k, p := range fields {
			attrs[k] = p
		}
	}
	return &in, attrs, nil
}

func startedAttributes(ev *historypb.HistoryEvent) *historypb.WorkflowExecutionStartedEventAttributes {
	if ev.GetEventType() != enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED {
		return nil
	}
	return ev.GetWorkflowExecutionStartedEventAttributes()
}
