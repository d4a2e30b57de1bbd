package imagesource

import (
	"net/url"
	"strings"
)

// RBDLocation is an image kept in Ceph RBD by the image service's store: the snapshot of image
// Image in pool Pool of the cluster whose fsid is FSID.
type RBDLocation struct {
	FSID     string
	Pool     string
	Image    string
	Snapshot string
}

// ParseRBDLocation reads a location of glance_store's rbd driver,
// rbd://<fsid>/<pool>/<image>/<snapshot>, each part percent-encoded. It reports false for any
// other form: another scheme, a location without fsid or snapshot, a pool namespace.
func ParseRBDLocation(s string) (RBDLocation, bool) {
	rest, ok := strings.CutPrefix(s, "rbd://")
	if !ok {
		return RBDLocation{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 {
		return RBDLocation{}, false
	}
	for i, p := range parts {
		v, err := url.PathUnescape(p)
		if err != nil || v == "" || strings.ContainsAny(v, "/@\x00") {
			return RBDLocation{}, false
		}
		parts[i] = v
	}
	return RBDLocation{FSID: parts[0], Pool: parts[1], Image: parts[2], Snapshot: parts[3]}, true
}
