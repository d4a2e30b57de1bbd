package main

import (
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// historyBuilder makes a synthetic history, event IDs from 1, times in ms after t0.
type historyBuilder struct {
	t0     time.Time
	events []*historypb.HistoryEvent
}

func (h *historyBuilder) add(atMs int, typ enums.EventType, set func(*historypb.HistoryEvent)) int64 {
	e := &historypb.HistoryEvent{
		EventId: int64(len(h.events) + 1), EventType: typ,
		EventTime: timestamppb.New(h.t0.Add(time.Duration(atMs) * time.Millisecond)),
	}
	if set != nil {
		set(e)
	}
	h.events = append(h.events, e)
	return e.EventId
}

func (h *historyBuilder) workflowTask(scheduled, started, completed int) {
	id := h.add(scheduled, enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, nil)
	h.add(started, enums.EVENT_TYPE_WORKFLOW_TASK_STARTED, nil)
	h.add(completed, enums.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_WorkflowTaskCompletedEventAttributes{
			WorkflowTaskCompletedEventAttributes: &historypb.WorkflowTaskCompletedEventAttributes{ScheduledEventId: id}}
	})
}

// activity adds an activity scheduled, started (written at its close, as the server does) and
// completed, with the attempt the started event records.
func (h *historyBuilder) activity(scheduled, started, completed int, attempt int32) {
	id := h.add(scheduled, enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, nil)
	h.add(started, enums.EVENT_TYPE_ACTIVITY_TASK_STARTED, func(e *historypb.HistoryEvent) {
		a := &historypb.ActivityTaskStartedEventAttributes{ScheduledEventId: id, Attempt: attempt}
		if attempt > 1 {
			a.LastFailure = &failurepb.Failure{Message: "activity StartToClose timeout"}
		}
		e.Attributes = &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: a}
	})
	h.add(completed, enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{
			ActivityTaskCompletedEventAttributes: &historypb.ActivityTaskCompletedEventAttributes{ScheduledEventId: id}}
	})
}

// twoStepHit is a hit of two activities and three workflow tasks, started at 10 ms, closed at
// 100 ms: workflow tasks 5 + 4 + 6 = 15 ms, schedule-to-start 3 + 2 = 5 ms, run 40 + 20 = 60 ms,
// so 90 − 80 = 10 ms between them.
func twoStepHit(t0 time.Time, secondAttempt int32) []*historypb.HistoryEvent {
	h := &historyBuilder{t0: t0}
	h.add(10, enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, nil)
	h.workflowTask(10, 12, 15)
	h.activity(15, 18, 58, 1)
	h.workflowTask(60, 61, 64)
	h.activity(64, 66, 86, secondAttempt)
	h.workflowTask(88, 90, 94)
	h.add(100, enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, nil)
	return h.events
}

func TestAnalyze(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name                     string
		history                  []*historypb.HistoryEvent
		wft, s2s, run            time.Duration
		activities, events       int
		retried, extra, failures int
		completed                bool
	}{
		{"first attempts", twoStepHit(t0, 1), 15 * time.Millisecond, 5 * time.Millisecond, 60 * time.Millisecond, 2, 17, 0, 0, 0, true},
		{"a third attempt", twoStepHit(t0, 3), 15 * time.Millisecond, 5 * time.Millisecond, 60 * time.Millisecond, 2, 17, 1, 2, 1, true},
		{"still running", twoStepHit(t0, 1)[:16], 15 * time.Millisecond, 5 * time.Millisecond, 60 * time.Millisecond, 2, 16, 0, 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := analyze(c.history)
			if f.WorkflowTask != c.wft || f.ScheduleToStart != c.s2s || f.ActivityRun != c.run {
				t.Errorf("workflow task %v, schedule-to-start %v, run %v; want %v, %v, %v", f.WorkflowTask, f.ScheduleToStart, f.ActivityRun, c.wft, c.s2s, c.run)
			}
			if f.Activities != c.activities || f.Events != c.events || f.WorkflowTasks != 3 {
				t.Errorf("%d activities, %d events, %d workflow tasks; want %d, %d, 3", f.Activities, f.Events, f.WorkflowTasks, c.activities, c.events)
			}
			if f.ActivityRetried != c.retried || f.ExtraAttempts != c.extra || len(f.Failures) != c.failures {
				t.Errorf("retried %d, extra attempts %d, failures %q; want %d, %d, %d", f.ActivityRetried, f.ExtraAttempts, f.Failures, c.retried, c.extra, c.failures)
			}
			if f.Completed() != c.completed {
				t.Errorf("completed %v, want %v", f.Completed(), c.completed)
			}
		})
	}
}

