package librbd

import (
	"slices"
	"testing"
)

func TestSplitAddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"127.0.0.1:0/1002086875", []string{"127.0.0.1:0/1002086875"}},
		{"[v2:10.0.0.1:0/77,v1:10.0.0.1:0/77]", []string{"10.0.0.1:0/77"}},
		{"[v2:10.0.0.1:0/77]", []string{"10.0.0.1:0/77"}},
		{"", nil},
		{"[]", nil},
	} {
		if got := splitAddrs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitAddrs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
