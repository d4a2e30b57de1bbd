package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/gophercloud/gophercloud/v2"
	"go.yaml.in/yaml/v3"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/sandbox"
	"github.com/imagevol/imagevol/tracing"
)

// File is the whole configuration of imagevol's processes. LoadFile reads it from one YAML
// file; every key has an environment variable that overrides it, and a built-in default.
type File struct {
	Temporal Temporal
	Database Database
	Glance   Glance
	Gateway  Gateway
	Worker   Worker
	Metrics  Metrics
	Tracing  tracing.Config
}

// Temporal says where the Temporal frontend is.
type Temporal struct {
	Address   string // temporal.address
	Namespace string // temporal.namespace
	TLS       TemporalTLS
}

// TemporalTLS is TLS to the Temporal frontend. TLS is on as soon as any field is set; with
// only ServerName set, the server is verified against the system's roots.
type TemporalTLS struct {
	CAFile     string // PEM bundle the server certificate must chain to; empty: system roots
	CertFile   string // client certificate (mTLS); set together with KeyFile
	KeyFile    string // client key
	ServerName string // name to verify the server certificate against; empty: the address's host
}

// Enabled reports whether the connection to Temporal uses TLS.
func (t TemporalTLS) Enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Database says where cache and volume rows live.
type Database struct {
	DSN    string // MySQL DSN, or sqlite:PATH; empty: SQLite file under RunDir
	RunDir string // directory of the embedded SQLite file
}

// Glance says where images come from.
type Glance struct {
	URL   string // unversioned Glance endpoint
	Token string // static token; empty for a Glance without Keystone
	// Cloud names an entry of clouds.yaml (CloudsFile, or the usual search path). LoadFile
	// loads and checks its auth section into Auth.
	Cloud      string
	CloudsFile string
	Auth       *CloudAuth // nil unless Cloud is set
}

// CloudAuth is the auth section of one clouds.yaml cloud.
type CloudAuth struct {
	File                        string // the clouds.yaml it came from
	AuthURL                     string
	Username, UserID, Password  string
	ProjectName, ProjectID      string
	UserDomainName              string
	UserDomainID                string
	ProjectDomainName           string
	ProjectDomainID             string
	ApplicationCredentialID     string
	ApplicationCredentialName   string
	ApplicationCredentialSecret string
	Token                       string
	RegionName                  string
}

// AuthOptions turns the cloud into gophercloud's Keystone v3 options, re-authenticating
// when the token expires (a worker outlives any token).
func (a CloudAuth) AuthOptions() gophercloud.AuthOptions {
	o := gophercloud.AuthOptions{
		IdentityEndpoint: a.AuthURL, Username: a.Username, UserID: a.UserID, Password: a.Password,
		DomainName: a.UserDomainName, DomainID: a.UserDomainID, TokenID: a.Token, AllowReauth: true,
		ApplicationCredentialID: a.ApplicationCredentialID, ApplicationCredentialName: a.ApplicationCredentialName,
		ApplicationCredentialSecret: a.ApplicationCredentialSecret,
	}
	// Application credentials carry their own scope; Keystone refuses another one.
	if a.ApplicationCredentialID == "" && a.ApplicationCredentialName == "" && (a.ProjectID != "" || a.ProjectName != "") {
		o.Scope = &gophercloud.AuthScope{ProjectID: a.ProjectID, ProjectName: a.ProjectName,
			DomainID: a.ProjectDomainID, DomainName: a.ProjectDomainName}
	}
	return o
}

// Gateway is the API gateway's part.
type Gateway struct {
	Listen     string   // gateway.listen
	Hosts      []string // gateway.hosts: storage hosts to place volumes on
	TokensFile string   // gateway.tokens_file: lines of "token project"
	// Quotas are gateway.quotas: projects' own quotas, over the defaults below.
	Quotas map[string]Quota
	// DefaultQuota is gateway.default_quota_volumes and gateway.default_quota_gigabytes: the
	// quotas of a project gateway.quotas does not list (-1: unlimited).
	DefaultQuota QuotaLimits
	// MaxVolumeSizeGB is gateway.max_volume_size_gb: the largest size_gb accepted.
	MaxVolumeSizeGB int
	TemporalUI      string        // gateway.temporal_ui: for workflow links; empty: none
	ReconcileEvery  time.Duration // gateway.reconcile_every: 0 means no reconcile schedule
	// ProvisionTimeout is gateway.provision_timeout: each provision's deadline is this long
	// after its request; 0 means none.
	ProvisionTimeout time.Duration
	// Keystone is gateway.keystone: validation of Keystone tokens besides the static ones.
	Keystone GatewayKeystone
	// TLSCertFile and TLSKeyFile (gateway.tls_cert_file, gateway.tls_key_file): the API is
	// served over HTTPS with this certificate and key; both empty: plain HTTP.
	TLSCertFile string
	TLSKeyFile  string
	// Timeouts of the HTTP server (gateway.*_timeout); 0 means none.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// AuthFailuresPerMinute (gateway.auth_failures_per_minute) is how many failed
	// authentications one client address may make in a burst, and per minute after it; 0: no
	// limit.
	AuthFailuresPerMinute int
}

// GatewayKeystone is how the gateway validates Keystone tokens (X-Auth-Token) that are not
// static tokens: as the service user of a clouds.yaml cloud, with GET /v3/auth/tokens.
type GatewayKeystone struct {
	// Cloud names an entry of clouds.yaml (CloudsFile, or the usual search path): the
	// credentials of imagevol's service user; empty: no Keystone validation. LoadFile loads
	// and checks it into Auth.
	Cloud      string
	CloudsFile string
	Auth       *CloudAuth    // nil unless Cloud is set
	CacheTTL   time.Duration // how long a validation is reused (never past the token's expiry); 0: not cached
	CacheSize  int           // most validations cached
	Timeout    time.Duration // bound of one call to Keystone
}

