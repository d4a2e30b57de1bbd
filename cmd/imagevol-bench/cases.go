package main

import (
	"cmp"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"

	"github.com/imagevol/imagevol/contract"
)

// warmUp provisions one small new image end to end, unmeasured, so that the first measured miss
// does not pay for a worker's or a connection's first use.
func (b *bench) warmUp(ctx context.Context) error {
	path := b.scratch("warmup.img")
	if err := writePattern(path, 8*mib, b.seed+300); err != nil {
		return err
	}
	id, err := b.upload(ctx, "warmup", "raw", path)
	_ = os.Remove(path)
	if err != nil {
		return err
	}
	defer b.dropImage(ctx, id)
	vid, err := b.gw.Create(ctx, CreateRequest{ImageID: id, SizeGB: 1, Name: "bench-" + b.runID + "-warmup"})
	if err != nil {
		return err
	}
	v, _, err := b.gw.Wait(ctx, vid, pollMiss, 10*time.Minute)
	if err == nil && v.Status != "available" {
		err = fmt.Errorf("volume %s is %s: %s", vid, v.Status, v.Error)
	}
	return err
}

// missResult is one provision on a cache miss, timed from the request to "available".
type missResult struct {
	CPU     *CPUUse // the machine's CPU during the miss
	Start   time.Time
	Seconds float64
	RSSMiB  *float64 // the measured worker's peak RSS during it; nil when it could not be read
	Volume  Volume
}

// miss provisions a volume from an image the cache has never seen, on the measured host when the
// gateway takes a "host" field, polling every poll, and records the peak RSS of the worker that
// did the work.
func (b *bench) miss(ctx context.Context, name, imageID string, gb int, poll time.Duration) (missResult, error) {
	var r missResult
	pids := map[string]int{}
	for _, h := range b.hosts() {
		pid, err := workerPID(b.cfg.RunDir, h)
		if err == nil {
			err = resetPeakRSS(pid)
		}
		if err == nil {
			pids[h] = pid
		}
	}
	req := CreateRequest{ImageID: imageID, SizeGB: gb, Name: "bench-" + b.runID + "-" + name}
	if b.hostField {
		req.Host = b.cfg.Host
	}
	cpu0 := takeCPUSnapshot()
	t0 := time.Now()
	r.Start = t0
	id, err := b.gw.Create(ctx, req)
	if err != nil {
		return r, err
	}
	v, tEnd, err := b.gw.Wait(ctx, id, poll, 30*time.Minute)
	if err != nil {
		return r, err
	}
	r.Seconds, r.Volume = tEnd.Sub(t0).Seconds(), v
	r.CPU = cpuUse(cpu0, takeCPUSnapshot(), time.Since(t0).Seconds(), 6)
	if v.Status != "available" {
		return r, fmt.Errorf("volume %s is %s: %s", id, v.Status, v.Error)
	}
	switch v.Cache {
	case "miss":
	case "hit":
		return r, fmt.Errorf("volume %s was a cache hit, but its image %s is new", id, imageID)
	default:
		b.note("%s: volume %s says cache=%s (%s), not miss; timed all the same (the image was downloaded)", name, id, v.Cache, v.CacheReason)
	}
	if v.Host != b.cfg.Host {
		b.note("%s: volume %s was placed on %s, not %s; its RSS is %s's worker's", name, id, v.Host, b.cfg.Host, v.Host)
	}
	pid, ok := pids[v.Host]
	if now, err := workerPID(b.cfg.RunDir, v.Host); !ok || err != nil || now != pid {
		b.note("%s: RSS of worker %s not measured (no pid file, or it restarted during the case)", name, v.Host)
	} else if rss, err := peakRSSMiB(pid); err != nil {
		b.note("%s: RSS of worker %s not read: %v", name, v.Host, err)
	} else {
		rss = round(rss, 1)
		r.RSSMiB = &rss
	}
	b.log.Info("miss provisioned", "case", name, "volume", id, "host", v.Host, "seconds", round(r.Seconds, 2), "cache", v.Cache, "rss_mib", deref(r.RSSMiB))
	return r, nil
}

