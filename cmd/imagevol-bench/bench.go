package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Plan is the sizes and counts of one run.
type Plan struct {
	BySize        []int64       // raw miss sizes, ascending; the smallest image then serves the hits
	RawSize       int64         // one of BySize: the raw figure, its floors, and the qcow2 case
	Hits          int           // sequential cache-hit provisions, and as many floor clones
	HitVolumeGB   int           // size of each hit volume
	BurstRequests int           // concurrent creates of one uncached image
	BurstSize     int64         // that image's size
	ThroughputFor time.Duration // how long hits are kept in flight
	InFlight      int           // how many
	Rounds        int           // rounds of misses by size, one after the other, for RSS and medians
	FixedSize     int64         // image size of the misses that give the fixed cost of a miss
	FixedMisses   int           // how many of them (the median counts)
	RateSize      int64         // one of BySize: the miss whose rate the fixed cost streams at
}

func planFor(quick bool) Plan {
	if quick {
		return Plan{
			BySize: []int64{16 * mib, 64 * mib, 256 * mib}, RawSize: 64 * mib, Hits: 10, HitVolumeGB: 2,
			BurstRequests: 20, BurstSize: 64 * mib, ThroughputFor: 5 * time.Second, InFlight: 20,
			Rounds: 2, FixedSize: 64 * mib, FixedMisses: 2, RateSize: 256 * mib,
		}
	}
	return Plan{
		BySize: []int64{256 * mib, gib, 4 * gib}, RawSize: gib, Hits: 100, HitVolumeGB: 2,
		BurstRequests: 50, BurstSize: 256 * mib, ThroughputFor: 30 * time.Second, InFlight: 20,
		Rounds: 5, FixedSize: 64 * mib, FixedMisses: 3, RateSize: gib,
	}
}

// with replaces the plan's sizes of the misses by size and its rounds when they are given; the
// raw and rate sizes stay where they are among them, or become the middle size.
func (p Plan) with(sizes []int64, rounds int) Plan {
	if rounds > 0 {
		p.Rounds = rounds
	}
	if len(sizes) == 0 {
		return p
	}
	p.BySize = slices.Sorted(slices.Values(sizes))
	mid := p.BySize[len(p.BySize)/2]
	if !slices.Contains(p.BySize, p.RawSize) {
		p.RawSize = mid
	}
	if !slices.Contains(p.BySize, p.RateSize) {
		p.RateSize = mid
	}
	return p
}

// Poll intervals: the latency case polls as finely as the gateway bears; the cases of many
// seconds or many volumes poll more coarsely so that polling does not load the 2-core machine.
const (
	pollLatency    = 15 * time.Millisecond
	pollMiss       = 100 * time.Millisecond
	pollThroughput = 50 * time.Millisecond
	pollBurst      = 100 * time.Millisecond
)

// bench holds one run's clients, plan and results.
type bench struct {
	cfg   Config
	plan  Plan
	log   *slog.Logger
	gw    *Gateway
	gl    *Glance
	ceph  *Ceph
	runID string
	seed  uint64

	mu       sync.Mutex
	res      Result
	uploaded []string // Glance images to delete at the end
	images   []string // every image the run uploaded: their cache entries are evicted at the end

	hostField bool   // the gateway takes the optional "host" field of POST /v1/volumes
	hitImage  string // Glance image cached on cfg.Host by the smallest miss
	rawImage  string // Glance image of the RawSize miss, kept for the download floor
	rawFile   string // its local file, kept for the sha512 and rbd import floors

	hitTimes []hitTiming          // the measured sequential hits, for their breakdown
	runObs   *observation         // the start of the whole run's lost-result window
	facts    map[string]histFacts // histories read so far, by workflow ID
}

