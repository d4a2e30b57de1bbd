package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// HitFigures are the cache-hit figures of the boot-storm work, flattened into Result.
type HitFigures struct {
	FloorP99Ms          *float64           `json:"floor_p99_ms"`            // the clone floor's 99th percentile
	HitThroughput50PerS *float64           `json:"hit_throughput_50_per_s"` // as hit_throughput_per_s, 50 in flight
	CPUMsPerHit         map[string]float64 `json:"cpu_ms_per_hit"`          // CPU ms per hit by process group, InFlight run
	HitBreakdown        *HitBreakdown      `json:"hit_breakdown"`           // where the sequential hits' time went
	LostResults         *LostResults       `json:"lost_results"`            // both throughput runs
	LostResultsRun      *LostResults       `json:"lost_results_run"`        // every provision of the run
	Standalone          *HitRow            `json:"standalone,omitempty"`    // the same on the standalone Temporal server
}

// HitDetails are the samples and counts behind HitFigures, flattened into Details.
type HitDetails struct {
	TemporalAddress  string        `json:"temporal_address"`
	Namespace        string        `json:"temporal_namespace"`
	HitBreakdownLoad *HitBreakdown `json:"hit_breakdown_load"` // the hits of the InFlight throughput run
	Throughput50     LoadDetails   `json:"throughput_50"`
	ThroughputCPU    *CPUUse       `json:"throughput_cpu"` // the machine's CPU over the InFlight run
	// ThroughputPollsPerHit is GET /v1/volumes/{id} per provision of the InFlight run: the
	// gateway asks Temporal (DescribeWorkflowExecution) for each while the volume is creating.
	ThroughputPollsPerHit float64 `json:"throughput_polls_per_hit"`
}

// LoadDetails are the counts of one throughput run.
type LoadDetails struct {
	InFlight     int      `json:"in_flight"`
	Completed    int      `json:"completed"` // hits available within the window
	Late         int      `json:"late"`      // hits available after it
	NonHits      int      `json:"non_hits"`
	Errors       int      `json:"errors"`
	LatencyP50Ms *float64 `json:"latency_p50_ms"`
	PollsPerHit  float64  `json:"polls_per_hit"` // status polls per provision
}

// HitRow is one stack's hit figures, for the rows that compare Temporal servers.
type HitRow struct {
	Stack                string             `json:"stack"`
	Date                 string             `json:"date"`
	GitCommit            string             `json:"git_commit"`
	LoadAvg              string             `json:"loadavg"` // at start and end
	Hits                 int                `json:"hits"`
	HitP50Ms             *float64           `json:"hit_p50_ms"`
	HitP99Ms             *float64           `json:"hit_p99_ms"`
	FloorP50Ms           *float64           `json:"floor_p50_ms"`
	FloorP99Ms           *float64           `json:"floor_p99_ms"`
	HitThroughputPerS    *float64           `json:"hit_throughput_per_s"`
	HitThroughput50PerS  *float64           `json:"hit_throughput_50_per_s"`
	TemporalEventsPerHit *int               `json:"temporal_events_per_hit"`
	CPUMsPerHit          map[string]float64 `json:"cpu_ms_per_hit"`
	HitBreakdown         *HitBreakdown      `json:"hit_breakdown"`
	LostResults          *LostResults       `json:"lost_results"`
	LostResultsRun       *LostResults       `json:"lost_results_run"`
	Notes                []string           `json:"notes"`
}

// hitRowOf is r's hit figures as a row.
func hitRowOf(r *Result) HitRow {
	return HitRow{
		Stack: fmt.Sprintf("Temporal %s, namespace %s", r.Details.TemporalAddress, r.Details.Namespace),
		Date:  r.Meta.Date, GitCommit: r.Meta.GitCommit, LoadAvg: r.Meta.LoadAvgStart + " → " + r.Meta.LoadAvgEnd,
		Hits:     r.Meta.Iterations.Hits,
		HitP50Ms: r.HitP50Ms, HitP99Ms: r.HitP99Ms, FloorP50Ms: r.FloorP50Ms, FloorP99Ms: r.FloorP99Ms,
		HitThroughputPerS: r.HitThroughputPerS, HitThroughput50PerS: r.HitThroughput50PerS,
		TemporalEventsPerHit: r.TemporalEventsPerHit, CPUMsPerHit: r.CPUMsPerHit, HitBreakdown: r.HitBreakdown,
		LostResults: r.LostResults, LostResultsRun: r.LostResultsRun, Notes: r.Notes,
	}
}

