//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// Policy "depth>0" flattens every clone: the volume is made available first (flatten pending or
// running), and ends with no parent, its bytes intact, while "depth>1" leaves clones alone.
func TestFlattenPolicy(t *testing.T) {
	flat := hostConfig("e2e-flatten")
	flat.FlattenPolicy = "depth>0"
	startHost(t, flat)
	keep := hostConfig("e2e-noflatten")
	keep.FlattenPolicy = "depth>1"
	startHost(t, keep)
	img := uploadImage(t, "flatten", "raw", imageBytes(16*mib, 91, 2))

	api := newGateway(t, "e2e-flatten")
	v := api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	if v.Flatten == "" {
		t.Fatal("an available volume under a flatten policy shows no flatten state")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for v.Flatten != models.FlattenDone {
		if v.Flatten == models.FlattenFailed || time.Now().After(deadline) {
			t.Fatalf("flatten state %q", v.Flatten)
		}
		time.Sleep(50 * time.Millisecond)
		v = api.waitVolume(v.ID)
	}
	if info := stat(t, contract.RBDName(v.ID)); info.Parent != nil {
		t.Fatalf("flattened volume still has parent %+v", info.Parent)
	}
	if got := volumeSHA512(t, v.ID, img.Size); got != img.HashValue {
		t.Fatal("the flattened volume's bytes differ from the image")
	}

	// The other host shares the cluster's cache: a hit, cloned from the same cache volume.
	clone := newGateway(t, "e2e-noflatten").createVolume(img.ID, 1)
	requireAvailable(t, clone, models.CacheHit)
	if info := stat(t, contract.RBDName(clone.ID)); info.Parent == nil || clone.Flatten != "" {
		t.Fatalf("depth>1 flattened a depth-1 clone: parent %+v flatten %q", info.Parent, clone.Flatten)
	}
}
