// Package storage is the small interface imagevol's activities use to manage block images, with
// sentinel errors that callers test with errors.Is. Package storage/rbd implements it on Ceph RBD.
//
// It imports none of imagevol's packages.
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Implementations wrap them with %w so callers can tell "already done" from
// real failures and make every step idempotent.
var (
	// ErrNotFound means the image or snapshot does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrExists means an image or snapshot with that name already exists.
	ErrExists = errors.New("storage: already exists")
	// ErrInUse means the image cannot be removed yet (open elsewhere, or clones depend on it).
	ErrInUse = errors.New("storage: in use")
	// ErrPermission means the cluster refused the caller's user access to the pool or image.
	ErrPermission = errors.New("storage: permission denied")
)

// Parent names the snapshot a clone was made from, by the names it had then: a parent evicted to
// the trash since (with its snapshot) is still named the same.
type Parent struct {
	Pool     string
	Image    string
	Snapshot string
}

// ImageInfo describes one image.
type ImageInfo struct {
	Pool    string
	Name    string
	Size    uint64
	Parent  *Parent   // nil when the image is not a clone
	Created time.Time // when the image was created (zero where the backend does not say)
}

// WriterAt writes into an open image at byte offsets; safe for concurrent use on distinct ranges.
type WriterAt interface {
	io.WriterAt
	// Close flushes and closes the image.
	Close() error
}

// ReaderAt reads an open image at byte offsets.
type ReaderAt interface {
	io.ReaderAt
	// Size is the image's size in bytes.
	Size() uint64
	// Close closes the image.
	Close() error
}

// Storage manages images in named pools of one cluster.
type Storage interface {
	// Create makes an empty (all-zero, thin) image of size bytes; ErrExists if the name is taken.
	Create(ctx context.Context, pool, name string, size uint64) error
	// OpenWriter opens an image for writing.
	OpenWriter(ctx context.Context, pool, name string) (WriterAt, error)
	// OpenReader opens an image, or one of its snapshots when snap is not empty, read-only.
	OpenReader(ctx context.Context, pool, name, snap string) (ReaderAt, error)
	// Stat describes an image; ErrNotFound if it does not exist.
	Stat(ctx context.Context, pool, name string) (ImageInfo, error)
	// Grow resizes an image to size if it is smaller, in one open, and returns the size it had:
	// an image already that big (or bigger) is left as it is.
	Grow(ctx context.Context, pool, name string, size uint64) (before uint64, err error)
	// Rename renames an image within its pool.
	Rename(ctx context.Context, pool, from, to string) error
	// CreateSnapshot snapshots an image; ErrExists if the snapshot exists.
	CreateSnapshot(ctx context.Context, pool, name, snap string) error
	// SnapshotExists reports whether the image has the named snapshot.
	SnapshotExists(ctx context.Context, pool, name, snap string) (bool, error)
	// Clone makes a copy-on-write clone of parent's snapshot (clone format 2, no protect).
	Clone(ctx context.Context, parent Parent, pool, name string) error
	// Flatten copies the parent's data into a clone and detaches it.
	Flatten(ctx context.Context, pool, name string) error
	// Remove deletes an image and its snapshots. When clones still depend on a snapshot the
	// image is moved to the trash instead, where it stays until its last clone is gone; the
	// returned trashed flag says so. ErrNotFound if the image does not exist.
	Remove(ctx context.Context, pool, name string) (trashed bool, err error)
	// PurgeTrashed deletes for good a trashed image of that name once no clone depends on it:
	// ErrInUse while clones remain, ErrNotFound when no such image is in the trash.
	PurgeTrashed(ctx context.Context, pool, name string) error
	// List names the images of a pool.
	List(ctx context.Context, pool string) ([]string, error)
	// UsedBytes is the space an image's data occupies (allocated extents, snapshots included).
	UsedBytes(ctx context.Context, pool, name string) (uint64, error)
}
