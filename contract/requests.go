package contract

import (
	"time"

	"github.com/imagevol/imagevol/imagesource"
)

// CreateVolumeInput is one request to make a volume from an image.
type CreateVolumeInput struct {
	VolumeID string
	ImageID  string
	SizeGB   int
	Host     string
	// Image is the metadata the gateway read when it accepted the request, at ImageRead; the
	// cache lookup uses it while fresh instead of asking the image service again.
	Image     *imagesource.Image
	ImageRead time.Time
	// Deadline bounds the whole provision: every step retries until it, and a step still
	// failing then fails the volume with ErrTypeDeadlineExceeded and the step's last error.
	// Zero means no deadline (each step then gives up after its own retries).
	Deadline time.Time
}

// CreateVolumeResult says how the volume was made.
type CreateVolumeResult struct {
	VolumeID    string
	Cache       string // hit, miss or not_cached
	CacheReason string
	Format      string
	Bytes       int64 // downloaded on a miss, by the attempt that finished
	ResumedFrom int64 // where that attempt resumed an interrupted download
	Flattened   bool
	// Source is how the data came (SourceDownload, SourceImageStore; empty on a hit).
	Source string `json:",omitempty"`
}

// WarmInput asks for an image to be cached on some hosts ahead of demand.
type WarmInput struct {
	ImageID string
	Hosts   []string
}

// WarmHostResult is what warming did for one host.
type WarmHostResult struct {
	Host       string
	Cached     bool
	Entry      EntryRef // may be in another host's pool of the same cluster
	Downloaded bool
	Reason     string // why not cached
	Error      string
}

// EvictCacheEntryInput names the cache entry an operator evicts, and the host it lives on.
type EvictCacheEntryInput struct {
	Host    string
	EntryID uint
	Force   bool
}

// ReconcileInput lists the hosts whose caches a reconcile pass checks.
type ReconcileInput struct {
	Hosts []string
}

// DeleteVolumeInput names a user volume to delete and where its image lives.
type DeleteVolumeInput struct {
	VolumeID string
	Host     string
	// Pool is the volume's pool as its row recorded it; empty (a volume still being created)
	// means the host's own pool, where its provision makes it.
	Pool string
	// Provision is the workflow ID of a provision that may still be running: it is cancelled
	// and waited for before the volume's image is removed.
	Provision string
}

// ExtendVolumeInput grows an available volume from OldSizeGB to NewSizeGB, as Cinder's os-extend
// action does. The gateway has set the volume's status to "extending" before it starts.
type ExtendVolumeInput struct {
	VolumeID  string
	Host      string
	Pool      string
	OldSizeGB int
	NewSizeGB int
}
