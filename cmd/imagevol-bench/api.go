package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagevol/imagevol/apiclient"
)

// newHTTPClient keeps enough idle connections for the concurrent cases, so that they measure the
// service and not TCP set-up.
func newHTTPClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 128
	return &http.Client{Transport: tr, Timeout: timeout}
}

// APIError is a non-2xx answer of the gateway.
type APIError = apiclient.Error

// Gateway is a client of imagevol's API gateway.
type Gateway struct {
	Base  string       // e.g. http://127.0.0.1:8776, no trailing slash
	Token string       // bearer token
	HC    *http.Client // shared by every request

	mu      sync.Mutex
	created []createdVolume // volumes this run made, deleted at its end
	polls   atomic.Int64    // GET /v1/volumes/{id} sent: each costs the gateway a Temporal RPC while creating
}

// createdVolume is a volume the run made and the image it was made from.
type createdVolume struct{ id, image string }

// CreateRequest is the body of POST /v1/volumes; Host is left out when empty. Its fields are
// the JSON fields named in their tags, as are those of Volume, CacheEntry and CacheStats.
type CreateRequest struct {
	ImageID string `json:"image_id"`
	SizeGB  int    `json:"size_gb"`
	Name    string `json:"name"`
	Host    string `json:"host,omitempty"`
}

// Volume is the part of GET /v1/volumes/{id} the benchmark reads.
type Volume struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Cache       string `json:"cache"`
	CacheReason string `json:"cache_reason"`
	Host        string `json:"host"`
	Error       string `json:"error"`
}

// CacheEntry is the part of a GET /v1/cache entry the benchmark reads.
type CacheEntry struct {
	ID       uint   `json:"id"`
	Host     string `json:"host"`
	Pool     string `json:"pool"`
	ImageID  string `json:"image_id"`
	VolumeID string `json:"volume_id"`
	State    string `json:"state"`
}

// CacheStats is GET /v1/cache/stats.
type CacheStats struct {
	Hits            int64 `json:"hits"`
	Misses          int64 `json:"misses"`
	Evictions       int64 `json:"evictions"`
	Downloads       int64 `json:"downloads"`
	BytesDownloaded int64 `json:"bytes_downloaded"`
	Entries         int64 `json:"entries"`
	BytesCached     int64 `json:"bytes_cached"`
}

// errUnsupported says the gateway does not (yet) serve a request the benchmark would use.
var errUnsupported = errors.New("not supported by this gateway")

func (g *Gateway) do(ctx context.Context, method, path string, body, out any) error {
	return (&apiclient.Client{Base: g.Base, Token: g.Token, HTTP: g.HC}).Do(ctx, method, path, body, out)
}

// Healthz checks that the gateway answers /healthz with 200.
func (g *Gateway) Healthz(ctx context.Context) error {
	return g.do(ctx, http.MethodGet, "/healthz", nil, nil)
}

// Create starts a provision and returns the new volume's ID once the gateway answered 202.
func (g *Gateway) Create(ctx context.Context, r CreateRequest) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	if err := g.do(ctx, http.MethodPost, "/v1/volumes", r, &out); err != nil {
		return "", err
	}
	if out.ID == "" {
		return "", errors.New("POST /v1/volumes: answer has no id")
	}
	g.mu.Lock()
	g.created = append(g.created, createdVolume{out.ID, r.ImageID})
	g.mu.Unlock()
	return out.ID, nil
}

// DeleteCreated deletes every volume this client created (a few at a time), waits until they are
// gone, then evicts the cache entries of the given images, so a run leaves Ceph as it found it.
func (g *Gateway) DeleteCreated(ctx context.Context, images []string) error {
	return g.deleteAndEvict(ctx, func(createdVolume) bool { return true }, images)
}

