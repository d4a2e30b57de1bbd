package searchattr

import (
	"maps"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
)

// The names are part of the contract with the Temporal UI's saved queries and existing
// namespaces: all five, all keywords.
func TestTypes(t *testing.T) {
	kw := enumspb.INDEXED_VALUE_TYPE_KEYWORD
	want := map[string]enumspb.IndexedValueType{"ImageID": kw, "Host": kw, "ProjectID": kw, "CacheResult": kw, "Phase": kw}
	if got := Types(); !maps.Equal(got, want) {
		t.Fatalf("Types() = %v, want %v", got, want)
	}
}