func TestAnalyzeTimeouts(t *testing.T) {
	h := &historyBuilder{t0: time.Unix(0, 0)}
	h.add(0, enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, nil)
	wt := h.add(0, enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, nil)
	h.add(5000, enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_WorkflowTaskTimedOutEventAttributes{WorkflowTaskTimedOutEventAttributes: &historypb.WorkflowTaskTimedOutEventAttributes{
			ScheduledEventId: wt, TimeoutType: enums.TIMEOUT_TYPE_SCHEDULE_TO_START}}
	})
	act := h.add(5001, enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, nil)
	h.add(35001, enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_ActivityTaskTimedOutEventAttributes{ActivityTaskTimedOutEventAttributes: &historypb.ActivityTaskTimedOutEventAttributes{
			ScheduledEventId: act, Failure: &failurepb.Failure{Message: "activity StartToClose timeout"}}}
	})
	h.add(35002, enums.EVENT_TYPE_MARKER_RECORDED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_MarkerRecordedEventAttributes{MarkerRecordedEventAttributes: &historypb.MarkerRecordedEventAttributes{
			MarkerName: "LocalActivity", Failure: &failurepb.Failure{Message: "boom"}}}
	})
	h.add(35003, enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, nil)
	f := analyze(h.events)
	if f.WorkflowTaskTimedOut != 1 || f.ActivityTimedOut != 1 || f.LocalActivityFailed != 1 || f.Markers != 1 {
		t.Errorf("timed out: workflow tasks %d, activities %d; local activities failed %d, markers %d; want 1 each",
			f.WorkflowTaskTimedOut, f.ActivityTimedOut, f.LocalActivityFailed, f.Markers)
	}
	if f.WorkflowTask != 5*time.Second || f.ActivityRun != 0 {
		t.Errorf("workflow task %v, activity run %v; want 5s, 0 (it never started)", f.WorkflowTask, f.ActivityRun)
	}
	if f.Completed() || len(f.Failures) != 3 || !strings.Contains(f.Failures[0], "ScheduleToStart") {
		t.Errorf("completed %v, failures %q", f.Completed(), f.Failures)
	}
	l := &LostResults{}
	b := &bench{}
	*l = *b.lostResults(t.Context(), observation{}, []string{"w", "gone"}, map[string]histFacts{"w": f})
	if l.Workflows != 1 || l.HistoriesNotRead != 1 || l.NotCompleted != 1 || l.Total() != 5 {
		t.Errorf("lost results %+v, total %d; want 1 workflow, 1 not read, 1 not completed, total 5", l, l.Total())
	}
}

func TestPartsOf(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f := analyze(twoStepHit(t0, 1))
	cases := []struct {
		name   string
		seenMs int
		want   hitParts
	}{
		{"seen after the close", 115, hitParts{gateway: 10, wft: 15, s2s: 5, run: 60, other: 10, closeToSeen: 15, total: 115}},
		{"seen before the close", 95, hitParts{gateway: 10, wft: 15, s2s: 5, run: 60, other: 10, closeToSeen: -5, total: 95}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := partsOf(hitTiming{ID: "v", Sent: t0, Seen: t0.Add(time.Duration(c.seenMs) * time.Millisecond)}, f)
			if !ok || got != c.want {
				t.Errorf("parts %+v (ok %v), want %+v", got, ok, c.want)
			}
			p := got
			if sum := p.gateway + p.wft + p.s2s + p.run + p.other + p.closeToSeen; sum != p.total {
				t.Errorf("parts add up to %v, total %v", sum, p.total)
			}
		})
	}
	if _, ok := partsOf(hitTiming{Sent: t0, Seen: t0}, analyze(twoStepHit(t0, 1)[:16])); ok {
		t.Error("an open workflow was split")
	}
}

func TestBreakdownMedians(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	facts := map[string]histFacts{}
	var hits []hitTiming
	for i, seen := range []int{110, 120, 200} {
		id := string(rune('a' + i))
		facts[id] = analyze(twoStepHit(t0, 1))
		hits = append(hits, hitTiming{ID: id, Sent: t0, Seen: t0.Add(time.Duration(seen) * time.Millisecond)})
	}
	hits = append(hits, hitTiming{ID: "unread", Sent: t0, Seen: t0})
	got := breakdown(hits, facts)
	want := HitBreakdown{Samples: 3, GatewayMs: 10, WorkflowTaskMs: 15, ScheduleToStartMs: 5, ActivityRunMs: 60,
		OtherInHistoryMs: 10, CloseToSeenMs: 20, TotalMs: 120, ActivitiesPerHit: 2, WorkflowTasksPerHit: 3, EventsPerHit: 17}
	if got == nil || *got != want {
		t.Errorf("breakdown %+v, want %+v", got, want)
	}
	if breakdown(hits[3:], facts) != nil {
		t.Error("a breakdown without a history")
	}
}

