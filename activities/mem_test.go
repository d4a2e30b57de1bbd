package activities

// Unit tests of the steps on the in-memory parts: storage/memstorage for Ceph, imagesource/
// memsource for Glance and the embedded SQLite store, each step run in Temporal's activity test
// environment (heartbeats, heartbeat details of an earlier attempt).

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/memsource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage/memstorage"
)

const (
	tHost     = "node1"
	tPool     = "volumes"
	tCluster  = "test-cluster"
	tInternal = "internal-project"
)

type fixture struct {
	t       *testing.T
	a       *Activities
	store   *models.Store
	storage *memstorage.Storage
	images  *memsource.Source
	suite   testsuite.WorkflowTestSuite
}

func newFixture(t *testing.T, edit func(*Config)) *fixture {
	t.Helper()
	store, err := models.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "imagevol.db"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := Config{
		Host: tHost, ClusterName: tCluster, Pool: tPool, ImageVolumeCacheEnabled: true,
		CinderInternalTenantProject: tInternal, CinderInternalTenantUser: "internal-user",
	}
	if edit != nil {
		edit(&cfg)
	}
	f := &fixture{t: t, store: store, storage: memstorage.New(tPool, "volumes2"), images: memsource.New()}
	f.suite.SetLogger(quietLogger{})
	f.a = &Activities{Store: store, Storage: f.storage, Images: f.images, Config: cfg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Identity: "this-worker"}
	return f
}

// run executes one step in an activity test environment; details, when not nil, are the
// heartbeat details of the attempt before.
func run[T any](f *fixture, details any, fn any, in ...any) (T, error) {
	env := f.suite.NewTestActivityEnvironment()
	env.RegisterActivity(f.a)
	if details != nil {
		env.SetHeartbeatDetails(details)
	}
	var out T
	v, err := env.ExecuteActivity(fn, in...)
	if err == nil && v != nil && v.HasValue() {
		err = v.Get(&out)
	}
	return out, err
}

func errType(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Type()
	}
	return ""
}

func data(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s: line %d of raw test data\n", seed, i)
	}
	return b.Bytes()[:n]
}

func ref(img imagesource.Image) contract.ImageRef {
	return contract.ImageRef{ID: img.ID, Size: img.Size, VirtualSize: img.VirtualSize, HashAlgo: img.HashAlgo, HashValue: img.HashValue,
		Checksum: img.Checksum, ContentHash: img.ContentHash(), UpdatedAt: img.UpdatedAt}
}

// seed makes a ready cache entry of an image on a host and pool: its cache volume's image with
// the data and snapshot in storage, its volume row and its entry row, last used at lastUsed.
func (f *fixture) seed(imageID, host, pool string, lastUsed time.Time, pinned bool) models.CacheEntry {
	f.t.Helper()
	ctx := context.Background()
	img, err := f.images.Get(ctx, imageID)
	if err != nil {
		img = f.images.Add(imageID, data(imageID, 64<<10))
	}
	d, _ := f.images.Open(ctx, imageID, 0)
	b, _ := io.ReadAll(d)
	volID := fmt.Sprintf("cache-%s-%s", imageID, host)
	name := contract.RBDName(volID)
	if err := f.storage.Create(ctx, pool, name, uint64(len(b))); err != nil {
		f.t.Fatal(err)
	}
	w, _ := f.storage.OpenWriter(ctx, pool, name)
	if _, err := w.WriteAt(b, 0); err != nil {
		f.t.Fatal(err)
	}
	w.Close()
	if err := f.storage.CreateSnapshot(ctx, pool, name, contract.CacheSnapshot); err != nil {
		f.t.Fatal(err)
	}
	v := &models.Volume{ID: volID, ProjectID: tInternal, SizeGB: 1, ImageID: imageID, Host: host, Pool: pool, Status: models.StatusAvailable}
	e := &models.CacheEntry{Host: host, ClusterName: tCluster, Pool: pool, ImageID: imageID, ImageUpdatedAt: img.UpdatedAt,
		ContentHash: img.ContentHash(), VolumeID: volID, Size: 1, SizeBytes: int64(len(b)), LastUsed: lastUsed.UTC(),
		State: models.EntryFilling, FillWorkflowID: "fill-" + imageID}
	if err := f.store.ReserveCacheSlot(ctx, v, e); err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.MarkCacheEntryReady(ctx, e.ID, int64(len(b)), 0, lastUsed.UTC()); err != nil {
		f.t.Fatal(err)
	}
	if pinned {
		if err := f.store.SetPinned(ctx, e.ID, true); err != nil {
			f.t.Fatal(err)
		}
	}
	got, err := f.store.GetCacheEntry(ctx, e.ID)
	if err != nil {
		f.t.Fatal(err)
	}
	return *got
}