// newImage writes a raw pattern of size bytes and uploads it; the local file is kept when keep
// is set (its path is returned) and removed otherwise.
func (b *bench) newImage(ctx context.Context, name string, size int64, seed uint64, keep bool) (id, path string, err error) {
	path = b.scratch(name + ".img")
	if err := writePattern(path, size, seed); err != nil {
		return "", "", err
	}
	id, err = b.upload(ctx, name, "raw", path)
	if err != nil || !keep {
		_ = os.Remove(path)
		path = ""
	}
	return id, path, err
}

// missBySize provisions one new raw image of each size on a miss, in Rounds rounds one after the
// other; each size's figure is its median over the rounds, and each round's worker RSS peak is
// kept. The first round's smallest image stays cached on the measured host for the hit cases;
// the last round's RawSize image and file stay for the raw floors. Everything else a round made
// is deleted before the next, so that Ceph holds one round at a time.
func (b *bench) missBySize(ctx context.Context) error {
	secs := map[string][]float64{}
	var errs []error
	for r := range b.plan.Rounds {
		var peak *float64
		var drop []string
		for i, size := range b.plan.BySize {
			key := sizeKey(size)
			name := fmt.Sprintf("raw-%s-r%d", key, r)
			last := r == b.plan.Rounds-1 && size == b.plan.RawSize
			id, path, err := b.newImage(ctx, name, size, b.seed+uint64(1000*r+i), last)
			if err != nil {
				return err
			}
			hit := r == 0 && i == 0
			if !hit {
				drop = append(drop, id)
			}
			m, err := b.miss(ctx, name, id, sizeGB(size), pollMiss)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				_ = os.Remove(path)
				continue
			}
			secs[key] = append(secs[key], m.Seconds)
			b.setPath("raw-"+key, pathDownload)
			if m.RSSMiB != nil {
				if old, ok := b.res.WorkerRSSBySizeMiB[key]; !ok || *m.RSSMiB > old {
					b.res.WorkerRSSBySizeMiB[key] = *m.RSSMiB
				}
				if peak == nil || *m.RSSMiB > *peak {
					peak = m.RSSMiB
				}
			}
			switch {
			case hit:
				b.hitImage = id
			case last:
				b.res.Details.MissRawCPU = m.CPU
				b.rawImage, b.rawFile = id, path
			}
		}
		if peak != nil {
			b.res.WorkerRSSPeakRunsMiB = append(b.res.WorkerRSSPeakRunsMiB, *peak)
		}
		b.log.Info("miss round done", "round", r, "rss_peak_mib", deref(peak))
		if err := b.dropVolumes(ctx, drop, b.rawImage); err != nil {
			errs = append(errs, err)
		}
	}
	b.res.Details.MissSBySizeRuns = map[string][]float64{}
	for key, s := range secs {
		b.res.MissSBySize[key] = round(percentile(s, 50), 3)
		b.res.Details.MissSBySizeRuns[key] = roundAll(s, 3)
	}
	if s, ok := b.res.MissSBySize[sizeKey(b.plan.RawSize)]; ok {
		b.res.MissRawS = ptr(s)
		b.res.MissRawMiBs = ptr(round(float64(b.plan.RawSize)/float64(mib)/s, 1))
	}
	return errors.Join(errs...)
}

// dropVolumes deletes the volumes made from the given images and evicts their cache entries,
// waiting until both are gone, then deletes the images from Glance except keep. The space they
// held is free for the next round, and their deletion no longer loads the cluster.
func (b *bench) dropVolumes(ctx context.Context, images []string, keep string) error {
	if b.cfg.KeepImages || len(images) == 0 {
		return nil
	}
	err := b.gw.DeleteVolumesOf(ctx, images)
	for _, id := range images {
		if id != keep {
			b.dropImage(ctx, id)
		}
	}
	return err
}

