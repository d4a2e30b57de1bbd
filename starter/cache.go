package starter

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// opWait bounds how long a request waits for an operator workflow (eviction, warm with
// ?wait=true) before answering 202 with its workflow ID.
const opWait = time.Minute

// CacheStats is the body of GET /v1/cache/stats: counters since the database was created, and
// what the cache holds now, in total and per host.
type CacheStats struct {
	models.CacheStat
	Entries      int64                  `json:"entries"`
	BytesCached  int64                  `json:"bytes_cached"`
	BytesTrashed int64                  `json:"bytes_trashed"`
	Hosts        map[string]*CacheStats `json:"hosts,omitempty"`
}

func (c *CacheStats) add(o models.CacheStat) {
	c.Hits += o.Hits
	c.Misses += o.Misses
	c.Evictions += o.Evictions
	c.Downloads += o.Downloads
	c.BytesDownloaded += o.BytesDownloaded
}

func (g *Gateway) cacheStats(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	counters, err := g.Store.Stats(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	entries, err := g.Store.ListCacheEntries(ctx, "")
	if err != nil {
		writeError(w, err)
		return
	}
	trash, err := g.Store.ListTrashed(ctx, "")
	if err != nil {
		writeError(w, err)
		return
	}
	total := &CacheStats{Hosts: map[string]*CacheStats{}}
	host := func(h string) *CacheStats {
		if total.Hosts[h] == nil {
			total.Hosts[h] = &CacheStats{}
		}
		return total.Hosts[h]
	}
	for _, c := range counters {
		total.add(c)
		host(c.Host).add(c)
	}
	for _, e := range entries {
		if e.State != models.EntryReady {
			continue
		}
		for _, s := range []*CacheStats{total, host(e.Host)} {
			s.Entries++
			s.BytesCached += e.SizeBytes
		}
	}
	for _, t := range trash {
		total.BytesTrashed += t.SizeBytes
		host(t.Host).BytesTrashed += t.SizeBytes
	}
	writeJSON(w, http.StatusOK, total)
}

// WarmRequest is the body of POST /v1/cache/warm; no hosts means every host.
type WarmRequest struct {
	ImageID string   `json:"image_id"`
	Hosts   []string `json:"hosts"`
}

// warmCache starts a WarmCache workflow. With ?wait=true it answers with the per-host results
// once the fills are done (or 202 after opWait).
func (g *Gateway) warmCache(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req WarmRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, apiErr(http.StatusBadRequest, "bad_request", "malformed JSON body: %v", err))
		return
	}
	if req.ImageID == "" {
		writeError(w, apiErr(http.StatusBadRequest, "bad_request", "image_id is required"))
		return
	}
	if len(req.Hosts) == 0 {
		req.Hosts = g.Hosts
	}
	for _, h := range req.Hosts {
		if !slices.Contains(g.Hosts, h) {
			writeError(w, apiErr(http.StatusBadRequest, "unknown_host", "host %q is not one of the storage hosts %v", h, g.Hosts))
			return
		}
	}
	img, err := g.usableImage(ctx, projectOf(r), req.ImageID)
	if err != nil {
		writeError(w, err)
		return
	}
	run, err := g.Temporal.ExecuteWorkflow(ctx, contract.WarmOptions(uuid.NewString()), contract.WarmCacheWorkflow, contract.WarmInput{ImageID: img.ID, Hosts: req.Hosts})
	if err != nil {
		writeError(w, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start the warm-up: %v", err))
		return
	}
	g.logCtx(ctx).Info("cache warm-up started", "image_id", img.ID, "hosts", req.Hosts, "workflow_id", run.GetID())
	if wait, _ := strconv.ParseBool(r.URL.Query().Get("wait")); !wait {
		writeJSON(w, http.StatusAccepted, map[string]string{"workflow_id": run.GetID()})
		return
	}
	allowWait(w, opWait)
	wctx, cancel := context.WithTimeout(ctx, opWait)
	defer cancel()
	var res []contract.WarmHostResult
	if err := run.Get(wctx, &res); err != nil {
		writeJSON(w, http.StatusAccepted, map[string]string{"workflow_id": run.GetID()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"workflow_id": run.GetID(), "hosts": res})
}

// entryOf reads the cache entry named in the path.
func (g *Gateway) entryOf(r *http.Request) (*models.CacheEntry, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return nil, apiErr(http.StatusBadRequest, "bad_request", "cache entry id %q is not a number", r.PathValue("id"))
	}
	e, err := g.Store.GetCacheEntry(r.Context(), uint(id))
	if errors.Is(err, models.ErrNotFound) {
		return nil, apiErr(http.StatusNotFound, "cache_entry_not_found", "cache entry %d not found", id)
	}
	return e, err
}

