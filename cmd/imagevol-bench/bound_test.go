package main

import (
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPipelineBound(t *testing.T) {
	stages := func(s ...Stage) []Stage { return s }
	for _, tc := range []struct {
		name   string
		stages []Stage
		cores  int
		want   Bound
	}{
		{"none", nil, 2, Bound{}},
		{"slowest stage's wall", stages(Stage{Name: "get", WallS: 0.6, CoreS: 0.5}, Stage{Name: "sha512", WallS: 2.8, CoreS: 2.8},
			Stage{Name: "rbd_import", WallS: 3.0, CoreS: 2.4}), 4, Bound{3.0, "wall of rbd_import"}},
		{"CPU shared by 2 cores", stages(Stage{Name: "get", WallS: 0.6, CoreS: 1.2}, Stage{Name: "sha512", WallS: 2.8, CoreS: 2.9},
			Stage{Name: "rbd_import", WallS: 3.0, CoreS: 4.1}), 2, Bound{4.1, "CPU (8.20 core-s / 2 cores)"}},
		{"one stage on one core", stages(Stage{Name: "convert", WallS: 2, CoreS: 3}), 1, Bound{3, "CPU (3.00 core-s / 1 cores)"}},
		{"no cores known: walls only", stages(Stage{Name: "a", WallS: 1, CoreS: 9}), 0, Bound{1, "wall of a"}},
		{"rounded to ms", stages(Stage{Name: "a", WallS: 1.23456}), 2, Bound{1.235, "wall of a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pipelineBound(tc.stages, tc.cores); got != tc.want {
				t.Errorf("pipelineBound = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSerialBound(t *testing.T) {
	got := serialBound(Bound{1.5, "wall of sha512_qcow2"}, Bound{2.25, "CPU (4.50 core-s / 2 cores)"})
	want := Bound{3.75, "wall of sha512_qcow2 + CPU (4.50 core-s / 2 cores)"}
	if got != want {
		t.Errorf("serialBound = %+v, want %+v", got, want)
	}
}

func TestFixedCostMs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		smallS     float64
		smallBytes int64
		largeS     float64
		largeBytes int64
		want       float64
	}{
		// 1 GiB in 4 s is 256 MiB/s: 64 MiB stream in 250 ms.
		{"64 MiB at the 1 GiB rate", 0.4, 64 * mib, 4, gib, 150},
		{"as fast as streaming", 0.25, 64 * mib, 4, gib, 0},
		{"faster than the rate", 0.2, 64 * mib, 4, gib, -50},
		{"no rate", 0.4, 64 * mib, 0, gib, 0},
		{"quick mode's 256 MiB rate", 0.5, 64 * mib, 1, 256 * mib, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fixedCostMs(tc.smallS, tc.smallBytes, tc.largeS, tc.largeBytes); got != tc.want {
				t.Errorf("fixedCostMs = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlanWith(t *testing.T) {
	full := planFor(false)
	if p := full.with(nil, 0); p.Rounds != 5 || p.RawSize != gib || len(p.BySize) != 3 {
		t.Errorf("no overrides changed the plan: %+v", p)
	}
	p := full.with([]int64{4 * gib, 256 * mib}, 2)
	if p.Rounds != 2 || p.BySize[0] != 256*mib || p.BySize[1] != 4*gib {
		t.Errorf("overrides: rounds %d sizes %v", p.Rounds, p.BySize)
	}
	if p.RawSize != 4*gib || p.RateSize != 4*gib {
		t.Errorf("raw %d and rate %d sizes should move to the middle size among the new ones", p.RawSize, p.RateSize)
	}
}

func TestSpansOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) *timestamppb.Timestamp {
		return timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond))
	}
	ev := func(id int64, ms int, typ enums.EventType) *historypb.HistoryEvent {
		return &historypb.HistoryEvent{EventId: id, EventTime: at(ms), EventType: typ}
	}
	sched := ev(5, 40, enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
	sched.Attributes = &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{
		ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{ActivityType: &commonpb.ActivityType{Name: "DownloadImage"}},
	}
	started := ev(6, 55, enums.EVENT_TYPE_ACTIVITY_TASK_STARTED)
	started.Attributes = &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{
		ActivityTaskStartedEventAttributes: &historypb.ActivityTaskStartedEventAttributes{ScheduledEventId: 5},
	}
	done := ev(7, 305, enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
	done.Attributes = &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{
		ActivityTaskCompletedEventAttributes: &historypb.ActivityTaskCompletedEventAttributes{ScheduledEventId: 5},
	}
	events := []*historypb.HistoryEvent{
		ev(1, 20, enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED), sched, started, done,
		ev(8, 400, enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED),
	}
	got := spansOf("fill", events, t0)
	want := []Span{
		{Workflow: "fill", Step: "DownloadImage", AtMs: 40, QueueMs: 15, RunMs: 250},
		{Workflow: "fill", Step: "workflow", AtMs: 20, RunMs: 380},
	}
	if len(got) != len(want) {
		t.Fatalf("spans = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("span %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
