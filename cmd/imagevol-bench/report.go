package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Result is latest.json: every figure of one run (null when its case failed or could not be
// measured), the floors beside them, the run's metadata, details and notes.
type Result struct {
	HitP50Ms             *float64           `json:"hit_p50_ms"`               // cache-hit provision, 202 → available, median
	HitP95Ms             *float64           `json:"hit_p95_ms"`               // … 95th percentile
	HitP99Ms             *float64           `json:"hit_p99_ms"`               // … 99th percentile
	FloorP50Ms           *float64           `json:"floor_p50_ms"`             // go-ceph clone + resize of the same snapshot, median
	MissRawMiBs          *float64           `json:"miss_raw_mib_s"`           // raw image bytes / seconds, request → available, on a miss
	GlanceDownloadMiBs   *float64           `json:"glance_download_mib_s"`    // plain GET of the same image
	SHA512MiBs           *float64           `json:"sha512_mib_s"`             // crypto/sha512 over its bytes in memory
	RBDImportMiBs        *float64           `json:"rbd_import_mib_s"`         // `rbd import` of its local file
	MissRawFloorMiBs     *float64           `json:"miss_raw_floor_mib_s"`     // the slowest of the three above
	MissQcow2MiBs        *float64           `json:"miss_qcow2_mib_s"`         // qcow2 miss, virtual bytes / seconds
	QemuImgMiBs          *float64           `json:"qemu_img_mib_s"`           // qemu-img convert of the same qcow2 file into RBD
	MissSBySize          map[string]float64 `json:"miss_s_by_size"`           // miss seconds by image size ("256MiB", "1GiB", "4GiB")
	WorkerRSSPeakMiB     *float64           `json:"worker_rss_peak_mib"`      // highest worker VmHWM over the miss cases
	WorkerRSSBySizeMiB   map[string]float64 `json:"worker_rss_by_size_mib"`   // worker VmHWM during each miss of MissSBySize
	BurstRequests        int                `json:"burst_requests"`           // concurrent creates of one uncached image
	BurstHosts           *int               `json:"burst_hosts"`              // distinct hosts their volumes landed on
	BurstDownloads       *int64             `json:"burst_downloads"`          // downloads they caused (GET /v1/cache/stats delta)
	BurstWallS           *float64           `json:"burst_wall_s"`             // first request → last final state
	HitThroughputPerS    *float64           `json:"hit_throughput_per_s"`     // cache hits reaching available per second, InFlight at a time
	TemporalEventsPerHit *int               `json:"temporal_events_per_hit"`  // history events of one cache-hit workflow
	MissGlanceRBDMs      *float64           `json:"miss_glance_rbd_ms"`       // RawSize raw miss with Glance on RBD, request → available
	MissRawS             *float64           `json:"miss_raw_s"`               // RawSize raw miss seconds, median over the rounds
	MissRawBoundS        *float64           `json:"miss_raw_bound_s"`         // max(slowest raw stage's wall, Σ stage core-s ÷ cores)
	ByHandRawS           *float64           `json:"by_hand_raw_s"`            // curl | tee >(sha512sum) | rbd import -, checked
	MissQcow2S           *float64           `json:"miss_qcow2_s"`             // qcow2 miss seconds
	MissQcow2BoundS      *float64           `json:"miss_qcow2_bound_s"`       // download stages' bound + qemu-img convert's
	ByHandQcow2S         *float64           `json:"by_hand_qcow2_s"`          // curl -o; sha512sum; qemu-img convert -W, checked
	MissFixedMs          *float64           `json:"miss_fixed_ms"`            // FixedSize miss minus its bytes at the RateSize miss rate
	WorkerRSSPeakRunsMiB []float64          `json:"worker_rss_peak_mib_runs"` // per round of misses by size: the highest VmHWM
	MissStages           []Stage            `json:"miss_stages"`              // each stage of a miss done alone, with machine-wide CPU
	ByHand               []Stage            `json:"by_hand"`                  // the by-hand pipelines, with machine-wide CPU
	MissPaths            map[string]string  `json:"miss_paths"`               // how each measured miss got its data: download or clone
	Meta                 Meta               `json:"meta"`                     // when, on what, with which sizes and counts
	Details              Details            `json:"details"`                  // samples and counts behind the figures
	Notes                []string           `json:"notes"`                    // what went wrong or differs from the plan

	HitFigures // floor p99, throughput at 50, CPU per hit, breakdown, lost results, standalone row
}

// Meta describes the run: when, on what, with which sizes and counts. Its fields, and those of
// SizesMeta, IterationsMeta, PollMeta and Details, are the JSON fields named in their tags.
type Meta struct {
	Date         string         `json:"date"`
	GitCommit    string         `json:"git_commit"`
	GitDirty     bool           `json:"git_dirty"`
	Quick        bool           `json:"quick"`
	NProc        int            `json:"nproc"`
	MemTotalMiB  int64          `json:"mem_total_mib"`
	GoVersion    string         `json:"go_version"`
	LoadAvgStart string         `json:"loadavg_start"`
	LoadAvgEnd   string         `json:"loadavg_end"`
	DiskFreeGiB  float64        `json:"disk_free_gib"`
	CephAvailGiB float64        `json:"ceph_avail_gib"`
	WallSeconds  float64        `json:"wall_s"`
	RunID        string         `json:"run_id"`
	Host         string         `json:"host"`
	Pool         string         `json:"pool"`
	BurstHosts   []string       `json:"burst_hosts"`
	Sizes        SizesMeta      `json:"sizes"`
	Iterations   IterationsMeta `json:"iterations"`
	PollMs       PollMeta       `json:"poll_ms"`
}

// SizesMeta are the image sizes of the run.
type SizesMeta struct {
	MissBySize   []string `json:"miss_by_size"`
	Raw          string   `json:"raw"`
	Qcow2Virtual string   `json:"qcow2_virtual"`
	HitImage     string   `json:"hit_image"`
	HitVolumeGiB int      `json:"hit_volume_gib"`
	Burst        string   `json:"burst"`
	Fixed        string   `json:"fixed"`      // the images of miss_fixed_ms
	FixedRate    string   `json:"fixed_rate"` // the miss whose rate they are streamed at
	Pattern      string   `json:"pattern"`
}

// IterationsMeta are the counts of the run.
type IterationsMeta struct {
	Hits               int     `json:"hits"`
	FloorClones        int     `json:"floor_clones"`
	BurstRequests      int     `json:"burst_requests"`
	ThroughputSeconds  float64 `json:"throughput_s"`
	ThroughputInFlight int     `json:"throughput_in_flight"`
	MissRounds         int     `json:"miss_rounds"`  // rounds of misses by size
	FixedMisses        int     `json:"fixed_misses"` // misses of miss_fixed_ms
}

// PollMeta are the status poll intervals of the cases.
type PollMeta struct {
	Latency    int64 `json:"latency"`
	Miss       int64 `json:"miss"`
	Throughput int64 `json:"throughput"`
	Burst      int64 `json:"burst"`
}

// Details are the samples and counts behind the figures.
type Details struct {
	HitLatenciesMs      []float64          `json:"hit_latencies_ms"`
	FloorLatenciesMs    []float64          `json:"floor_latencies_ms"`
	HitAcceptP50Ms      *float64           `json:"hit_accept_p50_ms"`
	FloorP95Ms          *float64           `json:"floor_p95_ms"`
	HitNonHits          int                `json:"hit_non_hits"`
	TemporalWorkflowID  string             `json:"temporal_workflow_id"`
	RawFloorBoundBy     string             `json:"raw_floor_bound_by"`
	MissQcow2Seconds    *float64           `json:"miss_qcow2_s"`
	WorkerRSSQcow2MiB   *float64           `json:"worker_rss_qcow2_mib"`
	MissSPerGiB         map[string]float64 `json:"miss_s_per_gib"`
	ThroughputCompleted int                `json:"throughput_completed"`
	ThroughputNonHits   int                `json:"throughput_non_hits"`
	ThroughputErrors    int                `json:"throughput_errors"`
	// ThroughputLatencyP50Ms is the median request → available of the counted provisions.
	ThroughputLatencyP50Ms *float64       `json:"throughput_latency_p50_ms"`
	HostField              bool           `json:"host_field"`
	CacheStatsServed       bool           `json:"cache_stats_served"`
	BurstOutcomes          map[string]int `json:"burst_outcomes"`
	// MissRawCPU is where the machine's CPU went during the raw miss: with every core busy, a
	// faster miss needs less work, not more overlap.
	MissRawCPU *CPUUse `json:"miss_raw_cpu,omitempty"`
	// MissQcow2CPU is the same for the qcow2 miss.
	MissQcow2CPU     *CPUUse              `json:"miss_qcow2_cpu,omitempty"`
	MissRawBoundBy   string               `json:"miss_raw_bound_by"`
	MissQcow2BoundBy string               `json:"miss_qcow2_bound_by"`
	MissSBySizeRuns  map[string][]float64 `json:"miss_s_by_size_runs"` // every round's seconds
	MissFixedS       []float64            `json:"miss_fixed_s"`
	MissFixedVolume  string               `json:"miss_fixed_volume"`
	// MissFixedTimeline is where that volume's time went: the spans of its provision's and its
	// fill's workflow histories, from the create request on.
	MissFixedTimeline []Span `json:"miss_fixed_timeline,omitempty"`

	HitDetails
}

// CPUUse is the CPU a case used, machine-wide.
type CPUUse struct {
	CoreSeconds float64      `json:"core_s"`      // busy core-seconds of the whole machine
	Utilization float64      `json:"utilization"` // CoreSeconds / (wall seconds × cores)
	Top         []ProcessCPU `json:"top"`         // the biggest consumers, by process name
}

// ProcessCPU is the CPU time of the processes of one name.
type ProcessCPU struct {
	Name        string  `json:"name"`
	CoreSeconds float64 `json:"core_s"`
}

// finish derives the figures computed from others.
func (r *Result) finish() {
	var peak *float64
	for _, v := range r.WorkerRSSBySizeMiB {
		if peak == nil || v > *peak {
			peak = ptr(v)
		}
	}
	for _, v := range append(slices.Clone(r.WorkerRSSPeakRunsMiB), deref(r.Details.WorkerRSSQcow2MiB)) {
		if !math.IsNaN(v) && (peak == nil || v > *peak) {
			peak = ptr(v)
		}
	}
	r.WorkerRSSPeakMiB = peak
	if r.MissQcow2S == nil {
		r.MissQcow2S = r.Details.MissQcow2Seconds
	}
	r.Details.MissSPerGiB = map[string]float64{}
	for _, k := range r.Meta.Sizes.MissBySize {
		if s, ok := r.MissSBySize[k]; ok {
			r.Details.MissSPerGiB[k] = round(s/(float64(parseSize(k))/float64(gib)), 2)
		}
	}
}

// writeResults writes latest.json, latest.md and the two plots.
func writeResults(logger *slog.Logger, dir string, r *Result) error {
	r.finish()
	// A plot that cannot be drawn (no samples) is noted in the report, not fatal.
	if err := plotHitLatency(filepath.Join(dir, "hit_latency.png"), r); err != nil {
		logger.Warn("hit_latency.png not drawn", "err", err)
		r.Notes = append(r.Notes, "hit_latency.png not drawn: "+err.Error())
	}
	if err := plotMissBySize(filepath.Join(dir, "miss_by_size.png"), r); err != nil {
		logger.Warn("miss_by_size.png not drawn", "err", err)
		r.Notes = append(r.Notes, "miss_by_size.png not drawn: "+err.Error())
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "latest.md"), []byte(markdown(r)), 0o644)
}