func (f *fixture) entryIDs() []uint {
	f.t.Helper()
	es, err := f.store.ListCacheEntries(context.Background(), "")
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []uint
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestLookupCache(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name    string
		config  func(*Config)
		setup   func(f *fixture) // after the image "img" exists
		in      contract.LookupInput
		errType string
		check   func(t *testing.T, f *fixture, r contract.LookupResult)
	}{
		{name: "miss", in: contract.LookupInput{ImageID: "img", SizeGB: 1}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
			if r.Hit || !r.Cacheable || r.Pool != tPool || r.Cluster != tCluster || r.Image.Size != 1000 || r.Image.ContentHash == "" {
				t.Fatalf("%+v", r)
			}
		}},
		{name: "hit touches the entry", setup: func(f *fixture) { f.seed("img", tHost, tPool, old, false) },
			in: contract.LookupInput{ImageID: "img", SizeGB: 1}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
				e, _ := f.store.GetCacheEntry(context.Background(), r.Entry.EntryID)
				if !r.Hit || r.Entry.Host != tHost || e.Hits != 1 || !e.LastUsed.After(old) {
					t.Fatalf("%+v, entry %+v", r, e)
				}
			}},
		{name: "hit on another host of the cluster", setup: func(f *fixture) { f.seed("img", "node2", "volumes2", old, false) },
			in: contract.LookupInput{ImageID: "img", SizeGB: 1}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
				if !r.Hit || r.Entry.Host != "node2" || r.Entry.Pool != "volumes2" || r.Pool != tPool {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "this host's entry first", setup: func(f *fixture) {
			f.seed("img", "node2", "volumes2", time.Now(), false)
			f.seed("img", tHost, tPool, old, false)
		}, in: contract.LookupInput{ImageID: "img", SizeGB: 1}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
			if !r.Hit || r.Entry.Host != tHost {
				t.Fatalf("%+v", r)
			}
		}},
		{name: "re-uploaded content evicts the stale entry", setup: func(f *fixture) {
			f.seed("img", tHost, tPool, old, false)
			f.images.Reupload("img", data("new", 2000))
		}, in: contract.LookupInput{ImageID: "img", SizeGB: 1}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
			if r.Hit || !r.Cacheable || len(f.entryIDs()) != 0 || len(f.storage.Images(tPool)) != 0 {
				t.Fatalf("%+v; entries %v, images %v", r, f.entryIDs(), f.storage.Images(tPool))
			}
		}},
		{name: "disabled", config: func(c *Config) { c.ImageVolumeCacheEnabled = false }, in: contract.LookupInput{ImageID: "img", SizeGB: 1},
			check: func(t *testing.T, f *fixture, r contract.LookupResult) {
				if r.Hit || r.Cacheable || r.Reason != contract.ReasonDisabled {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "too big for the cache", config: func(c *Config) { c.ImageVolumeCacheMaxSizeGB = 1 },
			setup: func(f *fixture) { f.images.Update("img", func(i *imagesource.Image) { i.VirtualSize = 3 << 30 }) },
			in:    contract.LookupInput{ImageID: "img", SizeGB: 5}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
				if r.Cacheable || r.Reason != contract.ReasonTooBig {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "pre-warm skips the size check", setup: func(f *fixture) { f.images.Update("img", func(i *imagesource.Image) { i.VirtualSize = 3 << 30 }) },
			in: contract.LookupInput{ImageID: "img", Prewarm: true}, check: func(t *testing.T, f *fixture, r contract.LookupResult) {
				if !r.Cacheable {
					t.Fatalf("%+v", r)
				}
			}},
		{name: "volume too small", setup: func(f *fixture) { f.images.Update("img", func(i *imagesource.Image) { i.VirtualSize = 3 << 30 }) },
			in: contract.LookupInput{ImageID: "img", SizeGB: 2}, errType: contract.ErrTypeVolumeTooSmall},
		{name: "not found", setup: func(f *fixture) { f.images.Delete("img") }, in: contract.LookupInput{ImageID: "img", SizeGB: 1}, errType: contract.ErrTypeImageNotFound},
		{name: "deactivated evicts", setup: func(f *fixture) { f.seed("img", tHost, tPool, old, false); f.images.Deactivate("img") },
			in: contract.LookupInput{ImageID: "img", SizeGB: 1}, errType: contract.ErrTypeImageNotActive, check: func(t *testing.T, f *fixture, _ contract.LookupResult) {
				if len(f.entryIDs()) != 0 {
					t.Fatal("the deactivated image's entry was kept")
				}
			}},
		{name: "no hash", setup: func(f *fixture) {
			f.images.Update("img", func(i *imagesource.Image) { i.HashAlgo, i.HashValue, i.Checksum = "", "", "" })
		}, in: contract.LookupInput{ImageID: "img", SizeGB: 1}, errType: contract.ErrTypeImageNoHash},
		{name: "bad flatten policy", config: func(c *Config) { c.FlattenPolicy = "sometimes" }, in: contract.LookupInput{ImageID: "img", SizeGB: 1}, errType: contract.ErrTypeUnsupported},
		{name: "image service down", setup: func(f *fixture) { f.images.FailNext(memsource.MethodGet, imagesource.ErrUnavailable) },
			in: contract.LookupInput{ImageID: "img", SizeGB: 1}, errType: contract.ErrTypeImageServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.config)
			f.images.Add("img", data("img", 1000))
			if tc.setup != nil {
				tc.setup(f)
			}
			if tc.errType == contract.ErrTypeImageServiceUnavailable {
				// Called directly, to see the error as the worker's interceptor does: retryable,
				// and typed by contract.TypedError.
				_, err := f.a.LookupCache(context.Background(), tc.in)
				if !errors.Is(err, imagesource.ErrUnavailable) || errType(contract.TypedError(err)) != contract.ErrTypeImageServiceUnavailable {
					t.Fatalf("err = %v", err)
				}
				return
			}
			r, err := run[contract.LookupResult](f, nil, f.a.LookupCache, tc.in)
			switch {
			case tc.errType != "":
				if errType(err) != tc.errType {
					t.Fatalf("err = %v, want %s", err, tc.errType)
				}
			case err != nil:
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, f, r)
			}
		})
	}
}