// DeleteVolumesOf deletes the volumes this client created from the given images and evicts those
// images' cache entries, waiting until both are gone.
func (g *Gateway) DeleteVolumesOf(ctx context.Context, images []string) error {
	err := g.deleteAndEvict(ctx, func(v createdVolume) bool { return slices.Contains(images, v.image) }, images)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		entries, err := g.CacheEntries(ctx)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(entries, func(e CacheEntry) bool { return slices.Contains(images, e.ImageID) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("cache entries still there 2 minutes after their eviction")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deleteAndEvict deletes the created volumes that match (a few at a time), waits until they are
// gone, then evicts the cache entries of images.
func (g *Gateway) deleteAndEvict(ctx context.Context, match func(createdVolume) bool, images []string) error {
	g.mu.Lock()
	var ids []string
	for _, v := range g.created {
		if match(v) {
			ids = append(ids, v.id)
		}
	}
	g.created = slices.DeleteFunc(g.created, match)
	g.mu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, 8)
	)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := g.deleteVolume(ctx, id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	entries, err := g.CacheEntries(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		if slices.Contains(images, e.ImageID) {
			if err := g.do(ctx, http.MethodDelete, fmt.Sprintf("/v1/cache/%d?force=true", e.ID), nil, nil); err != nil {
				errs = append(errs, fmt.Errorf("evict cache entry %d: %w", e.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// deleteVolume deletes one volume and waits until the gateway no longer knows it.
func (g *Gateway) deleteVolume(ctx context.Context, id string) error {
	if err := g.do(ctx, http.MethodDelete, "/v1/volumes/"+id, nil, nil); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := g.Volume(ctx, id)
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("volume %s still there 2 minutes after its deletion", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Volume reads one volume.
func (g *Gateway) Volume(ctx context.Context, id string) (Volume, error) {
	var v Volume
	g.polls.Add(1)
	err := g.do(ctx, http.MethodGet, "/v1/volumes/"+id, nil, &v)
	return v, err
}

// Wait polls a volume every interval until it leaves "creating" and returns it with the time the
// answer that showed its final state arrived.
func (g *Gateway) Wait(ctx context.Context, id string, interval, timeout time.Duration) (Volume, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v, err := g.Volume(ctx, id)
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return v, now, fmt.Errorf("volume %s: still creating after %s", id, timeout)
			}
			return v, now, err
		}
		if v.Status != "creating" {
			return v, now, nil
		}
		select {
		case <-ctx.Done():
			return v, now, fmt.Errorf("volume %s: still creating after %s", id, timeout)
		case <-t.C:
		}
	}
}

// CacheEntries lists the cache entries of every host.
func (g *Gateway) CacheEntries(ctx context.Context) ([]CacheEntry, error) {
	var out struct {
		Entries []CacheEntry `json:"entries"`
	}
	err := g.do(ctx, http.MethodGet, "/v1/cache", nil, &out)
	return out.Entries, err
}

// CacheStats reads GET /v1/cache/stats; errUnsupported when the gateway does not serve it.
func (g *Gateway) CacheStats(ctx context.Context) (CacheStats, error) {
	var raw map[string]json.RawMessage
	if err := g.do(ctx, http.MethodGet, "/v1/cache/stats", nil, &raw); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
			return CacheStats{}, fmt.Errorf("GET /v1/cache/stats: %w (HTTP %d)", errUnsupported, ae.Status)
		}
		return CacheStats{}, err
	}
	if _, ok := raw["downloads"]; !ok {
		return CacheStats{}, fmt.Errorf("GET /v1/cache/stats: %w (no \"downloads\" field)", errUnsupported)
	}
	var s CacheStats
	b, _ := json.Marshal(raw)
	return s, json.Unmarshal(b, &s)
}

// HostFieldSupported tells whether POST /v1/volumes accepts the optional "host" field. It sends a
// request that is invalid anyway (no image), so that no volume is made either way: a gateway that
// knows the field answers "image_id is required", one that does not rejects the unknown field.
func (g *Gateway) HostFieldSupported(ctx context.Context, host string) (bool, error) {
	_, err := g.Create(ctx, CreateRequest{SizeGB: 1, Name: "bench-probe", Host: host})
	var ae *APIError
	switch {
	case err == nil:
		return false, errors.New("POST /v1/volumes accepted a request without image_id")
	case !errors.As(err, &ae) || ae.Status != http.StatusBadRequest:
		return false, err
	case strings.Contains(ae.Message, `unknown field "host"`):
		return false, nil
	}
	return true, nil
}

// Glance is a client of Glance's v2 API without authentication.
type Glance struct {
	Base string       // e.g. http://127.0.0.1:9292, no trailing slash
	HC   *http.Client // without a timeout: uploads of 4 GiB take a while
}

// Upload creates a community image (the gateway lets every project use it; a Glance without
// Keystone refuses to make public ones) and uploads the file's bytes; it returns once Glance
// says "active".
func (g *Glance) Upload(ctx context.Context, name, diskFormat, path string) (string, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "disk_format": diskFormat, "container_format": "bare", "visibility": "community"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.Base+"/v2/images", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	var img struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := g.send(req, http.StatusCreated, &img); err != nil {
		return "", fmt.Errorf("glance: create image: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return img.ID, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return img.ID, err
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, g.Base+"/v2/images/"+img.ID+"/file", f)
	if err != nil {
		return img.ID, err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	if err := g.send(req, http.StatusNoContent, nil); err != nil {
		return img.ID, fmt.Errorf("glance: upload %s: %w", img.ID, err)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, g.Base+"/v2/images/"+img.ID, nil)
	if err != nil {
		return img.ID, err
	}
	if err := g.send(req, http.StatusOK, &img); err != nil {
		return img.ID, fmt.Errorf("glance: get %s: %w", img.ID, err)
	}
	if img.Status != "active" {
		return img.ID, fmt.Errorf("glance: image %s is %q after upload", img.ID, img.Status)
	}
	return img.ID, nil
}

// ImageInfo is the part of GET /v2/images/{id} the benchmark reads.
type ImageInfo struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Size      int64  `json:"size"`
	HashAlgo  string `json:"os_hash_algo"`
	HashValue string `json:"os_hash_value"`
}

// Image reads an image's record.
func (g *Glance) Image(ctx context.Context, id string) (ImageInfo, error) {
	var img ImageInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.Base+"/v2/images/"+id, nil)
	if err != nil {
		return img, err
	}
	if err := g.send(req, http.StatusOK, &img); err != nil {
		return img, fmt.Errorf("glance: get %s: %w", id, err)
	}
	return img, nil
}

// Download reads an image's bytes into io.Discard and returns how many there were.
func (g *Glance) Download(ctx context.Context, id string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.Base+"/v2/images/"+id+"/file", nil)
	if err != nil {
		return 0, err
	}
	resp, err := g.HC.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("glance: download %s: %s", id, resp.Status)
	}
	return io.Copy(io.Discard, resp.Body)
}

// Delete removes an image.
func (g *Glance) Delete(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, g.Base+"/v2/images/"+id, nil)
	if err != nil {
		return err
	}
	return g.send(req, http.StatusNoContent, nil)
}

func (g *Glance) send(req *http.Request, want int, out any) error {
	resp, err := g.HC.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %.300s", req.Method, req.URL.Path, resp.Status, data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}
