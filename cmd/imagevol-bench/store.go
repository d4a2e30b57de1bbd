package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Paths a miss takes to its data, as miss_paths reports them.
const (
	pathDownload = "download" // GET from Glance, hashed, imported
	pathClone    = "clone"    // a clone of Glance's own RBD snapshot
)

// setPath records how the miss of that case got its data.
func (b *bench) setPath(name, path string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.res.MissPaths == nil {
		b.res.MissPaths = map[string]string{}
	}
	b.res.MissPaths[name] = path
}

// storeMiss provisions the RawSize raw pattern from the Glance whose store is the cluster's RBD,
// through the gateway whose workers read that Glance: request → available, and whether Glance
// served the image's data (its access log) to tell the clone from a download. The volume, its
// cache entry and the image are removed again, in that order (Glance refuses to delete an image
// that clones still depend on).
func (b *bench) storeMiss(ctx context.Context) error {
	c := b.cfg
	if c.StoreGatewayURL == "" || c.StoreGlanceURL == "" || c.StoreGlanceLog == "" {
		b.note("miss_glance_rbd_ms: not measured: no gateway on a Glance on RBD (-store-gateway, -store-glance, -store-glance-log)")
		return nil
	}
	path := b.rawFile
	if _, err := os.Stat(path); path == "" || err != nil {
		// The raw miss's file goes once its floors are measured: write the pattern again.
		path = b.scratch("store.img")
		if err := writePattern(path, b.plan.RawSize, b.seed+400); err != nil {
			return err
		}
		defer os.Remove(path)
	}
	gl := &Glance{Base: c.StoreGlanceURL, HC: newHTTPClient(0)}
	gw := &Gateway{Base: c.StoreGatewayURL, Token: c.Token, HC: newHTTPClient(30 * time.Second)}
	// Another name than the file store's copy of the same bytes: a new image to the cache.
	id, err := gl.Upload(ctx, "bench-"+b.runID+"-store-"+sizeKey(b.plan.RawSize), "raw", path)
	if err != nil {
		return fmt.Errorf("upload to the Glance on RBD: %w", err)
	}
	defer func() {
		cctx := context.WithoutCancel(ctx)
		errs := []error{gw.DeleteCreated(cctx, []string{id})}
		if !c.KeepImages {
			errs = append(errs, gl.Delete(cctx, id))
		}
		if err := errors.Join(errs...); err != nil {
			b.note("miss_glance_rbd_ms: cleanup: %v", err)
		}
	}()
	before, err := countDownloads(c.StoreGlanceLog, id)
	if err != nil {
		return err
	}
	t0 := time.Now()
	vid, err := gw.Create(ctx, CreateRequest{ImageID: id, SizeGB: sizeGB(b.plan.RawSize), Name: "bench-" + b.runID + "-store"})
	if err != nil {
		return err
	}
	// Polled as finely as the hits it is compared with.
	v, tEnd, err := gw.Wait(ctx, vid, pollLatency, 30*time.Minute)
	if err != nil {
		return err
	}
	if v.Status != "available" {
		return fmt.Errorf("volume %s is %s: %s", vid, v.Status, v.Error)
	}
	after, err := countDownloads(c.StoreGlanceLog, id)
	if err != nil {
		return err
	}
	path = pathClone
	if after > before {
		path = pathDownload
		b.note("miss_glance_rbd_ms: the image was downloaded, not cloned (cache %s, reason %q)", v.Cache, v.CacheReason)
	}
	b.setPath("glance-rbd-"+sizeKey(b.plan.RawSize), path)
	b.res.MissGlanceRBDMs = ptr(round(ms(tEnd.Sub(t0)), 1))
	b.log.Info("miss from Glance's RBD store", "volume", vid, "ms", *b.res.MissGlanceRBDMs, "path", path, "cache", v.Cache)
	return nil
}

// countDownloads counts the GETs of an image's data in a glance-api log.
func countDownloads(log, imageID string) (int, error) {
	b, err := os.ReadFile(log)
	if err != nil {
		return 0, fmt.Errorf("glance log: %w", err)
	}
	return strings.Count(string(b), http.MethodGet+" /v2/images/"+imageID+"/file"), nil
}