// EvictLRU makes room by evicting least recently used entries that are ready, not pinned and not
// leased, then reserves a filling slot; with nothing left to evict it says which limit blocks.
func TestEvictLRU(t *testing.T) {
	now := time.Now()
	type seedSpec struct {
		image   string
		age     time.Duration
		pinned  bool
		leased  bool
		cloned  bool // a user volume is a clone of it: evicting it trashes the cache volume
		another bool // on another host
	}
	for _, tc := range []struct {
		name     string
		config   func(*Config)
		seeds    []seedSpec
		reserved bool
		ready    bool
		reason   string
		evicted  []string // images whose entries go, in order
		trashed  []string // their cache volumes in the trash
	}{
		{name: "room", seeds: []seedSpec{{image: "a", age: time.Hour}}, reserved: true},
		{name: "LRU first", config: func(c *Config) { c.ImageVolumeCacheMaxCount = 2 },
			seeds:    []seedSpec{{image: "new", age: time.Minute}, {image: "old", age: time.Hour}},
			reserved: true, evicted: []string{"old"}},
		{name: "pinned kept", config: func(c *Config) { c.ImageVolumeCacheMaxCount = 2 },
			seeds:    []seedSpec{{image: "new", age: time.Minute}, {image: "old", age: time.Hour, pinned: true}},
			reserved: true, evicted: []string{"new"}},
		{name: "leased kept", config: func(c *Config) { c.ImageVolumeCacheMaxCount = 2 },
			seeds:    []seedSpec{{image: "new", age: time.Minute}, {image: "old", age: time.Hour, leased: true}},
			reserved: true, evicted: []string{"new"}},
		{name: "several for the size", config: func(c *Config) { c.ImageVolumeCacheMaxSizeGB = 1 },
			seeds: []seedSpec{{image: "a", age: 3 * time.Hour}, {image: "b", age: 2 * time.Hour}, {image: "c", age: time.Hour}},
			// The image of the fill is 1 GiB less 100 KiB: every 64 KiB entry but one must go.
			reserved: true, evicted: []string{"a", "b"}},
		{name: "cloned goes to the trash", config: func(c *Config) { c.ImageVolumeCacheMaxCount = 1 },
			seeds: []seedSpec{{image: "a", age: time.Hour, cloned: true}}, reserved: true, evicted: []string{"a"}, trashed: []string{"a"}},
		{name: "full of pinned", config: func(c *Config) { c.ImageVolumeCacheMaxCount = 1 },
			seeds: []seedSpec{{image: "a", age: time.Hour, pinned: true}}, reason: contract.ReasonFull},
		{name: "quota", config: func(c *Config) { c.InternalQuotaVolumes = 1 },
			seeds: []seedSpec{{image: "a", age: time.Hour, pinned: true}}, reason: contract.ReasonQuota},
		{name: "other hosts' entries are not this host's to evict", config: func(c *Config) { c.ImageVolumeCacheMaxCount = 1 },
			seeds: []seedSpec{{image: "a", age: time.Hour, another: true}}, reserved: true},
		{name: "already cached in the cluster", seeds: []seedSpec{{image: "fill", age: time.Hour, another: true}}, ready: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.config)
			ctx := context.Background()
			byImage := map[uint]string{}
			for _, s := range tc.seeds {
				host, pool := tHost, tPool
				if s.another {
					host, pool = "node2", "volumes2"
				}
				e := f.seed(s.image, host, pool, now.Add(-s.age), s.pinned)
				byImage[e.ID] = s.image
				if s.leased {
					if _, err := f.store.LeaseCacheEntry(ctx, e.ID, "someone", time.Now().UTC(), time.Hour); err != nil {
						t.Fatal(err)
					}
				}
				if s.cloned {
					if err := f.storage.Clone(ctx, contract.CacheParent(pool, e.VolumeID), tPool, "volume-user-"+s.image); err != nil {
						t.Fatal(err)
					}
				}
			}
			fill, err := f.images.Get(ctx, "fill")
			if err != nil {
				fill = f.images.Add("fill", data("fill", 4096))
			}
			r := ref(fill)
			if tc.name == "several for the size" {
				r.VirtualSize = 1<<30 - 100<<10
			}
			before := f.entryIDs()
			res, err := run[contract.EvictResult](f, nil, f.a.EvictLRU, contract.EvictInput{Image: r, FillWorkflowID: "fill-wf"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Reserved != tc.reserved || res.Ready != tc.ready || res.Reason != tc.reason {
				t.Fatalf("result %+v", res)
			}
			var evicted []string
			for _, id := range res.Evicted {
				evicted = append(evicted, byImage[id])
			}
			if !slices.Equal(evicted, tc.evicted) {
				t.Fatalf("evicted %v, want %v", evicted, tc.evicted)
			}
			for _, id := range before {
				gone := !slices.Contains(f.entryIDs(), id)
				if gone != slices.Contains(tc.evicted, byImage[id]) {
					t.Fatalf("entry of %s gone: %v", byImage[id], gone)
				}
				name := contract.RBDName(fmt.Sprintf("cache-%s-%s", byImage[id], tHost))
				if gone && f.storage.Exists(tPool, name) {
					t.Fatalf("evicted %s's cache volume still there", byImage[id])
				}
			}
			var trashed []string
			for _, n := range f.storage.Trashed(tPool) {
				trashed = append(trashed, n[len("volume-cache-"):len(n)-len("-"+tHost)])
			}
			if !slices.Equal(trashed, tc.trashed) {
				t.Fatalf("trash %v, want %v", trashed, tc.trashed)
			}
			if tr, _ := f.store.ListTrashed(ctx, tHost); len(tr) != len(tc.trashed) {
				t.Fatalf("trashed rows %+v", tr)
			}
			if tc.reserved {
				e, err := f.store.GetCacheEntry(ctx, res.EntryID)
				if err != nil || e.State != models.EntryFilling || e.FillWorkflowID != "fill-wf" || e.Host != tHost {
					t.Fatalf("reservation %+v, %v", e, err)
				}
				v, err := f.store.GetVolume(ctx, res.CacheVolumeID)
				if err != nil || v.ProjectID != tInternal || v.Status != models.StatusCreating {
					t.Fatalf("cache volume row %+v, %v", v, err)
				}
				// The same fill asking again (a retried attempt) gets its reservation back.
				again, err := run[contract.EvictResult](f, nil, f.a.EvictLRU, contract.EvictInput{Image: r, FillWorkflowID: "fill-wf"})
				if err != nil || !again.Reserved || again.EntryID != res.EntryID {
					t.Fatalf("retried reservation %+v, %v", again, err)
				}
				// Another fill of the same content finds it in progress.
				other, err := run[contract.EvictResult](f, nil, f.a.EvictLRU, contract.EvictInput{Image: r, FillWorkflowID: "other"})
				if err != nil || other.Reserved || other.Reason != contract.ReasonFillInProgress {
					t.Fatalf("competing reservation %+v, %v", other, err)
				}
			}
		})
	}
}

