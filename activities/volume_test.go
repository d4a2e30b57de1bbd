package activities

import "testing"

func TestShouldFlatten(t *testing.T) {
	for _, tc := range []struct {
		policy string
		depth  int
		want   bool
		bad    bool
	}{
		{"", 1, false, false},
		{"never", 1, false, false},
		{"always", 1, true, false},
		{"always", 0, false, false},
		{"depth>0", 1, true, false},
		{"depth>1", 1, false, false},
		{"depth>1", 2, true, false},
		{"depth>", 1, false, true},
		{"depth>-1", 1, false, true},
		{"sometimes", 1, false, true},
	} {
		got, err := ShouldFlatten(tc.policy, tc.depth)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ShouldFlatten(%q, %d) = %v, %v; want %v, error %v", tc.policy, tc.depth, got, err, tc.want, tc.bad)
		}
	}
}