// markdown renders the figures table with floors, ratios and targets.
func markdown(r *Result) string {
	var sb strings.Builder
	m := r.Meta
	mode := "full"
	if m.Quick {
		mode = "quick (BENCH_QUICK=1: small sizes and counts; the targets are meant for a full run)"
	}
	commit := m.GitCommit
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if m.GitDirty {
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(&sb, "# imagevol benchmark\n\n")
	fmt.Fprintf(&sb, "%s · commit %s · %d CPUs, %.1f GiB RAM · mode %s · wall %.0f s · load average %s at start, %s at end\n\n",
		m.Date, commit, m.NProc, float64(m.MemTotalMiB)/1024, mode, m.WallSeconds, m.LoadAvgStart, m.LoadAvgEnd)
	sb.WriteString("Every floor was measured in the same run on the same cluster. Figures from a shared 2-core machine are indicative.\n\n")
	sb.WriteString("| figure | value | floor | ratio | target | met? |\n|---|---|---|---|---|---|\n")
	row := func(fig, val, floor, ratio, target, met string) {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s |\n", fig, val, floor, ratio, target, met)
	}

	// Cache hits.
	hitMet := "n/a"
	if r.HitP50Ms != nil {
		ok := *r.HitP50Ms <= 200
		if r.FloorP50Ms != nil {
			ok = ok && *r.HitP50Ms <= 2**r.FloorP50Ms
		} else {
			ok = false
		}
		hitMet = yesNo(ok)
	}
	row("hit_p50_ms", num(r.HitP50Ms, 1, " ms"), "floor_p50_ms "+num(r.FloorP50Ms, 1, " ms"), ratio(r.HitP50Ms, r.FloorP50Ms),
		"≤ 200 ms and ≤ 2 × floor", hitMet)
	row("hit_p95_ms", num(r.HitP95Ms, 1, " ms"), "floor p95 "+num(r.Details.FloorP95Ms, 1, " ms"), ratio(r.HitP95Ms, r.Details.FloorP95Ms), "—", "")
	row("hit_p99_ms", num(r.HitP99Ms, 1, " ms"), "floor_p99_ms "+num(r.FloorP99Ms, 1, " ms"), ratio(r.HitP99Ms, r.FloorP99Ms),
		"≤ 3 × floor p99", atMostTimes(r.HitP99Ms, r.FloorP99Ms, 3))

	// Misses.
	bound := ""
	if r.Details.RawFloorBoundBy != "" {
		bound = " (" + r.Details.RawFloorBoundBy + ")"
	}
	row("miss_raw_mib_s", num(r.MissRawMiBs, 1, " MiB/s"), "miss_raw_floor_mib_s "+num(r.MissRawFloorMiBs, 1, " MiB/s")+bound,
		ratio(r.MissRawMiBs, r.MissRawFloorMiBs), "≥ 0.9 × floor", atLeast(r.MissRawMiBs, r.MissRawFloorMiBs, 0.9))
	row("miss_qcow2_mib_s", num(r.MissQcow2MiBs, 1, " MiB/s"), "qemu_img_mib_s "+num(r.QemuImgMiBs, 1, " MiB/s"),
		ratio(r.MissQcow2MiBs, r.QemuImgMiBs), "≥ 0.9 × floor", atLeast(r.MissQcow2MiBs, r.QemuImgMiBs, 0.9))
	missRows(row, r)
	storeMet := "n/a"
	if r.MissGlanceRBDMs != nil && r.HitP50Ms != nil {
		storeMet = yesNo(*r.MissGlanceRBDMs <= 2**r.HitP50Ms)
	}
	row("miss_glance_rbd_ms", num(r.MissGlanceRBDMs, 1, " ms"), "hit_p50_ms "+num(r.HitP50Ms, 1, " ms"),
		ratio(r.MissGlanceRBDMs, r.HitP50Ms), "≤ 2 × hit p50", storeMet)
	if len(r.MissPaths) > 0 {
		keys := slices.Sorted(maps.Keys(r.MissPaths))
		paths := make([]string, len(keys))
		for i, k := range keys {
			paths[i] = k + ": " + r.MissPaths[k]
		}
		row("miss_paths", strings.Join(paths, ", "), "", "", "—", "")
	}
	prev := 0.0
	for i, k := range m.Sizes.MissBySize {
		s, ok := r.MissSBySize[k]
		if !ok {
			row("miss_s_by_size "+k, "null", "", "", "s/GiB not above the smaller size's (+10%)", "n/a")
			prev = 0
			continue
		}
		per := r.Details.MissSPerGiB[k]
		floorS, fr := "", ""
		if r.MissRawFloorMiBs != nil && *r.MissRawFloorMiBs > 0 {
			f := float64(parseSize(k)) / float64(mib) / *r.MissRawFloorMiBs
			floorS = fmt.Sprintf("%.2f s at the raw floor rate", f)
			fr = fmt.Sprintf("%.2f", f/s)
		}
		met := "—"
		if i > 0 && prev > 0 {
			met = yesNo(per <= prev*1.1)
		}
		row("miss_s_by_size "+k, fmt.Sprintf("%.2f s (%.2f s/GiB)", s, per), floorS, fr, "s/GiB not above the smaller size's (+10%)", met)
		prev = per
	}

	// Worker memory.
	row("worker_rss_peak_mib", num(r.WorkerRSSPeakMiB, 1, " MiB"), "", "", "≤ 160 MiB", atMost(r.WorkerRSSPeakMiB, rssLimitMiB))
	runs, runsMet := make([]string, len(r.WorkerRSSPeakRunsMiB)), "n/a"
	for i, v := range r.WorkerRSSPeakRunsMiB {
		runs[i] = fmt.Sprintf("%.1f", v)
		if i == 0 || runsMet == "yes" {
			runsMet = atMost(ptr(v), rssLimitMiB)
		}
	}
	row("worker_rss_peak_mib_runs", orNull(strings.Join(runs, " · "), " MiB"), "", "", "≤ 160 MiB in every round", runsMet)
	var parts []string
	var small, large *float64
	for _, k := range m.Sizes.MissBySize {
		if v, ok := r.WorkerRSSBySizeMiB[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, v))
			if small == nil {
				small = ptr(v)
			}
			large = ptr(v)
		}
	}
	flat := "n/a"
	if small != nil && len(parts) == len(m.Sizes.MissBySize) {
		flat = yesNo(*large <= 1.25**small)
	}
	row("worker_rss_by_size_mib", orNull(strings.Join(parts, " · "), " MiB"), "", ratio(large, small)+" (largest/smallest)",
		"flat: largest size ≤ 1.25 × smallest", flat)

	// Burst.
	dl := "null"
	dlMet := "n/a"
	if r.BurstDownloads != nil {
		dl = fmt.Sprint(*r.BurstDownloads)
		dlMet = yesNo(*r.BurstDownloads == 1)
	}
	row("burst_downloads", dl, "", "", "= 1", dlMet)
	hosts := "null"
	if r.BurstHosts != nil {
		hosts = fmt.Sprint(*r.BurstHosts)
	}
	row("burst_requests / burst_hosts", fmt.Sprintf("%d / %s", r.BurstRequests, hosts), "", "", "—", "")
	row("burst_wall_s", num(r.BurstWallS, 2, " s"), "", "", "—", "")

	// Throughput and history.
	row("hit_throughput_per_s", num(r.HitThroughputPerS, 2, " /s"), "", "", "≥ 30 /s", atLeast(r.HitThroughputPerS, ptr(30.0), 1))
	ev := "null"
	if r.TemporalEventsPerHit != nil {
		ev = fmt.Sprint(*r.TemporalEventsPerHit)
	}
	evMet := "n/a"
	if r.TemporalEventsPerHit != nil {
		evMet = yesNo(*r.TemporalEventsPerHit <= 12)
	}
	row("temporal_events_per_hit", ev, "", "", "≤ 12", evMet)
	hitRows(row, r)

	sb.WriteString("\n## Floors and details\n\n")
	fmt.Fprintf(&sb, "- raw miss floor parts: glance_download_mib_s %s, sha512_mib_s %s, rbd_import_mib_s %s\n",
		num(r.GlanceDownloadMiBs, 1, ""), num(r.SHA512MiBs, 1, ""), num(r.RBDImportMiBs, 1, ""))
	if c := r.Details.MissRawCPU; c != nil {
		var top []string
		for _, p := range c.Top {
			top = append(top, fmt.Sprintf("%s %.2f", p.Name, p.CoreSeconds))
		}
		fmt.Fprintf(&sb, "- CPU during the raw miss: %.2f core-seconds busy, %.0f%% of the machine's cores; by process: %s\n",
			c.CoreSeconds, 100*c.Utilization, strings.Join(top, ", "))
	}
	stageLines(&sb, r)
	fmt.Fprintf(&sb, "- hit: 202 after %s (p50 of the request itself); %d of %d provisions were not hits\n",
		num(r.Details.HitAcceptP50Ms, 1, " ms"), r.Details.HitNonHits, m.Iterations.Hits)
	fmt.Fprintf(&sb, "- qcow2 miss: %s; worker RSS peak %s\n", num(r.Details.MissQcow2Seconds, 2, " s"), num(r.Details.WorkerRSSQcow2MiB, 1, " MiB"))
	fmt.Fprintf(&sb, "- throughput: %d hits completed in %.0f s with %d in flight (median %s request → available); %d not hits, %d failed\n",
		r.Details.ThroughputCompleted, m.Iterations.ThroughputSeconds, m.Iterations.ThroughputInFlight,
		num(r.Details.ThroughputLatencyP50Ms, 0, " ms"), r.Details.ThroughputNonHits, r.Details.ThroughputErrors)
	hitDetails(&sb, r)
	fmt.Fprintf(&sb, "- burst: \"host\" field accepted: %v; /v1/cache/stats served: %v; outcomes %s\n",
		r.Details.HostField, r.Details.CacheStatsServed, outcomes(r.Details.BurstOutcomes))
	fmt.Fprintf(&sb, "- sizes: misses %s, qcow2 %s virtual, hit image %s cloned to %d GiB volumes, burst %s; pattern: %s\n",
		strings.Join(m.Sizes.MissBySize, ", "), m.Sizes.Qcow2Virtual, m.Sizes.HitImage, m.Sizes.HitVolumeGiB, m.Sizes.Burst, m.Sizes.Pattern)
	fmt.Fprintf(&sb, "- counts: %d hits, %d floor clones, %d burst requests; polls every %d ms (hits), %d ms (misses), %d ms (throughput), %d ms (burst)\n",
		m.Iterations.Hits, m.Iterations.FloorClones, m.Iterations.BurstRequests, m.PollMs.Latency, m.PollMs.Miss, m.PollMs.Throughput, m.PollMs.Burst)
	fmt.Fprintf(&sb, "- measured host %s (pool %s); burst hosts %s; %.1f GiB disk and %.1f GiB Ceph free at start\n",
		m.Host, m.Pool, strings.Join(m.BurstHosts, ", "), m.DiskFreeGiB, m.CephAvailGiB)

	stackTable(&sb, r)
	sb.WriteString("\n## Notes\n\n")
	if len(r.Notes) == 0 {
		sb.WriteString("None.\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&sb, "- %s\n", n)
	}
	return sb.String()
}

