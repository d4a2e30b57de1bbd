// Package activities holds every provisioning step that touches the world — the cache rows in the
// database, the image service, the Ceph cluster — as methods on Activities, which carries their
// dependencies. Workflows reference them through a nil *Activities. Steps that touch Ceph run on
// the storage host's own task queue; every step treats "already done" as success, so a retried
// attempt converges on the same end state.
//
// Of imagevol's packages it may import contract, config, models, storage (and storage/rbd for
// fencing), imagesource, importer, sandbox and metrics; never workflows, worker or starter.
package activities

import (
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/models"
)

// Config is one storage host's settings, with Cinder's names for the cache settings.
type Config struct {
	Host string // the host's name; its task queue is imagevol.host.<Host>
	// ClusterName names the Ceph cluster the host's pool lives in (its fsid by default). Hosts
	// of one cluster share their cache: a fill happens once per cluster, and any host clones
	// from a cache volume in another host's pool.
	ClusterName string
	Pool        string // RBD pool of the host's volumes and cache volumes
	CephConf    string // ceph.conf path, passed to qemu-img for rbd: targets
	CephUser    string // Ceph client id (client.<CephUser>); empty: the default, client.admin
	CephKeyring string // keyring of CephUser; empty: the one ceph.conf names

	ImageVolumeCacheEnabled     bool   // image_volume_cache_enabled
	ImageVolumeCacheMaxSizeGB   int    // image_volume_cache_max_size_gb; 0 = unlimited
	ImageVolumeCacheMaxCount    int    // image_volume_cache_max_count; 0 = unlimited
	CinderInternalTenantProject string // cinder_internal_tenant_project_id: owns cache volumes
	CinderInternalTenantUser    string // cinder_internal_tenant_user_id
	// The internal project's quota (Cinder's quota_volumes and quota_gigabytes for it); cache
	// volumes count against it. 0 = unlimited.
	InternalQuotaVolumes int
	InternalQuotaGB      int

	// SettleTime is how old a row or an image must be before reconcile judges it; younger ones
	// may belong to a provision starting now. 0 means 5 minutes.
	SettleTime time.Duration

	FlattenPolicy string // never (default), always, or depth>N
	// AllowedFormats are the disk formats an import accepts, as found in the bytes (Glance's
	// disk_formats, Cinder's image_conversion_disable); empty means
	// importer.DefaultAllowedFormats.
	AllowedFormats []importer.Format
	ConvertDir     string // scratch space qemu-img may need; its free space is checked first

	// MaxConcurrentConversions caps the qemu-img conversions the host runs at once; 0: no cap.
	MaxConcurrentConversions int
	// SandboxDisabled runs qemu-img on the host instead of in its sandbox (package sandbox):
	// for development machines without bubblewrap only, as a crafted image may then make
	// qemu-img read any file the worker can.
	SandboxDisabled bool
	SandboxCPUTime  time.Duration // RLIMIT_CPU of one conversion; 0: sandbox.DefaultCPUTime
	SandboxMemoryMB int           // RLIMIT_AS of one conversion in MiB; 0: sandbox.DefaultAddressSpace
}

// allowedFormats is AllowedFormats, or the default list when none is set.
func (c Config) allowedFormats() []importer.Format {
	if len(c.AllowedFormats) == 0 {
		return importer.DefaultAllowedFormats()
	}
	return c.AllowedFormats
}

func refOf(e *models.CacheEntry) contract.EntryRef {
	return contract.EntryRef{EntryID: e.ID, Host: e.Host, Pool: e.Pool, VolumeID: e.VolumeID}
}