// DownloadImage verifies the bytes against the published hash and size as they stream into the
// staging image; a lying image fails for good and leaves no staging image.
func TestDownloadImage(t *testing.T) {
	body := data("img", 300<<10)
	for _, tc := range []struct {
		name    string
		publish func(img *imagesource.Image) []byte // edits the metadata, returns the bytes served
		errType string
		retry   bool // a retryable failure that keeps the staging image
	}{
		{name: "sha512", publish: func(*imagesource.Image) []byte { return body }},
		{name: "md5 only", publish: func(img *imagesource.Image) []byte { img.HashAlgo, img.HashValue = "", ""; return body }},
		{name: "hash mismatch", publish: func(*imagesource.Image) []byte {
			b := bytes.Clone(body)
			b[1000] ^= 1
			return b
		}, errType: contract.ErrTypeHashMismatch},
		{name: "more than declared", publish: func(img *imagesource.Image) []byte { img.Size -= 1; return body }, errType: contract.ErrTypeSizeMismatch},
		{name: "less than declared", publish: func(img *imagesource.Image) []byte { return body[:len(body)-10] }, retry: true},
		{name: "no hash", publish: func(img *imagesource.Image) []byte {
			img.HashAlgo, img.HashValue, img.Checksum = "", "", ""
			return body
		}, errType: contract.ErrTypeImageNoHash},
		{name: "unknown algorithm", publish: func(img *imagesource.Image) []byte { img.HashAlgo, img.Checksum = "blake3", ""; return body }, errType: contract.ErrTypeImageNoHash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			img := memsource.Describe("img", body)
			served := tc.publish(&img)
			f.images.Put(img, served)
			in := contract.DownloadInput{Image: ref(img), Pool: tPool, Target: "volume-x"}
			res, err := run[contract.DownloadResult](f, nil, f.a.DownloadImage, in)
			staging := contract.StagingName("volume-x")
			switch {
			case tc.errType != "":
				var appErr *temporal.ApplicationError
				if errType(err) != tc.errType || !errors.As(err, &appErr) || !appErr.NonRetryable() {
					t.Fatalf("err = %v, want final %s", err, tc.errType)
				}
				if f.storage.Exists(tPool, staging) {
					t.Fatal("the staging image of a rejected download was kept")
				}
			case tc.retry:
				var appErr *temporal.ApplicationError
				if err == nil || errors.As(err, &appErr) && appErr.NonRetryable() {
					t.Fatalf("err = %v, want a retryable error", err)
				}
				if !f.storage.Exists(tPool, staging) {
					t.Fatal("the staging image was dropped")
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if res.Bytes != int64(len(body)) || res.ResumedFrom != 0 {
					t.Fatalf("result %+v", res)
				}
				got, _ := f.storage.ReadAll(tPool, staging, "")
				if !bytes.Equal(got, body) {
					t.Fatal("staging image differs from the image")
				}
				if f.storage.OpenHandles(tPool, staging) != 0 {
					t.Fatal("the staging image was left open")
				}
			}
		})
	}
}

