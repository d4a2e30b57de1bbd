// Package models holds imagevol's persistent state — user and cache volumes and the image-volume
// cache entries — as gorm models, the versioned migrations that create them, and the queries the
// engine runs on them. MySQL (or MariaDB) is used through gorm's mysql driver when a DSN is
// configured; an embedded SQLite file is the default when none is.
//
// It imports none of imagevol's packages.
package models

import "time"

// Volume statuses, as Cinder names them.
const (
	StatusCreating  = "creating"
	StatusAvailable = "available"
	StatusError     = "error"
	StatusDeleting  = "deleting"
	// StatusExtending is a volume being grown; StatusErrorExtending one whose extension failed
	// (it keeps its old size).
	StatusExtending      = "extending"
	StatusErrorExtending = "error_extending"
)

// Cache results recorded on a volume.
const (
	CacheHit       = "hit"
	CacheMiss      = "miss"
	CacheNotCached = "not_cached"
)

// Cache entry states. An entry is "filling" from the moment its slot is reserved until its
// snapshot exists; only "ready" entries are cloned from. "evicting" marks an entry whose cache
// volume is being removed: nothing may lease it any more.
const (
	EntryFilling  = "filling"
	EntryReady    = "ready"
	EntryEvicting = "evicting"
)

// Volume is a block volume: a user's, or a cache volume owned by the internal project.
type Volume struct {
	ID          string `gorm:"primaryKey;size:36"`
	ProjectID   string `gorm:"size:255;index"`
	UserID      string `gorm:"size:255"`
	Name        string `gorm:"size:255"`
	SizeGB      int
	ImageID     string `gorm:"size:36;index"`
	Host        string `gorm:"size:255"`
	Pool        string `gorm:"size:64"`
	Status      string `gorm:"size:32"`
	Cache       string `gorm:"size:16"`
	CacheReason string `gorm:"size:64"`
	Error       string `gorm:"type:text"`
	WorkflowID  string `gorm:"size:255"`
	// Flatten is the state of a background flatten: "", pending, running, done or failed.
	Flatten string `gorm:"size:16"`
	// ImageMetadata is the image's metadata as it was when the volume was created (Cinder's
	// volume_glance_metadata): its core fields and custom properties, as strings. Nil on
	// volumes created before it was recorded.
	ImageMetadata map[string]string `gorm:"serializer:json;type:text"`
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Flatten states of a volume: the volume is available through all of them.
const (
	FlattenPending = "pending"
	FlattenRunning = "running"
	FlattenDone    = "done"
	FlattenFailed  = "failed"
)

// CacheEntry associates an image, at one content hash, with the cache volume holding it on one
// host. The table and its first columns are Cinder's; the rest are imagevol's.
type CacheEntry struct {
	ID             uint      `gorm:"primaryKey"`
	Host           string    `gorm:"size:255;not null;index;uniqueIndex:ux_cache_key,priority:1"`
	ClusterName    string    `gorm:"size:255"`
	Pool           string    `gorm:"size:64;not null;uniqueIndex:ux_cache_key,priority:2"`
	ImageID        string    `gorm:"size:36;not null;index;uniqueIndex:ux_cache_key,priority:3"`
	ImageUpdatedAt time.Time `gorm:"not null"`
	ContentHash    string    `gorm:"size:160;not null;uniqueIndex:ux_cache_key,priority:4"`
	VolumeID       string    `gorm:"size:36;not null"`
	Size           int       `gorm:"not null"` // GiB, rounded up, as Cinder records it
	SizeBytes      int64     `gorm:"not null"`
	Hits           int64     `gorm:"not null;default:0"`
	LastUsed       time.Time `gorm:"not null;index"`
	Pinned         bool      `gorm:"not null;default:false"`
	State          string    `gorm:"size:16;not null"`
	FillWorkflowID string    `gorm:"size:255"`
	// CloneDepth is the cache volume's own clone depth: 1 when it is a clone of the image
	// service's RBD snapshot, 0 when it holds its data.
	CloneDepth int `gorm:"not null;default:0"`
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// TableName is Cinder's table name for cache entries.
func (CacheEntry) TableName() string { return "image_volume_cache_entries" }

// CacheLease is a provision's claim on a ready entry while it clones from it: an entry with an
// unexpired lease is never evicted. The expiry bounds what a crashed holder can block. Each lease
// has a token of its own, so two attempts of one holder (a retried clone) hold two leases, and
// each releases only its own.
type CacheLease struct {
	EntryID   uint   `gorm:"primaryKey;autoIncrement:false"`
	Token     string `gorm:"primaryKey;size:255"`
	Holder    string `gorm:"size:255;not null"`
	ExpiresAt time.Time
}

// TrashedCacheVolume is an evicted cache volume that clones still depend on: it sits in the RBD
// trash, its bytes reported as the cache's trashed bytes, until its last clone is gone.
type TrashedCacheVolume struct {
	ID        uint   `gorm:"primaryKey"`
	Host      string `gorm:"size:255;not null;index"`
	Pool      string `gorm:"size:64;not null"`
	VolumeID  string `gorm:"size:36;not null"`
	ImageID   string `gorm:"size:36;not null"`
	SizeBytes int64  `gorm:"not null"`
	TrashedAt time.Time
}

// TrashedImage is a user or staging image that was busy (open by a client, or with clones) when
// it was deleted: it went to the RBD trash instead, and reconcile purges it once it is free.
type TrashedImage struct {
	ID        uint   `gorm:"primaryKey"`
	Host      string `gorm:"size:255;not null;index"`
	Pool      string `gorm:"size:64;not null;uniqueIndex:ux_trashed_image,priority:1"`
	Name      string `gorm:"size:255;not null;uniqueIndex:ux_trashed_image,priority:2"`
	TrashedAt time.Time
}

// CacheStat holds one host's cache counters since the database was created.
type CacheStat struct {
	Host            string `gorm:"primaryKey;size:255" json:"-"`
	Hits            int64  `gorm:"not null;default:0" json:"hits"`
	Misses          int64  `gorm:"not null;default:0" json:"misses"`
	Evictions       int64  `gorm:"not null;default:0" json:"evictions"`
	Downloads       int64  `gorm:"not null;default:0" json:"downloads"`
	BytesDownloaded int64  `gorm:"not null;default:0" json:"bytes_downloaded"`
}
