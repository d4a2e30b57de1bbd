package e2e

// A Glance whose store is the project's Ceph (deploy/glance.sh with GLANCE_STORE=rbd): a raw
// image's volumes are clones of Glance's own RBD snapshot, anything else downloads as before.

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/imagevol/imagevol/storage/librbd"
	"github.com/imagevol/imagevol/worker"
)

// rbdStore is the Glance on RBD and what the tests need to judge it.
type rbdStore struct {
	glance *glance.Client
	url    string
	pool   string // Glance's rbd_store_pool
	log    string // glance-api's log, with its access lines
}

func openRBDStore(t *testing.T) rbdStore {
	t.Helper()
	s := rbdStore{url: os.Getenv("GLANCE_RBD_URL"), pool: os.Getenv("CEPH_IMAGES_POOL"), log: os.Getenv("GLANCE_RBD_LOG")}
	if s.url == "" || s.pool == "" || s.log == "" {
		t.Fatal("GLANCE_RBD_URL, CEPH_IMAGES_POOL and GLANCE_RBD_LOG name the Glance on RBD (deploy/test.sh starts it)")
	}
	var err error
	if s.glance, err = glance.New(s.url, ""); err != nil {
		t.Fatal(err)
	}
	return s
}

// upload puts an image into the Glance on RBD, removed again when the test ends (after the
// test's own cleanups, which free its clones first).
func (s rbdStore) upload(t *testing.T, name, diskFormat string, data []byte) imagesource.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	img, err := s.glance.Create(ctx, glance.CreateOpts{Name: name, DiskFormat: diskFormat, Visibility: imagesource.VisibilityCommunity}, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	t.Cleanup(func() { _ = s.glance.Delete(context.Background(), img.ID) })
	return img
}

// downloads counts the image's GET .../file requests in Glance's access log.
func (s rbdStore) downloads(t *testing.T, imageID string) int {
	t.Helper()
	b, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "GET /v2/images/"+imageID+"/file")
}

// downloadedMiss makes a volume of the image, which must miss the cache and be downloaded once,
// for the given reason.
func (s rbdStore) downloadedMiss(t *testing.T, api *apiClient, imageID, reason string) starter.VolumeView {
	t.Helper()
	v := api.createVolume(imageID, 1)
	requireAvailable(t, v, models.CacheMiss)
	if v.CacheReason != reason {
		t.Fatalf("cache_reason %q, want %s", v.CacheReason, reason)
	}
	if n := s.downloads(t, imageID); n != 1 {
		t.Fatalf("image %s downloaded %d times, want once", imageID, n)
	}
	return v
}

// storeHost runs a storage host whose worker reads images from the Glance on RBD and connects to
// Ceph as the given Ceph user, and a gateway placing volumes on it.
func storeHost(t *testing.T, s rbdStore, name, cephUser, keyring string, edit func(*activities.Config)) (*apiClient, *activities.Activities) {
	t.Helper()
	cluster, err := librbd.ConnectAs(os.Getenv("CEPH_CONF"), cephUser, keyring)
	if err != nil {
		t.Fatalf("connect as client.%s: %v", cephUser, err)
	}
	t.Cleanup(cluster.Close)
	cfg := hostConfig(name)
	cfg.ImageStorePools = []string{s.pool}
	if edit != nil {
		edit(&cfg)
	}
	acts := &activities.Activities{
		Store: stack.store, Storage: cluster, Images: s.glance, Temporal: stack.temporal, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), FSID: stack.fsid,
	}
	runWorkers(t, acts, worker.Options{})
	return newGatewayReading(t, stack.store, s.glance, 10*time.Minute, name), acts
}

func sha512Hex(b []byte) string {
	h := sha512.Sum512(b)
	return hex.EncodeToString(h[:])
}