// rssLimitMiB is the target for the worker's peak RSS at every size and in every round.
const rssLimitMiB = 160

// missRows adds the rows of the misses against their bounds, the by-hand pipelines and the
// fixed cost of a miss.
func missRows(row func(fig, val, floor, ratio, target, met string), r *Result) {
	raw := r.Meta.Sizes.Raw
	row("miss_raw_s ("+raw+")", num(r.MissRawS, 2, " s"), "miss_raw_bound_s "+num(r.MissRawBoundS, 2, " s")+paren(r.Details.MissRawBoundBy),
		ratio(r.MissRawBoundS, r.MissRawS), "≥ 0.9 × bound (≤ bound / 0.9)", atLeast(r.MissRawBoundS, r.MissRawS, 0.9))
	row("miss_raw_s vs by hand", num(r.MissRawS, 2, " s"), "by_hand_raw_s "+num(r.ByHandRawS, 2, " s"),
		ratio(r.ByHandRawS, r.MissRawS), "faster than by hand", atLeast(r.ByHandRawS, r.MissRawS, 1))
	row("miss_qcow2_s ("+r.Meta.Sizes.Qcow2Virtual+")", num(r.MissQcow2S, 2, " s"), "miss_qcow2_bound_s "+num(r.MissQcow2BoundS, 2, " s")+paren(r.Details.MissQcow2BoundBy),
		ratio(r.MissQcow2BoundS, r.MissQcow2S), "≥ 0.9 × bound (≤ bound / 0.9)", atLeast(r.MissQcow2BoundS, r.MissQcow2S, 0.9))
	row("miss_qcow2_s vs by hand", num(r.MissQcow2S, 2, " s"), "by_hand_qcow2_s "+num(r.ByHandQcow2S, 2, " s"),
		ratio(r.ByHandQcow2S, r.MissQcow2S), "faster than by hand", atLeast(r.ByHandQcow2S, r.MissQcow2S, 1))
	fixed := ""
	if len(r.Details.MissFixedS) > 0 {
		fixed = fmt.Sprintf("%s miss %.3f s (median of %d) − its bytes at the %s miss rate", r.Meta.Sizes.Fixed,
			percentile(r.Details.MissFixedS, 50), len(r.Details.MissFixedS), r.Meta.Sizes.FixedRate)
	}
	row("miss_fixed_ms", num(r.MissFixedMs, 1, " ms"), fixed, "", "≤ 150 ms", atMost(r.MissFixedMs, 150))
}

