package imagesource

import "testing"

func TestParseRBDLocation(t *testing.T) {
	const fsid = "0b8d5f4a-5d1c-4f0e-9d1e-7a4b2c3d4e5f"
	for _, tc := range []struct {
		in   string
		want RBDLocation
		ok   bool
	}{
		{"rbd://" + fsid + "/images/abc/snap", RBDLocation{fsid, "images", "abc", "snap"}, true},
		{"rbd://" + fsid + "/my%20pool/abc/snap", RBDLocation{fsid, "my pool", "abc", "snap"}, true},
		{"rbd://images/abc", RBDLocation{}, false},                // no fsid or snapshot
		{"rbd://" + fsid + "/images/abc", RBDLocation{}, false},   // no snapshot
		{"rbd://" + fsid + "/images//snap", RBDLocation{}, false}, // empty image
		{"rbd://" + fsid + "/ns/images/abc/snap", RBDLocation{}, false},
		{"rbd://" + fsid + "/images/a%2Fb/snap", RBDLocation{}, false}, // a slash inside a name
		{"rbd://" + fsid + "/images/abc/snap%00", RBDLocation{}, false},
		{"rbd://" + fsid + "/images/abc/%zz", RBDLocation{}, false},
		{"file:///var/lib/glance/images/abc", RBDLocation{}, false},
		{"", RBDLocation{}, false},
	} {
		got, ok := ParseRBDLocation(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseRBDLocation(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
