//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
	"github.com/imagevol/imagevol/storage"
	"github.com/imagevol/imagevol/worker"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// imageBytes makes a disk image of size bytes: dataEvery-th MiB random, the rest zeros, so both
// data and holes go through the import. The seed makes it reproducible.
func imageBytes(size int64, seed uint64, dataEvery int64) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 7})
	for off := int64(0); off < size; off += mib {
		if (off/mib)%dataEvery == 0 {
			_, _ = r.Read(b[off:min(off+mib, size)])
		}
	}
	return b
}

// uploadImage puts data into Glance as a new community image (every project may use it; the
// test Glance, without Keystone, refuses to make public ones) and removes it when the test ends.
func uploadImage(t *testing.T, name, diskFormat string, data []byte) imagesource.Image {
	t.Helper()
	return uploadImageAs(t, glance.CreateOpts{Name: name, DiskFormat: diskFormat, Visibility: imagesource.VisibilityCommunity}, data)
}

// uploadImageAs is uploadImage with the image's options (owner and visibility, say) given.
func uploadImageAs(t *testing.T, opts glance.CreateOpts, data []byte) imagesource.Image {
	t.Helper()
	name := opts.Name
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := stack.glance.Create(ctx, opts, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("upload image %s: %v", name, err)
	}
	if img.Status != imagesource.StatusActive || img.HashAlgo != "sha512" {
		t.Fatalf("image %s: status %s, hash algo %q", img.ID, img.Status, img.HashAlgo)
	}
	t.Cleanup(func() { _ = stack.glance.Delete(context.Background(), img.ID) })
	return img
}

// hostConfig is a storage host with the cache on and no limits; tests change what they test.
func hostConfig(name string) activities.Config {
	return activities.Config{
		Host: name, Pool: stack.pool, ClusterName: stack.fsid, CephConf: os.Getenv("CEPH_CONF"),
		ImageVolumeCacheEnabled:     true,
		CinderInternalTenantProject: "internal-project", CinderInternalTenantUser: "internal-user",
		FlattenPolicy: contract.FlattenNever,
	}
}

// startHost runs the workers of one storage host until the test ends.
func startHost(t *testing.T, cfg activities.Config) *activities.Activities {
	t.Helper()
	return startHostOn(t, stack.store, cfg, worker.Options{})
}

// startHostWith is startHost with the given worker options (a bound on concurrent steps, say).
func startHostWith(t *testing.T, cfg activities.Config, opts worker.Options) *activities.Activities {
	t.Helper()
	return startHostOn(t, stack.store, cfg, opts)
}

// startHostOn runs the workers of one storage host on the given database, with the given worker
// options, until the test ends.
func startHostOn(t *testing.T, store *models.Store, cfg activities.Config, opts worker.Options) *activities.Activities {
	t.Helper()
	var logTo io.Writer = io.Discard
	if os.Getenv("E2E_VERBOSE") != "" {
		logTo = os.Stderr
	}
	acts := &activities.Activities{
		Store: store, Storage: stack.ceph, Images: stack.glance, Temporal: stack.temporal, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(logTo, nil)),
	}
	runWorkers(t, acts, opts)
	return acts
}

// runWorkers starts the workers of acts' host on the test's Temporal until the test ends.
func runWorkers(t *testing.T, acts *activities.Activities, opts worker.Options) {
	t.Helper()
	ws, err := worker.Start(stack.temporal, acts, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, w := range ws {
			w.Stop()
		}
	})
}

// testToken acts for project-e2e as an admin: the tests that use it operate the cache too.
const testToken = "e2e-token"

// adminToken is an operator's token, for the gateways of tests that look at what only operators
// see.
const adminToken = "e2e-admin-token"

// testRoles gives testToken its role.
var testRoles = map[string]starter.Role{testToken: starter.RoleAdmin, adminToken: starter.RoleAdmin}

// client is an HTTP client of a gateway placing volumes on the given hosts.
type apiClient struct {
	t    *testing.T
	base string
}

func newGateway(t *testing.T, hosts ...string) *apiClient {
	t.Helper()
	return newGatewayOn(t, stack.store, 30*time.Minute, hosts...)
}

// newGatewayTimeout is newGateway with the given provision deadline.
func newGatewayTimeout(t *testing.T, timeout time.Duration, hosts ...string) *apiClient {
	t.Helper()
	return newGatewayOn(t, stack.store, timeout, hosts...)
}

// newGatewayOn is newGateway on the given database, with the given provision deadline.
func newGatewayOn(t *testing.T, store *models.Store, timeout time.Duration, hosts ...string) *apiClient {
	t.Helper()
	return newGatewayReading(t, store, stack.glance, timeout, hosts...)
}

