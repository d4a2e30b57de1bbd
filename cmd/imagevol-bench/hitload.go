package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// highInFlight is the second throughput run's concurrency: a boot storm keeps more than
// InFlight provisions going.
const highInFlight = 50

// loadRun is one throughput run: inFlight cache-hit provisions kept going for the plan's window.
type loadRun struct {
	inFlight int
	window   time.Duration
	done     int // hits available within the window
	late     int // hits available after it (started in it)
	nonHits  int
	failed   int
	firstErr error
	lat      []float64   // request → available of the hits counted in done, ms
	hits     []hitTiming // every hit that became available, in the window or after
	ids      []string    // every volume the run created
	cpuPer   map[string]float64
	cpu      *CPUUse
	polls    float64 // status polls per provision
}

// rate is the hits per second the window saw.
func (r *loadRun) rate() float64 { return float64(r.done) / r.window.Seconds() }

// hitLoad keeps inFlight cache-hit provisions going for ThroughputFor, then waits for those in
// flight. The CPU is measured from the start until the last one finished and divided by every
// hit that finished, so no hit's work is counted without the hit.
func (b *bench) hitLoad(ctx context.Context, inFlight int, tag string) *loadRun {
	r := &loadRun{inFlight: inFlight, window: b.plan.ThroughputFor}
	var mu sync.Mutex
	add := func(s hitSample, err error, end time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if s.ID != "" {
			r.ids = append(r.ids, s.ID)
		}
		switch {
		case err != nil:
			r.failed++
			if r.firstErr == nil {
				r.firstErr = err
			}
		case s.Volume.Cache != "hit":
			r.nonHits++
		case s.End.After(end):
			r.late++
			r.hits = append(r.hits, s.timing())
		default:
			r.done++
			r.lat = append(r.lat, ms(s.Accept+s.Latency))
			r.hits = append(r.hits, s.timing())
		}
	}
	polls0 := b.gw.polls.Load()
	cpu0 := takeCPUSnapshot()
	t0 := time.Now()
	end := t0.Add(r.window)
	var wg sync.WaitGroup
	for w := range inFlight {
		wg.Go(func() {
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				s, err := b.hitOnce(ctx, fmt.Sprintf("%s-%02d-%04d", tag, w, i), pollThroughput)
				add(s, err, end)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	cpu1 := takeCPUSnapshot()
	r.cpuPer = cpuPerHit(cpu0, cpu1, r.done+r.late)
	r.cpu = cpuUse(cpu0, cpu1, time.Since(t0).Seconds(), 8)
	if n := len(r.ids); n > 0 {
		r.polls = round(float64(b.gw.polls.Load()-polls0)/float64(n), 1)
	}
	return r
}

// throughput runs the hits at InFlight and at highInFlight, then checks from the histories of
// every workflow of both runs, the SDK's counters and the logs that no step's result was lost.
func (b *bench) throughput(ctx context.Context) error {
	if b.hitImage == "" {
		return errors.New("no cached image: the smallest miss failed")
	}
	o := b.observe(ctx)
	r := b.hitLoad(ctx, b.plan.InFlight, "tput")
	b.recordThroughput(r)
	hi := b.hitLoad(ctx, highInFlight, "tput50")
	b.res.HitThroughput50PerS = ptr(round(hi.rate(), 2))
	b.res.Details.Throughput50 = hi.details()
	b.loadNotes(hi)
	b.log.Info("throughput done", "in_flight", hi.inFlight, "per_s", *b.res.HitThroughput50PerS)

	ids := append(append([]string{}, r.ids...), hi.ids...)
	facts, err := b.histories(ctx, ids)
	if err != nil {
		b.note("lost results: %v", err)
	}
	b.res.LostResults = b.lostResults(ctx, o, ids, facts)
	b.saveHistories(ctx, b.res.LostResults, b.rowName()+"-throughput", ids, facts)
	b.res.Details.HitBreakdownLoad = breakdown(r.hits, facts)
	return nil
}

// recordThroughput keeps the figures of the InFlight run.
func (b *bench) recordThroughput(r *loadRun) {
	b.res.HitThroughputPerS = ptr(round(r.rate(), 2))
	b.res.Details.ThroughputCompleted = r.done
	b.res.Details.ThroughputNonHits = r.nonHits
	b.res.Details.ThroughputErrors = r.failed
	if len(r.lat) > 0 {
		b.res.Details.ThroughputLatencyP50Ms = ptr(round(percentile(r.lat, 50), 1))
	}
	b.res.CPUMsPerHit = r.cpuPer
	b.res.Details.ThroughputCPU = r.cpu
	b.res.Details.ThroughputPollsPerHit = r.polls
	b.loadNotes(r)
	b.log.Info("throughput done", "in_flight", r.inFlight, "per_s", *b.res.HitThroughputPerS, "cpu_ms_per_hit", r.cpuPer)
}

// details are a run's counts for the JSON.
func (r *loadRun) details() LoadDetails {
	d := LoadDetails{InFlight: r.inFlight, Completed: r.done, Late: r.late, NonHits: r.nonHits, Errors: r.failed, PollsPerHit: r.polls}
	if len(r.lat) > 0 {
		d.LatencyP50Ms = ptr(round(percentile(r.lat, 50), 1))
	}
	return d
}

// loadNotes notes a run's failed provisions and non-hits.
func (b *bench) loadNotes(r *loadRun) {
	if r.firstErr != nil {
		b.note("hit throughput (%d in flight): %d provisions failed (first: %v)", r.inFlight, r.failed, r.firstErr)
	}
	if r.nonHits > 0 {
		b.note("hit throughput (%d in flight): %d provisions were not cache hits and were not counted", r.inFlight, r.nonHits)
	}
}

// runObservation starts the whole run's lost-result window.
func (b *bench) runObservation(ctx context.Context) error {
	o := b.observe(ctx)
	b.runObs = &o
	return nil
}

// lostResultsRun checks every provision the run made through the gateway: misses, hits,
// throughput and burst.
func (b *bench) lostResultsRun(ctx context.Context) error {
	if b.runObs == nil {
		return errors.New("no observation at the start of the run")
	}
	b.gw.mu.Lock()
	ids := make([]string, 0, len(b.gw.created))
	for _, v := range b.gw.created {
		ids = append(ids, v.id)
	}
	b.gw.mu.Unlock()
	facts, err := b.histories(ctx, ids)
	b.res.LostResultsRun = b.lostResults(ctx, *b.runObs, ids, facts)
	b.saveHistories(ctx, b.res.LostResultsRun, b.rowName()+"-run", ids, facts)
	return err
}

// rowName names the run's files: its row, or "main".
func (b *bench) rowName() string {
	if b.cfg.Hit.Row != "" {
		return b.cfg.Hit.Row
	}
	return "main"
}
