package config_test

import (
	"strings"
	"testing"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/contract"
)

// worker.flatten accepts exactly the policies activities.ShouldFlatten takes (config cannot
// import activities to ask it).
func TestFlattenAgreesWithActivities(t *testing.T) {
	t.Setenv("IMAGEVOL_CONFIG", "")
	for _, p := range []string{contract.FlattenNever, contract.FlattenAlways, "depth>0", "depth>3", "depth>-1", "depth>", "depth>x", "sometimes", "Never"} {
		t.Setenv("IMAGEVOL_FLATTEN", p)
		_, err := config.LoadFile("")
		bad := err != nil && strings.Contains(err.Error(), "worker.flatten")
		_, want := activities.ShouldFlatten(p, 1)
		if bad != (want != nil) {
			t.Errorf("%q: config says %v, activities %v", p, err, want)
		}
	}
}