// stageLines describes the stages of a miss done alone and the by-hand pipelines, and where
// the fixed cost of a miss goes.
func stageLines(sb *strings.Builder, r *Result) {
	var parts []string
	for _, s := range append(slices.Clone(r.MissStages), r.ByHand...) {
		parts = append(parts, fmt.Sprintf("%s %.0f MiB %.2f s %.2f core-s", s.Name, s.MiB, s.WallS, s.CoreS))
	}
	if len(parts) > 0 {
		fmt.Fprintf(sb, "- stages alone and by hand (wall, machine-wide busy core-seconds, %d cores): %s\n", r.Meta.NProc, strings.Join(parts, "; "))
	}
	if c := r.Details.MissQcow2CPU; c != nil {
		fmt.Fprintf(sb, "- CPU during the qcow2 miss: %.2f core-seconds busy, %.0f%% of the machine's cores\n", c.CoreSeconds, 100*c.Utilization)
	}
	if len(r.Details.MissFixedTimeline) == 0 {
		return
	}
	parts = parts[:0]
	for _, sp := range r.Details.MissFixedTimeline {
		p := fmt.Sprintf("%s %s @%.0f", sp.Workflow, sp.Step, sp.AtMs)
		if sp.QueueMs != 0 {
			p += fmt.Sprintf(" +%.0f queued", sp.QueueMs)
		}
		if sp.RunMs != 0 {
			p += fmt.Sprintf(" +%.0f run", sp.RunMs)
		}
		parts = append(parts, p)
	}
	fmt.Fprintf(sb, "- fixed-cost miss %s (%s), ms after the create request: %s\n", r.Details.MissFixedVolume, r.Meta.Sizes.Fixed, strings.Join(parts, "; "))
}

