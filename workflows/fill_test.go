package workflows_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource/memsource"
	"github.com/imagevol/imagevol/models"
)

// imageRef is the image as a lookup hands it to a fill.
func (h *harness) imageRef(id string) contract.ImageRef {
	h.t.Helper()
	img, err := h.images.Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return contract.ImageRef{
		ID: img.ID, Size: img.Size, VirtualSize: img.VirtualSize, HashAlgo: img.HashAlgo, HashValue: img.HashValue,
		Checksum: img.Checksum, ContentHash: img.ContentHash(), UpdatedAt: img.UpdatedAt,
	}
}

// fill runs FillCache for an image to its end, with waiters registered by join signals (one
// of them twice), and returns its result and the answers it signalled them.
func (h *harness) fill(imageID string, waiters ...contract.FillWaiter) (contract.FillResult, []contract.FillDone, error) {
	h.t.Helper()
	ref := h.imageRef(imageID)
	id := contract.FillWorkflowID(cluster, imageID, ref.ContentHash)
	env := h.newEnv(id)
	var mu sync.Mutex
	var answers []contract.FillDone
	env.OnSignalExternalWorkflow(mock.Anything, mock.Anything, "", contract.FillDoneSignal, mock.Anything).Return(
		func(_, workflowID, _, _ string, arg any) error {
			d := arg.(contract.FillDone)
			if d.FillWorkflowID != id {
				h.t.Errorf("answer to %s names fill %s", workflowID, d.FillWorkflowID)
			}
			mu.Lock()
			answers = append(answers, d)
			mu.Unlock()
			return nil
		})
	for i, w := range waiters {
		env.RegisterDelayedCallback(func() { env.SignalWorkflow(contract.FillJoinSignal, w) }, 0)
		if i == 0 {
			// A waiter registered twice (a rejoin) is answered once.
			env.RegisterDelayedCallback(func() { env.SignalWorkflow(contract.FillJoinSignal, w) }, 0)
		}
	}
	env.ExecuteWorkflow(contract.FillWorkflow, contract.FillInput{Cluster: cluster, Host: host, Image: ref, MaxVirtualSize: 1 << 30})
	var res contract.FillResult
	err := env.GetWorkflowError()
	if err == nil {
		err = env.GetWorkflowResult(&res)
	}
	slices.SortFunc(answers, func(a, b contract.FillDone) int { return compare(a.Token, b.Token) })
	return res, answers, err
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var waiters = []contract.FillWaiter{{WorkflowID: "vol-a", Token: "a/1"}, {WorkflowID: "vol-b", Token: "b/1"}}

// A fill reserves a slot, downloads and imports the image into a cache volume of the internal
// project, snapshots it and marks its entry ready, then answers each waiter once. A second fill
// of the same content finds it ready and downloads nothing.
func TestFillCache(t *testing.T) {
	h := newHarness(t, nil)
	data := h.image("img", imageSize)
	res, answers, err := h.fill("img", waiters...)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Cached || !res.Downloaded || res.Bytes != imageSize || res.Format != "raw" {
		t.Fatalf("result %+v", res)
	}
	e := h.readyEntry()
	if res.Entry.EntryID != e.ID || res.Entry.VolumeID != e.VolumeID || e.FillWorkflowID != contract.FillWorkflowID(cluster, "img", e.ContentHash) {
		t.Fatalf("result entry %+v, entry %+v", res.Entry, e)
	}
	if len(answers) != 2 || answers[0].Token != "a/1" || answers[1].Token != "b/1" || answers[0].Result != res || answers[1].Result != res {
		t.Fatalf("answers %+v", answers)
	}
	cache := contract.RBDName(e.VolumeID)
	if got, err := h.storage.ReadAll(pool, cache, contract.CacheSnapshot); err != nil || string(got) != string(data) {
		t.Fatalf("cache snapshot: %v (%d bytes)", err, len(got))
	}
	if got := h.storage.Images(pool); !slices.Equal(got, []string{cache}) {
		t.Fatalf("images %v", got)
	}
	if v := h.volume(e.VolumeID); v.ProjectID != internal || v.Status != models.StatusAvailable || v.SizeGB != 1 {
		t.Fatalf("cache volume row %+v", v)
	}

	res2, _, err := h.fill("img")
	if err != nil {
		t.Fatal(err)
	}
	if !res2.Cached || res2.Downloaded || res2.Entry != res.Entry {
		t.Fatalf("second fill: %+v", res2)
	}
	if n := h.images.Calls(memsource.MethodOpen); n != 1 {
		t.Fatalf("image downloaded %d times", n)
	}
}

// A fill failing on the image answers its waiters with the failure's type, and its compensation
// removes the reservation: no entry, no cache volume row, no image.
func TestFillCacheFailure(t *testing.T) {
	h := newHarness(t, nil)
	img := memsource.Describe("liar", rawData("claimed", imageSize))
	img.Size -= 10 // it serves more than it declares
	h.images.Put(img, rawData("claimed", imageSize))
	res, answers, err := h.fill("liar", waiters[0])
	if errType(err) != contract.ErrTypeSizeMismatch || res.Cached {
		t.Fatalf("fill: %+v, %v", res, err)
	}
	if len(answers) != 1 || answers[0].Result.FailureType != contract.ErrTypeSizeMismatch || answers[0].Result.FailureMessage == "" {
		t.Fatalf("answers %+v", answers)
	}
	if es := h.entries(); len(es) != 0 {
		t.Fatalf("entries %+v", es)
	}
	if vols, _ := h.store.ListVolumes(context.Background(), internal); len(vols) != 0 {
		t.Fatalf("cache volume rows %+v", vols)
	}
	if got := h.storage.Images(pool); len(got) != 0 {
		t.Fatalf("images %v", got)
	}
}

// A fill that finds no room (the only entry is pinned, the cache holds one) reserves nothing,
// downloads nothing and says why; its waiters hear the reason.
func TestFillCacheNoRoom(t *testing.T) {
	h := newHarness(t, func(c *activities.Config) { c.ImageVolumeCacheMaxCount = 1 })
	h.image("pinned", imageSize)
	h.image("img", imageSize)
	if _, _, err := h.fill("pinned"); err != nil {
		t.Fatal(err)
	}
	pinned := h.readyEntry()
	if err := h.store.SetPinned(context.Background(), pinned.ID, true); err != nil {
		t.Fatal(err)
	}
	res, answers, err := h.fill("img", waiters[1])
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached || res.Reason != contract.ReasonFull {
		t.Fatalf("result %+v", res)
	}
	if len(answers) != 1 || answers[0].Result.Reason != contract.ReasonFull {
		t.Fatalf("answers %+v", answers)
	}
	if e := h.readyEntry(); e.ID != pinned.ID {
		t.Fatalf("entry %+v", e)
	}
	if n := h.images.Calls(memsource.MethodOpen); n != 1 {
		t.Fatalf("image opened %d times, want only the pinned one's fill", n)
	}
}

// A provision's miss starts the fill with the search attributes that show it beside the
// provision in the Temporal UI (its image, the host it fills on, its phase); the fill moves its
// Phase along, and the provision's memo names the fill while it waits and after it is cloned
// from the fill's entry.
func TestProvisionMissFillSearchAttributes(t *testing.T) {
	h := newHarness(t, nil)
	h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	started := h.fills.Started()
	if len(started) != 1 {
		t.Fatalf("fills started %v", started)
	}
	id := started[0]
	sa := h.fills.Options(id).TypedSearchAttributes
	for _, c := range []struct {
		key  temporal.SearchAttributeKeyKeyword
		want string
	}{{contract.SearchImageID, "img"}, {contract.SearchHost, host}, {contract.SearchPhase, contract.PhaseFilling}} {
		if got, ok := sa.GetKeyword(c.key); !ok || got != c.want {
			t.Errorf("fill's %s = %q (set %v), want %q", c.key.GetName(), got, ok, c.want)
		}
	}
	want := []string{contract.PhaseDownloading, contract.PhaseImporting, contract.PhaseAvailable}
	if got := h.phasesOf(id); !slices.Equal(got, want) {
		t.Errorf("fill's phases %v, want %v", got, want)
	}
	memos := h.memosOf("vol-1")
	if len(memos) != 2 || memos[0][contract.MemoFill] != id ||
		memos[1][contract.MemoFill] != "" || memos[1][contract.MemoFilledBy] != id {
		t.Errorf("provision's memo upserts %v, want the fill %s named while waiting, then as filled_by", memos, id)
	}
}

// A fill that fails ends in the error phase; one that finds no room in not_cached.
func TestFillCachePhasesOnFailure(t *testing.T) {
	h := newHarness(t, nil)
	img := memsource.Describe("liar", rawData("claimed", imageSize))
	img.Size -= 10
	h.images.Put(img, rawData("claimed", imageSize))
	if _, _, err := h.fill("liar"); err == nil {
		t.Fatal("fill of a lying image succeeded")
	}
	id := contract.FillWorkflowID(cluster, "liar", h.imageRef("liar").ContentHash)
	if got := h.phasesOf(id); len(got) == 0 || got[len(got)-1] != contract.PhaseError {
		t.Errorf("failed fill's phases %v, want them to end in %s", got, contract.PhaseError)
	}

	h = newHarness(t, func(c *activities.Config) { c.ImageVolumeCacheMaxCount = 1 })
	h.image("pinned", imageSize)
	h.image("img", imageSize)
	if _, _, err := h.fill("pinned"); err != nil {
		t.Fatal(err)
	}
	if err := h.store.SetPinned(context.Background(), h.readyEntry().ID, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.fill("img"); err != nil {
		t.Fatal(err)
	}
	id = contract.FillWorkflowID(cluster, "img", h.imageRef("img").ContentHash)
	if got := h.phasesOf(id); !slices.Equal(got, []string{contract.PhaseNotCached}) {
		t.Errorf("fill without room: phases %v, want [%s]", got, contract.PhaseNotCached)
	}
}