func newBench(ctx context.Context, logger *slog.Logger, cfg Config, plan Plan) (*bench, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	ceph, err := connectCeph(cfg.CephConf)
	if err != nil {
		return nil, err
	}
	b := &bench{
		cfg: cfg, plan: plan, log: logger, ceph: ceph,
		gw:    &Gateway{Base: cfg.GatewayURL, Token: cfg.Token, HC: newHTTPClient(30 * time.Second)},
		gl:    &Glance{Base: cfg.GlanceURL, HC: newHTTPClient(0)},
		runID: time.Now().UTC().Format("20060102t150405") + "-" + hex.EncodeToString(rnd[:2]),
		seed:  binary.LittleEndian.Uint64(rnd[:]),
	}
	commit, dirty := gitCommit(ctx)
	mem, _ := procField("/proc/meminfo", "MemTotal:")
	b.res = Result{
		MissSBySize:        map[string]float64{},
		WorkerRSSBySizeMiB: map[string]float64{},
		Meta: Meta{
			Date: time.Now().UTC().Format(time.RFC3339), GitCommit: commit, GitDirty: dirty,
			Quick: cfg.Quick, NProc: runtime.NumCPU(), MemTotalMiB: mem / 1024, GoVersion: runtime.Version(),
			LoadAvgStart: loadAvg(), RunID: b.runID, Host: cfg.Host, Pool: cfg.Pool, BurstHosts: cfg.BurstHosts,
			Sizes: SizesMeta{
				MissBySize: sizeKeys(plan.BySize), Raw: sizeKey(plan.RawSize), Qcow2Virtual: sizeKey(plan.RawSize),
				HitImage: sizeKey(plan.BySize[0]), HitVolumeGiB: plan.HitVolumeGB, Burst: sizeKey(plan.BurstSize),
				Fixed: sizeKey(plan.FixedSize), FixedRate: sizeKey(plan.RateSize),
				Pattern: "4 MiB blocks alternating seeded random data and zeros",
			},
			Iterations: IterationsMeta{
				Hits: plan.Hits, FloorClones: plan.Hits, BurstRequests: plan.BurstRequests,
				ThroughputSeconds: plan.ThroughputFor.Seconds(), ThroughputInFlight: plan.InFlight,
				MissRounds: plan.Rounds, FixedMisses: plan.FixedMisses,
			},
			PollMs: PollMeta{
				Latency: pollLatency.Milliseconds(), Miss: pollMiss.Milliseconds(),
				Throughput: pollThroughput.Milliseconds(), Burst: pollBurst.Milliseconds(),
			},
		},
	}
	return b, nil
}

func sizeKeys(ns []int64) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = sizeKey(n)
	}
	return out
}

// hosts are the storage hosts the run may touch: the measured one and the burst's.
func (b *bench) hosts() []string {
	hs := []string{b.cfg.Host}
	for _, h := range b.cfg.BurstHosts {
		if !slices.Contains(hs, h) {
			hs = append(hs, h)
		}
	}
	return hs
}

// note adds a line to the report's notes and to the log.
func (b *bench) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.log.Warn(msg)
	b.mu.Lock()
	b.res.Notes = append(b.res.Notes, msg)
	b.mu.Unlock()
}

// preflight checks that the stack answers and that the run fits on the local disk and in Ceph.
func (b *bench) preflight(ctx context.Context) error {
	if err := b.gw.Healthz(ctx); err != nil {
		return fmt.Errorf("gateway %s not healthy: %w", b.cfg.GatewayURL, err)
	}
	if _, err := workerPID(b.cfg.RunDir, b.cfg.Host); err != nil {
		return err
	}
	ok, err := b.gw.HostFieldSupported(ctx, b.cfg.Host)
	if err != nil {
		return fmt.Errorf("probing the host field of POST /v1/volumes: %w", err)
	}
	b.hostField = ok
	b.res.Details.HostField = ok
	if !ok {
		b.note("the gateway does not accept the \"host\" field of POST /v1/volumes yet: every request was placed by the gateway (misses may land off %s; the burst is not spread over %v)",
			b.cfg.Host, b.cfg.BurstHosts)
	}
	for _, tool := range []string{"rbd", "qemu-img"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed for the floors: %w", tool, err)
		}
	}
	p := b.plan
	var sum int64
	for _, n := range p.BySize {
		sum += n
	}
	largest := slices.Max(p.BySize)
	// Ceph: half of each image is data (zero blocks are skipped), one round of misses at a time;
	// the qcow2 case writes a staging image and the converted volume; the floors and the by-hand
	// pipelines write one image at a time, removed after. The burst's own need is checked before
	// it runs.
	cephNeed := sum/2 + 2*p.RawSize + p.RawSize/2
	// Local disk: Glance keeps every uploaded image whole until the end of the run, the largest
	// local file is sparse (half), and the cluster's OSD file usually lives on the same disk.
	localNeed := sum + p.RawSize + p.BurstSize + largest/2 + cephNeed + p.BurstSize*int64(p.BurstRequests)/2 + gib
	free, err := freeBytes(b.cfg.WorkDir)
	if err != nil {
		return err
	}
	b.res.Meta.DiskFreeGiB = round(float64(free)/float64(gib), 1)
	if free < localNeed {
		return fmt.Errorf("only %.1f GiB free under %s; the run needs about %.1f GiB (local image files, the Glance store and Ceph's OSD file)",
			float64(free)/float64(gib), b.cfg.WorkDir, float64(localNeed)/float64(gib))
	}
	avail, total, err := b.ceph.Space()
	if err != nil {
		return fmt.Errorf("ceph: cluster stats: %w", err)
	}
	b.res.Meta.CephAvailGiB = round(float64(avail)/float64(gib), 1)
	if usable := avail - total/10; usable < cephNeed {
		return fmt.Errorf("ceph has %.1f GiB available of %.1f GiB; the run needs about %.1f GiB plus a 10%% margin (volumes from earlier runs stay: there is no delete API)",
			float64(avail)/float64(gib), float64(total)/float64(gib), float64(cephNeed)/float64(gib))
	}
	b.log.Info("preflight ok", "disk_free_gib", b.res.Meta.DiskFreeGiB, "ceph_avail_gib", b.res.Meta.CephAvailGiB,
		"quick", b.cfg.Quick, "run", b.runID)
	return nil
}

