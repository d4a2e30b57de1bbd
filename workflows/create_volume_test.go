package workflows_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/memsource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage/memstorage"
)

const imageSize = 300 << 10 // a few blocks of every size the steps use

// errType is the type of the innermost application error of err ("" if none).
func errType(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Type()
	}
	return ""
}

// checkFailed checks a provision failed with an error of type want, and that its compensation
// left the volume marked error with that cause and no image of it behind.
func (h *harness) checkFailed(volumeID string, err error, want string) {
	h.t.Helper()
	if err == nil {
		h.t.Fatalf("provision %s succeeded, want %s", volumeID, want)
	}
	if got := errType(err); got != want {
		h.t.Fatalf("provision %s failed with %q (%v), want %s", volumeID, got, err, want)
	}
	v := h.volume(volumeID)
	if v.Status != models.StatusError || !strings.HasPrefix(v.Error, want+": ") {
		h.t.Fatalf("volume %s: status %q, error %q; want error %s", volumeID, v.Status, v.Error, want)
	}
	for _, name := range []string{contract.RBDName(volumeID), contract.StagingName(contract.RBDName(volumeID))} {
		if h.storage.Exists(pool, name) {
			h.t.Fatalf("image %s left behind by the failed provision", name)
		}
	}
}

// queues are where a provision may run: on its host's queue, as the gateway starts it (a hit is
// one local step there), or on the shared queue, as gateways before that started it (a hit is
// separate steps; such runs may still be in flight during an upgrade).
var queues = map[string]string{"host": contract.HostQueue(host), "shared": contract.WorkflowQueue}

// A miss fills the cache once (download, import, snapshot) and clones the volume from it; the
// next provision of the image is a hit that clones from the same entry without a download.
func TestProvisionMissThenHit(t *testing.T) {
	for name, queue := range queues {
		t.Run(name, func(t *testing.T) { testProvisionMissThenHit(t, queue) })
	}
}

