package contract

import (
	"time"

	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/storage"
)

// Flatten policies: never, always, or "depth>N" — flatten when the new volume would be more
// than N clone levels deep.
const (
	FlattenNever  = "never"
	FlattenAlways = "always"
)

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
	// DirectURL is the image service's location of the data (imagesource.Image.DirectURL):
	// an RBD snapshot on the worker's cluster is cloned instead of downloaded.
	DirectURL string `json:",omitempty"`
}

// LookupInput asks whether a host's cache can serve an image.
type LookupInput struct {
	VolumeID string
	ImageID  string
	SizeGB   int
	// Prewarm is a lookup on behalf of a pre-warm, not a volume: no size check, and it counts
	// neither as a hit nor as a miss.
	Prewarm bool
	// Image is the metadata the gateway read when it accepted the request, to spare the image
	// service a second read on the hot path; it is read again when older than imageMaxAge.
	Image     *imagesource.Image
	ImageRead time.Time
}

// LookupResult is the plan for a provision: a hit names the entry to clone from.
type LookupResult struct {
	Image         ImageRef
	Cluster       string
	Pool          string
	Hit           bool
	Entry         EntryRef // set on a hit: possibly in another host's pool of the cluster
	Cacheable     bool     // a miss that should fill the cache
	Reason        string   // why not cacheable
	FlattenPolicy string
}

// EntryRef locates a ready cache entry and its cache volume.
type EntryRef struct {
	EntryID  uint
	Host     string
	Pool     string
	VolumeID string
	// Depth is the cache volume's own clone depth: 1 when it is a clone of the image service's
	// RBD snapshot, 0 when it holds its data itself. A volume cloned from it is Depth+1 deep.
	Depth int `json:",omitempty"`
}

// Parent is the snapshot volumes are cloned from.
func (e EntryRef) Parent() storage.Parent { return CacheParent(e.Pool, e.VolumeID) }

// CacheParent is the snapshot user volumes are cloned from, of the cache volume with that id.
func CacheParent(pool, cacheVolumeID string) storage.Parent {
	return storage.Parent{Pool: pool, Image: RBDName(cacheVolumeID), Snapshot: CacheSnapshot}
}

// FillInput asks for an image's content to be in the cluster's cache, filled on Host (the host
// of the provision that asked first) unless some host already has it.
type FillInput struct {
	Cluster string
	Host    string
	Image   ImageRef
	// MaxVirtualSize bounds what a disk image may unpack to (the first requester's volume size).
	MaxVirtualSize int64
	// Deadline is the deadline of the provision that starts the fill (zero: none). Waiters
	// with more time left download on their own when the fill fails at it.
	Deadline time.Time
}

// FillResult is the outcome of a fill, as every provision waiting on it sees it.
type FillResult struct {
	Cached      bool     // Entry is ready to clone from
	Reason      string   // why the image was not cached
	Entry       EntryRef // set when Cached
	Downloaded  bool     // this fill downloaded the image (false: it found it already cached)
	Bytes       int64
	ResumedFrom int64
	Format      string
	// Source is how the cache volume got its data (SourceDownload, SourceImageStore), and
	// SourceReason why an image the store keeps in RBD was downloaded all the same.
	Source       string `json:",omitempty"`
	SourceReason string `json:",omitempty"`
	// Set when the fill failed: the failure's type (see IsImageFault) and message.
	FailureType    string
	FailureMessage string
}

// EvictInput reserves cache room for an image, evicting least-recently-used entries first.
type EvictInput struct {
	Image          ImageRef
	FillWorkflowID string
}

