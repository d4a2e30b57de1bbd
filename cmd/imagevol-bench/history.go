package main

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
)

// histFacts is what one workflow history says about where its time went and how its attempts
// ended. It reads event types and times only, so it holds for any shape of the workflow.
type histFacts struct {
	Events        int
	Activities    int // ActivityTaskScheduled
	WorkflowTasks int // WorkflowTaskScheduled
	Markers       int // MarkerRecorded: local activities, side effects, versions

	Started   time.Time // WorkflowExecutionStarted
	Closed    time.Time // the close event; zero while the workflow runs
	CloseType string    // its event type, e.g. "WorkflowExecutionCompleted"

	WorkflowTask    time.Duration // sum of WorkflowTaskScheduled → Completed (or TimedOut, Failed)
	ScheduleToStart time.Duration // sum of ActivityTaskScheduled → Started
	ActivityRun     time.Duration // sum of ActivityTaskStarted → its close event

	ActivityTimedOut     int // ActivityTaskTimedOut: the last attempt timed out
	ActivityFailed       int // ActivityTaskFailed
	ActivityRetried      int // activities whose recorded attempt is above 1
	ExtraAttempts        int // attempts beyond each activity's first
	WorkflowTaskTimedOut int
	WorkflowTaskFailed   int
	LocalActivityFailed  int      // markers that carry a failure
	Failures             []string // the failures recorded, e.g. the one a retried attempt ended with
}

// Completed says the workflow closed as completed.
func (f histFacts) Completed() bool {
	return f.CloseType == enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED.String()
}

// analyze reads one workflow's history.
func analyze(events []*historypb.HistoryEvent) histFacts {
	var f histFacts
	wft := map[int64]time.Time{} // WorkflowTaskScheduled by event ID
	act := map[int64]time.Time{} // ActivityTaskScheduled by event ID
	started := map[int64]time.Time{}
	for _, e := range events {
		f.Events++
		t := e.GetEventTime().AsTime()
		switch e.GetEventType() {
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			f.Started = t
		case enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			f.WorkflowTasks++
			wft[e.GetEventId()] = t
		case enums.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			f.WorkflowTask += since(wft, e.GetWorkflowTaskCompletedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
			a := e.GetWorkflowTaskTimedOutEventAttributes()
			f.WorkflowTask += since(wft, a.GetScheduledEventId(), t)
			f.WorkflowTaskTimedOut++
			f.fail("workflow task timed out (%s)", a.GetTimeoutType())
		case enums.EVENT_TYPE_WORKFLOW_TASK_FAILED:
			a := e.GetWorkflowTaskFailedEventAttributes()
			f.WorkflowTask += since(wft, a.GetScheduledEventId(), t)
			f.WorkflowTaskFailed++
			f.fail("workflow task failed (%s): %s", a.GetCause(), a.GetFailure().GetMessage())
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			f.Activities++
			act[e.GetEventId()] = t
		case enums.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			// Written once the activity closes, for its last attempt.
			a := e.GetActivityTaskStartedEventAttributes()
			started[a.GetScheduledEventId()] = t
			f.ScheduleToStart += since(act, a.GetScheduledEventId(), t)
			if n := int(a.GetAttempt()); n > 1 {
				f.ActivityRetried++
				f.ExtraAttempts += n - 1
				f.fail("activity attempt %d; the one before: %s", n, a.GetLastFailure().GetMessage())
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			f.ActivityRun += since(started, e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			a := e.GetActivityTaskFailedEventAttributes()
			f.ActivityRun += since(started, a.GetScheduledEventId(), t)
			f.ActivityFailed++
			f.fail("activity failed: %s", a.GetFailure().GetMessage())
		case enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			a := e.GetActivityTaskTimedOutEventAttributes()
			f.ActivityRun += since(started, a.GetScheduledEventId(), t)
			f.ActivityTimedOut++
			f.fail("activity timed out: %s", a.GetFailure().GetMessage())
		case enums.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			f.ActivityRun += since(started, e.GetActivityTaskCanceledEventAttributes().GetScheduledEventId(), t)
		case enums.EVENT_TYPE_MARKER_RECORDED:
			f.Markers++
			if m := e.GetMarkerRecordedEventAttributes().GetFailure(); m != nil {
				f.LocalActivityFailed++
				f.fail("marker %s failed: %s", e.GetMarkerRecordedEventAttributes().GetMarkerName(), m.GetMessage())
			}
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
			enums.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT, enums.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
			enums.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, enums.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
			f.Closed, f.CloseType = t, e.GetEventType().String()
		}
	}
	return f
}

// since is t minus the time recorded for id, 0 when none was.
func since(m map[int64]time.Time, id int64, t time.Time) time.Duration {
	if t0, ok := m[id]; ok {
		return t.Sub(t0)
	}
	return 0
}

// fail keeps the first few failure messages of a history.
func (f *histFacts) fail(format string, args ...any) {
	if len(f.Failures) < 3 {
		f.Failures = append(f.Failures, strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
}

// dialTemporal connects to the run's Temporal frontend and namespace.
func (b *bench) dialTemporal() (client.Client, error) {
	c, err := client.Dial(client.Options{
		HostPort: b.cfg.TemporalAddress, Namespace: b.cfg.Namespace,
		Logger: sdklog.NewStructuredLogger(newQuietLogger()),
	})
	if err != nil {
		return nil, fmt.Errorf("temporal %s: %w", b.cfg.TemporalAddress, err)
	}
	return c, nil
}

// histories reads the histories of the given workflows (IDs, latest runs) a few at a time,
// waiting for each to close: a hit's volume is available shortly before its workflow ends.
// Histories read before are not read again. Those that could not be read are left out; the
// error says how many and why.
func (b *bench) histories(ctx context.Context, ids []string) (map[string]histFacts, error) {
	c, err := b.dialTemporal()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var (
		mu     sync.Mutex
		out    = make(map[string]histFacts, len(ids))
		failed int
		first  error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 8)
	)
	b.mu.Lock()
	if b.facts == nil {
		b.facts = map[string]histFacts{}
	}
	known := maps.Clone(b.facts)
	b.mu.Unlock()
	for _, id := range ids {
		if f, ok := known[id]; ok {
			out[id] = f
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f, err := readHistory(ctx, c, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
				return
			}
			out[id] = f
		})
	}
	wg.Wait()
	b.mu.Lock()
	maps.Copy(b.facts, out)
	b.mu.Unlock()
	if failed > 0 {
		return out, fmt.Errorf("%d of %d histories not read (first: %w)", failed, len(ids), first)
	}
	return out, nil
}

// readHistory long-polls one workflow's history until its close event.
func readHistory(ctx context.Context, c client.Client, id string) (histFacts, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	it := c.GetWorkflowHistory(ctx, id, "", true, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return histFacts{}, fmt.Errorf("history of %s: %w", id, err)
		}
		events = append(events, e)
	}
	return analyze(events), nil
}
