// Package activities holds every provisioning step that touches the world — the cache rows in the
// database, the image service, the Ceph cluster — as methods on Activities, which carries their
// dependencies. Workflows reference them through a nil *Activities. Steps that touch Ceph run on
// the storage host's own task queue; every step treats "already done" as success, so a retried
// attempt converges on the same end state.
package activities

import (
	"time"

	"github.com/imagevol/imagevol/storage"
)

// Error types of non-retryable failures, as seen in temporal.ApplicationError.Type(). The API
// gateway maps them to HTTP status codes; everything else is retried by Temporal.
const (
	ErrTypeImageNotFound    = "ImageNotFound"
	ErrTypeImageNotActive   = "ImageNotActive"
	ErrTypeImageNoHash      = "ImageNoHash"
	ErrTypeHashMismatch     = "ImageHashMismatch"
	ErrTypeSizeMismatch     = "ImageSizeMismatch"
	ErrTypeUnsafeImage      = "UnsafeImage"
	ErrTypeCorruptImage     = "CorruptImage"
	ErrTypeVolumeTooSmall   = "VolumeTooSmall"
	ErrTypeUnsupported      = "UnsupportedFormat"
	ErrTypeNoSpace          = "InsufficientSpace"
	ErrTypeCacheVolumeGone  = "CacheVolumeGone"
	ErrTypeVolumeNotFound   = "VolumeNotFound"
	ErrTypeConflictingImage = "ConflictingImage"
)

// NonRetryable lists the error types a retry policy must not retry.
var NonRetryable = []string{
	ErrTypeImageNotFound, ErrTypeImageNotActive, ErrTypeImageNoHash, ErrTypeHashMismatch,
	ErrTypeSizeMismatch, ErrTypeUnsafeImage, ErrTypeCorruptImage, ErrTypeVolumeTooSmall,
	ErrTypeUnsupported, ErrTypeNoSpace, ErrTypeCacheVolumeGone, ErrTypeVolumeNotFound,
	ErrTypeConflictingImage,
}

// Reasons a volume was not cached, reported as the volume's cache_reason.
const (
	ReasonDisabled       = "disabled"
	ReasonTooBig         = "too_big"
	ReasonFull           = "full"
	ReasonFillInProgress = "fill_in_progress"
)

// Flatten policies: never, always, or "depth>N" — flatten when the new volume would be more
// than N clone levels deep.
const (
	FlattenNever  = "never"
	FlattenAlways = "always"
)

// Config is one storage host's settings, with Cinder's names for the cache settings.
type Config struct {
	Host        string // the host's name; its task queue is imagevol.host.<Host>
	ClusterName string // Cinder's cluster_name column
	Pool        string // RBD pool of the host's volumes and cache volumes
	CephConf    string // ceph.conf path, passed to qemu-img for rbd: targets

	ImageVolumeCacheEnabled     bool   // image_volume_cache_enabled
	ImageVolumeCacheMaxSizeGB   int    // image_volume_cache_max_size_gb; 0 = unlimited
	ImageVolumeCacheMaxCount    int    // image_volume_cache_max_count; 0 = unlimited
	CinderInternalTenantProject string // cinder_internal_tenant_project_id: owns cache volumes
	CinderInternalTenantUser    string // cinder_internal_tenant_user_id

	FlattenPolicy string // never (default), always, or depth>N
	ConvertDir    string // scratch space qemu-img may need; its free space is checked first
}

// ImageRef is the image metadata a provision carries between steps.
type ImageRef struct {
	ID          string
	Size        int64
	VirtualSize int64
	HashAlgo    string
	HashValue   string
	Checksum    string
	ContentHash string
	UpdatedAt   time.Time
}

// LookupInput asks whether a host's cache can serve an image.
type LookupInput struct {
	VolumeID string
	ImageID  string
	SizeGB   int
}

// LookupResult is the plan for a provision: a hit names the snapshot to clone from.
type LookupResult struct {
	Image         ImageRef
	Pool          string
	Hit           bool
	Parent        storage.Parent // set on a hit
	EntryID       uint           // set on a hit
	Cacheable     bool           // a miss that should fill the cache
	Reason        string         // why not cacheable
	FlattenPolicy string
}

// EvictInput reserves cache room for an image, evicting least-recently-used entries first.
type EvictInput struct {
	Image          ImageRef
	FillWorkflowID string
}

// EvictResult is the reserved slot (or why there is none) and what was evicted for it.
type EvictResult struct {
	Reserved      bool
	Reason        string
	EntryID       uint
	CacheVolumeID string
	Evicted       []uint
}

// DownloadInput streams an image into a staging RBD image next to Target.
type DownloadInput struct {
	Image  ImageRef
	Pool   string
	Target string
}

// DownloadResult reports a finished, verified download.
type DownloadResult struct {
	Bytes       int64 // fetched by the attempt that finished
	ResumedFrom int64 // where that attempt started: non-zero when it resumed an earlier one
	ZeroSkipped int64
}

// ImportInput turns a downloaded staging image into the raw image Target.
type ImportInput struct {
	Pool           string
	Target         string
	MaxVirtualSize int64 // the requested volume's size: an image describing more is refused
}

// ImportResult reports the image's real format and size.
type ImportResult struct {
	Format      string
	VirtualSize int64
}

// CacheInput snapshots a filled cache volume and marks its entry ready.
type CacheInput struct {
	EntryID       uint
	Pool          string
	CacheVolumeID string
}

// CloneInput clones a user volume from a cache snapshot.
type CloneInput struct {
	Parent storage.Parent
	Pool   string
	Name   string
}

// ResizeInput grows an image to SizeBytes (never shrinks it).
type ResizeInput struct {
	Pool      string
	Name      string
	SizeBytes int64
}

// ImageName names one RBD image.
type ImageName struct {
	Pool string
	Name string
}

// VolumeUpdate sets a volume's status columns; empty strings leave a column as it is.
type VolumeUpdate struct {
	VolumeID    string
	Status      string
	Cache       string
	CacheReason string
	Error       string
	Host        string
	Pool        string
	Flatten     string
}