// missFixed measures what a miss costs besides streaming its bytes: FixedMisses misses of new
// FixedSize images, polled as finely as the hits, the median minus the time its bytes take at
// the RateSize miss's rate. The history of the median miss's workflows shows where it goes.
func (b *bench) missFixed(ctx context.Context) error {
	ref, ok := b.res.MissSBySize[sizeKey(b.plan.RateSize)]
	if !ok {
		return fmt.Errorf("no %s miss to take the rate from", sizeKey(b.plan.RateSize))
	}
	var ms []missResult
	var errs []error
	for i := range b.plan.FixedMisses {
		name := fmt.Sprintf("fixed-%s-%d", sizeKey(b.plan.FixedSize), i)
		id, _, err := b.newImage(ctx, name, b.plan.FixedSize, b.seed+uint64(500+i), false)
		if err != nil {
			return err
		}
		m, err := b.miss(ctx, name, id, sizeGB(b.plan.FixedSize), pollLatency)
		b.dropImage(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		return errors.Join(errs...)
	}
	secs := make([]float64, len(ms))
	for i, m := range ms {
		secs[i] = m.Seconds
	}
	med := percentile(secs, 50)
	b.res.MissFixedMs = ptr(fixedCostMs(med, b.plan.FixedSize, ref, b.plan.RateSize))
	b.res.Details.MissFixedS = roundAll(secs, 3)
	// The sample nearest the median stands for them all.
	m := slices.MinFunc(ms, func(x, y missResult) int {
		return cmp.Compare(math.Abs(x.Seconds-med), math.Abs(y.Seconds-med))
	})
	spans, err := b.missTimeline(ctx, m.Volume.ID, m.Start)
	b.res.Details.MissFixedTimeline = spans
	b.res.Details.MissFixedVolume = m.Volume.ID
	if err != nil {
		b.note("miss_fixed_ms: timeline of %s incomplete: %v", m.Volume.ID, err)
	}
	return errors.Join(errs...)
}

// rawFloors measures, on the raw miss's own bytes, the three stages a raw miss runs at once —
// Glance's download, sha512, and writing into RBD (`rbd import`) — each with the machine's CPU
// meanwhile, and their bound; then the by-hand pipeline on the same image.
func (b *bench) rawFloors(ctx context.Context) error {
	if b.rawFile == "" {
		return errors.New("no raw image: the raw miss failed")
	}
	defer func() { _ = os.Remove(b.rawFile) }()
	get, sum, err := b.downloadStages(ctx, "", b.rawImage, b.rawFile)
	if err != nil {
		return err
	}
	var errs []error
	var imp *Stage
	if d, err := timeStage("rbd_import", func() (int64, error) {
		return b.plan.RawSize, b.ceph.RBDImport(ctx, b.rawFile, b.cfg.Pool, "bench-floor-import-"+b.runID)
	}); err != nil {
		errs = append(errs, err)
	} else {
		imp = &d
	}
	stages := []Stage{get, sum}
	b.res.GlanceDownloadMiBs = ptr(stageMiBs(get))
	b.res.SHA512MiBs = ptr(stageMiBs(sum))
	if imp != nil {
		stages = append(stages, *imp)
		b.res.RBDImportMiBs = ptr(stageMiBs(*imp))
		floor := slices.MinFunc(stages, func(x, y Stage) int { return cmp.Compare(stageMiBs(x), stageMiBs(y)) })
		b.res.MissRawFloorMiBs = ptr(stageMiBs(floor))
		b.res.Details.RawFloorBoundBy = floorField[floor.Name]
		bound := pipelineBound(stages, b.res.Meta.NProc)
		b.res.MissRawBoundS, b.res.Details.MissRawBoundBy = ptr(bound.Seconds), bound.By
	}
	b.res.MissStages = append(b.res.MissStages, stages...)
	if s, err := b.byHand(ctx, "by_hand_raw", byHandRawScript, b.rawImage, b.plan.RawSize, "bench-byhand-raw-"+b.runID); err != nil {
		errs = append(errs, err)
	} else {
		b.res.ByHand = append(b.res.ByHand, s)
		b.res.ByHandRawS = ptr(s.WallS)
	}
	return errors.Join(errs...)
}

// floorField names the figure of each raw floor stage, for raw_floor_bound_by.
var floorField = map[string]string{"glance_get": "glance_download_mib_s", "sha512": "sha512_mib_s", "rbd_import": "rbd_import_mib_s"}

// downloadStages times the stages of downloading a Glance image that run at once: the GET to
// nowhere and sha512 over the same bytes (from the local file, read into memory first). suffix
// names them ("" for the raw image, "_qcow2").
func (b *bench) downloadStages(ctx context.Context, suffix, imageID, file string) (get, sum Stage, err error) {
	get, err = timeStage("glance_get"+suffix, func() (int64, error) { return b.gl.Download(ctx, imageID) })
	if err != nil {
		return get, sum, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return get, sum, err
	}
	sum, err = timeStage("sha512"+suffix, func() (int64, error) {
		h := sha512.New()
		_, _ = h.Write(data)
		_ = h.Sum(nil)
		return int64(len(data)), nil
	})
	return get, sum, err
}

// qcow2Miss provisions a qcow2 image (the raw pattern of RawSize, converted) on a miss, then
// times its stages done alone — the download's (GET and sha512 of the qcow2 file) and qemu-img
// converting the same file into RBD, which can only follow them — and the by-hand pipeline.
func (b *bench) qcow2Miss(ctx context.Context) error {
	raw, q := b.scratch("qcow2-src.img"), b.scratch("image.qcow2")
	defer func() { _ = os.Remove(raw); _ = os.Remove(q) }()
	if err := writePattern(raw, b.plan.RawSize, b.seed+100); err != nil {
		return err
	}
	if err := toQcow2(ctx, raw, q); err != nil {
		return err
	}
	_ = os.Remove(raw)
	id, err := b.upload(ctx, "qcow2-"+sizeKey(b.plan.RawSize), "qcow2", q)
	if err != nil {
		return err
	}
	defer b.dropImage(ctx, id)
	var errs []error
	if m, err := b.miss(ctx, "qcow2", id, sizeGB(b.plan.RawSize), pollMiss); err != nil {
		errs = append(errs, err)
	} else {
		b.res.MissQcow2MiBs = ptr(round(float64(b.plan.RawSize)/float64(mib)/m.Seconds, 1))
		b.setPath("qcow2", pathDownload)
		b.res.Details.MissQcow2Seconds = ptr(round(m.Seconds, 3))
		b.res.Details.WorkerRSSQcow2MiB = m.RSSMiB
		b.res.Details.MissQcow2CPU = m.CPU
	}
	get, sum, err := b.downloadStages(ctx, "_qcow2", id, q)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	conv, err := timeStage("qemu_img_convert", func() (int64, error) {
		return b.plan.RawSize, b.ceph.QemuImg(ctx, q, b.cfg.Pool, "bench-floor-qemu-"+b.runID)
	})
	if err != nil {
		errs = append(errs, err)
	} else {
		b.res.QemuImgMiBs = ptr(stageMiBs(conv))
		bound := serialBound(pipelineBound([]Stage{get, sum}, b.res.Meta.NProc), pipelineBound([]Stage{conv}, b.res.Meta.NProc))
		b.res.MissQcow2BoundS, b.res.Details.MissQcow2BoundBy = ptr(bound.Seconds), bound.By
		b.res.MissStages = append(b.res.MissStages, get, sum, conv)
	}
	if s, err := b.byHand(ctx, "by_hand_qcow2", byHandQcow2Script, id, b.plan.RawSize, "bench-byhand-qcow2-"+b.runID); err != nil {
		errs = append(errs, err)
	} else {
		b.res.ByHand = append(b.res.ByHand, s)
		b.res.ByHandQcow2S = ptr(s.WallS)
	}
	return errors.Join(errs...)
}

// hitSample is one provision from the cached image.
type hitSample struct {
	ID      string
	Accept  time.Duration // request sent → 202
	Latency time.Duration // 202 → "available" observed
	End     time.Time
	Volume  Volume
}

// hitOnce creates a volume from the cached hit image and waits for it.
func (b *bench) hitOnce(ctx context.Context, name string, poll time.Duration) (hitSample, error) {
	var s hitSample
	t0 := time.Now()
	id, err := b.gw.Create(ctx, CreateRequest{ImageID: b.hitImage, SizeGB: b.plan.HitVolumeGB, Name: "bench-" + b.runID + "-" + name})
	if err != nil {
		return s, err
	}
	t202 := time.Now()
	v, tEnd, err := b.gw.Wait(ctx, id, poll, 5*time.Minute)
	s = hitSample{ID: id, Accept: t202.Sub(t0), Latency: tEnd.Sub(t202), End: tEnd, Volume: v}
	if err != nil {
		return s, err
	}
	if v.Status != "available" {
		return s, fmt.Errorf("volume %s is %s: %s", id, v.Status, v.Error)
	}
	return s, nil
}

// hits times sequential cache-hit provisions (from the 202 to "available"), then the floor: the
// same clone and resize done directly with go-ceph from the same cache snapshot.
func (b *bench) hits(ctx context.Context) error {
	if b.hitImage == "" {
		return errors.New("no cached image: the smallest miss failed")
	}
	warm, err := b.hitOnce(ctx, "hit-warm", pollLatency)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if warm.Volume.Cache != "hit" {
		return fmt.Errorf("warm-up volume %s says cache=%s, not hit", warm.ID, warm.Volume.Cache)
	}
	lat := make([]float64, 0, b.plan.Hits)
	acc := make([]float64, 0, b.plan.Hits)
	nonHits := 0
	for i := range b.plan.Hits {
		s, err := b.hitOnce(ctx, fmt.Sprintf("hit-%03d", i), pollLatency)
		if err != nil {
			return fmt.Errorf("hit %d: %w", i, err)
		}
		if s.Volume.Cache != "hit" {
			nonHits++
			b.note("hit %d: volume %s says cache=%s; left out of the hit latencies", i, s.ID, s.Volume.Cache)
			continue
		}
		lat = append(lat, ms(s.Latency))
		acc = append(acc, ms(s.Accept))
		b.hitTimes = append(b.hitTimes, s.timing())
		b.res.Details.TemporalWorkflowID = s.ID
	}
	if len(lat) == 0 {
		return errors.New("no provision was a cache hit")
	}
	b.res.HitP50Ms = ptr(round(percentile(lat, 50), 1))
	b.res.HitP95Ms = ptr(round(percentile(lat, 95), 1))
	b.res.HitP99Ms = ptr(round(percentile(lat, 99), 1))
	b.res.Details.HitLatenciesMs = roundAll(lat, 2)
	b.res.Details.HitAcceptP50Ms = ptr(round(percentile(acc, 50), 1))
	b.res.Details.HitNonHits = nonHits
	b.log.Info("hits done", "n", len(lat), "p50_ms", *b.res.HitP50Ms, "p95_ms", *b.res.HitP95Ms)

	entries, err := b.gw.CacheEntries(ctx)
	if err != nil {
		return err
	}
	// The floor clones from the cache entry the hits used, into the same pool.
	host := warm.Volume.Host
	i := slices.IndexFunc(entries, func(e CacheEntry) bool {
		return e.ImageID == b.hitImage && e.Host == host && e.State == "ready"
	})
	if i < 0 {
		return fmt.Errorf("no ready cache entry for image %s on %s in GET /v1/cache", b.hitImage, host)
	}
	e := entries[i]
	floor, err := b.ceph.CloneFloor(ctx, e.Pool, contract.RBDName(e.VolumeID), contract.CacheSnapshot, e.Pool,
		"bench-floor-clone-"+b.runID, b.plan.Hits, uint64(b.plan.HitVolumeGB)<<30)
	if err != nil {
		return fmt.Errorf("clone floor: %w", err)
	}
	b.res.FloorP50Ms = ptr(round(percentile(floor, 50), 1))
	b.res.Details.FloorP95Ms = ptr(round(percentile(floor, 95), 1))
	b.res.FloorP99Ms = ptr(round(percentile(floor, 99), 1))
	b.res.Details.FloorLatenciesMs = roundAll(floor, 2)
	return nil
}

// temporalEvents counts the history events of one cache-hit workflow, once it has closed.
func (b *bench) temporalEvents(ctx context.Context) error {
	wid := b.res.Details.TemporalWorkflowID
	if wid == "" {
		return errors.New("no cache-hit workflow to read")
	}
	c, err := b.temporal()
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.GetWorkflow(wctx, wid, "").Get(wctx, nil); err != nil {
		return fmt.Errorf("workflow %s: %w", wid, err)
	}
	it := c.GetWorkflowHistory(wctx, wid, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	n := 0
	for it.HasNext() {
		if _, err := it.Next(); err != nil {
			return fmt.Errorf("history of %s: %w", wid, err)
		}
		n++
	}
	b.res.TemporalEventsPerHit = &n
	return nil
}

// burst sends BurstRequests concurrent creates of one uncached image, alternating the hosts when
// the gateway takes a "host" field, and counts the downloads it caused from the cache stats.
func (b *bench) burst(ctx context.Context) error {
	p := b.plan
	worst := p.BurstSize / 2 * int64(p.BurstRequests)
	if avail, total, err := b.ceph.Space(); err != nil {
		return err
	} else if avail-total/10 < worst {
		return fmt.Errorf("skipped: ceph has %.1f GiB available and %d separate downloads would need %.1f GiB",
			float64(avail)/float64(gib), p.BurstRequests, float64(worst)/float64(gib))
	}
	path := b.scratch("burst.img")
	if err := writePattern(path, p.BurstSize, b.seed+200); err != nil {
		return err
	}
	id, err := b.upload(ctx, "burst-"+sizeKey(p.BurstSize), "raw", path)
	_ = os.Remove(path)
	if err != nil {
		return err
	}
	defer b.dropImage(ctx, id)

	hostOK := b.hostField
	before, statsErr := b.gw.CacheStats(ctx)
	b.res.Details.CacheStatsServed = statsErr == nil
	if statsErr != nil {
		b.note("burst: burst_downloads is null: %v", statsErr)
	}

	type outcome struct {
		vol Volume
		err error
		end time.Time
	}
	outs := make([]outcome, p.BurstRequests)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range p.BurstRequests {
		wg.Go(func() {
			<-gate
			req := CreateRequest{ImageID: id, SizeGB: sizeGB(p.BurstSize), Name: fmt.Sprintf("bench-%s-burst-%02d", b.runID, i)}
			if hostOK {
				req.Host = b.cfg.BurstHosts[i%len(b.cfg.BurstHosts)]
			}
			vid, err := b.gw.Create(ctx, req)
			if err != nil {
				outs[i] = outcome{err: err, end: time.Now()}
				return
			}
			v, tEnd, err := b.gw.Wait(ctx, vid, pollBurst, 30*time.Minute)
			if err == nil && v.Status != "available" {
				err = fmt.Errorf("volume %s is %s: %s", vid, v.Status, v.Error)
			}
			outs[i] = outcome{vol: v, err: err, end: tEnd}
		})
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	var last time.Time
	hosts := map[string]bool{}
	cache := map[string]int{}
	var errs []error
	for _, o := range outs {
		if o.end.After(last) {
			last = o.end
		}
		if o.err != nil {
			errs = append(errs, o.err)
			cache["failed"]++
			continue
		}
		hosts[o.vol.Host] = true
		cache[o.vol.Cache]++
	}
	b.res.BurstRequests = p.BurstRequests
	b.res.BurstWallS = ptr(round(last.Sub(t0).Seconds(), 2))
	nh := len(hosts)
	b.res.BurstHosts = &nh
	b.res.Details.BurstOutcomes = cache
	if statsErr == nil {
		after, err := b.gw.CacheStats(ctx)
		if err != nil {
			b.note("burst: burst_downloads is null: reading the stats after the burst: %v", err)
		} else {
			d := after.Downloads - before.Downloads
			b.res.BurstDownloads = &d
		}
	}
	if len(errs) > 0 {
		b.note("burst: %d of %d requests failed (first: %v)", len(errs), p.BurstRequests, errs[0])
	}
	if len(errs) == p.BurstRequests {
		return errors.New("every burst request failed")
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