// A retried download resumes from its last heartbeat: the bytes before it stay in the staging
// image, the digest continues from its saved state, and only the rest is requested.
func TestDownloadImageResumes(t *testing.T) {
	body := data("img", 5<<20+123) // two stream blocks and a bit
	const offset = 4 << 20
	for _, tc := range []struct {
		name        string
		stagingSize int // of the staging image an earlier attempt left; 0: none
		writer      string
		resumed     int64
		fenced      []string
	}{
		{name: "resume", stagingSize: len(body), writer: "this-worker", resumed: offset},
		{name: "resume after another worker, fenced", stagingSize: len(body), writer: "dead-worker", resumed: offset, fenced: []string{"dead-worker"}},
		{name: "no staging image: start over", stagingSize: 0, writer: "this-worker", resumed: 0},
		{name: "staging of another size: start over", stagingSize: 1000, writer: "this-worker", resumed: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			var fenced []string
			f.a.FenceWriter = func(w string) { fenced = append(fenced, w) }
			img := f.images.Add("img", body)
			ctx := context.Background()
			staging := contract.StagingName("volume-x")
			if tc.stagingSize > 0 {
				if err := f.storage.Create(ctx, tPool, staging, uint64(tc.stagingSize)); err != nil {
					t.Fatal(err)
				}
				if tc.stagingSize == len(body) {
					w, _ := f.storage.OpenWriter(ctx, tPool, staging)
					w.WriteAt(body[:offset], 0)
					w.Close()
				}
			}
			h := sha512.New()
			h.Write(body[:offset])
			state, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
			progress := contract.DownloadProgress{Offset: offset, Total: int64(len(body)), HashState: state, Writer: tc.writer}
			res, err := run[contract.DownloadResult](f, progress, f.a.DownloadImage, contract.DownloadInput{Image: ref(img), Pool: tPool, Target: "volume-x"})
			if err != nil {
				t.Fatal(err)
			}
			if res.ResumedFrom != tc.resumed || res.Bytes != int64(len(body))-tc.resumed {
				t.Fatalf("result %+v, want resumed from %d", res, tc.resumed)
			}
			if got, _ := f.storage.ReadAll(tPool, staging, ""); !bytes.Equal(got, body) {
				t.Fatal("staging image differs from the image")
			}
			if got := f.images.Offsets("img"); !slices.Equal(got, []int64{tc.resumed}) {
				t.Fatalf("image opened at %v, want %d", got, tc.resumed)
			}
			if !slices.Equal(fenced, tc.fenced) {
				t.Fatalf("fenced %v, want %v", fenced, tc.fenced)
			}
		})
	}
}