// Worker is one storage host's worker.
type Worker struct {
	Host     string // worker.host; its task queue is imagevol.host.<Host>
	Pool     string // worker.pool
	Cluster  string // worker.cluster; empty: the Ceph fsid
	CephConf string // worker.ceph_conf
	// CephUser and CephKeyring: the Ceph client the worker connects as (worker.ceph_user, an
	// id like "imagevol" for client.imagevol; empty: client.admin) and its keyring file.
	CephUser    string
	CephKeyring string
	Cache       struct {
		Enabled   bool
		MaxSizeGB int // 0: unlimited
		MaxCount  int // 0: unlimited
	}
	InternalProject struct {
		ProjectID      string
		UserID         string
		QuotaVolumes   int // 0: unlimited
		QuotaGigabytes int // 0: unlimited
	}
	Flatten                 string // never, always or depth>N
	MaxConcurrentActivities int    // 0: the Temporal SDK's default
	// AllowedFormats is worker.allowed_formats: the disk formats an import accepts, as found
	// in the image's bytes; any other fails the provision with UnsafeImage.
	AllowedFormats []importer.Format
	// MaxConcurrentConversions caps the host's qemu-img conversions (0: no cap).
	MaxConcurrentConversions int
	// Sandbox confines qemu-img (package sandbox).
	Sandbox struct {
		Enabled  bool          // false runs qemu-img on the host: development only
		CPUTime  time.Duration // RLIMIT_CPU of one conversion
		MemoryMB int           // RLIMIT_AS of one conversion, MiB
	}
}

// ActivitiesConfig is the worker section as the activities take it.
func (w Worker) ActivitiesConfig() activities.Config {
	return activities.Config{
		Host: w.Host, Pool: w.Pool, ClusterName: w.Cluster, CephConf: w.CephConf, CephUser: w.CephUser, CephKeyring: w.CephKeyring,
		ImageVolumeCacheEnabled:     w.Cache.Enabled,
		ImageVolumeCacheMaxSizeGB:   w.Cache.MaxSizeGB,
		ImageVolumeCacheMaxCount:    w.Cache.MaxCount,
		CinderInternalTenantProject: w.InternalProject.ProjectID,
		CinderInternalTenantUser:    w.InternalProject.UserID,
		InternalQuotaVolumes:        w.InternalProject.QuotaVolumes,
		InternalQuotaGB:             w.InternalProject.QuotaGigabytes,
		FlattenPolicy:               w.Flatten,
		AllowedFormats:              w.AllowedFormats,
		MaxConcurrentConversions:    w.MaxConcurrentConversions,
		SandboxDisabled:             !w.Sandbox.Enabled,
		SandboxCPUTime:              w.Sandbox.CPUTime,
		SandboxMemoryMB:             w.Sandbox.MemoryMB,
	}
}

// Metrics says where a worker serves Prometheus metrics (the gateway serves /metrics on its
// API address).
type Metrics struct {
	Listen string // metrics.listen; empty: not served
}

// Common is the part the gateway and the workers share, as Connect takes it.
func (f File) Common() Common {
	return Common{
		TemporalAddress: f.Temporal.Address, Namespace: f.Temporal.Namespace, TLS: f.Temporal.TLS,
		DBDSN: f.Database.DSN, RunDir: f.Database.RunDir,
		GlanceURL: f.Glance.URL, GlanceToken: f.Glance.Token, GlanceCloud: f.Glance.Auth,
	}
}

// ConfigPath finds the config file a command was given: the value of -config or --config in
// args (before flag parsing, so that the file can supply the other flags' defaults), else
// IMAGEVOL_CONFIG. Empty means no file.
func ConfigPath(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return Env("IMAGEVOL_CONFIG", "")
}

// LoadFile reads the YAML file at path (none when path is empty), lays the environment over
// it and the defaults under it, and checks the result. Unknown keys are errors; every error
// names its key, and the variable when the value came from the environment. An empty
// variable counts as unset.
func LoadFile(path string) (File, error) {
	var raw rawFile
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return File{}, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(data)))
		dec.KnownFields(true)
		if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
			return File{}, fmt.Errorf("config: %s: %w", path, explainUnknown(data, err))
		}
	}
	f, _, err := resolve(&raw)
	return f, err
}

