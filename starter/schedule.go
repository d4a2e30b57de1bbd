package starter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/workflows"
)

// ReconcileScheduleID is the Temporal Schedule that runs ReconcileCache.
const ReconcileScheduleID = "imagevol-reconcile"

// EnsureReconcileSchedule creates, or updates to the current hosts and interval, the Temporal
// Schedule that runs ReconcileCache over every host. A run still going when the next is due is
// not doubled.
func (g *Gateway) EnsureReconcileSchedule(ctx context.Context, every time.Duration) error {
	action := &client.ScheduleWorkflowAction{
		ID:        "imagevol-reconcile-run",
		Workflow:  workflows.ReconcileCache,
		Args:      []any{workflows.ReconcileInput{Hosts: g.Hosts}},
		TaskQueue: workflows.TaskQueue,
	}
	spec := client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}}
	sc := g.Temporal.ScheduleClient()
	_, err := sc.Create(ctx, client.ScheduleOptions{
		ID: ReconcileScheduleID, Spec: spec, Action: action, Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP,
	})
	if err == nil {
		return nil
	}
	if !errors.Is(err, temporal.ErrScheduleAlreadyRunning) {
		return fmt.Errorf("create reconcile schedule: %w", err)
	}
	err = sc.GetHandle(ctx, ReconcileScheduleID).Update(ctx, client.ScheduleUpdateOptions{
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