// The worker's own user (client.imagevol, read-only on Glance's pool) makes a raw image's first
// volume as a clone of Glance's snapshot: nothing is downloaded, the cache volume's parent is
// Glance's image and the user's volume is the cache's clone, and it holds the image's bytes. A
// qcow2 image on the same store is downloaded and converted as before.
func TestImageStoreClone(t *testing.T) {
	s := openRBDStore(t)
	host := "e2e-store"
	api, _ := storeHost(t, s, host, os.Getenv("IMAGEVOL_CEPH_USER"), os.Getenv("IMAGEVOL_CEPH_KEYRING"), nil)
	data := imageBytes(40*mib+4096, 201, 3)
	img := s.upload(t, "store-raw", "raw", data)
	if want := "rbd://" + stack.fsid + "/" + s.pool + "/" + img.ID + "/snap"; img.DirectURL != want {
		t.Fatalf("direct_url %q, want %q", img.DirectURL, want)
	}

	v := api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	if v.CacheReason != "" {
		t.Fatalf("cache_reason %q on a clone of the store", v.CacheReason)
	}
	if n := s.downloads(t, img.ID); n != 0 {
		t.Fatalf("Glance served the image's data %d times", n)
	}
	st := api.stats().Hosts[host]
	if st == nil || st.Downloads != 0 || st.BytesDownloaded != 0 || st.Misses != 1 {
		t.Fatalf("host stats %+v", st)
	}
	es := entriesOf(t, host)
	if len(es) != 1 || es[0].CloneDepth != 1 {
		t.Fatalf("entries %+v, want one at clone depth 1", es)
	}
	want := storage.Parent{Pool: s.pool, Image: img.ID, Snapshot: "snap"}
	if p := stat(t, contract.RBDName(es[0].VolumeID)).Parent; p == nil || *p != want {
		t.Fatalf("cache volume's parent %+v, want %+v", p, want)
	}
	if p := stat(t, contract.RBDName(v.ID)).Parent; p == nil || p.Image != contract.RBDName(es[0].VolumeID) {
		t.Fatalf("volume's parent %+v, want the cache volume", p)
	}
	if got := volumeSHA512(t, v.ID, int64(len(data))); got != sha512Hex(data) {
		t.Fatal("the volume does not hold the image's bytes")
	}

	// qcow2 on the same store: its bytes are converted, so it is downloaded, and says why.
	dir := t.TempDir()
	raw, qcow := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(raw, data[:8*mib], 0o600); err != nil {
		t.Fatal(err)
	}
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, qcow)
	qb, err := os.ReadFile(qcow)
	if err != nil {
		t.Fatal(err)
	}
	qimg := s.upload(t, "store-qcow2", "qcow2", qb)
	qv := s.downloadedMiss(t, api, qimg.ID, contract.ReasonStoreNotRaw)
	if got := volumeSHA512(t, qv.ID, 8*mib); got != sha512Hex(data[:8*mib]) {
		t.Fatal("the converted volume does not hold the disk's bytes")
	}
	if p := stat(t, contract.RBDName(qv.ID)).Parent; p == nil || p.Pool != stack.pool {
		t.Fatalf("qcow2 volume's parent %+v, want its cache volume", p)
	}
}

// The fallbacks: a worker whose Ceph user has no access to Glance's pool, and a location on
// another cluster, download with the reason; the volumes hold the image's bytes.
func TestImageStoreFallbacks(t *testing.T) {
	s := openRBDStore(t)
	for i, tc := range []struct {
		name, host, user, keyring, reason string
		fsid                              string
	}{
		{"no access to Glance's pool", "e2e-store-noimages", os.Getenv("IMAGEVOL_CEPH_NOIMAGES_USER"), os.Getenv("IMAGEVOL_CEPH_NOIMAGES_KEYRING"),
			contract.ReasonStoreNoAccess, ""},
		// One Ceph runs per test run: the worker is told it is on another cluster instead, which
		// is all the check sees of one (the location's fsid against the worker's).
		{"another cluster's location", "e2e-store-other", os.Getenv("IMAGEVOL_CEPH_USER"), os.Getenv("IMAGEVOL_CEPH_KEYRING"),
			contract.ReasonStoreOtherCluster, "00000000-0000-4000-8000-000000000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.user == "" || tc.keyring == "" {
				t.Fatal("the Ceph users come from deploy/ceph.sh's env file")
			}
			api, acts := storeHost(t, s, tc.host, tc.user, tc.keyring, nil)
			if tc.fsid != "" {
				acts.FSID = tc.fsid
			}
			data := imageBytes(12*mib, uint64(210+i), 2)
			img := s.upload(t, "store-fallback", "raw", data)
			v := s.downloadedMiss(t, api, img.ID, tc.reason)
			es := entriesOf(t, tc.host)
			if len(es) != 1 || es[0].CloneDepth != 0 || stat(t, contract.RBDName(es[0].VolumeID)).Parent != nil {
				t.Fatalf("entries %+v: want one cache volume holding its data", es)
			}
			if got := volumeSHA512(t, v.ID, int64(len(data))); got != sha512Hex(data) {
				t.Fatal("the volume does not hold the image's bytes")
			}
		})
	}
}