var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type .*$`)

// explainUnknown rewrites yaml.v3's unknown-field errors, which name a Go type, into the
// key's full path (line 3: unknown key worker.cache.max_size).
func explainUnknown(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		if sub := unknownField.FindStringSubmatch(m); sub != nil {
			line, _ := strconv.Atoi(sub[1])
			key := sub[2]
			if p := keyPath(&root, line, key, ""); p != "" {
				key = p
			}
			msgs[i] = fmt.Sprintf("line %d: unknown key %s", line, key)
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

// keyPath finds the mapping key name written on line and returns its dotted path.
func keyPath(n *yaml.Node, line int, name, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if p := keyPath(c, line, name, prefix); p != "" {
				return p
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			path := strings.TrimPrefix(prefix+"."+k.Value, ".")
			if k.Line == line && k.Value == name {
				return path
			}
			if p := keyPath(n.Content[i+1], line, name, path); p != "" {
				return p
			}
		}
	}
	return ""
}

// value is one scalar as the file wrote it, kept as text so that a bad value is reported
// with its key rather than as a YAML type error with only a line number.
type value struct {
	text string
	set  bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (v *value) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a single value", n.Line)
	}
	if n.Tag != "!!null" {
		v.text, v.set = n.Value, true
	}
	return nil
}

// list is a YAML sequence of scalars, or one comma-separated scalar as in the environment.
type list struct {
	items []string
	set   bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *list) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		l.items, l.set = SplitList(n.Value), n.Tag != "!!null"
		return nil
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: want a list of names", c.Line)
			}
			l.items = append(l.items, strings.TrimSpace(c.Value))
		}
		l.set = true
		return nil
	}
	return fmt.Errorf("line %d: want a list", n.Line)
}

// quotaMap is a YAML mapping of project to a count of volumes or to a mapping of quota names
// to limits, or one "project=N,..." scalar in ParseQuotas' form.
type quotaMap struct {
	text string // in the environment's form, parsed with the others
	set  bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (q *quotaMap) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		q.text, q.set = n.Value, n.Tag != "!!null"
		return nil
	case yaml.MappingNode:
		var parts []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch v.Kind {
			case yaml.ScalarNode:
				parts = append(parts, k.Value+"="+v.Value)
			case yaml.MappingNode:
				var limits []string
				for j := 0; j+1 < len(v.Content); j += 2 {
					if v.Content[j+1].Kind != yaml.ScalarNode {
						return fmt.Errorf("line %d: want quota: limit", v.Content[j+1].Line)
					}
					limits = append(limits, v.Content[j].Value, v.Content[j+1].Value)
				}
				parts = append(parts, k.Value+"="+strings.Join(limits, ":"))
			default:
				return fmt.Errorf("line %d: want project: count, or project: {volumes: N, gigabytes: M}", v.Line)
			}
		}
		q.text, q.set = strings.Join(parts, ","), true
		return nil
	}
	return fmt.Errorf("line %d: want a mapping of project to count", n.Line)
}

// rawFile mirrors the YAML layout; yaml.v3 rejects any key not here (KnownFields).
type rawFile struct {
	Temporal struct {
		Address   value `yaml:"address"`
		Namespace value `yaml:"namespace"`
		TLS       struct {
			CAFile     value `yaml:"ca_file"`
			CertFile   value `yaml:"cert_file"`
			KeyFile    value `yaml:"key_file"`
			ServerName value `yaml:"server_name"`
		} `yaml:"tls"`
	} `yaml:"temporal"`
	Database struct {
		DSN    value `yaml:"dsn"`
		RunDir value `yaml:"run_dir"`
	} `yaml:"database"`
	Glance struct {
		URL        value `yaml:"url"`
		Token      value `yaml:"token"`
		Cloud      value `yaml:"cloud"`
		CloudsFile value `yaml:"clouds_file"`
	} `yaml:"glance"`
	Gateway struct {
		Listen           value    `yaml:"listen"`
		Hosts            list     `yaml:"hosts"`
		TokensFile       value    `yaml:"tokens_file"`
		Quotas           quotaMap `yaml:"quotas"`
		DefaultVolumes   value    `yaml:"default_quota_volumes"`
		DefaultGigabytes value    `yaml:"default_quota_gigabytes"`
		MaxVolumeSizeGB  value    `yaml:"max_volume_size_gb"`
		TemporalUI       value    `yaml:"temporal_ui"`
		ReconcileEvery   value    `yaml:"reconcile_every"`
		ProvisionTimeout value    `yaml:"provision_timeout"`
		TLSCertFile      value    `yaml:"tls_cert_file"`
		TLSKeyFile       value    `yaml:"tls_key_file"`
		ReadHeader       value    `yaml:"read_header_timeout"`
		Read             value    `yaml:"read_timeout"`
		Write            value    `yaml:"write_timeout"`
		Idle             value    `yaml:"idle_timeout"`
		AuthFailures     value    `yaml:"auth_failures_per_minute"`
		Keystone         struct {
			Cloud      value `yaml:"cloud"`
			CloudsFile value `yaml:"clouds_file"`
			CacheTTL   value `yaml:"cache_ttl"`
			CacheSize  value `yaml:"cache_size"`
			Timeout    value `yaml:"timeout"`
		} `yaml:"keystone"`
	} `yaml:"gateway"`
	Worker struct {
		Host     value `yaml:"host"`
		Pool     value `yaml:"pool"`
		Cluster  value `yaml:"cluster"`
		CephConf value `yaml:"ceph_conf"`
		CephUser value `yaml:"ceph_user"`
		Keyring  value `yaml:"ceph_keyring"`
		Cache    struct {
			Enabled   value `yaml:"enabled"`
			MaxSizeGB value `yaml:"max_size_gb"`
			MaxCount  value `yaml:"max_count"`
		} `yaml:"cache"`
		InternalProject struct {
			ProjectID      value `yaml:"project_id"`
			UserID         value `yaml:"user_id"`
			QuotaVolumes   value `yaml:"quota_volumes"`
			QuotaGigabytes value `yaml:"quota_gigabytes"`
		} `yaml:"internal_project"`
		Flatten                  value `yaml:"flatten"`
		MaxConcurrentActivities  value `yaml:"max_concurrent_activities"`
		AllowedFormats           list  `yaml:"allowed_formats"`
		MaxConcurrentConversions value `yaml:"max_concurrent_conversions"`
		Sandbox                  struct {
			Enabled  value `yaml:"enabled"`
			CPUTime  value `yaml:"cpu_time"`
			MemoryMB value `yaml:"memory_mb"`
		} `yaml:"sandbox"`
	} `yaml:"worker"`
	Metrics struct {
		Listen value `yaml:"listen"`
	} `yaml:"metrics"`
	Tracing struct {
		Exporter value `yaml:"exporter"`
		Endpoint value `yaml:"endpoint"`
		Insecure value `yaml:"insecure"`
		File     value `yaml:"file"`
	} `yaml:"tracing"`
}

// setting describes one key, for the reference in docs/deploy.md (a test keeps them in step).
type setting struct {
	key, env, def string
}

// loader resolves keys one by one, collecting every error rather than stopping at the first.
type loader struct {
	settings []setting
	origin   map[string]string // key -> the variable that set it, when the environment did
	errs     []error
}

// pick returns the value of key: the variable's if set, else the file's, else def.
func (l *loader) pick(key, env string, v value, def string) (string, bool) {
	l.settings = append(l.settings, setting{key, env, def})
	if e := Env(env, ""); e != "" {
		l.origin[key] = env
		return e, true
	}
	if v.set {
		return strings.TrimSpace(v.text), true
	}
	return def, false
}

// bad records that key's value is wrong.
func (l *loader) bad(key, format string, args ...any) {
	where := key
	if env := l.origin[key]; env != "" {
		where += " (from " + env + ")"
	}
	l.errs = append(l.errs, fmt.Errorf("config: %s: %s", where, fmt.Sprintf(format, args...)))
}

func (l *loader) str(key, env string, v value, def string) string {
	s, _ := l.pick(key, env, v, def)
	return s
}

// count reads a non-negative integer.
func (l *loader) count(key, env string, v value, def int) int {
	s, _ := l.pick(key, env, v, strconv.Itoa(def))
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		l.bad(key, "%q is not an integer", s)
	case n < 0:
		l.bad(key, "%d is negative", n)
	}
	return n
}

// limit reads a quota: a non-negative integer, or -1 for no limit.
func (l *loader) limit(key, env string, v value, def int) int {
	s, _ := l.pick(key, env, v, strconv.Itoa(def))
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		l.bad(key, "%q is not an integer", s)
	case n < -1:
		l.bad(key, "%d: want a limit >= 0, or -1 for none", n)
	}
	return n
}

func (l *loader) boolean(key, env string, v value, def bool) bool {
	s, _ := l.pick(key, env, v, strconv.FormatBool(def))
	b, ok := parseBool(s)
	if !ok {
		l.bad(key, "%q is not a boolean (true/false, yes/no, on/off, 1/0)", s)
	}
	return b
}

func (l *loader) duration(key, env string, v value, def time.Duration) time.Duration {
	s, _ := l.pick(key, env, v, def.String())
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		l.bad(key, "%q is not a duration (like 10m or 1h30m)", s)
	case d < 0:
		l.bad(key, "%s is negative", d)
	}
	return d
}

// hostPort checks an address to dial or listen on; empty is allowed when optional.
func (l *loader) hostPort(key, s string, optional bool) {
	if s == "" && optional {
		return
	}
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		l.bad(key, "%q is not host:port", s)
	}
}

// httpURL checks an http(s) URL; empty is allowed when optional.
func (l *loader) httpURL(key, s string, optional bool) {
	if s == "" && optional {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.bad(key, "%q is not an http(s) URL", s)
	}
}

func (l *loader) nonEmpty(key, s string) {
	if s == "" {
		l.bad(key, "must not be empty")
	}
}

// resolve turns the file's text into a checked File. It also returns the settings it read,
// for the reference test.
func resolve(raw *rawFile) (File, []setting, error) {
	l := &loader{origin: map[string]string{}}
	var f File

	t := &raw.Temporal
	f.Temporal.Address = l.str("temporal.address", "IMAGEVOL_TEMPORAL_ADDRESS", t.Address, "127.0.0.1:7233")
	l.hostPort("temporal.address", f.Temporal.Address, false)
	f.Temporal.Namespace = l.str("temporal.namespace", "IMAGEVOL_TEMPORAL_NAMESPACE", t.Namespace, "default")
	l.nonEmpty("temporal.namespace", f.Temporal.Namespace)
	f.Temporal.TLS = TemporalTLS{
		CAFile:     l.str("temporal.tls.ca_file", "IMAGEVOL_TEMPORAL_TLS_CA", t.TLS.CAFile, ""),
		CertFile:   l.str("temporal.tls.cert_file", "IMAGEVOL_TEMPORAL_TLS_CERT", t.TLS.CertFile, ""),
		KeyFile:    l.str("temporal.tls.key_file", "IMAGEVOL_TEMPORAL_TLS_KEY", t.TLS.KeyFile, ""),
		ServerName: l.str("temporal.tls.server_name", "IMAGEVOL_TEMPORAL_TLS_SERVER_NAME", t.TLS.ServerName, ""),
	}
	if (f.Temporal.TLS.CertFile == "") != (f.Temporal.TLS.KeyFile == "") {
		l.bad("temporal.tls.cert_file", "set together with temporal.tls.key_file")
	}

	f.Database.DSN = l.str("database.dsn", "IMAGEVOL_DB_DSN", raw.Database.DSN, "")
	if dsn := f.Database.DSN; dsn != "" && !strings.HasPrefix(dsn, "sqlite:") {
		// The DSN holds a password: say what is wrong, never what it is.
		if _, err := mysqldrv.ParseDSN(dsn); err != nil {
			l.bad("database.dsn", "not a MySQL DSN user:pass@tcp(host:3306)/db or sqlite:PATH")
		}
	}
	f.Database.RunDir = l.str("database.run_dir", "IMAGEVOL_RUN_DIR", raw.Database.RunDir, ".run")

	g := &raw.Glance
	f.Glance.URL = l.str("glance.url", "GLANCE_URL", g.URL, "http://127.0.0.1:9292/")
	l.httpURL("glance.url", f.Glance.URL, false)
	f.Glance.Token = l.str("glance.token", "GLANCE_TOKEN", g.Token, "")
	f.Glance.Cloud = l.str("glance.cloud", "IMAGEVOL_GLANCE_CLOUD", g.Cloud, "")
	f.Glance.CloudsFile = l.str("glance.clouds_file", "IMAGEVOL_GLANCE_CLOUDS_FILE", g.CloudsFile, "")
	if f.Glance.Cloud != "" {
		auth, err := loadCloud(f.Glance.Cloud, f.Glance.CloudsFile)
		if err != nil {
			l.bad("glance.cloud", "%v", err)
		}
		f.Glance.Auth = auth
	}

	gw := &raw.Gateway
	f.Gateway.Listen = l.str("gateway.listen", "IMAGEVOL_LISTEN", gw.Listen, "127.0.0.1:8776")
	l.hostPort("gateway.listen", f.Gateway.Listen, false)
	hosts, hostsSet := l.pick("gateway.hosts", "IMAGEVOL_HOSTS", value{}, "node1")
	f.Gateway.Hosts = SplitList(hosts)
	if !hostsSet && gw.Hosts.set {
		f.Gateway.Hosts = gw.Hosts.items
	}
	if len(f.Gateway.Hosts) == 0 {
		l.bad("gateway.hosts", "must name at least one storage host")
	}
	seen := map[string]bool{}
	for _, h := range f.Gateway.Hosts {
		if h == "" || seen[h] {
			l.bad("gateway.hosts", "empty or repeated host %q", h)
		}
		seen[h] = true
	}
	f.Gateway.TokensFile = l.str("gateway.tokens_file", "IMAGEVOL_TOKENS_FILE", gw.TokensFile, "")
	quotas := l.str("gateway.quotas", "IMAGEVOL_QUOTAS", value{text: gw.Quotas.text, set: gw.Quotas.set}, "")
	q, err := ParseQuotas(quotas)
	if err != nil {
		l.bad("gateway.quotas", "%v", err)
	}
	f.Gateway.Quotas = q
	f.Gateway.DefaultQuota.Volumes = l.limit("gateway.default_quota_volumes", "IMAGEVOL_DEFAULT_QUOTA_VOLUMES", gw.DefaultVolumes, DefaultQuotaVolumes)
	f.Gateway.DefaultQuota.Gigabytes = l.limit("gateway.default_quota_gigabytes", "IMAGEVOL_DEFAULT_QUOTA_GIGABYTES", gw.DefaultGigabytes, DefaultQuotaGigabytes)
	f.Gateway.MaxVolumeSizeGB = l.count("gateway.max_volume_size_gb", "IMAGEVOL_MAX_VOLUME_SIZE_GB", gw.MaxVolumeSizeGB, DefaultMaxVolumeSizeGB)
	if n := f.Gateway.MaxVolumeSizeGB; n < 1 || int64(n) > models.MaxSizeGiB {
		l.bad("gateway.max_volume_size_gb", "%d: want 1 to %d", n, models.MaxSizeGiB)
	}
	f.Gateway.TemporalUI = l.str("gateway.temporal_ui", "TEMPORAL_UI_URL", gw.TemporalUI, "http://127.0.0.1:8233")
	l.httpURL("gateway.temporal_ui", f.Gateway.TemporalUI, true)
	f.Gateway.ReconcileEvery = l.duration("gateway.reconcile_every", "IMAGEVOL_RECONCILE_EVERY", gw.ReconcileEvery, 10*time.Minute)
	f.Gateway.ProvisionTimeout = l.duration("gateway.provision_timeout", "IMAGEVOL_PROVISION_TIMEOUT", gw.ProvisionTimeout, time.Hour)
	f.Gateway.TLSCertFile = l.str("gateway.tls_cert_file", "IMAGEVOL_GATEWAY_TLS_CERT", gw.TLSCertFile, "")
	f.Gateway.TLSKeyFile = l.str("gateway.tls_key_file", "IMAGEVOL_GATEWAY_TLS_KEY", gw.TLSKeyFile, "")
	if (f.Gateway.TLSCertFile == "") != (f.Gateway.TLSKeyFile == "") {
		l.bad("gateway.tls_cert_file", "set together with gateway.tls_key_file")
	}
	f.Gateway.ReadHeaderTimeout = l.duration("gateway.read_header_timeout", "IMAGEVOL_READ_HEADER_TIMEOUT", gw.ReadHeader, 10*time.Second)
	f.Gateway.ReadTimeout = l.duration("gateway.read_timeout", "IMAGEVOL_READ_TIMEOUT", gw.Read, time.Minute)
	f.Gateway.WriteTimeout = l.duration("gateway.write_timeout", "IMAGEVOL_WRITE_TIMEOUT", gw.Write, time.Minute)
	f.Gateway.IdleTimeout = l.duration("gateway.idle_timeout", "IMAGEVOL_IDLE_TIMEOUT", gw.Idle, 2*time.Minute)
	f.Gateway.AuthFailuresPerMinute = l.count("gateway.auth_failures_per_minute", "IMAGEVOL_AUTH_FAILURES_PER_MINUTE", gw.AuthFailures, 10)
	ks := &gw.Keystone
	f.Gateway.Keystone.Cloud = l.str("gateway.keystone.cloud", "IMAGEVOL_KEYSTONE_CLOUD", ks.Cloud, "")
	f.Gateway.Keystone.CloudsFile = l.str("gateway.keystone.clouds_file", "IMAGEVOL_KEYSTONE_CLOUDS_FILE", ks.CloudsFile, "")
	if f.Gateway.Keystone.Cloud != "" {
		auth, err := loadCloud(f.Gateway.Keystone.Cloud, f.Gateway.Keystone.CloudsFile)
		if err != nil {
			l.bad("gateway.keystone.cloud", "%v", err)
		}
		f.Gateway.Keystone.Auth = auth
	}
	f.Gateway.Keystone.CacheTTL = l.duration("gateway.keystone.cache_ttl", "IMAGEVOL_KEYSTONE_CACHE_TTL", ks.CacheTTL, time.Minute)
	f.Gateway.Keystone.CacheSize = l.count("gateway.keystone.cache_size", "IMAGEVOL_KEYSTONE_CACHE_SIZE", ks.CacheSize, 10000)
	f.Gateway.Keystone.Timeout = l.duration("gateway.keystone.timeout", "IMAGEVOL_KEYSTONE_TIMEOUT", ks.Timeout, 10*time.Second)
	if f.Gateway.Keystone.Timeout == 0 {
		l.bad("gateway.keystone.timeout", "must be more than 0s")
	}

	w := &raw.Worker
	f.Worker.Host = l.str("worker.host", "IMAGEVOL_HOST", w.Host, "node1")
	l.nonEmpty("worker.host", f.Worker.Host)
	f.Worker.Pool = l.str("worker.pool", "IMAGEVOL_POOL", w.Pool, "volumes")
	l.nonEmpty("worker.pool", f.Worker.Pool)
	f.Worker.Cluster = l.str("worker.cluster", "IMAGEVOL_CLUSTER", w.Cluster, "")
	f.Worker.CephConf = l.str("worker.ceph_conf", "CEPH_CONF", w.CephConf, "/etc/ceph/ceph.conf")
	l.nonEmpty("worker.ceph_conf", f.Worker.CephConf)
	f.Worker.CephUser = strings.TrimPrefix(l.str("worker.ceph_user", "IMAGEVOL_CEPH_USER", w.CephUser, ""), "client.")
	f.Worker.CephKeyring = l.str("worker.ceph_keyring", "IMAGEVOL_CEPH_KEYRING", w.Keyring, "")
	f.Worker.Cache.Enabled = l.boolean("worker.cache.enabled", "IMAGE_VOLUME_CACHE_ENABLED", w.Cache.Enabled, true)
	f.Worker.Cache.MaxSizeGB = l.count("worker.cache.max_size_gb", "IMAGE_VOLUME_CACHE_MAX_SIZE_GB", w.Cache.MaxSizeGB, 0)
	f.Worker.Cache.MaxCount = l.count("worker.cache.max_count", "IMAGE_VOLUME_CACHE_MAX_COUNT", w.Cache.MaxCount, 0)
	ip := &w.InternalProject
	f.Worker.InternalProject.ProjectID = l.str("worker.internal_project.project_id", "CINDER_INTERNAL_TENANT_PROJECT_ID", ip.ProjectID, "imagevol-internal")
	l.nonEmpty("worker.internal_project.project_id", f.Worker.InternalProject.ProjectID)
	f.Worker.InternalProject.UserID = l.str("worker.internal_project.user_id", "CINDER_INTERNAL_TENANT_USER_ID", ip.UserID, "imagevol-internal")
	f.Worker.InternalProject.QuotaVolumes = l.count("worker.internal_project.quota_volumes", "CINDER_INTERNAL_TENANT_QUOTA_VOLUMES", ip.QuotaVolumes, 0)
	f.Worker.InternalProject.QuotaGigabytes = l.count("worker.internal_project.quota_gigabytes", "CINDER_INTERNAL_TENANT_QUOTA_GIGABYTES", ip.QuotaGigabytes, 0)
	f.Worker.Flatten = l.str("worker.flatten", "IMAGEVOL_FLATTEN", w.Flatten, contract.FlattenNever)
	if _, err := activities.ShouldFlatten(f.Worker.Flatten, 1); err != nil {
		l.bad("worker.flatten", "%q: want never, always or depth>N", f.Worker.Flatten)
	}
	f.Worker.MaxConcurrentActivities = l.count("worker.max_concurrent_activities", "IMAGEVOL_MAX_CONCURRENT_ACTIVITIES", w.MaxConcurrentActivities, 0)
	formats, formatsSet := l.pick("worker.allowed_formats", "IMAGEVOL_ALLOWED_FORMATS", value{}, importer.FormatList(importer.DefaultAllowedFormats()))
	if !formatsSet && w.AllowedFormats.set {
		formats = strings.Join(w.AllowedFormats.items, ",")
	}
	if f.Worker.AllowedFormats, err = importer.ParseFormats(formats); err != nil {
		l.bad("worker.allowed_formats", "%v", err)
	}
	f.Worker.MaxConcurrentConversions = l.count("worker.max_concurrent_conversions", "IMAGEVOL_MAX_CONCURRENT_CONVERSIONS", w.MaxConcurrentConversions, 2)
	f.Worker.Sandbox.Enabled = l.boolean("worker.sandbox.enabled", "IMAGEVOL_SANDBOX", w.Sandbox.Enabled, true)
	f.Worker.Sandbox.CPUTime = l.duration("worker.sandbox.cpu_time", "IMAGEVOL_SANDBOX_CPU_TIME", w.Sandbox.CPUTime, sandbox.DefaultCPUTime)
	if f.Worker.Sandbox.CPUTime < time.Second {
		l.bad("worker.sandbox.cpu_time", "must be at least 1s")
	}
	f.Worker.Sandbox.MemoryMB = l.count("worker.sandbox.memory_mb", "IMAGEVOL_SANDBOX_MEMORY_MB", w.Sandbox.MemoryMB, int(sandbox.DefaultAddressSpace>>20))
	if f.Worker.Sandbox.MemoryMB < 256 {
		l.bad("worker.sandbox.memory_mb", "must be at least 256")
	}

	f.Metrics.Listen = l.str("metrics.listen", "IMAGEVOL_METRICS_LISTEN", raw.Metrics.Listen, "")
	l.hostPort("metrics.listen", f.Metrics.Listen, true)

	tr := raw.Tracing
	f.Tracing.Exporter = l.str("tracing.exporter", "IMAGEVOL_TRACING_EXPORTER", tr.Exporter, tracing.ExporterNone)
	f.Tracing.Endpoint = l.str("tracing.endpoint", "IMAGEVOL_TRACING_ENDPOINT", tr.Endpoint, "")
	f.Tracing.Insecure = l.boolean("tracing.insecure", "IMAGEVOL_TRACING_INSECURE", tr.Insecure, false)
	f.Tracing.File = l.str("tracing.file", "IMAGEVOL_TRACING_FILE", tr.File, "")
	if err := f.Tracing.Validate(); err != nil {
		l.bad("tracing.exporter", "%v", err)
	}
	l.hostPort("tracing.endpoint", f.Tracing.Endpoint, true)

	return f, l.settings, errors.Join(l.errs...)
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}

// SplitList splits a comma-separated list, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Defaults of the gateway's size bound and of the quotas of a project gateway.quotas does not
// list: Cinder's defaults of quota_volumes and quota_gigabytes.
const (
	DefaultMaxVolumeSizeGB = 1000
	DefaultQuotaVolumes    = 10
	DefaultQuotaGigabytes  = 1000
)

// QuotaLimits are a project's quotas, as Cinder names them: the most volumes it may have and
// the most GiB they may add up to; -1 is no limit, 0 allows none.
type QuotaLimits struct {
	Volumes   int
	Gigabytes int
}

// Quota is one project's entry of gateway.quotas: a nil limit is the default's.
type Quota struct {
	Volumes   *int
	Gigabytes *int
}

// Or is q with the limits it does not set taken from def.
func (q Quota) Or(def QuotaLimits) QuotaLimits {
	if q.Volumes != nil {
		def.Volumes = *q.Volumes
	}
	if q.Gigabytes != nil {
		def.Gigabytes = *q.Gigabytes
	}
	return def
}

// ParseQuotas reads IMAGEVOL_QUOTAS' form: comma-separated project=LIMITS, where LIMITS is
// either N, the most volumes (the form before gigabytes were counted), or quota:N pairs joined
// by colons, e.g. demo=volumes:20:gigabytes:500 or ops=gigabytes:100. A limit is N >= 0, or -1
// for none; one a project's entry leaves out is the default's.
func ParseQuotas(s string) (map[string]Quota, error) {
	out := map[string]Quota{}
	for _, kv := range SplitList(s) {
		project, limits, ok := strings.Cut(kv, "=")
		project = strings.TrimSpace(project)
		bad := fmt.Errorf("quota %q: want project=N or project=volumes:N:gigabytes:M (N, M >= 0, or -1 for no limit)", kv)
		if !ok || project == "" {
			return nil, bad
		}
		if _, dup := out[project]; dup {
			return nil, fmt.Errorf("quota %q: project %s is listed twice", kv, project)
		}
		num := func(t string) (*int, bool) {
			n, err := strconv.Atoi(strings.TrimSpace(t))
			return &n, err == nil && n >= -1
		}
		var q Quota
		fields := strings.Split(limits, ":")
		if len(fields) == 1 {
			if q.Volumes, ok = num(fields[0]); !ok {
				return nil, bad
			}
			out[project] = q
			continue
		}
		if len(fields)%2 != 0 {
			return nil, bad
		}
		for i := 0; i < len(fields); i += 2 {
			n, ok := num(fields[i+1])
			switch name := strings.TrimSpace(fields[i]); {
			case !ok:
				return nil, bad
			case name == "volumes" && q.Volumes == nil:
				q.Volumes = n
			case name == "gigabytes" && q.Gigabytes == nil:
				q.Gigabytes = n
			default:
				return nil, fmt.Errorf("quota %q: %q is not volumes or gigabytes, or is given twice", kv, name)
			}
		}
		out[project] = q
	}
	return out, nil
}

// FormatQuotas writes quotas in ParseQuotas' form, sorted by project, for a flag's default.
func FormatQuotas(q map[string]Quota) string {
	parts := make([]string, 0, len(q))
	for p, l := range q {
		var limits []string
		if l.Volumes != nil {
			limits = append(limits, "volumes", strconv.Itoa(*l.Volumes))
		}
		if l.Gigabytes != nil {
			limits = append(limits, "gigabytes", strconv.Itoa(*l.Gigabytes))
		}
		if len(limits) == 0 {
			continue // nothing of its own: the defaults
		}
		parts = append(parts, p+"="+strings.Join(limits, ":"))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// cloudsFile is the part of clouds.yaml read here; other keys are left alone, as other
// OpenStack tools share the file.
type cloudsFile struct {
	Clouds map[string]struct {
		AuthType   string `yaml:"auth_type"`
		RegionName string `yaml:"region_name"`
		Auth       struct {
			AuthURL                     string `yaml:"auth_url"`
			Username                    string `yaml:"username"`
			UserID                      string `yaml:"user_id"`
			Password                    string `yaml:"password"`
			ProjectName                 string `yaml:"project_name"`
			ProjectID                   string `yaml:"project_id"`
			UserDomainName              string `yaml:"user_domain_name"`
			UserDomainID                string `yaml:"user_domain_id"`
			ProjectDomainName           string `yaml:"project_domain_name"`
			ProjectDomainID             string `yaml:"project_domain_id"`
			ApplicationCredentialID     string `yaml:"application_credential_id"`
			ApplicationCredentialName   string `yaml:"application_credential_name"`
			ApplicationCredentialSecret string `yaml:"application_credential_secret"`
			Token                       string `yaml:"token"`
		} `yaml:"auth"`
	} `yaml:"clouds"`
}

// cloudsSearchPath is where OpenStack tools look for clouds.yaml, in order.
func cloudsSearchPath() []string {
	var paths []string
	if p := Env("OS_CLIENT_CONFIG_FILE", ""); p != "" {
		paths = append(paths, p)
	}
	paths = append(paths, "clouds.yaml")
	if home, err := os.UserHomeDir(); err == nil {
		paths = append(paths, filepath.Join(home, ".config", "openstack", "clouds.yaml"))
	}
	return append(paths, "/etc/openstack/clouds.yaml")
}

// loadCloud reads one cloud's auth from clouds.yaml and checks it has what Keystone v3 needs.
func loadCloud(name, path string) (*CloudAuth, error) {
	candidates := []string{path}
	if path == "" {
		candidates = cloudsSearchPath()
	}
	var (
		data []byte
		err  error
	)
	for _, p := range candidates {
		if data, err = os.ReadFile(p); err == nil {
			path = p
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("no clouds.yaml (looked at %s)", strings.Join(candidates, ", "))
	}
	var cf cloudsFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c, ok := cf.Clouds[name]
	if !ok {
		return nil, fmt.Errorf("%s has no cloud %q", path, name)
	}
	a := c.Auth
	auth := &CloudAuth{
		File: path, AuthURL: a.AuthURL, Username: a.Username, UserID: a.UserID, Password: a.Password,
		ProjectName: a.ProjectName, ProjectID: a.ProjectID, UserDomainName: a.UserDomainName, UserDomainID: a.UserDomainID,
		ProjectDomainName: a.ProjectDomainName, ProjectDomainID: a.ProjectDomainID,
		ApplicationCredentialID: a.ApplicationCredentialID, ApplicationCredentialName: a.ApplicationCredentialName,
		ApplicationCredentialSecret: a.ApplicationCredentialSecret, Token: a.Token, RegionName: c.RegionName,
	}
	field := func(f string) string { return fmt.Sprintf("%s: clouds.%s.auth.%s", path, name, f) }
	if u, err := url.Parse(a.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%s: want the Keystone URL", field("auth_url"))
	}
	switch c.AuthType {
	case "", "password", "v3password":
		if a.Username == "" && a.UserID == "" {
			return nil, fmt.Errorf("%s or user_id: needed for password auth", field("username"))
		}
		if a.Password == "" {
			return nil, fmt.Errorf("%s: needed for password auth", field("password"))
		}
		if a.Username != "" && a.UserDomainName == "" && a.UserDomainID == "" {
			return nil, fmt.Errorf("%s or user_domain_id: Keystone v3 needs the user's domain with a user name", field("user_domain_name"))
		}
		if a.ProjectName == "" && a.ProjectID == "" {
			return nil, fmt.Errorf("%s or project_id: a project to scope the token to", field("project_name"))
		}
		if a.ProjectName != "" && a.ProjectDomainName == "" && a.ProjectDomainID == "" {
			return nil, fmt.Errorf("%s or project_domain_id: Keystone v3 needs the project's domain with a project name", field("project_domain_name"))
		}
	case "v3applicationcredential":
		if a.ApplicationCredentialSecret == "" {
			return nil, fmt.Errorf("%s: needed for application credential auth", field("application_credential_secret"))
		}
		if a.ApplicationCredentialID == "" && (a.ApplicationCredentialName == "" || (a.Username == "" && a.UserID == "")) {
			return nil, fmt.Errorf("%s (or application_credential_name with username or user_id): needed for application credential auth", field("application_credential_id"))
		}
	case "token", "v3token":
		if a.Token == "" {
			return nil, fmt.Errorf("%s: needed for token auth", field("token"))
		}
	default:
		return nil, fmt.Errorf("%s: clouds.%s.auth_type %q: want password, v3applicationcredential or token", path, name, c.AuthType)
	}
	return auth, nil
}

// TLSConfig is the TLS configuration of the Temporal client, or nil when TLS is not set.
// Errors name the file at fault.
func (c Common) TLSConfig() (*tls.Config, error) {
	t := c.TLS
	if !t.Enabled() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: temporal.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: temporal.tls.ca_file: no PEM certificate in %s", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("config: temporal.tls.cert_file and temporal.tls.key_file go together")
	}
	if t.CertFile != "" {
		// Loaded now to fail at start; loaded again at each handshake so that a renewed
		// certificate (cert-manager, a cron job) takes effect on the next reconnect.
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return nil, fmt.Errorf("config: temporal.tls.cert_file/key_file: %w", err)
		}
		cert, key := t.CertFile, t.KeyFile
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("temporal client certificate: %w", err)
			}
			return &pair, nil
		}
	}
	return cfg, nil
}