// newGatewayReading is newGatewayOn reading images from the given image service.
func newGatewayReading(t *testing.T, store *models.Store, images imagesource.Source, timeout time.Duration, hosts ...string) *apiClient {
	t.Helper()
	gw := &starter.Gateway{
		Store: store, Temporal: stack.temporal, Images: images,
		Tokens: map[string]string{testToken: "project-e2e", adminToken: "admin"}, TokenRoles: testRoles, Hosts: hosts,
		UIURL: "http://127.0.0.1:8233", Namespace: stack.namespace,
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		ProvisionTimeout: timeout,
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &apiClient{t: t, base: srv.URL}
}

func (c *apiClient) call(method, path, body string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

// createVolume requests a volume and waits until it is no longer creating.
func (c *apiClient) createVolume(imageID string, sizeGB int) starter.VolumeView {
	c.t.Helper()
	return c.waitVolume(c.startVolume(imageID, sizeGB, ""))
}

// startVolume requests a volume, on host if not empty, and returns its id without waiting.
func (c *apiClient) startVolume(imageID string, sizeGB int, host string) string {
	c.t.Helper()
	var created map[string]string
	body := fmt.Sprintf(`{"image_id":%q,"size_gb":%d,"name":"e2e","host":%q}`, imageID, sizeGB, host)
	if code := c.call("POST", "/v1/volumes", body, &created); code != http.StatusAccepted {
		c.t.Fatalf("create volume from %s: HTTP %d", imageID, code)
	}
	if created["status"] != models.StatusCreating || created["workflow_id"] != created["id"] {
		c.t.Fatalf("create answer %v", created)
	}
	return created["id"]
}

// stats reads GET /v1/cache/stats.
func (c *apiClient) stats() starter.CacheStats {
	c.t.Helper()
	var s starter.CacheStats
	if code := c.call("GET", "/v1/cache/stats", "", &s); code != http.StatusOK {
		c.t.Fatalf("cache stats: HTTP %d", code)
	}
	return s
}

func (c *apiClient) waitVolume(id string) starter.VolumeView {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var v starter.VolumeView
		if code := c.call("GET", "/v1/volumes/"+id, "", &v); code != http.StatusOK {
			c.t.Fatalf("GET volume %s: HTTP %d", id, code)
		}
		if v.Status != models.StatusCreating {
			return v
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("volume %s still creating after 5 minutes", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func requireAvailable(t *testing.T, v starter.VolumeView, cache string) {
	t.Helper()
	if v.Status != models.StatusAvailable {
		t.Fatalf("volume %s: status %s, error %q", v.ID, v.Status, v.Error)
	}
	if v.Cache != cache {
		t.Fatalf("volume %s: cache %q (reason %q), want %q", v.ID, v.Cache, v.CacheReason, cache)
	}
}

// volumeSHA512 hashes the first n bytes of a volume's RBD image, read back from Ceph from the
// pool its row names.
func volumeSHA512(t *testing.T, volumeID string, n int64) string {
	t.Helper()
	return volumeSHA512On(t, stack.store, volumeID, n)
}

// volumeSHA512On is volumeSHA512 for a volume recorded in the given database.
func volumeSHA512On(t *testing.T, store *models.Store, volumeID string, n int64) string {
	t.Helper()
	pool := stack.pool
	if v, err := store.GetVolume(context.Background(), volumeID); err == nil && v.Pool != "" {
		pool = v.Pool
	}
	r, err := stack.ceph.OpenReader(context.Background(), pool, contract.RBDName(volumeID), "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha512.New()
	// 4 MiB reads: one RADOS object each, not 32 KiB round trips.
	if _, err := io.CopyBuffer(h, io.NewSectionReader(r, 0, n), make([]byte, 4<<20)); err != nil {
		t.Fatalf("read volume %s: %v", volumeID, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func stat(t *testing.T, name string) storage.ImageInfo {
	t.Helper()
	info, err := stack.ceph.Stat(context.Background(), stack.pool, name)
	if err != nil {
		t.Fatalf("stat %s: %v", name, err)
	}
	return info
}

// entriesOf lists a host's cache entries.
func entriesOf(t *testing.T, host string) []models.CacheEntry {
	t.Helper()
	return entriesOn(t, stack.store, host)
}

// entriesOn lists a host's cache entries in the given database.
func entriesOn(t *testing.T, store *models.Store, host string) []models.CacheEntry {
	t.Helper()
	es, err := store.ListCacheEntries(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// removeAllVolumes deletes the RBD images of every volume this run recorded: user volumes
// first, so that cache volumes have no children left when they go.
func (e *env) removeAllVolumes(ctx context.Context) error {
	vols, err := e.store.ListVolumes(ctx, "")
	if err != nil {
		return err
	}
	entries, err := e.store.ListCacheEntries(ctx, "")
	if err != nil {
		return err
	}
	isCache := map[string]bool{}
	for _, en := range entries {
		isCache[en.VolumeID] = true
	}
	var cacheVols []models.Volume
	for _, v := range vols {
		if isCache[v.ID] {
			cacheVols = append(cacheVols, v)
			continue
		}
		if v.Pool == "" {
			continue
		}
		if _, err := e.ceph.Remove(ctx, v.Pool, contract.RBDName(v.ID)); err != nil && !isNotFound(err) {
			return err
		}
	}
	for _, v := range cacheVols {
		if _, err := e.ceph.Remove(ctx, v.Pool, contract.RBDName(v.ID)); err != nil && !isNotFound(err) {
			return err
		}
	}
	// Evicted cache volumes whose clones are now gone.
	trash, err := e.store.ListTrashed(ctx, "")
	if err != nil {
		return err
	}
	for _, t := range trash {
		name := contract.RBDName(t.VolumeID)
		if err := e.ceph.PurgeTrashed(ctx, t.Pool, name); err != nil && !isNotFound(err) {
			return fmt.Errorf("%w; clones of it left: %v", err, e.clonesOf(ctx, t.Pool, name))
		}
	}
	return nil
}

// clonesOf names the images of the run's pools cloned from pool/name.
func (e *env) clonesOf(ctx context.Context, pool, name string) []string {
	var out []string
	for _, p := range []string{e.pool, e.pool2} {
		names, _ := e.ceph.List(ctx, p)
		for _, n := range names {
			if info, err := e.ceph.Stat(ctx, p, n); err == nil && info.Parent != nil && info.Parent.Pool == pool && info.Parent.Image == name {
				out = append(out, p+"/"+n)
			}
		}
	}
	return out
}
