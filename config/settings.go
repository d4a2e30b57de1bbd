package config

import (
	"time"

	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/tracing"
)

// Every setting is one tagged field below; the loader (load.go) derives everything else from
// the tags:
//
//	key      its YAML key, under the keys of the structs around it (worker.cache.enabled)
//	env      the environment variable that overrides the file
//	flag     the command-line flag that overrides both, on the commands that take the
//	         field's section (see Load); none: no flag
//	default  its value when neither sets it, as the file would write it
//	help     what it is, for the flag's usage and the reference test
//	min      "-1" for a limit where -1 means none (integers are otherwise >= 0)
//	invert   "true": the field holds the negation of the key (so its zero value is the safe one)
//
// A struct field with only a key tag is a section: its fields' keys go under it. Fields without
// tags are not settings. docs/deploy.md lists every key; TestSettingsDeclared keeps both in step.

// File is the whole configuration of imagevol's processes.
type File struct {
	Temporal Temporal       `key:"temporal"`
	Database Database       `key:"database"`
	Glance   Glance         `key:"glance"`
	Gateway  Gateway        `key:"gateway"`
	Worker   Worker         `key:"worker"`
	Metrics  Metrics        `key:"metrics"`
	Tracing  tracing.Config `key:"tracing"`
}

// Temporal says where the Temporal frontend is.
type Temporal struct {
	Address   string      `key:"address" env:"IMAGEVOL_TEMPORAL_ADDRESS" default:"127.0.0.1:7233" check:"hostport" help:"Temporal frontend, host:port"`
	Namespace string      `key:"namespace" env:"IMAGEVOL_TEMPORAL_NAMESPACE" default:"default" check:"nonempty" help:"Temporal namespace"`
	TLS       TemporalTLS `key:"tls"`
}

// TemporalTLS is TLS to the Temporal frontend. TLS is on as soon as any field is set; with
// only ServerName set, the server is verified against the system's roots.
type TemporalTLS struct {
	CAFile     string `key:"ca_file" env:"IMAGEVOL_TEMPORAL_TLS_CA" help:"PEM bundle the server certificate must chain to; empty: system roots"`
	CertFile   string `key:"cert_file" env:"IMAGEVOL_TEMPORAL_TLS_CERT" help:"client certificate (mTLS); set together with key_file"`
	KeyFile    string `key:"key_file" env:"IMAGEVOL_TEMPORAL_TLS_KEY" help:"client key"`
	ServerName string `key:"server_name" env:"IMAGEVOL_TEMPORAL_TLS_SERVER_NAME" help:"name to verify the server certificate against; empty: the address's host"`
}