// runAll runs the cases in order and returns how many failed; a failed case leaves its figures
// null and says why in the notes.
func (b *bench) runAll(ctx context.Context) int {
	if b.cfg.Hit.Only == "hits" {
		return b.runHits(ctx)
	}
	failed := 0
	step := func(name string, f func(context.Context) error) {
		if len(b.cfg.Cases) > 0 && !slices.ContainsFunc(b.cfg.Cases, func(p string) bool { return strings.HasPrefix(name, p) }) {
			b.log.Info("case skipped (-cases)", "case", name)
			return
		}
		if !b.runStep(ctx, name, f) {
			failed++
		}
	}
	step("lost results: start", b.runObservation)
	step("warm-up", b.warmUp)
	step("miss by size", b.missBySize)
	step("miss fixed cost", b.missFixed)
	step("raw miss stages and by hand", b.rawFloors)
	step("qcow2 miss, its stages and by hand", b.qcow2Miss)
	step("cache hits and clone floor", b.hits)
	step("miss from Glance's RBD store", b.storeMiss)
	step("temporal events per hit", b.temporalEvents)
	step("hit breakdown", b.hitBreakdown)
	step("hit throughput", b.throughput)
	step("burst", b.burst)
	step("lost results, whole run", b.lostResultsRun)
	b.res.Meta.LoadAvgEnd = loadAvg()
	return failed
}

// scratch is a path for a local image file of this run.
func (b *bench) scratch(name string) string {
	return filepath.Join(b.cfg.WorkDir, b.runID+"-"+name)
}

// upload sends a local file to Glance and remembers the image for deletion at the end.
func (b *bench) upload(ctx context.Context, name, format, path string) (string, error) {
	t0 := time.Now()
	id, err := b.gl.Upload(ctx, "bench-"+b.runID+"-"+name, format, path)
	if id != "" {
		b.mu.Lock()
		b.uploaded = append(b.uploaded, id)
		b.images = append(b.images, id)
		b.mu.Unlock()
	}
	if err == nil {
		b.log.Info("image uploaded", "name", name, "id", id, "took", time.Since(t0).Round(time.Millisecond))
	}
	return id, err
}

// dropImage deletes a Glance image the run no longer needs, to keep the disk from filling.
func (b *bench) dropImage(ctx context.Context, id string) {
	if b.cfg.KeepImages || id == "" {
		return
	}
	if err := b.gl.Delete(ctx, id); err != nil {
		b.log.Warn("could not delete Glance image", "id", id, "err", err)
		return
	}
	b.mu.Lock()
	b.uploaded = slices.DeleteFunc(b.uploaded, func(s string) bool { return s == id })
	b.mu.Unlock()
}

// close deletes what the run left: the volumes it made through the API and the cache entries of
// its images, its Glance images and local files, and disconnects from Ceph.
func (b *bench) close(ctx context.Context) {
	if !b.cfg.KeepImages {
		if err := b.gw.DeleteCreated(ctx, slices.Clone(b.images)); err != nil {
			b.log.Warn("could not delete every volume the run made", "err", err)
		}
	}
	for _, id := range slices.Clone(b.uploaded) {
		b.dropImage(ctx, id)
	}
	matches, _ := filepath.Glob(filepath.Join(b.cfg.WorkDir, b.runID+"-*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.log.Warn("could not remove scratch file", "path", m, "err", err)
		}
	}
	b.ceph.Close()
}
