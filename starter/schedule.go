package starter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/contract"
)

// EnsureReconcileSchedule creates, or updates to the current hosts and interval, the Temporal
// Schedule that runs ReconcileCache over every host. A run still going when the next is due is
// not doubled.
func (g *Gateway) EnsureReconcileSchedule(ctx context.Context, every time.Duration) error {
	action := contract.ReconcileAction(g.Hosts)
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	sc := g.Temporal.ScheduleClient()
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID: contract.ReconcileScheduleID, Spec: spec, Action: action, Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP,
	})
	if err == nil {
		return nil
	}
	if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return fmt.Errorf("create reconcile schedule: %w", err)
	}
	err = sc.GetHandle(ctx, contract.ReconcileScheduleID).Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			s := in.Description.Schedule
			s.Spec = &spec
			s.Action = action
			return &client.ScheduleUpdate{Schedule: &s}, nil
		},
	})
	if err != nil {
		return fmt.Errorf("update reconcile schedule: %w", err)
	}
	return nil
}

// ReconcileLast is the body of GET /v1/reconcile/last: the newest run of the reconcile schedule.
type ReconcileLast struct {
	WorkflowID string                     `json:"workflow_id"`
	StartedAt  time.Time                  `json:"started_at"`
	Running    bool                       `json:"running"`
	Hosts      []contract.ReconcileReport `json:"hosts,omitempty"`
	Error      string                     `json:"error,omitempty"`
}

// reconcileLast serves the newest reconcile run and, once it has finished, what it found.
func (g *Gateway) reconcileLast(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	d, err := g.Temporal.ScheduleClient().GetHandle(ctx, contract.ReconcileScheduleID).Describe(ctx)
	if err != nil {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "no reconcile schedule: %v", err))
		return
	}
	n := len(d.Info.RecentActions)
	if n == 0 {
		writeError(w, apiErr(http.StatusNotFound, "not_found", "the reconcile schedule has not run yet"))
		return
	}
	last := d.Info.RecentActions[n-1]
	out := ReconcileLast{WorkflowID: last.StartWorkflowResult.WorkflowID, StartedAt: last.ActualTime}
	run := g.Temporal.GetWorkflow(ctx, out.WorkflowID, last.StartWorkflowResult.FirstExecutionRunID)
	desc, err := g.Temporal.DescribeWorkflowExecution(ctx, out.WorkflowID, last.StartWorkflowResult.FirstExecutionRunID)
	switch {
	case err != nil:
		out.Error = err.Error()
	case desc.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING:
		out.Running = true
	default:
		if err := run.Get(ctx, &out.Hosts); err != nil {
			out.Error = err.Error()
		}
	}
	writeJSON(w, http.StatusOK, out)
}