func (g *Gateway) pin(pinned bool) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		e, err := g.entryOf(r)
		if err == nil {
			err = g.Store.SetPinned(r.Context(), e.ID, pinned)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		e.Pinned = pinned
		writeJSON(w, http.StatusOK, entryView(e))
	}
}

// evictEntry evicts an entry now (DELETE /v1/cache/{id}[?force=true]), through an
// EvictCacheEntry workflow on the entry's host, and answers with what it did.
func (g *Gateway) evictEntry(w http.ResponseWriter, r *http.Request) {
	e, err := g.entryOf(r)
	if err != nil {
		writeError(w, err)
		return
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	if e.Pinned && !force {
		writeError(w, apiErr(http.StatusConflict, "cache_entry_pinned", "cache entry %d is pinned; unpin it or use ?force=true", e.ID))
		return
	}
	ctx := r.Context()
	run, err := g.Temporal.ExecuteWorkflow(ctx, contract.EvictOptions(e.ID), contract.EvictEntryWorkflow, contract.EvictCacheEntryInput{Host: e.Host, EntryID: e.ID, Force: force})
	if err != nil {
		writeError(w, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start the eviction: %v", err))
		return
	}
	allowWait(w, opWait)
	wctx, cancel := context.WithTimeout(ctx, opWait)
	defer cancel()
	var res contract.EvictEntryResult
	if err := run.Get(wctx, &res); err != nil {
		var appErr *temporal.ApplicationError
		switch {
		case errors.As(err, &appErr) && appErr.Type() == contract.ErrTypeEntryPinned:
			writeError(w, apiErr(http.StatusConflict, "cache_entry_pinned", "%s", appErr.Message()))
		case wctx.Err() != nil:
			writeJSON(w, http.StatusAccepted, map[string]string{"workflow_id": run.GetID()})
		default:
			writeError(w, err)
		}
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": e.ID, "evicted": res.Evicted, "trashed": res.Trashed})
}

// CacheEntryView is a cache entry as the API shows it.
type CacheEntryView struct {
	ID          uint      `json:"id"`
	Host        string    `json:"host"`
	Pool        string    `json:"pool"`
	ImageID     string    `json:"image_id"`
	ContentHash string    `json:"content_hash"`
	VolumeID    string    `json:"volume_id"`
	SizeBytes   int64     `json:"size_bytes"`
	Hits        int64     `json:"hits"`
	LastUsed    time.Time `json:"last_used"`
	Pinned      bool      `json:"pinned"`
	State       string    `json:"state"`
}

func (g *Gateway) listCache(w http.ResponseWriter, r *http.Request) {
	es, err := g.Store.ListCacheEntries(r.Context(), r.URL.Query().Get("host"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]CacheEntryView, 0, len(es))
	for i := range es {
		out = append(out, entryView(&es[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out})
}

func entryView(e *models.CacheEntry) CacheEntryView {
	return CacheEntryView{
		ID: e.ID, Host: e.Host, Pool: e.Pool, ImageID: e.ImageID, ContentHash: e.ContentHash, VolumeID: e.VolumeID,
		SizeBytes: e.SizeBytes, Hits: e.Hits, LastUsed: e.LastUsed, Pinned: e.Pinned, State: e.State,
	}
}