// Enabled reports whether the connection to Temporal uses TLS.
func (t TemporalTLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Database says where cache and volume rows live.
type Database struct {
	DSN    string `key:"dsn" env:"IMAGEVOL_DB_DSN" help:"MySQL DSN, or sqlite:PATH; empty: SQLite file under run_dir"`
	RunDir string `key:"run_dir" env:"IMAGEVOL_RUN_DIR" default:".run" help:"directory of the embedded SQLite file"`
}

// Glance says where images come from.
type Glance struct {
	URL   string `key:"url" env:"GLANCE_URL" default:"http://127.0.0.1:9292/" check:"url" help:"unversioned Glance endpoint"`
	Token string `key:"token" env:"GLANCE_TOKEN" help:"static token; empty for a Glance without Keystone"`
	// Cloud names an entry of clouds.yaml (CloudsFile, or the usual search path). LoadFile
	// loads and checks its auth section into Auth.
	Cloud      string     `key:"cloud" env:"IMAGEVOL_GLANCE_CLOUD" help:"a cloud of clouds.yaml: Glance from its Keystone catalog"`
	CloudsFile string     `key:"clouds_file" env:"IMAGEVOL_GLANCE_CLOUDS_FILE" help:"clouds.yaml to read glance.cloud from; empty: the search path"`
	Auth       *CloudAuth // nil unless Cloud is set
}

// Gateway is the API gateway's part.
type Gateway struct {
	Listen     string   `key:"listen" env:"IMAGEVOL_LISTEN" flag:"listen" default:"127.0.0.1:8776" check:"hostport" help:"address to serve the API on"`
	Hosts      []string `key:"hosts" env:"IMAGEVOL_HOSTS" flag:"hosts" default:"node1" help:"comma-separated storage hosts"`
	TokensFile string   `key:"tokens_file" env:"IMAGEVOL_TOKENS_FILE" flag:"tokens" help:"file of 'token project [role]' lines, mode 0600 (role: admin, member or reader; default member)"`
	// Quotas are projects' own quotas, over the defaults below.
	Quotas map[string]Quota `key:"quotas" env:"IMAGEVOL_QUOTAS" flag:"quotas" help:"comma-separated project=N (most volumes) or project=volumes:N:gigabytes:M; -1 is no limit"`
	// DefaultQuotaVolumes and DefaultQuotaGigabytes are the quotas of a project Quotas does not
	// list (-1: unlimited; the defaults are Cinder's quota_volumes and quota_gigabytes); see
	// DefaultQuota.
	DefaultQuotaVolumes   int `key:"default_quota_volumes" env:"IMAGEVOL_DEFAULT_QUOTA_VOLUMES" flag:"default-quota-volumes" default:"10" min:"-1" help:"most volumes of a project --quotas does not list (-1: no limit)"`
	DefaultQuotaGigabytes int `key:"default_quota_gigabytes" env:"IMAGEVOL_DEFAULT_QUOTA_GIGABYTES" flag:"default-quota-gigabytes" default:"1000" min:"-1" help:"most GiB of the volumes of a project --quotas does not list (-1: no limit)"`
	// MaxVolumeSizeGB is the largest size_gb accepted (the default is starter.DefaultMaxVolumeSizeGB).
	MaxVolumeSizeGB  int           `key:"max_volume_size_gb" env:"IMAGEVOL_MAX_VOLUME_SIZE_GB" flag:"max-volume-size-gb" default:"1000" help:"largest size_gb a volume may have"`
	TemporalUI       string        `key:"temporal_ui" env:"TEMPORAL_UI_URL" flag:"temporal-ui" default:"http://127.0.0.1:8233" check:"url?" help:"Temporal Web UI address, for links to each provision's workflow (empty: none)"`
	ReconcileEvery   time.Duration `key:"reconcile_every" env:"IMAGEVOL_RECONCILE_EVERY" flag:"reconcile-every" default:"10m" help:"how often the cache reconcile workflow runs (0: no schedule)"`
	ProvisionTimeout time.Duration `key:"provision_timeout" env:"IMAGEVOL_PROVISION_TIMEOUT" flag:"provision-timeout" default:"1h" help:"deadline of each provision after its request (0: none)"`
	// Keystone is the validation of Keystone tokens besides the static ones.
	Keystone    GatewayKeystone `key:"keystone"`
	TLSCertFile string          `key:"tls_cert_file" env:"IMAGEVOL_GATEWAY_TLS_CERT" help:"PEM certificate the API is served with over HTTPS, with tls_key_file; empty: plain HTTP"`
	TLSKeyFile  string          `key:"tls_key_file" env:"IMAGEVOL_GATEWAY_TLS_KEY" help:"its private key"`
	// Timeouts of the HTTP server; 0 means none.
	ReadHeaderTimeout     time.Duration `key:"read_header_timeout" env:"IMAGEVOL_READ_HEADER_TIMEOUT" default:"10s" help:"time a client has to send a request's headers"`
	ReadTimeout           time.Duration `key:"read_timeout" env:"IMAGEVOL_READ_TIMEOUT" default:"1m" help:"time to read a whole request"`
	WriteTimeout          time.Duration `key:"write_timeout" env:"IMAGEVOL_WRITE_TIMEOUT" default:"1m" help:"time from the end of a request's headers to the end of its answer"`
	IdleTimeout           time.Duration `key:"idle_timeout" env:"IMAGEVOL_IDLE_TIMEOUT" default:"2m" help:"how long an idle keep-alive connection stays open"`
	AuthFailuresPerMinute int           `key:"auth_failures_per_minute" env:"IMAGEVOL_AUTH_FAILURES_PER_MINUTE" default:"10" help:"failed authentications one client address may make in a burst, and per minute after it; 0: no limit"`
}

// DefaultQuota is the quotas of a project Quotas does not list.
func (g Gateway) DefaultQuota() QuotaLimits {
	return QuotaLimits{Volumes: g.DefaultQuotaVolumes, Gigabytes: g.DefaultQuotaGigabytes}
}

// GatewayKeystone is how the gateway validates Keystone tokens (X-Auth-Token) that are not
// static tokens: as the service user of a clouds.yaml cloud, with GET /v3/auth/tokens.
type GatewayKeystone struct {
	// Cloud names an entry of clouds.yaml (CloudsFile, or the usual search path): the
	// credentials of imagevol's service user; empty: no Keystone validation. LoadFile loads
	// and checks it into Auth.
	Cloud      string        `key:"cloud" env:"IMAGEVOL_KEYSTONE_CLOUD" help:"a cloud of clouds.yaml: imagevol's service user, which validates Keystone tokens; empty: static tokens only"`
	CloudsFile string        `key:"clouds_file" env:"IMAGEVOL_KEYSTONE_CLOUDS_FILE" help:"clouds.yaml to read gateway.keystone.cloud from; empty: the search path"`
	Auth       *CloudAuth    // nil unless Cloud is set
	CacheTTL   time.Duration `key:"cache_ttl" env:"IMAGEVOL_KEYSTONE_CACHE_TTL" default:"1m" help:"how long a validation is reused (never past the token's expiry); 0: not cached"`
	CacheSize  int           `key:"cache_size" env:"IMAGEVOL_KEYSTONE_CACHE_SIZE" default:"10000" help:"most validations cached"`
	Timeout    time.Duration `key:"timeout" env:"IMAGEVOL_KEYSTONE_TIMEOUT" default:"10s" help:"bound of one call to Keystone"`
}

// Worker is one storage host's worker, as the activities take it (package activities uses
// this type as its Config). The cache settings keep Cinder's names.
type Worker struct {
	Host string `key:"host" env:"IMAGEVOL_HOST" flag:"host" default:"node1" check:"nonempty" help:"storage host name (task queue imagevol.host.<host>)"`
	Pool string `key:"pool" env:"IMAGEVOL_POOL" flag:"pool" default:"volumes" check:"nonempty" help:"RBD pool of this host"`
	// ClusterName names the Ceph cluster the host's pool lives in (the worker fills in its fsid
	// when empty). Hosts of one cluster share their cache: a fill happens once per cluster, and
	// any host clones from a cache volume in another host's pool.
	ClusterName string `key:"cluster" env:"IMAGEVOL_CLUSTER" flag:"cluster" help:"name of the Ceph cluster the pool is in (default: its fsid); hosts of one cluster share their cache"`
	CephConf    string `key:"ceph_conf" env:"CEPH_CONF" flag:"ceph-conf" default:"/etc/ceph/ceph.conf" check:"nonempty" help:"ceph.conf path"`
	// CephUser is a Ceph client id (client.<CephUser>, written either way); empty: client.admin.
	CephUser    string `key:"ceph_user" env:"IMAGEVOL_CEPH_USER" flag:"ceph-user" help:"Ceph client id to connect as (imagevol for client.imagevol; empty: client.admin)"`
	CephKeyring string `key:"ceph_keyring" env:"IMAGEVOL_CEPH_KEYRING" flag:"ceph-keyring" help:"keyring of the Ceph client (empty: the one ceph.conf names)"`

	ImageVolumeCacheEnabled     bool   `key:"cache.enabled" env:"IMAGE_VOLUME_CACHE_ENABLED" flag:"image_volume_cache_enabled" default:"true" help:"cache images as volumes"`
	ImageVolumeCacheMaxSizeGB   int    `key:"cache.max_size_gb" env:"IMAGE_VOLUME_CACHE_MAX_SIZE_GB" flag:"image_volume_cache_max_size_gb" default:"0" help:"cache capacity in GiB (0 = unlimited)"`
	ImageVolumeCacheMaxCount    int    `key:"cache.max_count" env:"IMAGE_VOLUME_CACHE_MAX_COUNT" flag:"image_volume_cache_max_count" default:"0" help:"cache entries (0 = unlimited)"`
	CinderInternalTenantProject string `key:"internal_project.project_id" env:"CINDER_INTERNAL_TENANT_PROJECT_ID" flag:"cinder_internal_tenant_project_id" default:"imagevol-internal" check:"nonempty" help:"project owning cache volumes"`
	CinderInternalTenantUser    string `key:"internal_project.user_id" env:"CINDER_INTERNAL_TENANT_USER_ID" flag:"cinder_internal_tenant_user_id" default:"imagevol-internal" help:"user owning cache volumes"`
	// The internal project's quota (Cinder's quota_volumes and quota_gigabytes for it); cache
	// volumes count against it.
	InternalQuotaVolumes int `key:"internal_project.quota_volumes" env:"CINDER_INTERNAL_TENANT_QUOTA_VOLUMES" flag:"internal_quota_volumes" default:"0" help:"volumes the internal project may hold (0 = unlimited)"`
	InternalQuotaGB      int `key:"internal_project.quota_gigabytes" env:"CINDER_INTERNAL_TENANT_QUOTA_GIGABYTES" flag:"internal_quota_gigabytes" default:"0" help:"GiB the internal project may hold (0 = unlimited)"`

	// ImageStorePools are the pools of the worker's cluster in which the image service's RBD
	// store keeps images (Glance's rbd_store_pool): an image located there is cloned instead of
	// downloaded. Empty: never clone, always download. A location naming any other pool (a
	// volume pool, say) is refused, whoever set it.
	ImageStorePools []string `key:"image_store.pools" env:"IMAGEVOL_IMAGE_STORE_POOLS" flag:"image-store-pools" default:"images" help:"pools of this cluster where Glance's rbd store keeps images, cloned instead of downloaded (empty: always download)"`
	// ImageStoreFlattenCache flattens a cache volume cloned from the image service's store
	// before it is snapshotted, so that no cache entry keeps the image service from deleting
	// the image (at the cost of a copy inside Ceph on the first volume).
	ImageStoreFlattenCache bool `key:"image_store.flatten_cache" env:"IMAGEVOL_IMAGE_STORE_FLATTEN_CACHE" flag:"image-store-flatten-cache" default:"false" help:"flatten cache volumes cloned from Glance's rbd store, so Glance can delete the image"`

	FlattenPolicy           string `key:"flatten" env:"IMAGEVOL_FLATTEN" flag:"flatten" default:"never" help:"flatten policy: never, always or depth>N"`
	MaxConcurrentActivities int    `key:"max_concurrent_activities" env:"IMAGEVOL_MAX_CONCURRENT_ACTIVITIES" default:"0" help:"steps one worker process runs at once; 0: the Temporal SDK's default"`
	// AllowedFormats are the disk formats an import accepts, as found in the image's bytes
	// (Glance's disk_formats, Cinder's image_conversion_disable); any other fails the provision
	// with UnsafeImage. Empty (a Worker not loaded from the configuration) means
	// importer.DefaultAllowedFormats; see AcceptedFormats.
	AllowedFormats []importer.Format `key:"allowed_formats" env:"IMAGEVOL_ALLOWED_FORMATS" flag:"allowed-formats" default:"raw,qcow2,vmdk,vhd,vhdx,iso" help:"disk formats an import accepts, found in the bytes: any of raw,qcow2,vmdk,vhd,vhdx,iso"`
	// MaxConcurrentConversions caps the qemu-img conversions the host runs at once.
	MaxConcurrentConversions int `key:"max_concurrent_conversions" env:"IMAGEVOL_MAX_CONCURRENT_CONVERSIONS" flag:"max-concurrent-conversions" default:"2" help:"qemu-img conversions run at once (0 = no cap)"`
	// SandboxDisabled runs qemu-img on the host instead of in its sandbox (package sandbox):
	// for development machines without bubblewrap only, as a crafted image may then make
	// qemu-img read any file the worker can.
	SandboxDisabled bool          `key:"sandbox.enabled" env:"IMAGEVOL_SANDBOX" flag:"sandbox" default:"true" invert:"true" help:"run qemu-img in its bubblewrap sandbox; false is for development only"`
	SandboxCPUTime  time.Duration `key:"sandbox.cpu_time" env:"IMAGEVOL_SANDBOX_CPU_TIME" flag:"sandbox-cpu-time" default:"1h" help:"CPU time of one conversion"`
	SandboxMemoryMB int           `key:"sandbox.memory_mb" env:"IMAGEVOL_SANDBOX_MEMORY_MB" flag:"sandbox-memory-mb" default:"4096" help:"address space of one conversion, MiB"`

	// SettleTime is how old a row or an image must be before reconcile judges it; younger ones
	// may belong to a provision starting now. 0 means 5 minutes. Not a setting: tests shorten it.
	SettleTime time.Duration
}

// AcceptedFormats is AllowedFormats, or importer.DefaultAllowedFormats when none is set.
func (w Worker) AcceptedFormats() []importer.Format {
	if len(w.AllowedFormats) == 0 {
		return importer.DefaultAllowedFormats()
	}
	return w.AllowedFormats
}

// Metrics says where a worker serves Prometheus metrics (the gateway serves /metrics on its
// API address).
type Metrics struct {
	Listen string `key:"listen" env:"IMAGEVOL_METRICS_LISTEN" flag:"metrics-listen" check:"hostport?" help:"address to serve Prometheus metrics on at /metrics (empty: none)"`
}

// Common is the part the gateway and the workers share, as Connect takes it.
func (f File) Common() Common {
	return Common{
		TemporalAddress: f.Temporal.Address, Namespace: f.Temporal.Namespace, TLS: f.Temporal.TLS,
		DBDSN: f.Database.DSN, RunDir: f.Database.RunDir,
		GlanceURL: f.Glance.URL, GlanceToken: f.Glance.Token, GlanceCloud: f.Glance.Auth,
	}
}