func testProvisionMissThenHit(t *testing.T, queue string) {
	h := newHarness(t, nil)
	h.queue = queue
	data := h.image("img", imageSize)

	res, err := h.provision("vol-1", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheMiss || res.Bytes != imageSize || res.Format != "raw" {
		t.Fatalf("first provision: %+v", res)
	}
	e := h.readyEntry()
	if e.Host != host || e.Pool != pool || e.ImageID != "img" || e.SizeBytes == 0 || e.FillWorkflowID != h.fills.Started()[0] {
		t.Fatalf("entry %+v (fills %v)", e, h.fills.Started())
	}
	if p := h.parentOf("vol-1"); p == nil || p.VolumeID != e.VolumeID {
		t.Fatalf("vol-1's parent %+v, want cache volume %s", p, e.VolumeID)
	}
	if got := h.storage.Snapshots(pool, contract.RBDName(e.VolumeID)); !slices.Equal(got, []string{contract.CacheSnapshot}) {
		t.Fatalf("cache volume snapshots %v", got)
	}
	cacheVol := h.volume(e.VolumeID)
	if cacheVol.ProjectID != internal || cacheVol.Status != models.StatusAvailable {
		t.Fatalf("cache volume row %+v", cacheVol)
	}
	h.checkData("vol-1", data)
	v := h.volume("vol-1")
	if v.Status != models.StatusAvailable || v.Cache != models.CacheMiss || v.Host != host || v.Pool != pool || v.Error != "" {
		t.Fatalf("vol-1 row %+v", v)
	}
	if info, _ := h.storage.Stat(context.Background(), pool, contract.RBDName("vol-1")); info.Size != 1<<30 {
		t.Fatalf("vol-1 is %d bytes, want 1 GiB", info.Size)
	}
	if h.storage.Exists(pool, contract.StagingName(contract.RBDName(e.VolumeID))) {
		t.Fatal("the fill's staging image was left behind")
	}

	opens := h.images.Calls(memsource.MethodOpen)
	res, err = h.provision("vol-2", "img", 2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheHit || res.Bytes != 0 {
		t.Fatalf("second provision: %+v", res)
	}
	if h.images.Calls(memsource.MethodOpen) != opens || len(h.fills.Started()) != 1 {
		t.Fatal("a hit downloaded the image or started a fill")
	}
	if p := h.parentOf("vol-2"); p == nil || p.VolumeID != e.VolumeID {
		t.Fatalf("vol-2's parent %+v", p)
	}
	h.checkData("vol-2", data)
	if v := h.volume("vol-2"); v.Status != models.StatusAvailable || v.Cache != models.CacheHit {
		t.Fatalf("vol-2 row %+v", v)
	}
	if e2 := h.readyEntry(); e2.Hits != 1 || !e2.LastUsed.After(e.LastUsed) && !e2.LastUsed.Equal(e.LastUsed) {
		t.Fatalf("entry after the hit: %+v", e2)
	}
	stats, _ := h.store.Stats(context.Background())
	if len(stats) != 1 || stats[0].Hits != 1 || stats[0].Misses != 1 || stats[0].Downloads != 1 {
		t.Fatalf("stats %+v", stats)
	}
}

// The gateway's fresh copy of the image's metadata spares the image service a read.
func TestProvisionUsesTheGatewaysImage(t *testing.T) {
	h := newHarness(t, nil)
	h.image("img", imageSize)
	img, _ := h.images.Get(context.Background(), "img")
	gets := h.images.Calls(memsource.MethodGet)
	if _, err := h.provision("vol", "img", 1, func(in *contract.CreateVolumeInput) { in.Image, in.ImageRead = &img, time.Now() }, nil); err != nil {
		t.Fatal(err)
	}
	if got := h.images.Calls(memsource.MethodGet); got != gets {
		t.Fatalf("image service read %d times", got-gets)
	}
}

// With the cache disabled the image is downloaded and imported straight into the volume.
func TestProvisionNotCached(t *testing.T) {
	h := newHarness(t, func(c *activities.Config) { c.ImageVolumeCacheEnabled = false })
	data := h.image("img", imageSize)
	res, err := h.provision("vol", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheNotCached || res.CacheReason != contract.ReasonDisabled || res.Bytes != imageSize || res.Format != "raw" {
		t.Fatalf("result %+v", res)
	}
	if p := h.parentOf("vol"); p != nil {
		t.Fatalf("an uncached volume is a clone of %+v", p)
	}
	h.checkData("vol", data)
	if v := h.volume("vol"); v.Status != models.StatusAvailable || v.Cache != models.CacheNotCached || v.CacheReason != contract.ReasonDisabled {
		t.Fatalf("row %+v", v)
	}
	if len(h.entries()) != 0 || len(h.fills.Started()) != 0 {
		t.Fatal("the disabled cache was filled")
	}
}

// A fill failing on the image itself (its data does not match its published hash) fails every
// provision waiting on it, with the image's fault; the fill leaves no entry or image behind.
func TestProvisionFillImageFault(t *testing.T) {
	h := newHarness(t, nil)
	img := memsource.Describe("liar", rawData("claimed", imageSize))
	h.images.Put(img, rawData("served", imageSize))
	_, err := h.provision("vol", "liar", 1, nil, nil)
	h.checkFailed("vol", err, contract.ErrTypeHashMismatch)
	if len(h.fills.Started()) != 1 {
		t.Fatalf("fills %v", h.fills.Started())
	}
	if es := h.entries(); len(es) != 0 {
		t.Fatalf("entries left by the failed fill: %+v", es)
	}
	if got := h.storage.Images(pool); len(got) != 0 {
		t.Fatalf("images left behind: %v", got)
	}
	// Only the fill downloaded: the provision did not try on its own.
	if n := h.images.Calls(memsource.MethodOpen); n != 1 {
		t.Fatalf("image opened %d times", n)
	}
}

// A fill failing for another reason (here Ceph refusing the cache volume's snapshot on every
// attempt) is no reason to fail the provision: it downloads the image into the volume itself.
func TestProvisionFillFailsDownloadsAlone(t *testing.T) {
	h := newHarness(t, nil)
	data := h.image("img", imageSize)
	h.storage.Hook(func(c memstorage.Call) error {
		if c.Method == memstorage.MethodCreateSnapshot {
			return errors.New("snapshot refused")
		}
		return nil
	})
	res, err := h.provision("vol", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheNotCached || res.CacheReason != contract.ReasonFillFailed || res.Bytes != imageSize {
		t.Fatalf("result %+v", res)
	}
	if p := h.parentOf("vol"); p != nil {
		t.Fatalf("volume cloned from %+v", p)
	}
	h.checkData("vol", data)
	if v := h.volume("vol"); v.Status != models.StatusAvailable || v.CacheReason != contract.ReasonFillFailed {
		t.Fatalf("row %+v", v)
	}
	if es := h.entries(); len(es) != 0 {
		t.Fatalf("the failed fill's entry was kept: %+v", es)
	}
	if got := h.storage.Images(pool); !slices.Equal(got, []string{contract.RBDName("vol")}) {
		t.Fatalf("images %v, want only the volume's", got)
	}
	if n := h.storage.Calls(memstorage.MethodCreateSnapshot); n != 10 {
		t.Fatalf("the snapshot was tried %d times, want the retry policy's 10", n)
	}
}

// A cache volume deleted behind the engine's back is found missing by the clone, which drops its
// entry (CacheVolumeGone); the provision looks again, misses, fills the cache anew and clones.
func TestProvisionCacheVolumeGone(t *testing.T) {
	h := newHarness(t, nil)
	data := h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	old := h.readyEntry()
	ctx := context.Background()
	for _, name := range []string{contract.RBDName("vol-1"), contract.RBDName(old.VolumeID)} {
		if _, err := h.storage.Remove(ctx, pool, name); err != nil {
			t.Fatal(err)
		}
	}
	res, err := h.provision("vol-2", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheMiss || res.Bytes != imageSize {
		t.Fatalf("result %+v", res)
	}
	e := h.readyEntry()
	if e.ID == old.ID || e.VolumeID == old.VolumeID {
		t.Fatalf("the entry of the vanished cache volume is still used: %+v", e)
	}
	if _, err := h.store.GetVolume(ctx, old.VolumeID); !errors.Is(err, models.ErrNotFound) {
		t.Fatalf("the vanished cache volume's row: %v", err)
	}
	if p := h.parentOf("vol-2"); p == nil || p.VolumeID != e.VolumeID {
		t.Fatalf("vol-2's parent %+v, want %s", p, e.VolumeID)
	}
	h.checkData("vol-2", data)
	if n := h.storage.Calls(memstorage.MethodClone); n != 3 {
		t.Fatalf("%d clones, want 3 (vol-1, the failed one, vol-2)", n)
	}
}

// An entry evicted between the lookup and the clone (by an operator here) cannot be leased: the
// provision looks again, fills the cache anew and clones from the new entry. (A hit in one step
// has no such window between steps: activities.TestProvisionFromCacheEvicted.)
func TestProvisionEvictedUnderTheClone(t *testing.T) {
	h := newHarness(t, nil)
	h.queue = contract.WorkflowQueue
	data := h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	old := h.readyEntry()
	evicted := false
	res, err := h.provision("vol-2", "img", 1, nil, func(env *testsuite.TestWorkflowEnvironment) {
		// Called as the clone starts, before it takes its lease.
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			if info.ActivityType.Name == "CloneVolume" && !evicted {
				evicted = true
				r, eerr := h.acts.EvictEntry(context.Background(), contract.EvictEntryInput{EntryID: old.ID})
				if eerr != nil || !r.Evicted || !r.Trashed {
					t.Errorf("eviction under the provision: %+v, %v", r, eerr)
				}
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !evicted || res.Cache != models.CacheMiss {
		t.Fatalf("evicted %v, result %+v", evicted, res)
	}
	e := h.readyEntry()
	if e.ID == old.ID {
		t.Fatal("the evicted entry is still there")
	}
	if p := h.parentOf("vol-2"); p == nil || p.VolumeID != e.VolumeID {
		t.Fatalf("vol-2's parent %+v, want %s", p, e.VolumeID)
	}
	h.checkData("vol-2", data)
	// vol-1 keeps its parent, which waits in the trash for it.
	if got := h.storage.Trashed(pool); !slices.Equal(got, []string{contract.RBDName(old.VolumeID)}) {
		t.Fatalf("trash %v", got)
	}
	if tr, err := h.store.ListTrashed(context.Background(), host); err != nil || len(tr) != 1 || tr[0].VolumeID != old.VolumeID {
		t.Fatalf("trashed rows %+v, %v", tr, err)
	}
	h.checkData("vol-1", data)
}

// A cache that keeps losing the image to eviction between fill and clone is given up after
// maxLookups lookups: the volume is downloaded on its own, reason "evicted".
func TestProvisionEvictedEveryTime(t *testing.T) {
	h := newHarness(t, nil)
	data := h.image("img", imageSize)
	evictions := 0
	res, err := h.provision("vol", "img", 1, nil, func(env *testsuite.TestWorkflowEnvironment) {
		// Every clone finds the entry the fill just made evicted.
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			if info.ActivityType.Name != "CloneVolume" {
				return
			}
			for _, e := range h.entries() {
				if _, eerr := h.acts.EvictEntry(context.Background(), contract.EvictEntryInput{EntryID: e.ID}); eerr != nil {
					t.Errorf("evict: %v", eerr)
				}
				evictions++
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cache != models.CacheNotCached || res.CacheReason != contract.ReasonEvicted || evictions != 3 || len(h.fills.Started()) != 3 {
		t.Fatalf("result %+v after %d evictions and fills %v", res, evictions, h.fills.Started())
	}
	if p := h.parentOf("vol"); p != nil {
		t.Fatalf("volume cloned from %+v", p)
	}
	h.checkData("vol", data)
	if v := h.volume("vol"); v.Status != models.StatusAvailable || v.CacheReason != contract.ReasonEvicted {
		t.Fatalf("row %+v", v)
	}
}

// A step failing until the provision's deadline (the image service down) fails it with
// ProvisionDeadlineExceeded, naming the step and its last error. (The test environment caps a
// step's unlimited retries at 10 attempts, some 2.5 minutes of backoff: the deadline is within.)
func TestProvisionDeadlineExceeded(t *testing.T) {
	// The step that failed, as the error names it: Temporal's test environment names a local
	// step by its registered function's wrapper, not by its type as the server does.
	for name, step := range map[string]string{"host": "func1", "shared": "LookupCache"} {
		t.Run(name, func(t *testing.T) { testProvisionDeadlineExceeded(t, queues[name], step) })
	}
}

func testProvisionDeadlineExceeded(t *testing.T, queue, step string) {
	h := newHarness(t, nil)
	h.queue = queue
	h.image("img", imageSize)
	h.images.Hook(func(string, string) error { return imagesource.ErrUnavailable })
	var env *testsuite.TestWorkflowEnvironment
	_, err := h.provision("vol", "img", 1, func(in *contract.CreateVolumeInput) {
		in.Deadline = time.Now().Add(2 * time.Minute)
	}, func(e *testsuite.TestWorkflowEnvironment) { env = e })
	h.checkFailed("vol", err, contract.ErrTypeDeadlineExceeded)
	msg := h.volume("vol").Error
	if !strings.Contains(msg, step+" kept failing") || !strings.Contains(msg, contract.ErrTypeImageServiceUnavailable) {
		t.Fatalf("error %q does not name the step and the part that was down", msg)
	}
	if n := h.images.Calls(memsource.MethodGet); n < 5 {
		t.Fatalf("the lookup was tried %d times before the deadline", n)
	}
	if env.Now().Before(time.Now().Add(90 * time.Second)) {
		t.Fatalf("gave up at %v, before the deadline", env.Now())
	}
}

// A fill still failing at the deadline on a retryable error leaves no time to download alone:
// the provision fails with the deadline and the fill's failure, and the fill's compensation
// removes what it made. The fill runs in an environment of its own, whose clock is not the
// provision's: the provision starts 20 s before the deadline, as if its lookup had been slow.
func TestProvisionFillDeadline(t *testing.T) {
	h := newHarness(t, nil)
	h.image("img", imageSize)
	h.images.Hook(func(method, _ string) error {
		if method == memsource.MethodOpen {
			return imagesource.ErrUnavailable
		}
		return nil
	})
	deadline := time.Now().Add(2 * time.Minute)
	_, err := h.provision("vol", "img", 1, func(in *contract.CreateVolumeInput) { in.Deadline = deadline },
		func(env *testsuite.TestWorkflowEnvironment) { env.SetStartTime(deadline.Add(-20 * time.Second)) })
	h.checkFailed("vol", err, contract.ErrTypeDeadlineExceeded)
	if !strings.Contains(h.volume("vol").Error, "cache fill") {
		t.Fatalf("error %q does not say the fill failed", h.volume("vol").Error)
	}
	if es := h.entries(); len(es) != 0 {
		t.Fatalf("entries %+v", es)
	}
	if got := h.storage.Images(pool); len(got) != 0 {
		t.Fatalf("images left behind: %v", got)
	}
}

// A failure after the volume's image was made (its extension fails on every attempt) is
// compensated: the image is removed and the volume marked error with the cause; the cache entry
// it was cloned from stays.
func TestProvisionCompensation(t *testing.T) {
	for name, queue := range queues {
		t.Run(name, func(t *testing.T) { testProvisionCompensation(t, queue) })
	}
}

func testProvisionCompensation(t *testing.T, queue string) {
	h := newHarness(t, nil)
	h.queue = queue
	h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	h.storage.Hook(func(c memstorage.Call) error {
		if c.Method == memstorage.MethodGrow {
			return errors.New("resize refused")
		}
		return nil
	})
	_, err := h.provision("vol-2", "img", 1, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "resize refused") {
		t.Fatalf("provision: %v", err)
	}
	v := h.volume("vol-2")
	// A hit records its cache result with the final status only.
	if v.Status != models.StatusError || !strings.Contains(v.Error, "resize refused") {
		t.Fatalf("row %+v", v)
	}
	if h.storage.Exists(pool, contract.RBDName("vol-2")) {
		t.Fatal("the volume's image was not removed")
	}
	if n := h.storage.Calls(memstorage.MethodGrow); n != 10+1 { // vol-1's, then 10 attempts
		t.Fatalf("grow called %d times", n)
	}
	e := h.readyEntry()
	if p := h.parentOf("vol-1"); p == nil || p.VolumeID != e.VolumeID {
		t.Fatal("the cache entry or the first volume was touched by the compensation")
	}
}

// A volume whose image's disk is larger than it fails, non-retryably, before any command; one
// of size 0 too.
func TestProvisionBadSizes(t *testing.T) {
	h := newHarness(t, nil)
	h.image("img", imageSize)
	h.images.Update("img", func(i *imagesource.Image) { i.VirtualSize = 3 << 30 })
	_, err := h.provision("vol", "img", 2, nil, nil)
	h.checkFailed("vol", err, contract.ErrTypeVolumeTooSmall)
	_, err = h.provision("vol0", "img", 0, nil, nil)
	h.checkFailed("vol0", err, contract.ErrTypeInvalidSize)
	if len(h.fills.Started()) != 0 || h.storage.Calls(memstorage.MethodCreate) != 0 {
		t.Fatal("a refused provision made something")
	}
}

// An image that is gone, or deactivated, fails the provision and evicts its cache entries.
func TestProvisionInvalidatedImage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(s *memsource.Source)
		want   string
	}{
		{"deleted", func(s *memsource.Source) { s.Delete("img") }, contract.ErrTypeImageNotFound},
		{"deactivated", func(s *memsource.Source) { s.Deactivate("img") }, contract.ErrTypeImageNotActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.image("img", imageSize)
			if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
				t.Fatal(err)
			}
			e := h.readyEntry()
			tc.change(h.images)
			_, err := h.provision("vol-2", "img", 1, nil, nil)
			h.checkFailed("vol-2", err, tc.want)
			if es := h.entries(); len(es) != 0 {
				t.Fatalf("entries of the invalidated image: %+v", es)
			}
			// vol-1 still depends on the cache volume: it went to the trash.
			if got := h.storage.Trashed(pool); !slices.Equal(got, []string{contract.RBDName(e.VolumeID)}) {
				t.Fatalf("trash %v", got)
			}
		})
	}
}

// With the flatten policy "always", a volume cloned from the cache is flattened after it is
// available: it no longer depends on the cache volume.
func TestProvisionFlatten(t *testing.T) {
	h := newHarness(t, func(c *activities.Config) { c.FlattenPolicy = contract.FlattenAlways })
	data := h.image("img", imageSize)
	res, err := h.provision("vol", "img", 1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Flattened || res.Cache != models.CacheMiss {
		t.Fatalf("result %+v", res)
	}
	if p := h.parentOf("vol"); p != nil {
		t.Fatalf("flattened volume still cloned from %+v", p)
	}
	h.checkData("vol", data)
	if v := h.volume("vol"); v.Status != models.StatusAvailable || v.Flatten != models.FlattenDone {
		t.Fatalf("row %+v", v)
	}
	// The flattened volume does not keep the cache volume: evicting it removes it for good.
	e := h.readyEntry()
	if r, err := h.acts.EvictEntry(context.Background(), contract.EvictEntryInput{EntryID: e.ID}); err != nil || !r.Evicted || r.Trashed {
		t.Fatalf("evict: %+v, %v", r, err)
	}
	if h.storage.Exists(pool, contract.RBDName(e.VolumeID)) || len(h.storage.Trashed(pool)) != 0 {
		t.Fatal("the cache volume outlived its eviction")
	}
}
