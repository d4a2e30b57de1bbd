// Package imagesource describes where imagevol reads VM images from: an interface with typed
// errors, implemented for OpenStack Glance by package imagesource/glance.
//
// It imports none of imagevol's packages.
package imagesource

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors; implementations wrap them with %w.
var (
	// ErrNotFound means the image does not exist (or is not visible).
	ErrNotFound = errors.New("imagesource: image not found")
	// ErrNoData means the image exists but has no data to download (e.g. still queued).
	ErrNoData = errors.New("imagesource: image has no data")
	// ErrUnavailable means the image service could not be reached or failed; worth retrying.
	ErrUnavailable = errors.New("imagesource: image service unavailable")
)

// Image status values, as Glance names them.
const (
	StatusActive      = "active"
	StatusDeactivated = "deactivated"
)

// Image visibility values, as Glance names them.
const (
	VisibilityPublic    = "public"    // every project may use it, and it is listed to all
	VisibilityCommunity = "community" // every project may use it, but it is listed only to its owner
	VisibilityShared    = "shared"    // its owner and the projects it is shared with (members)
	VisibilityPrivate   = "private"   // its owner only
)

// Member status values of a shared image, as Glance names them.
const (
	MemberAccepted = "accepted"
	MemberPending  = "pending"
	MemberRejected = "rejected"
)

// Image is the metadata of one image that provisioning needs.
type Image struct {
	ID          string
	Name        string
	Status      string
	DiskFormat  string // as declared by the uploader: never trusted for the bytes
	Size        int64  // bytes of image data
	VirtualSize int64  // bytes of the disk it holds, when the service knows it; 0 otherwise
	HashAlgo    string // os_hash_algo, e.g. "sha512"
	HashValue   string // os_hash_value, hex
	Checksum    string // legacy md5, hex
	UpdatedAt   time.Time
	Owner       string // ID of the project that owns it; empty when none does
	Visibility  string // public, community, shared or private
	// ContainerFormat, MinDisk (GiB) and MinRAM (MiB) are as the uploader declared them.
	ContainerFormat string
	MinDisk         int
	MinRAM          int
	// DirectURL is where the image service's store keeps the data, when it shows it (Glance's
	// direct_url, with show_image_direct_url set): rbd://<fsid>/<pool>/<image>/<snapshot> for a
	// Glance on Ceph RBD. See ParseRBDLocation.
	DirectURL string
	// Properties are the image's custom properties (hw_*, os_*, ...), the ones a volume made
	// from it records and Nova reads when it boots from that volume.
	Properties map[string]string
}

// ContentHash identifies the image's bytes: "<algo>:<hex>" from the strongest hash published.
// Two images with equal content hashes hold the same bytes; metadata edits do not change it.
func (i Image) ContentHash() string {
	switch {
	case i.HashAlgo != "" && i.HashValue != "":
		return i.HashAlgo + ":" + i.HashValue
	case i.Checksum != "":
		return "md5:" + i.Checksum
	default:
		return ""
	}
}

// Source reads images.
type Source interface {
	// Get returns an image's metadata.
	Get(ctx context.Context, id string) (Image, error)
	// Open streams an image's data from byte offset on.
	Open(ctx context.Context, id string, offset int64) (io.ReadCloser, error)
}

// Members reads whom shared images are shared with. A Source that can share images implements
// it too.
type Members interface {
	// MemberStatus returns project's membership status of a shared image (MemberAccepted,
	// MemberPending or MemberRejected), or an error wrapping ErrNotFound when project is not a
	// member of it.
	MemberStatus(ctx context.Context, imageID, project string) (string, error)
}