func TestProcessGroup(t *testing.T) {
	for comm, want := range map[string]string{
		"imagevol-devser": groupTemporal, "temporal-server": groupTemporal, "imagevol-worker": groupWorkers,
		"imagevol-gatewa": groupGateway, "mariadbd": groupDatabase, "postgres": groupPostgres,
		"ceph-osd": groupOSD, "ceph-mon": groupMon, "ceph-mgr": groupOther, "imagevol-bench": groupBench,
		"glance-api": groupOther, "kworker/0:1": groupOther,
	} {
		if got := processGroup(comm); got != want {
			t.Errorf("processGroup(%q) = %q, want %q", comm, got, want)
		}
	}
}

func TestCPUPerHit(t *testing.T) {
	before := cpuSnapshot{busy: 1000, procs: map[int]procCPU{
		1: {"imagevol-devser", 100}, 2: {"imagevol-worker", 50}, 3: {"imagevol-worker", 10},
		4: {"mariadbd", 7}, 5: {"bash", 3},
	}}
	after := cpuSnapshot{busy: 1100, procs: map[int]procCPU{
		1: {"imagevol-devser", 140}, 2: {"imagevol-worker", 60}, 3: {"imagevol-worker", 20},
		4: {"mariadbd", 7},  // idle: left out
		5: {"postgres", 5},  // a new process under pid 5: counted from zero
		6: {"ceph-osd", 10}, // started in between
	}}
	got := cpuPerHit(before, after, 10)
	// ticks are 10 ms: 40 ticks over 10 hits = 40 ms per hit
	want := map[string]float64{groupTemporal: 40, groupWorkers: 20, groupPostgres: 5, groupOSD: 10, groupTotal: 100}
	if len(got) != len(want) {
		t.Fatalf("cpuPerHit = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v ms per hit, want %v", k, got[k], v)
		}
	}
	if cpuPerHit(before, after, 0) != nil {
		t.Error("CPU per hit without a hit")
	}
	if line := cpuLine(got); !strings.HasPrefix(line, "temporal 40.0 · workers 20.0 · postgres 5.0 · ceph-osd 10.0 · total 100.0") {
		t.Errorf("cpuLine = %q", line)
	}
}

func TestParseCounters(t *testing.T) {
	text := `# HELP temporal_request_failure_total x
# TYPE temporal_request_failure_total counter
temporal_request_failure_total{namespace="default",operation="RespondActivityTaskCompleted",status_code="DEADLINE_EXCEEDED"} 2
temporal_request_failure_total{namespace="default",operation="RespondActivityTaskCompleted",status_code="UNAVAILABLE"} 1
temporal_request_total{operation="RespondActivityTaskCompleted"} 500
temporal_request_resource_exhausted_total{cause="RESOURCE_EXHAUSTED_CAUSE_BUSY_WORKFLOW",operation="DescribeWorkflowExecution"} 4
temporal_activity_execution_failed_total{activity_type="CloneVolume"} 3
temporal_workflow_task_execution_failed_total 0
`
	got, err := parseCounters(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"temporal_request_failure_total{RespondActivityTaskCompleted}":                                                3,
		"temporal_activity_execution_failed_total":                                                                    3,
		"temporal_workflow_task_execution_failed_total":                                                               0,
		"temporal_request_resource_exhausted_total{DescribeWorkflowExecution,RESOURCE_EXHAUSTED_CAUSE_BUSY_WORKFLOW}": 4,
	}
	if len(got) != len(want) {
		t.Fatalf("parseCounters = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	rise := counterRise(map[string]float64{"a": 1, "b": 2}, map[string]float64{"a": 1, "b": 5, "c": 1})
	if len(rise) != 2 || rise["b"] != 3 || rise["c"] != 1 {
		t.Errorf("counterRise = %v", rise)
	}
}

func TestMatchLines(t *testing.T) {
	log := `time=1 level=INFO msg="Task processing failed with error" Error="context deadline exceeded"
time=2 level=INFO msg="volume provisioned"
time=3 level=WARN msg="Failed to poll for task." Error="RESOURCE_EXHAUSTED: resource exhausted"
time=4 level=INFO msg="Task processing failed with error" Error="RespondActivityTaskCompleted: unavailable"
`
	counts := map[string]int{}
	firsts := 0
	for _, m := range matchLines(strings.NewReader(log), logPatterns) {
		counts[m.pattern]++
		if m.first {
			firsts++
		}
	}
	want := map[string]int{"Task processing failed": 2, "context deadline exceeded": 1, "resource exhausted": 1,
		"ResourceExhausted": 0, "RespondActivityTaskCompleted": 1}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%q: %d lines, want %d (all: %v)", k, counts[k], v, counts)
		}
	}
	if firsts != 4 {
		t.Errorf("%d first lines, want 4", firsts)
	}
}