// An image already imported (target there, staging gone) is not downloaded again.
func TestDownloadImageAlreadyImported(t *testing.T) {
	f := newFixture(t, nil)
	img := f.images.Add("img", data("img", 1000))
	if err := f.storage.Create(context.Background(), tPool, "volume-x", 1000); err != nil {
		t.Fatal(err)
	}
	res, err := run[contract.DownloadResult](f, nil, f.a.DownloadImage, contract.DownloadInput{Image: ref(img), Pool: tPool, Target: "volume-x"})
	if err != nil || res != (contract.DownloadResult{}) || f.images.Calls(memsource.MethodOpen) != 0 {
		t.Fatalf("%+v, %v; opened %d times", res, err, f.images.Calls(memsource.MethodOpen))
	}
}

// ImportImage renames verified raw data into place, and refuses a disk larger than the volume.
func TestImportImage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int64
		errType string
	}{
		{name: "raw", max: 1 << 30},
		{name: "larger than the volume", max: 1000, errType: contract.ErrTypeVolumeTooSmall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			ctx := context.Background()
			body := data("img", 8192)
			staging := contract.StagingName("volume-x")
			f.storage.Create(ctx, tPool, staging, uint64(len(body)))
			w, _ := f.storage.OpenWriter(ctx, tPool, staging)
			w.WriteAt(body, 0)
			w.Close()
			res, err := run[contract.ImportResult](f, nil, f.a.ImportImage, contract.ImportInput{Pool: tPool, Target: "volume-x", MaxVirtualSize: tc.max})
			if tc.errType != "" {
				if errType(err) != tc.errType || f.storage.Exists(tPool, staging) {
					t.Fatalf("err = %v, staging kept %v", err, f.storage.Exists(tPool, staging))
				}
				return
			}
			if err != nil || res.Format != "raw" || res.VirtualSize != int64(len(body)) {
				t.Fatalf("%+v, %v", res, err)
			}
			if got := f.storage.Images(tPool); !slices.Equal(got, []string{"volume-x"}) {
				t.Fatalf("images %v", got)
			}
			// A retry after the rename finds it done.
			res, err = run[contract.ImportResult](f, nil, f.a.ImportImage, contract.ImportInput{Pool: tPool, Target: "volume-x", MaxVirtualSize: tc.max})
			if err != nil || res.Format != "done" {
				t.Fatalf("retried import: %+v, %v", res, err)
			}
		})
	}
}

