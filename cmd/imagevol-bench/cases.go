package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

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
	Seconds float64
	RSSMiB  *float64 // the measured worker's peak RSS during it; nil when it could not be read
	Volume  Volume
}

// miss provisions a volume from an image the cache has never seen, on the measured host when the
// gateway takes a "host" field, and records the peak RSS of the worker that did the work.
func (b *bench) miss(ctx context.Context, name, imageID string, gb int) (missResult, error) {
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
	id, err := b.gw.Create(ctx, req)
	if err != nil {
		return r, err
	}
	v, tEnd, err := b.gw.Wait(ctx, id, pollMiss, 30*time.Minute)
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

// missBySize provisions one raw image of each size on a miss. The smallest image stays cached on
// the measured host for the hit cases; the RawSize one gives miss_raw_mib_s and is kept for its
// floors.
func (b *bench) missBySize(ctx context.Context) error {
	var errs []error
	for i, size := range b.plan.BySize {
		key := sizeKey(size)
		path := b.scratch("raw-" + key + ".img")
		if err := writePattern(path, size, b.seed+uint64(i)); err != nil {
			return err
		}
		id, err := b.upload(ctx, "raw-"+key, "raw", path)
		if err != nil {
			_ = os.Remove(path)
			return err
		}
		keep := i == 0 || size == b.plan.RawSize
		m, err := b.miss(ctx, "raw-"+key, id, sizeGB(size))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			_ = os.Remove(path)
			b.dropImage(ctx, id)
			continue
		}
		b.res.MissSBySize[key] = round(m.Seconds, 3)
		b.setPath("raw-"+key, pathDownload)
		if m.RSSMiB != nil {
			b.res.WorkerRSSBySizeMiB[key] = *m.RSSMiB
		}
		if i == 0 {
			b.hitImage = id
		}
		if size == b.plan.RawSize {
			b.res.MissRawMiBs = ptr(round(float64(size)/float64(mib)/m.Seconds, 1))
			b.res.Details.MissRawCPU = m.CPU
			b.rawImage, b.rawFile = id, path
		} else {
			_ = os.Remove(path)
		}
		if !keep {
			b.dropImage(ctx, id)
		}
	}
	return errors.Join(errs...)
}

// rawFloors measures, on the raw miss's own bytes, the three things a raw miss does at once:
// Glance's download, sha512, and writing into RBD (`rbd import`). The slowest is the floor.
func (b *bench) rawFloors(ctx context.Context) error {
	if b.rawFile == "" {
		return errors.New("no raw image: the raw miss failed")
	}
	defer func() { _ = os.Remove(b.rawFile) }()
	var errs []error
	t0 := time.Now()
	if n, err := b.gl.Download(ctx, b.rawImage); err != nil {
		errs = append(errs, err)
	} else {
		b.res.GlanceDownloadMiBs = ptr(round(mibPerS(n, time.Since(t0)), 1))
	}
	if n, d, err := SHA512(b.rawFile); err != nil {
		errs = append(errs, err)
	} else {
		b.res.SHA512MiBs = ptr(round(mibPerS(n, d), 1))
	}
	if d, err := b.ceph.RBDImport(ctx, b.rawFile, b.cfg.Pool, "bench-floor-import-"+b.runID); err != nil {
		errs = append(errs, err)
	} else {
		b.res.RBDImportMiBs = ptr(round(mibPerS(b.plan.RawSize, d), 1))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	floor, bound := *b.res.GlanceDownloadMiBs, "glance_download_mib_s"
	if *b.res.SHA512MiBs < floor {
		floor, bound = *b.res.SHA512MiBs, "sha512_mib_s"
	}
	if *b.res.RBDImportMiBs < floor {
		floor, bound = *b.res.RBDImportMiBs, "rbd_import_mib_s"
	}
	b.res.MissRawFloorMiBs = ptr(floor)
	b.res.Details.RawFloorBoundBy = bound
	return nil
}

// qcow2Miss provisions a qcow2 image (the raw pattern of RawSize, converted) on a miss, and
// times qemu-img converting the same file into RBD directly.
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
	if m, err := b.miss(ctx, "qcow2", id, sizeGB(b.plan.RawSize)); err != nil {
		errs = append(errs, err)
	} else {
		b.res.MissQcow2MiBs = ptr(round(float64(b.plan.RawSize)/float64(mib)/m.Seconds, 1))
		b.setPath("qcow2", pathDownload)
		b.res.Details.MissQcow2Seconds = ptr(round(m.Seconds, 3))
		b.res.Details.WorkerRSSQcow2MiB = m.RSSMiB
	}
	if d, err := b.ceph.QemuImg(ctx, q, b.cfg.Pool, "bench-floor-qemu-"+b.runID); err != nil {
		errs = append(errs, err)
	} else {
		b.res.QemuImgMiBs = ptr(round(mibPerS(b.plan.RawSize, d), 1))
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
	quiet := newQuietLogger()
	c, err := client.Dial(client.Options{HostPort: b.cfg.TemporalAddress, Namespace: b.cfg.Namespace, Logger: sdklog.NewStructuredLogger(quiet)})
	if err != nil {
		return fmt.Errorf("temporal: %w", err)
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
