package activities

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/imagevol/imagevol/contract"
)

// ShouldFlatten applies a flatten policy to a volume that is depth clone levels deep. A user
// volume cloned from a cache volume is 1 level deep (the cache volume is the root parent).
func ShouldFlatten(policy string, depth int) (bool, error) {
	switch policy {
	case "", contract.FlattenNever:
		return false, nil
	case contract.FlattenAlways:
		return depth > 0, nil
	}
	if n, ok := strings.CutPrefix(policy, "depth>"); ok {
		limit, err := strconv.Atoi(n)
		if err == nil && limit >= 0 {
			return depth > limit, nil
		}
	}
	return false, fmt.Errorf("flatten policy %q: want never, always or depth>N", policy)
}