// EvictResult is the reserved slot (or why there is none) and what was evicted for it.
type EvictResult struct {
	Reserved bool
	// Ready is set when the image turned out to be cached already, on this host or another host
	// of the cluster: Entry is that entry and nothing was reserved.
	Ready bool
	// Entry is the reserved entry (state filling), or the ready one.
	Entry         EntryRef
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

// StoreCloneInput asks to make Target a copy-on-write clone of the image service's RBD
// snapshot of Image, when that is safe (see activities.CloneFromImageStore).
type StoreCloneInput struct {
	Image          ImageRef
	Pool           string
	Target         string
	MaxVirtualSize int64
	// ForCache: Target is a cache volume (worker.image_store.flatten_cache applies to it).
	ForCache bool
}

// StoreCloneResult says whether Target was cloned, and why not when it was not: the image is then
// downloaded as any other.
type StoreCloneResult struct {
	Cloned      bool
	Reason      string // one of the Reason* source reasons
	Format      string
	VirtualSize int64
	// Depth is Target's clone depth: 1, or 0 once flattened (image_store.flatten_cache).
	Depth int
}

// How a volume or cache volume got its data.
const (
	SourceDownload   = "download"    // downloaded from the image service, verified, imported
	SourceImageStore = "image_store" // a clone of the image service's own RBD snapshot
)

// CacheInput snapshots a filled cache volume and marks its entry ready.
type CacheInput struct {
	EntryID       uint
	Pool          string
	CacheVolumeID string
}

// CloneInput clones a user volume from a cache entry's snapshot, under a lease on the entry.
type CloneInput struct {
	Entry EntryRef
	Pool  string
	Name  string
}

// HitInput asks a storage host to make a volume from its cache in one step: look the cache up
// and, on a hit, clone, grow and mark the volume available (Activities.ProvisionFromCache).
type HitInput struct {
	Lookup    LookupInput
	Name      string // the volume's RBD image, in the host's pool
	SizeBytes int64
	// MaxLookups bounds how often the step looks again after the entry it was about to clone
	// from was evicted.
	MaxLookups int
}

// HitResult is the plan of the lookup and, with Done, a volume made from the cache: cloned from
// Plan.Entry, grown, and recorded available (with Flatten pending when the policy asks for it).
type HitResult struct {
	Plan  LookupResult
	Done  bool
	Depth int // the volume's clone depth, when Done
	// Evicted: every entry found was evicted before its clone; the volume is to be made
	// without the cache.
	Evicted bool `json:",omitempty"`
}

// ResizeInput grows an image to SizeBytes (never shrinks it).
type ResizeInput struct {
	Pool      string
	Name      string
	SizeBytes int64
}

// EvictEntryInput evicts one cache entry now, at an operator's request.
type EvictEntryInput struct {
	EntryID uint
	Force   bool // evict even a pinned entry
}

// EvictEntryResult says what an eviction did.
type EvictEntryResult struct {
	Evicted bool // false: there was no such entry
	Trashed bool // clones still depend on it: its volume waits in the trash
}

// ReconcileReport is what one host's reconcile pass found and fixed.
type ReconcileReport struct {
	Host        string
	Checked     int      // cache entries looked at
	Invalidated []string // entries evicted because their image was deleted, deactivated or changed
	Purged      int      // trashed cache volumes deleted for good (their last clone was gone)
	Stuck       []string // volumes left "creating" by a provision no longer running, marked error
	// AbandonedFills are entries left "filling" by a fill no longer running, removed with their
	// images.
	AbandonedFills []string
	PurgedImages   int      // busy images sent to the trash on deletion, purged now they are free
	TrashedBusy    []string // such images still busy, left in the trash for the next pass
	Orphans        []string // images of the pool no row accounts for (reported, not removed)
	Problems       []string // what could not be fixed now
}

// RemoveVolumeResult says what deleting a volume's image did.
type RemoveVolumeResult struct {
	Removed      bool // false: the image was already gone
	ParentPurged bool // its parent, an evicted cache volume, lost its last clone and was purged
}

// ImageName names one RBD image.
type ImageName struct {
	Pool string
	Name string
}

// VolumeUpdate sets a volume's status columns; empty strings (and a zero SizeGB) leave a column
// as it is.
type VolumeUpdate struct {
	VolumeID    string
	Status      string
	Cache       string
	CacheReason string
	Error       string
	Host        string
	Pool        string
	Flatten     string
	SizeGB      int // the size of an extended volume
}

// StagingName is where an image's bytes land before import.
func StagingName(target string) string { return target + ".part" }

// DownloadProgress is the durable progress a download heartbeats: every byte below Offset is in
// the staging image, and HashState is the digest's state at exactly that point.
type DownloadProgress struct {
	Offset    int64
	Total     int64
	HashState []byte
	Writer    string // the worker process that wrote it (Activities.Identity)
}

// RBDName is the deterministic RBD image name of a volume, as Cinder's RBD driver names it: cache volumes
// are volumes too, named by their own IDs.
func RBDName(volumeID string) string { return "volume-" + volumeID }

// CacheSnapshot is the name of the snapshot every cache volume is cloned from.
const CacheSnapshot = "imagevol-cache"
