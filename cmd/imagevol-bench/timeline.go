package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"

	"github.com/imagevol/imagevol/contract"
)

// Span is one step of a workflow's history on the time axis of a measured request: an activity
// or a workflow task (queued, then running), a local activity or a signal (a moment, its run
// within the workflow task around it), or the workflow itself.
type Span struct {
	Workflow string  `json:"workflow"`           // "provision" or "fill"
	Step     string  `json:"step"`               // activity type, "workflow task", "local <type>", "signal <name>", "workflow"
	AtMs     float64 `json:"at_ms"`              // scheduled (or happened) this long after the create request was sent
	QueueMs  float64 `json:"queue_ms,omitempty"` // scheduled → started
	RunMs    float64 `json:"run_ms,omitempty"`   // started → closed
}

// missTimeline reads the histories of a miss's provision workflow (its ID is the volume's) and
// of the fill it waited on (named by its memo), as spans timed from t0, when the create request
// was sent. The fill's history is left out, with an error, when the memo names none.
func (b *bench) missTimeline(ctx context.Context, volumeID string, t0 time.Time) ([]Span, error) {
	c, err := b.temporal()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	spans, err := historySpans(ctx, c, "provision", volumeID, t0)
	if err != nil {
		return nil, err
	}
	desc, err := c.DescribeWorkflowExecution(ctx, volumeID, "")
	if err != nil {
		return spans, fmt.Errorf("describe %s: %w", volumeID, err)
	}
	fields := desc.GetWorkflowExecutionInfo().GetMemo().GetFields()
	var fill string
	for _, k := range []string{contract.MemoFilledBy, contract.MemoFill} {
		if p := fields[k]; p != nil && fill == "" {
			_ = converter.GetDefaultDataConverter().FromPayload(p, &fill)
		}
	}
	if fill == "" {
		return spans, fmt.Errorf("provision %s names no fill in its memo", volumeID)
	}
	more, err := historySpans(ctx, c, "fill", fill, t0)
	return append(spans, more...), err
}

// temporal dials the Temporal frontend with a quiet logger.
func (b *bench) temporal() (client.Client, error) {
	c, err := client.Dial(client.Options{HostPort: b.cfg.TemporalAddress, Namespace: b.cfg.Namespace,
		Logger: sdklog.NewStructuredLogger(newQuietLogger())})
	if err != nil {
		return nil, fmt.Errorf("temporal: %w", err)
	}
	return c, nil
}

// historySpans reads one workflow's history, once closed, as spans.
func historySpans(ctx context.Context, c client.Client, label, wid string, t0 time.Time) ([]Span, error) {
	if err := c.GetWorkflow(ctx, wid, "").Get(ctx, nil); err != nil {
		return nil, fmt.Errorf("workflow %s: %w", wid, err)
	}
	it := c.GetWorkflowHistory(ctx, wid, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", wid, err)
		}
		events = append(events, e)
	}
	return spansOf(label, events, t0), nil
}

// spansOf turns history events into spans, pairing each activity's and workflow task's
// scheduled, started and closed events by the scheduled event's ID.
func spansOf(label string, events []*historypb.HistoryEvent, t0 time.Time) []Span {
	since := func(t time.Time) float64 { return round(ms(t.Sub(t0)), 1) }
	type pending struct {
		span             int // index in spans
		sched, startedAt time.Time
	}
	open := map[int64]*pending{}
	var spans []Span
	var wfStart time.Time
	schedule := func(id int64, step string, t time.Time) {
		open[id] = &pending{span: len(spans), sched: t}
		spans = append(spans, Span{Workflow: label, Step: step, AtMs: since(t)})
	}
	start := func(sched int64, t time.Time) {
		if p, ok := open[sched]; ok {
			p.startedAt = t
			spans[p.span].QueueMs = round(ms(t.Sub(p.sched)), 1)
		}
	}
	finish := func(sched int64, t time.Time) {
		if p, ok := open[sched]; ok && !p.startedAt.IsZero() {
			spans[p.span].RunMs = round(ms(t.Sub(p.startedAt)), 1)
			delete(open, sched)
		}
	}
	for _, e := range events {
		t := e.GetEventTime().AsTime()
		switch e.GetEventType() {
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			wfStart = t
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			schedule(e.GetEventId(), e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(), t)
		case enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			schedule(e.GetEventId(), "workflow task", t)
		case enums.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			start(e.GetActivityTaskStartedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_WORKFLOW_TASK_STARTED:
			start(e.GetWorkflowTaskStartedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			finish(e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			finish(e.GetActivityTaskFailedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			finish(e.GetActivityTaskTimedOutEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			finish(e.GetWorkflowTaskCompletedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_WORKFLOW_TASK_FAILED:
			finish(e.GetWorkflowTaskFailedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
			finish(e.GetWorkflowTaskTimedOutEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_MARKER_RECORDED:
			spans = append(spans, Span{Workflow: label, Step: markerStep(e.GetMarkerRecordedEventAttributes()), AtMs: since(t)})
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
			spans = append(spans, Span{Workflow: label, Step: "signal " + e.GetWorkflowExecutionSignaledEventAttributes().GetSignalName(), AtMs: since(t)})
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
			enums.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
			if !wfStart.IsZero() {
				spans = append(spans, Span{Workflow: label, Step: "workflow", AtMs: since(wfStart), RunMs: round(ms(t.Sub(wfStart)), 1)})
			}
		}
	}
	return spans
}

// markerStep names a marker: a local activity by its type.
func markerStep(a *historypb.MarkerRecordedEventAttributes) string {
	name := a.GetMarkerName()
	if p := a.GetDetails()["data"]; name == "LocalActivity" && len(p.GetPayloads()) > 0 {
		var d struct{ ActivityType string }
		if json.Unmarshal(p.GetPayloads()[0].GetData(), &d) == nil && d.ActivityType != "" {
			return "local " + d.ActivityType
		}
	}
	return "marker " + name
}