// CloneVolume clones a user volume from a ready entry under a lease it releases; an evicted entry
// or a vanished cache volume is CacheVolumeGone; an earlier attempt's clone is success, another
// image of that name a conflict.
func TestCloneVolume(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(f *fixture, e models.CacheEntry)
		errType string
		clone   bool // the volume is a clone of the entry afterwards
		entry   bool // the entry is still there afterwards
	}{
		{name: "clone", clone: true, entry: true},
		{name: "evicted", setup: func(f *fixture, e models.CacheEntry) {
			if _, err := f.a.EvictEntry(context.Background(), contract.EvictEntryInput{EntryID: e.ID}); err != nil {
				f.t.Fatal(err)
			}
		}, errType: contract.ErrTypeCacheVolumeGone},
		{name: "cache volume deleted behind the engine's back", setup: func(f *fixture, e models.CacheEntry) {
			f.storage.Remove(context.Background(), tPool, contract.RBDName(e.VolumeID))
		}, errType: contract.ErrTypeCacheVolumeGone},
		{name: "earlier attempt cloned, then the entry was evicted", setup: func(f *fixture, e models.CacheEntry) {
			f.storage.Clone(context.Background(), contract.CacheParent(tPool, e.VolumeID), tPool, "volume-user")
			if _, err := f.a.EvictEntry(context.Background(), contract.EvictEntryInput{EntryID: e.ID}); err != nil {
				f.t.Fatal(err)
			}
		}, clone: true},
		{name: "earlier attempt cloned", setup: func(f *fixture, e models.CacheEntry) {
			f.storage.Clone(context.Background(), contract.CacheParent(tPool, e.VolumeID), tPool, "volume-user")
		}, clone: true, entry: true},
		{name: "another image of that name", setup: func(f *fixture, e models.CacheEntry) {
			f.storage.Create(context.Background(), tPool, "volume-user", 10)
		}, errType: contract.ErrTypeConflictingImage, entry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			e := f.seed("img", tHost, tPool, time.Now(), false)
			if tc.setup != nil {
				tc.setup(f, e)
			}
			in := contract.CloneInput{Entry: contract.EntryRef{EntryID: e.ID, Host: e.Host, Pool: e.Pool, VolumeID: e.VolumeID}, Pool: tPool, Name: "volume-user"}
			_, err := run[struct{}](f, nil, f.a.CloneVolume, in)
			if errType(err) != tc.errType || (tc.errType == "" && err != nil) {
				t.Fatalf("err = %v, want %q", err, tc.errType)
			}
			info, serr := f.storage.Stat(context.Background(), tPool, "volume-user")
			isClone := serr == nil && info.Parent != nil && *info.Parent == in.Entry.Parent()
			if isClone != tc.clone {
				t.Fatalf("volume %+v, %v; want clone %v", info, serr, tc.clone)
			}
			_, gerr := f.store.GetCacheEntry(context.Background(), e.ID)
			if (gerr == nil) != tc.entry {
				t.Fatalf("entry: %v, want kept %v", gerr, tc.entry)
			}
			if tc.entry {
				// The lease was released: the entry can be evicted at once.
				if err := f.store.BeginEvict(context.Background(), e.ID, time.Now().UTC(), false); err != nil {
					t.Fatalf("evict after the clone: %v", err)
				}
			}
		})
	}
}

// ExtendVolume grows a volume to its size, leaves one already that big, and refuses one whose
// disk is bigger than the volume.
func TestExtendVolume(t *testing.T) {
	for _, tc := range []struct {
		name              string
		size, grow, after uint64
		errType           string
	}{
		{name: "grow", size: 1000, grow: 1 << 30, after: 1 << 30},
		{name: "already that big", size: 1 << 30, grow: 1 << 30, after: 1 << 30},
		{name: "larger than requested", size: 2 << 30, grow: 1 << 30, after: 2 << 30, errType: contract.ErrTypeVolumeTooSmall},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.storage.Create(context.Background(), tPool, "v", tc.size)
			_, err := run[struct{}](f, nil, f.a.ExtendVolume, contract.ResizeInput{Pool: tPool, Name: "v", SizeBytes: int64(tc.grow)})
			if errType(err) != tc.errType || (tc.errType == "" && err != nil) {
				t.Fatalf("err = %v", err)
			}
			if info, _ := f.storage.Stat(context.Background(), tPool, "v"); info.Size != tc.after {
				t.Fatalf("size %d, want %d", info.Size, tc.after)
			}
		})
	}
}

// RemoveImage removes a volume's image and staging image; a busy one goes to the trash and is
// recorded, and reconcile purges it once it is free.
func TestRemoveImageAndPurge(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SettleTime = time.Nanosecond })
	ctx := context.Background()
	for _, n := range []string{"volume-a", contract.StagingName("volume-a"), "volume-b"} {
		f.storage.Create(ctx, tPool, n, 10)
	}
	release, _ := f.storage.Open(tPool, "volume-b") // a client still has it open
	for _, n := range []string{"volume-a", "volume-b", "volume-missing"} {
		if _, err := run[struct{}](f, nil, f.a.RemoveImage, contract.ImageName{Pool: tPool, Name: n}); err != nil {
			t.Fatalf("remove %s: %v", n, err)
		}
	}
	if got := f.storage.Images(tPool); len(got) != 0 {
		t.Fatalf("images %v", got)
	}
	if tr, _ := f.store.ListTrashedImages(ctx, tHost); len(tr) != 1 || tr[0].Name != "volume-b" {
		t.Fatalf("trashed images %+v", tr)
	}
	rep, err := run[contract.ReconcileReport](f, nil, f.a.ReconcileHost)
	if err != nil || rep.PurgedImages != 0 || !slices.Equal(rep.TrashedBusy, []string{tPool + "/volume-b"}) {
		t.Fatalf("reconcile while busy: %+v, %v", rep, err)
	}
	release()
	rep, err = run[contract.ReconcileReport](f, nil, f.a.ReconcileHost)
	if err != nil || rep.PurgedImages != 1 || len(rep.TrashedBusy) != 0 || len(f.storage.Trashed(tPool)) != 0 {
		t.Fatalf("reconcile once free: %+v, %v; trash %v", rep, err, f.storage.Trashed(tPool))
	}
}

