package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// HitBreakdown is where a cache hit's time goes, from its workflow's event times and the
// moments the benchmark sent the request and saw "available". Each figure is the median over the
// sampled hits, so the parts need not add up to TotalMs exactly.
type HitBreakdown struct {
	Samples int `json:"samples"` // hits whose history was read
	// GatewayMs: request sent → WorkflowExecutionStarted (HTTP, the gateway's checks and rows,
	// StartWorkflowExecution).
	GatewayMs float64 `json:"gateway_ms"`
	// WorkflowTaskMs: sum of WorkflowTaskScheduled → Completed (dispatch and workflow code,
	// local activities included).
	WorkflowTaskMs float64 `json:"workflow_task_ms"`
	// ScheduleToStartMs: sum of ActivityTaskScheduled → Started (matching and dispatch).
	ScheduleToStartMs float64 `json:"activity_schedule_to_start_ms"`
	// ActivityRunMs: sum of ActivityTaskStarted → Completed (the activities' own work and their
	// result's way back).
	ActivityRunMs float64 `json:"activity_run_ms"`
	// OtherInHistoryMs: Started → close less the three sums: hand-offs between tasks, timers;
	// negative when activities overlap.
	OtherInHistoryMs float64 `json:"other_in_history_ms"`
	// CloseToSeenMs: the close event → the client saw "available" (status poll); negative when
	// the volume was seen available before the workflow closed.
	CloseToSeenMs float64 `json:"close_to_seen_ms"`
	TotalMs       float64 `json:"total_ms"` // request sent → "available" seen

	ActivitiesPerHit    float64 `json:"activities_per_hit"`
	WorkflowTasksPerHit float64 `json:"workflow_tasks_per_hit"`
	MarkersPerHit       float64 `json:"markers_per_hit"` // local activities, side effects
	EventsPerHit        float64 `json:"events_per_hit"`
}

// hitTiming is when the benchmark sent one hit's request and when it saw the volume available.
type hitTiming struct {
	ID   string
	Sent time.Time
	Seen time.Time
}

// timing is when s's request was sent and its volume seen available.
func (s hitSample) timing() hitTiming {
	return hitTiming{ID: s.ID, Sent: s.End.Add(-s.Latency - s.Accept), Seen: s.End}
}

// hitParts are one hit's parts, in milliseconds, in HitBreakdown's order.
type hitParts struct {
	gateway, wft, s2s, run, other, closeToSeen, total float64
}

// partsOf splits one hit's time by its history; false when the history has no start or close.
func partsOf(t hitTiming, f histFacts) (hitParts, bool) {
	if f.Started.IsZero() || f.Closed.IsZero() {
		return hitParts{}, false
	}
	inHistory := f.Closed.Sub(f.Started)
	return hitParts{
		gateway:     ms(f.Started.Sub(t.Sent)),
		wft:         ms(f.WorkflowTask),
		s2s:         ms(f.ScheduleToStart),
		run:         ms(f.ActivityRun),
		other:       ms(inHistory - f.WorkflowTask - f.ScheduleToStart - f.ActivityRun),
		closeToSeen: ms(t.Seen.Sub(f.Closed)),
		total:       ms(t.Seen.Sub(t.Sent)),
	}, true
}

// breakdown is the median of each part over the hits whose history is in facts; nil when none is.
func breakdown(hits []hitTiming, facts map[string]histFacts) *HitBreakdown {
	var cols [11][]float64
	for _, h := range hits {
		f, ok := facts[h.ID]
		if !ok {
			continue
		}
		p, ok := partsOf(h, f)
		if !ok {
			continue
		}
		for i, v := range []float64{p.gateway, p.wft, p.s2s, p.run, p.other, p.closeToSeen, p.total,
			float64(f.Activities), float64(f.WorkflowTasks), float64(f.Markers), float64(f.Events)} {
			cols[i] = append(cols[i], v)
		}
	}
	if len(cols[0]) == 0 {
		return nil
	}
	med := func(i int) float64 { return round(percentile(cols[i], 50), 1) }
	return &HitBreakdown{
		Samples: len(cols[0]), GatewayMs: med(0), WorkflowTaskMs: med(1), ScheduleToStartMs: med(2),
		ActivityRunMs: med(3), OtherInHistoryMs: med(4), CloseToSeenMs: med(5), TotalMs: med(6),
		ActivitiesPerHit: med(7), WorkflowTasksPerHit: med(8), MarkersPerHit: med(9), EventsPerHit: med(10),
	}
}

// hitBreakdown reads the histories of the sequential measured hits and splits their time.
func (b *bench) hitBreakdown(ctx context.Context) error {
	if len(b.hitTimes) == 0 {
		return errors.New("no measured cache hit to read")
	}
	ids := make([]string, len(b.hitTimes))
	for i, h := range b.hitTimes {
		ids[i] = h.ID
	}
	facts, err := b.histories(ctx, ids)
	b.res.HitBreakdown = breakdown(b.hitTimes, facts)
	if err != nil {
		return err
	}
	if b.res.HitBreakdown == nil {
		return errors.New("no history of a measured hit had a start and a close event")
	}
	return nil
}

// String is the breakdown on one line, for latest.md.
func (h *HitBreakdown) String() string {
	if h == nil {
		return "null"
	}
	parts := []string{
		fmt.Sprintf("gateway %.1f", h.GatewayMs),
		fmt.Sprintf("workflow tasks %.1f", h.WorkflowTaskMs),
		fmt.Sprintf("activity schedule-to-start %.1f", h.ScheduleToStartMs),
		fmt.Sprintf("activity run %.1f", h.ActivityRunMs),
		fmt.Sprintf("other in history %.1f", h.OtherInHistoryMs),
		fmt.Sprintf("close → seen %.1f", h.CloseToSeenMs),
	}
	return fmt.Sprintf("%s ms (total %.1f ms; p50 of each over %d hits); per hit: %.0f activities, %.0f workflow tasks, %.0f markers, %.0f events",
		strings.Join(parts, " · "), h.TotalMs, h.Samples, h.ActivitiesPerHit, h.WorkflowTasksPerHit, h.MarkersPerHit, h.EventsPerHit)
}