// HitConfig is the part of Config for the hit work: which cases, where the row goes, and where
// the SDK's metrics and the logs of the lost-result check are.
type HitConfig struct {
	Only       string   // "hits": only what the hit figures need
	Row        string   // "standalone": merge the hit figures into OutDir's latest.json as that row
	SDKMetrics []string // /metrics URLs of the workers and gateway
	Logs       []string // their log files (default <run-dir>/log/worker-*.log and gateway*.log)
}

// addHitFlags registers HitConfig's flags; the returned function finishes them after parsing.
func addHitFlags(fs *flag.FlagSet, c *Config) func() error {
	fs.StringVar(&c.Hit.Only, "only", "", `"hits": run only the cache-hit cases (a miss to cache the image, hits, floor, throughput, breakdown, lost results)`)
	fs.StringVar(&c.Hit.Row, "row", "", `"standalone": merge the hit figures into the latest.json in -out as its "standalone" row instead of writing a new one`)
	metrics := fs.String("sdk-metrics", "", "comma-separated /metrics URLs of the workers and gateways, for the SDK's failure counters (default: the gateway's)")
	logs := fs.String("logs", "", "comma-separated logs of the workers and gateways the lost-result check reads (default <run-dir>/log/worker-*.log, gateway*.log)")
	return func() error {
		if c.Hit.Only != "" && c.Hit.Only != "hits" {
			return fmt.Errorf("-only %q: only \"hits\" is known", c.Hit.Only)
		}
		if c.Hit.Row != "" && c.Hit.Row != "standalone" {
			return fmt.Errorf("-row %q: only \"standalone\" is known", c.Hit.Row)
		}
		c.Hit.SDKMetrics = splitList(*metrics)
		if len(c.Hit.SDKMetrics) == 0 {
			c.Hit.SDKMetrics = []string{c.GatewayURL + "/metrics"}
		}
		c.Hit.Logs = splitList(*logs)
		return nil
	}
}

// runStep runs one case, timing it; false when it failed or could not run (said in the notes).
func (b *bench) runStep(ctx context.Context, name string, f func(context.Context) error) bool {
	if ctx.Err() != nil {
		b.note("%s: not run: %v", name, ctx.Err())
		return false
	}
	t0 := time.Now()
	b.log.Info("case start", "case", name)
	if err := f(ctx); err != nil {
		b.note("%s failed: %v", name, err)
		return false
	}
	b.log.Info("case done", "case", name, "took", time.Since(t0).Round(time.Millisecond))
	return true
}

// runHits runs only the cases of the hit figures (-only hits) and returns how many failed.
func (b *bench) runHits(ctx context.Context) int {
	failed := 0
	for _, c := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"lost results: start", b.runObservation},
		{"warm-up", b.warmUp},
		{"hit image", b.cacheHitImage},
		{"cache hits and clone floor", b.hits},
		{"temporal events per hit", b.temporalEvents},
		{"hit breakdown", b.hitBreakdown},
		{"hit throughput", b.throughput},
		{"lost results, whole run", b.lostResultsRun},
	} {
		if !b.runStep(ctx, c.name, c.f) {
			failed++
		}
	}
	b.res.Meta.LoadAvgEnd = loadAvg()
	return failed
}

// cacheHitImage uploads the smallest image of the plan and provisions it once, unmeasured, so
// that it is cached on the measured host for the hits.
func (b *bench) cacheHitImage(ctx context.Context) error {
	size := b.plan.BySize[0]
	path := b.scratch("hit-image.img")
	defer os.Remove(path)
	if err := writePattern(path, size, b.seed+500); err != nil {
		return err
	}
	id, err := b.upload(ctx, "hit-"+sizeKey(size), "raw", path)
	if err != nil {
		return err
	}
	if _, err := b.miss(ctx, "hit-image", id, sizeGB(size), pollMiss); err != nil {
		return err
	}
	b.hitImage = id
	return nil
}

// write writes the results: a new latest.json and latest.md, or with -row the hit figures
// merged into the existing ones as that row (the run's own figures also go to <row>.json).
func (b *bench) write(logger *slog.Logger) error {
	b.res.Details.TemporalAddress, b.res.Details.Namespace = b.cfg.TemporalAddress, b.cfg.Namespace
	dir := b.cfg.OutDir
	if b.cfg.Hit.Row == "" {
		return writeResults(logger, dir, &b.res)
	}
	js, err := json.MarshalIndent(&b.res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, b.cfg.Hit.Row+".json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var main Result
	raw, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		main.Notes = append(main.Notes, "no latest.json of a main run in "+dir+": only the "+b.cfg.Hit.Row+" row")
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(raw, &main); err != nil {
			return fmt.Errorf("latest.json: %w", err)
		}
	}
	row := hitRowOf(&b.res)
	main.Standalone = &row
	return writeResults(logger, dir, &main)
}