// paren is " (s)", or "" for an empty s.
func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// atLeast says whether v ≥ k × floor.
func atLeast(v, floor *float64, k float64) string {
	if v == nil || floor == nil {
		return "n/a"
	}
	return yesNo(*v >= k**floor)
}

func atMost(v *float64, limit float64) string {
	if v == nil {
		return "n/a"
	}
	return yesNo(*v <= limit)
}

func ratio(a, b *float64) string {
	if a == nil || b == nil || *b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", *a / *b)
}

func num(v *float64, prec int, unit string) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprintf("%.*f%s", prec, *v, unit)
}

func orNull(s, unit string) string {
	if s == "" {
		return "null"
	}
	return s + unit
}

func outcomes(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// parseSize reads a sizeKey back into bytes.
func parseSize(k string) int64 {
	var n int64
	if _, err := fmt.Sscanf(k, "%dGiB", &n); err == nil && strings.HasSuffix(k, "GiB") {
		return n * gib
	}
	if _, err := fmt.Sscanf(k, "%dMiB", &n); err == nil {
		return n * mib
	}
	return 0
}

// percentile is the p-th percentile of xs by linear interpolation between closest ranks.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func round(x float64, prec int) float64 {
	f := math.Pow(10, float64(prec))
	return math.Round(x*f) / f
}

func roundAll(xs []float64, prec int) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = round(x, prec)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// deref is *p, or NaN for nil (for logs).
func deref(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}
