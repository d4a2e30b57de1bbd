package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// hitRows adds the table rows of the hit figures that follow hit_throughput_per_s.
func hitRows(row func(fig, val, floor, ratio, target, met string), r *Result) {
	row("hit_throughput_50_per_s", num(r.HitThroughput50PerS, 2, " /s"), "", "", "reported", "")
	total := "null"
	if v, ok := r.CPUMsPerHit[groupTotal]; ok {
		total = fmt.Sprintf("%.1f ms total (by process below)", v)
	}
	row("cpu_ms_per_hit", total, "", "", "reported", "")
	row("lost_results (throughput runs)", lostValue(r.LostResults), "", "", "0", lostMet(r.LostResults))
	row("lost_results_run (every provision)", lostValue(r.LostResultsRun), "", "", "0", lostMet(r.LostResultsRun))
}

func lostValue(l *LostResults) string {
	if l == nil {
		return "null"
	}
	return fmt.Sprintf("%d in histories · %d SDK failures · %d log lines (%d workflows)", l.HistoryTotal(), l.SDKTotal(), l.LogTotal(), l.Workflows)
}

func lostMet(l *LostResults) string {
	if l == nil {
		return "n/a"
	}
	return yesNo(l.Total() == 0)
}

// hitDetails adds the detail lines of the hit figures.
func hitDetails(sb *strings.Builder, r *Result) {
	d := r.Details
	fmt.Fprintf(sb, "- throughput at %d in flight: %d hits in %.0f s, %d after the window (median %s); %d not hits, %d failed; status polls per provision: %.1f at %d in flight, %.1f at %d\n",
		d.Throughput50.InFlight, d.Throughput50.Completed, r.Meta.Iterations.ThroughputSeconds, d.Throughput50.Late,
		num(d.Throughput50.LatencyP50Ms, 0, " ms"), d.Throughput50.NonHits, d.Throughput50.Errors,
		d.ThroughputPollsPerHit, r.Meta.Iterations.ThroughputInFlight, d.Throughput50.PollsPerHit, d.Throughput50.InFlight)
	fmt.Fprintf(sb, "- cpu_ms_per_hit (%d in flight, start → last hit done, ÷ every hit done): %s\n",
		r.Meta.Iterations.ThroughputInFlight, cpuLine(r.CPUMsPerHit))
	if c := d.ThroughputCPU; c != nil {
		var top []string
		for _, p := range c.Top {
			top = append(top, fmt.Sprintf("%s %.2f", p.Name, p.CoreSeconds))
		}
		fmt.Fprintf(sb, "- CPU over that run: %.2f core-seconds, %.0f%% of the machine's cores; by process: %s\n",
			c.CoreSeconds, 100*c.Utilization, strings.Join(top, ", "))
	}
	fmt.Fprintf(sb, "- hit breakdown (sequential hits): %s\n", r.HitBreakdown.String())
	fmt.Fprintf(sb, "- hit breakdown (%d in flight): %s\n", r.Meta.Iterations.ThroughputInFlight, d.HitBreakdownLoad.String())
	fmt.Fprintf(sb, "- lost results (throughput runs): %s\n", lostLine(r.LostResults))
	fmt.Fprintf(sb, "- lost results (every provision of the run): %s\n", lostLine(r.LostResultsRun))
}

// lostLine is a LostResults on one line.
func lostLine(l *LostResults) string {
	if l == nil {
		return "null"
	}
	s := fmt.Sprintf("%d workflows (%d histories not read, %d not completed); activities timed out %d, failed %d, retried %d (%d extra attempts); workflow tasks timed out %d, failed %d; local activities failed %d",
		l.Workflows, l.HistoriesNotRead, l.NotCompleted, l.ActivityTimedOut, l.ActivityFailed, l.ActivityRetried,
		l.ExtraAttempts, l.WorkflowTaskTimedOut, l.WorkflowTaskFailed, l.LocalActivityFailed)
	switch {
	case l.SDKCounters == nil:
		s += "; SDK counters not scraped"
	default:
		s += "; SDK failure counters: " + mapLine(l.SDKCounters)
	}
	switch {
	case l.LogLines == nil:
		s += "; logs not read"
	default:
		s += "; log lines of " + strings.Join(l.LogsRead, ", ") + ": " + mapLine(l.LogLines)
	}
	if len(l.Samples) > 0 {
		s += "; e.g. " + strings.Join(l.Samples, " | ")
	}
	if len(l.HistoriesSaved) > 0 {
		s += "; histories saved: " + strings.Join(l.HistoriesSaved, ", ")
	}
	return s
}

func mapLine[V int | float64](m map[string]V) string {
	if len(m) == 0 {
		return "all 0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// stackTable compares the hit figures of the main run's Temporal server with the standalone one.
func stackTable(sb *strings.Builder, r *Result) {
	if r.Standalone == nil {
		return
	}
	sb.WriteString("\n## Cache hits by Temporal server\n\n")
	sb.WriteString("| stack | hit p50 / floor p50 | hit p99 / floor p99 | hits/s at 20 · 50 | events per hit | CPU ms per hit | lost results |\n|---|---|---|---|---|---|---|\n")
	main := hitRowOf(r)
	main.Stack = "dev server: " + main.Stack
	sa := *r.Standalone
	sa.Stack = "standalone on PostgreSQL: " + sa.Stack
	for _, h := range []HitRow{main, sa} {
		ev := "null"
		if h.TemporalEventsPerHit != nil {
			ev = fmt.Sprint(*h.TemporalEventsPerHit)
		}
		fmt.Fprintf(sb, "| %s | %s / %s (%s) | %s / %s (%s) | %s · %s | %s | %s | %s |\n", h.Stack,
			num(h.HitP50Ms, 1, " ms"), num(h.FloorP50Ms, 1, " ms"), ratio(h.HitP50Ms, h.FloorP50Ms),
			num(h.HitP99Ms, 1, " ms"), num(h.FloorP99Ms, 1, " ms"), ratio(h.HitP99Ms, h.FloorP99Ms),
			num(h.HitThroughputPerS, 2, ""), num(h.HitThroughput50PerS, 2, ""), ev, cpuLine(h.CPUMsPerHit),
			lostValue(h.LostResults))
	}
	fmt.Fprintf(sb, "\nStandalone run: %s, load average %s; hit breakdown %s; lost results of every provision: %s\n",
		sa.Date, sa.LoadAvg, sa.HitBreakdown.String(), lostLine(sa.LostResultsRun))
	for _, n := range sa.Notes {
		fmt.Fprintf(sb, "- standalone: %s\n", n)
	}
}

// atMostTimes says whether v ≤ k × floor.
func atMostTimes(v, floor *float64, k float64) string {
	if v == nil || floor == nil {
		return "n/a"
	}
	return yesNo(*v <= k**floor)
}