// ReconcileHost evicts the entries of images deleted, deactivated or re-uploaded, keeps the
// others, purges trashed cache volumes whose last clone is gone and reports orphan images.
func TestReconcileHost(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SettleTime = time.Nanosecond })
	ctx := context.Background()
	now := time.Now()
	keep := f.seed("keep", tHost, tPool, now, false)
	f.seed("deleted", tHost, tPool, now, false)
	f.seed("deactivated", tHost, tPool, now, false)
	f.seed("reuploaded", tHost, tPool, now, false)
	other := f.seed("deleted", "node2", "volumes2", now, false) // another host's: not this pass's
	trashed := f.seed("trashed", tHost, tPool, now, false)
	if err := f.storage.Clone(ctx, contract.CacheParent(tPool, trashed.VolumeID), tPool, "volume-user"); err != nil {
		t.Fatal(err)
	}
	if r, err := f.a.EvictEntry(ctx, contract.EvictEntryInput{EntryID: trashed.ID}); err != nil || !r.Trashed {
		t.Fatalf("evict %+v, %v", r, err)
	}
	f.images.Delete("deleted")
	f.images.Deactivate("deactivated")
	f.images.Reupload("reuploaded", data("new", 100))
	f.storage.Create(ctx, tPool, "volume-orphan", 10)
	f.store.CreateVolume(ctx, &models.Volume{ID: "user", ProjectID: "p", Host: tHost, Pool: tPool, Status: models.StatusAvailable})

	rep, err := run[contract.ReconcileReport](f, nil, f.a.ReconcileHost)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 4 || len(rep.Invalidated) != 3 || rep.Purged != 0 || len(rep.Problems) != 0 ||
		!slices.Equal(rep.Orphans, []string{tPool + "/volume-orphan"}) {
		t.Fatalf("report %+v", rep)
	}
	if ids := f.entryIDs(); !slices.Equal(ids, []uint{keep.ID, other.ID}) {
		t.Fatalf("entries left %v, want %v", ids, []uint{keep.ID, other.ID})
	}
	// The last clone of the trashed cache volume goes: the next pass purges it.
	if _, err := run[contract.RemoveVolumeResult](f, nil, f.a.RemoveVolume, contract.ImageName{Pool: tPool, Name: "volume-user"}); err != nil {
		t.Fatal(err)
	}
	if len(f.storage.Trashed(tPool)) != 0 {
		// RemoveVolume purges a trashed parent whose last clone it removed.
		t.Fatalf("trash %v", f.storage.Trashed(tPool))
	}
	if tr, _ := f.store.ListTrashed(ctx, tHost); len(tr) != 0 {
		t.Fatalf("trashed rows %+v", tr)
	}
}

// AbandonCacheFill removes a reservation's images and rows, but keeps an entry that got ready.
func TestAbandonCacheFill(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	img := f.images.Add("img", data("img", 1000))
	res, err := run[contract.EvictResult](f, nil, f.a.EvictLRU, contract.EvictInput{Image: ref(img), FillWorkflowID: "fill"})
	if err != nil || !res.Reserved {
		t.Fatalf("%+v, %v", res, err)
	}
	name := contract.RBDName(res.CacheVolumeID)
	f.storage.Create(ctx, tPool, contract.StagingName(name), 1000)
	if _, err := run[struct{}](f, nil, f.a.AbandonCacheFill, res.EntryID); err != nil {
		t.Fatal(err)
	}
	if len(f.entryIDs()) != 0 || len(f.storage.Images(tPool)) != 0 {
		t.Fatalf("entries %v, images %v", f.entryIDs(), f.storage.Images(tPool))
	}
	if _, err := f.store.GetVolume(ctx, res.CacheVolumeID); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("cache volume row: %v", err)
	}
	ready := f.seed("ready", tHost, tPool, time.Now(), false)
	if _, err := run[struct{}](f, nil, f.a.AbandonCacheFill, ready.ID); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.entryIDs(), []uint{ready.ID}) || !f.storage.Exists(tPool, contract.RBDName(ready.VolumeID)) {
		t.Fatal("a ready entry was abandoned")
	}
}

type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}
