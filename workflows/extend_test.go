package workflows_test

import (
	"context"
	"errors"
	"testing"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage/memstorage"
	"github.com/imagevol/imagevol/workflows"
)

// extend marks a provisioned volume extending, as the gateway does, and runs its extension to
// the end.
func (h *harness) extend(volumeID string, from, to int) error {
	h.t.Helper()
	if err := h.store.UpdateVolume(context.Background(), volumeID, map[string]any{"status": models.StatusExtending}); err != nil {
		h.t.Fatal(err)
	}
	env := h.newEnv(contract.ExtendWorkflowID(volumeID))
	env.ExecuteWorkflow(workflows.ExtendVolume, contract.ExtendVolumeInput{
		VolumeID: volumeID, Host: host, Pool: pool, OldSizeGB: from, NewSizeGB: to,
	})
	if !env.IsWorkflowCompleted() {
		h.t.Fatal("the extension did not complete")
	}
	return env.GetWorkflowError()
}

func (h *harness) imageSize(volumeID string) uint64 {
	h.t.Helper()
	info, err := h.storage.Stat(context.Background(), pool, contract.RBDName(volumeID))
	if err != nil {
		h.t.Fatal(err)
	}
	return info.Size
}

// An extension grows the volume's RBD image and records the new size; the volume keeps its data
// and is available again.
func TestExtendVolume(t *testing.T) {
	h := newHarness(t, nil)
	data := h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.extend("vol-1", 1, 3); err != nil {
		t.Fatal(err)
	}
	if got := h.imageSize("vol-1"); got != 3<<30 {
		t.Fatalf("vol-1 is %d bytes, want 3 GiB", got)
	}
	if v := h.volume("vol-1"); v.Status != models.StatusAvailable || v.SizeGB != 3 || v.Error != "" {
		t.Fatalf("vol-1 row after the extension: %+v", v)
	}
	h.checkData("vol-1", data)

	// Again, as a retried step would: nothing changes.
	grows := h.storage.Calls(memstorage.MethodGrow)
	if err := h.extend("vol-1", 1, 3); err != nil {
		t.Fatal(err)
	}
	if h.imageSize("vol-1") != 3<<30 || h.volume("vol-1").SizeGB != 3 || h.storage.Calls(memstorage.MethodGrow) != grows+1 {
		t.Fatal("extending to the same size again changed the volume")
	}
}

// A failing grow leaves the volume error_extending with its old size and the cause, as Cinder
// does.
func TestExtendVolumeFails(t *testing.T) {
	h := newHarness(t, nil)
	h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	// More failures than the step's attempts.
	for range 20 {
		h.storage.FailNext(memstorage.MethodGrow, errors.New("rbd: resize: connection lost"))
	}
	err := h.extend("vol-1", 1, 2)
	if err == nil {
		t.Fatal("the extension succeeded under failing grows")
	}
	v := h.volume("vol-1")
	if v.Status != models.StatusErrorExtending || v.SizeGB != 1 || v.Error == "" {
		t.Fatalf("vol-1 row after the failed extension: %+v", v)
	}
	if got := h.imageSize("vol-1"); got != 1<<30 {
		t.Fatalf("vol-1 is %d bytes, want its old 1 GiB", got)
	}
}

// A size not larger than the volume's fails at once, without touching the image.
func TestExtendVolumeNotLarger(t *testing.T) {
	h := newHarness(t, nil)
	h.image("img", imageSize)
	if _, err := h.provision("vol-1", "img", 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	grows := h.storage.Calls(memstorage.MethodGrow)
	err := h.extend("vol-1", 2, 1)
	if errType(err) != contract.ErrTypeInvalidSize {
		t.Fatalf("extension to a smaller size: %v, want %s", err, contract.ErrTypeInvalidSize)
	}
	if h.storage.Calls(memstorage.MethodGrow) != grows || h.imageSize("vol-1") != 2<<30 {
		t.Fatal("the image was touched")
	}
	if v := h.volume("vol-1"); v.Status != models.StatusErrorExtending || v.SizeGB != 2 {
		t.Fatalf("vol-1 row: %+v", v)
	}
}