// Glance cannot delete an image whose snapshot has clones: it refuses (500 with client.glance's
// documented caps, see docs/glance-rbd.md) and keeps the image while a cache entry made of it lives. With image_store.flatten_cache the cache volume is a full
// copy, and Glance deletes the image at once; the entry of the gone image is then dropped by the
// next lookup, and a new volume fails as for any missing image.
func TestImageStoreDeletion(t *testing.T) {
	s := openRBDStore(t)
	user, keyring := os.Getenv("IMAGEVOL_CEPH_USER"), os.Getenv("IMAGEVOL_CEPH_KEYRING")
	data := imageBytes(16*mib, 203, 2)
	ctx := context.Background()

	t.Run("clones pin the image", func(t *testing.T) {
		host := "e2e-store-pin"
		api, acts := storeHost(t, s, host, user, keyring, nil)
		img := s.upload(t, "store-pinned", "raw", data)
		v := api.createVolume(img.ID, 1)
		requireAvailable(t, v, models.CacheMiss)
		// Glance's rbd store lists the snapshot's children before it unprotects it; with the
		// caps Ceph documents for client.glance (its own pool only) that listing is refused, and
		// Glance answers 500 (409 where client.glance may read the volume pools).
		code, body := glanceDelete(t, s, img.ID)
		if code != http.StatusInternalServerError && code != http.StatusConflict {
			t.Fatalf("DELETE with clones: HTTP %d %s, want it refused", code, body)
		}
		if got, err := s.glance.Get(ctx, img.ID); err != nil || got.Status != imagesource.StatusActive {
			t.Fatalf("after the refused delete: %+v, %v", got, err)
		}
		// Free it: delete the volume, evict the entry (the cache volume goes, its clones gone).
		if code := api.call("DELETE", "/v1/volumes/"+v.ID, "", nil); code != http.StatusAccepted {
			t.Fatalf("delete volume: HTTP %d", code)
		}
		waitGone(t, api, v.ID)
		es := entriesOf(t, host)
		if len(es) != 1 {
			t.Fatalf("entries %+v", es)
		}
		if r, err := acts.EvictEntry(ctx, contract.EvictEntryInput{EntryID: es[0].ID}); err != nil || !r.Evicted || r.Trashed {
			t.Fatalf("evict: %+v, %v", r, err)
		}
		if code, body := glanceDelete(t, s, img.ID); code != http.StatusNoContent {
			t.Fatalf("DELETE once nothing clones it: HTTP %d %s", code, body)
		}
	})

	t.Run("flattened cache", func(t *testing.T) {
		host := "e2e-store-flat"
		api, acts := storeHost(t, s, host, user, keyring, func(c *activities.Config) { c.ImageStoreFlattenCache = true })
		img := s.upload(t, "store-flat", "raw", data)
		v := api.createVolume(img.ID, 1)
		requireAvailable(t, v, models.CacheMiss)
		es := entriesOf(t, host)
		if len(es) != 1 || es[0].CloneDepth != 0 || stat(t, contract.RBDName(es[0].VolumeID)).Parent != nil {
			t.Fatalf("entries %+v: want one flattened cache volume", es)
		}
		if n := s.downloads(t, img.ID); n != 0 {
			t.Fatalf("downloaded %d times", n)
		}
		if code, body := glanceDelete(t, s, img.ID); code != http.StatusNoContent {
			t.Fatalf("DELETE with a flattened cache entry: HTTP %d %s", code, body)
		}
		if got := volumeSHA512(t, v.ID, int64(len(data))); got != sha512Hex(data) {
			t.Fatal("the volume lost the image's bytes with the image")
		}
		// The image is gone: the gateway refuses a new volume of it, and the next lookup (a
		// provision already accepted, a pre-warm) fails with ImageNotFound and drops the entry.
		if code := api.call("POST", "/v1/volumes", `{"image_id":"`+img.ID+`","size_gb":1}`, nil); code != http.StatusBadRequest && code != http.StatusNotFound {
			t.Fatalf("volume of a deleted image: HTTP %d", code)
		}
		_, err := acts.LookupCache(ctx, contract.LookupInput{VolumeID: "late", ImageID: img.ID, SizeGB: 1})
		if !strings.Contains(fmt.Sprint(err), contract.ErrTypeImageNotFound) {
			t.Fatalf("lookup of the deleted image: %v", err)
		}
		if es := entriesOf(t, host); len(es) != 0 {
			t.Fatalf("entries of the deleted image left: %+v", es)
		}
	})
}

// glanceDelete deletes an image through Glance's API and returns the answer.
func glanceDelete(t *testing.T, s rbdStore, id string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, strings.TrimSuffix(s.url, "/")+"/v2/images/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
