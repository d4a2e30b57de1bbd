package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imagevol/imagevol/importer"
)

// clearEnv blanks every variable LoadFile reads (empty counts as unset), so the developer's
// shell (say a sourced .run/env) does not leak into the cases.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, s := range declared() {
		t.Setenv(s.env, "")
	}
	t.Setenv("IMAGEVOL_CONFIG", "")
	t.Setenv("OS_CLIENT_CONFIG_FILE", "")
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const fullYAML = `
temporal:
  address: temporal.example:7233
  namespace: imagevol
database:
  dsn: "imagevol:secret@tcp(db.example:3306)/imagevol"
glance:
  url: https://glance.example:9292/
  token: tok
gateway:
  listen: ":8776"
  hosts: [node1, node2]
  tokens_file: /etc/imagevol/tokens
  quotas: {demo: 10, ops: 0}
  temporal_ui: https://temporal-ui.example
  reconcile_every: 5m
worker:
  host: node2
  pool: volumes-node2
  cluster: ceph-a
  ceph_conf: /etc/ceph/a.conf
  cache:
    enabled: false
    max_size_gb: 500
    max_count: 50
  internal_project:
    project_id: p-internal
    user_id: u-internal
    quota_volumes: 100
    quota_gigabytes: 2000
  flatten: depth>3
  max_concurrent_activities: 16
  allowed_formats: [raw, qcow2]
  max_concurrent_conversions: 3
  sandbox:
    enabled: false
    cpu_time: 30m
    memory_mb: 2048
metrics:
  listen: 127.0.0.1:9464
`

func TestLoadFile(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string // empty: no file
		env     map[string]string
		check   func(t *testing.T, f File)
		wantErr []string // substrings of the error; none means success
	}{
		{
			name: "defaults",
			check: func(t *testing.T, f File) {
				c := f.Common()
				if c.TemporalAddress != "127.0.0.1:7233" || c.Namespace != "default" || c.DBDSN != "" || c.RunDir != ".run" ||
					c.GlanceURL != "http://127.0.0.1:9292/" || c.TLS.Enabled() {
					t.Errorf("common defaults: %+v", c)
				}
				if !reflect.DeepEqual(f.Gateway.Hosts, []string{"node1"}) || f.Gateway.Listen != "127.0.0.1:8776" ||
					f.Gateway.ReconcileEvery != 10*time.Minute || len(f.Gateway.Quotas) != 0 || f.Gateway.TemporalUI != "http://127.0.0.1:8233" ||
					f.Gateway.TLSCertFile != "" || f.Gateway.ReadHeaderTimeout != 10*time.Second || f.Gateway.ReadTimeout != time.Minute ||
					f.Gateway.WriteTimeout != time.Minute || f.Gateway.IdleTimeout != 2*time.Minute || f.Gateway.AuthFailuresPerMinute != 10 ||
					f.Gateway.DefaultQuota() != (QuotaLimits{Volumes: 10, Gigabytes: 1000}) || f.Gateway.MaxVolumeSizeGB != 1000 {
					t.Errorf("gateway defaults: %+v", f.Gateway)
				}
				a := f.Worker
				if a.Host != "node1" || a.Pool != "volumes" || a.CephConf != "/etc/ceph/ceph.conf" || !a.ImageVolumeCacheEnabled ||
					a.CinderInternalTenantProject != "imagevol-internal" || a.FlattenPolicy != "never" ||
					importer.FormatList(a.AllowedFormats) != "raw,qcow2,vmdk,vhd,vhdx,iso" {
					t.Errorf("worker defaults: %+v", a)
				}
				if a.MaxConcurrentConversions != 2 || a.SandboxDisabled || a.SandboxCPUTime != time.Hour || a.SandboxMemoryMB != 4096 {
					t.Errorf("converter defaults: %+v", a)
				}
			},
		},
		{
			name: "file only",
			yaml: fullYAML,
			check: func(t *testing.T, f File) {
				if f.Temporal.Address != "temporal.example:7233" || f.Temporal.Namespace != "imagevol" ||
					f.Database.DSN != "imagevol:secret@tcp(db.example:3306)/imagevol" || f.Glance.Token != "tok" {
					t.Errorf("common: %+v", f.Common())
				}
				if !reflect.DeepEqual(f.Gateway.Hosts, []string{"node1", "node2"}) || f.Gateway.Listen != ":8776" ||
					FormatQuotas(f.Gateway.Quotas) != "demo=volumes:10,ops=volumes:0" || f.Gateway.ReconcileEvery != 5*time.Minute {
					t.Errorf("gateway: %+v", f.Gateway)
				}
				w := f.Worker
				if w.Host != "node2" || w.Pool != "volumes-node2" || w.ClusterName != "ceph-a" || w.ImageVolumeCacheEnabled || w.ImageVolumeCacheMaxSizeGB != 500 ||
					w.ImageVolumeCacheMaxCount != 50 || w.InternalQuotaGB != 2000 || w.FlattenPolicy != "depth>3" || w.MaxConcurrentActivities != 16 ||
					importer.FormatList(w.AllowedFormats) != "raw,qcow2" {
					t.Errorf("worker: %+v", w)
				}
				if a := w; a.MaxConcurrentConversions != 3 || !a.SandboxDisabled || a.SandboxCPUTime != 30*time.Minute || a.SandboxMemoryMB != 2048 {
					t.Errorf("converter: %+v", a)
				}
				if f.Metrics.Listen != "127.0.0.1:9464" {
					t.Errorf("metrics: %+v", f.Metrics)
				}
			},
		},
		{
			name: "quotas in both forms, defaults and size bound",
			yaml: "gateway:\n  quotas:\n    demo: {volumes: 20, gigabytes: 500}\n    ops: 2\n  default_quota_volumes: -1\n  max_volume_size_gb: 16384\n",
			env:  map[string]string{"IMAGEVOL_DEFAULT_QUOTA_GIGABYTES": "0"},
			check: func(t *testing.T, f File) {
				if q := FormatQuotas(f.Gateway.Quotas); q != "demo=volumes:20:gigabytes:500,ops=volumes:2" ||
					f.Gateway.DefaultQuota() != (QuotaLimits{Volumes: -1, Gigabytes: 0}) || f.Gateway.MaxVolumeSizeGB != 16384 {
					t.Errorf("quotas %s, default %+v, max size %d", q, f.Gateway.DefaultQuota(), f.Gateway.MaxVolumeSizeGB)
				}
			},
		},
		{
			name: "env only",
			env: map[string]string{
				"IMAGEVOL_TEMPORAL_ADDRESS": "t.example:7233", "IMAGEVOL_DB_DSN": "sqlite:/var/lib/imagevol/db",
				"IMAGEVOL_HOSTS": "a, b", "IMAGEVOL_QUOTAS": "demo=3", "IMAGE_VOLUME_CACHE_ENABLED": "no",
				"IMAGE_VOLUME_CACHE_MAX_COUNT": "7", "IMAGEVOL_FLATTEN": "always", "IMAGEVOL_TEMPORAL_TLS_SERVER_NAME": "t.example",
				"IMAGEVOL_RECONCILE_EVERY": "0s", "IMAGEVOL_ALLOWED_FORMATS": "raw, iso",
			},
			check: func(t *testing.T, f File) {
				if f.Temporal.Address != "t.example:7233" || f.Database.DSN != "sqlite:/var/lib/imagevol/db" ||
					!reflect.DeepEqual(f.Gateway.Hosts, []string{"a", "b"}) || FormatQuotas(f.Gateway.Quotas) != "demo=volumes:3" ||
					f.Worker.ImageVolumeCacheEnabled || f.Worker.ImageVolumeCacheMaxCount != 7 || f.Worker.FlattenPolicy != "always" ||
					!f.Common().TLS.Enabled() || f.Gateway.ReconcileEvery != 0 || importer.FormatList(f.Worker.AllowedFormats) != "raw,iso" {
					t.Errorf("got %+v", f)
				}
			},
		},
		{
			name: "env over file over defaults",
			yaml: "worker:\n  host: from-file\n  pool: pool-file\ngateway:\n  hosts: [x, y]\n",
			env:  map[string]string{"IMAGEVOL_HOST": "from-env", "IMAGEVOL_HOSTS": "z"},
			check: func(t *testing.T, f File) {
				if f.Worker.Host != "from-env" || f.Worker.Pool != "pool-file" || f.Worker.CephConf != "/etc/ceph/ceph.conf" ||
					!reflect.DeepEqual(f.Gateway.Hosts, []string{"z"}) {
					t.Errorf("got worker %+v gateway %+v", f.Worker, f.Gateway)
				}
			},
		},
		{
			name: "explicit empty in the file beats a default",
			yaml: "gateway:\n  temporal_ui: \"\"\n",
			check: func(t *testing.T, f File) {
				if f.Gateway.TemporalUI != "" {
					t.Errorf("temporal_ui = %q", f.Gateway.TemporalUI)
				}
			},
		},
		{name: "empty file", yaml: "# nothing\n"},
		{name: "unknown key", yaml: "worker:\n  cache:\n    max_size: 5\n", wantErr: []string{"line 3: unknown key worker.cache.max_size"}},
		{name: "unknown section", yaml: "scheduler: {}\n", wantErr: []string{"line 1: unknown key scheduler"}},
		{name: "section not a mapping", yaml: "worker: 5\n", wantErr: []string{"line 1: worker: want a mapping"}},
		{name: "key given twice", yaml: "worker:\n  host: a\n  host: b\n", wantErr: []string{"line 3: worker.host is given twice"}},
		{name: "bad integer in file", yaml: "worker:\n  cache:\n    max_size_gb: lots\n", wantErr: []string{"worker.cache.max_size_gb", `"lots" is not an integer`}},
		{
			name: "bad value from env names key and variable", yaml: "worker:\n  cache:\n    max_count: 3\n",
			env:     map[string]string{"IMAGE_VOLUME_CACHE_MAX_COUNT": "-1", "IMAGE_VOLUME_CACHE_ENABLED": "maybe"},
			wantErr: []string{"worker.cache.max_count (from IMAGE_VOLUME_CACHE_MAX_COUNT): -1 is negative", "worker.cache.enabled (from IMAGE_VOLUME_CACHE_ENABLED)"},
		},
		{name: "bad flatten", yaml: "worker: {flatten: sometimes}\n", wantErr: []string{"worker.flatten"}},
		{name: "unknown disk format", yaml: "worker: {allowed_formats: [raw, qed]}\n", wantErr: []string{"worker.allowed_formats", `"qed"`}},
		{name: "no disk format", env: map[string]string{"IMAGEVOL_ALLOWED_FORMATS": " , "}, wantErr: []string{"worker.allowed_formats (from IMAGEVOL_ALLOWED_FORMATS)"}},
		{name: "sandbox limits too low", yaml: "worker: {sandbox: {cpu_time: 10ms, memory_mb: 16}}\n",
			wantErr: []string{"worker.sandbox.cpu_time: must be at least 1s", "worker.sandbox.memory_mb: must be at least 256"}},
		{name: "bad duration", yaml: "gateway: {reconcile_every: often}\n", wantErr: []string{"gateway.reconcile_every"}},
		{name: "bad quota", env: map[string]string{"IMAGEVOL_QUOTAS": "demo"}, wantErr: []string{"gateway.quotas (from IMAGEVOL_QUOTAS)"}},
		{name: "bad default quota", env: map[string]string{"IMAGEVOL_DEFAULT_QUOTA_GIGABYTES": "-2"}, wantErr: []string{"gateway.default_quota_gigabytes (from IMAGEVOL_DEFAULT_QUOTA_GIGABYTES)"}},
		{name: "max volume size 0", yaml: "gateway: {max_volume_size_gb: 0}\n", wantErr: []string{"gateway.max_volume_size_gb: 0: want 1 to"}},
		{name: "max volume size past int64 bytes", env: map[string]string{"IMAGEVOL_MAX_VOLUME_SIZE_GB": "8589934592"}, wantErr: []string{"gateway.max_volume_size_gb (from IMAGEVOL_MAX_VOLUME_SIZE_GB)"}},
		{name: "quota of a quota name unknown", yaml: "gateway:\n  quotas: {demo: {snapshots: 3}}\n", wantErr: []string{"gateway.quotas", "snapshots"}},
		{name: "bad address", yaml: "temporal: {address: nohostport}\n", wantErr: []string{"temporal.address"}},
		{name: "list where a value goes", yaml: "worker: {host: [a, b]}\n", wantErr: []string{"want a single value"}},
		{name: "cert without key", yaml: "temporal: {tls: {cert_file: /c.pem}}\n", wantErr: []string{"temporal.tls.cert_file"}},
		{name: "gateway cert without key", env: map[string]string{"IMAGEVOL_GATEWAY_TLS_CERT": "/c.pem"}, wantErr: []string{"gateway.tls_cert_file"}},
		{name: "negative timeout", yaml: "gateway: {write_timeout: -1s}\n", wantErr: []string{"gateway.write_timeout"}},
		{
			name: "server settings",
			yaml: "gateway: {tls_cert_file: /c.pem, tls_key_file: /k.pem, read_timeout: 20s, write_timeout: 3m, auth_failures_per_minute: 0}\n",
			env:  map[string]string{"IMAGEVOL_IDLE_TIMEOUT": "5m"},
			check: func(t *testing.T, f File) {
				g := f.Gateway
				if g.TLSCertFile != "/c.pem" || g.TLSKeyFile != "/k.pem" || g.ReadHeaderTimeout != 10*time.Second ||
					g.ReadTimeout != 20*time.Second || g.WriteTimeout != 3*time.Minute || g.IdleTimeout != 5*time.Minute ||
					g.AuthFailuresPerMinute != 0 {
					t.Errorf("gateway: %+v", g)
				}
			},
		},
		{name: "repeated host", yaml: "gateway: {hosts: [a, a]}\n", wantErr: []string{"gateway.hosts"}},
		{
			name:    "bad DSN is not echoed",
			env:     map[string]string{"IMAGEVOL_DB_DSN": "user:hunter2@db.example/imagevol"},
			wantErr: []string{"database.dsn (from IMAGEVOL_DB_DSN)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := ""
			if tc.yaml != "" {
				path = writeFile(t, "imagevol.yaml", tc.yaml)
			}
			f, err := LoadFile(path)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tc.check != nil {
					tc.check(t, f)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one mentioning %q", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	clearEnv(t)
	if _, err := LoadFile(filepath.Join(t.TempDir(), "absent.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestConfigPath(t *testing.T) {
	clearEnv(t)
	cases := map[string][]string{
		"a.yaml": {"--host", "n1", "--config", "a.yaml"},
		"b.yaml": {"-config=b.yaml"},
		"":       {"--host", "n1", "--", "--config", "c.yaml"},
	}
	for want, args := range cases {
		if got := ConfigPath(args); got != want {
			t.Errorf("ConfigPath(%q) = %q, want %q", args, got, want)
		}
	}
	t.Setenv("IMAGEVOL_CONFIG", "/etc/imagevol/imagevol.yaml")
	if got := ConfigPath(nil); got != "/etc/imagevol/imagevol.yaml" {
		t.Errorf("from env: %q", got)
	}
}

func TestQuotasRoundTrip(t *testing.T) {
	n := func(v int) *int { return &v }
	q := map[string]Quota{"b": {Volumes: n(2)}, "a": {Volumes: n(1), Gigabytes: n(-1)}, "c": {Gigabytes: n(0)}}
	s := FormatQuotas(q)
	if s != "a=volumes:1:gigabytes:-1,b=volumes:2,c=gigabytes:0" {
		t.Fatalf("FormatQuotas = %q", s)
	}
	back, err := ParseQuotas(s)
	if err != nil || !reflect.DeepEqual(back, q) {
		t.Fatalf("ParseQuotas(%q) = %v, %v", s, back, err)
	}
}

// ParseQuotas reads the old form (volumes only) and the new one, takes what an entry leaves out
// from the defaults, and refuses what it cannot read.
func TestParseQuotas(t *testing.T) {
	def := QuotaLimits{Volumes: 10, Gigabytes: 1000}
	cases := []struct {
		in   string
		want map[string]QuotaLimits // each project's limits over def; nil: an error
	}{
		{"", map[string]QuotaLimits{}},
		{"demo=3", map[string]QuotaLimits{"demo": {3, 1000}}},
		{"demo=3,ops=-1", map[string]QuotaLimits{"demo": {3, 1000}, "ops": {-1, 1000}}},
		{"demo=volumes:20:gigabytes:500", map[string]QuotaLimits{"demo": {20, 500}}},
		{" demo = gigabytes:0:volumes:1 ", map[string]QuotaLimits{"demo": {1, 0}}},
		{"demo=gigabytes:-1", map[string]QuotaLimits{"demo": {10, -1}}},
		{"demo", nil},
		{"=3", nil},
		{"demo=-2", nil},
		{"demo=x", nil},
		{"demo=volumes", nil},
		{"demo=volumes:1:volumes:2", nil},
		{"demo=snapshots:1", nil},
		{"demo=gigabytes:1.5", nil},
		{"demo=1,demo=2", nil},
	}
	for _, c := range cases {
		got, err := ParseQuotas(c.in)
		if c.want == nil {
			if err == nil {
				t.Errorf("ParseQuotas(%q) = %v, want an error", c.in, got)
			}
			continue
		}
		limits := map[string]QuotaLimits{}
		for p, q := range got {
			limits[p] = q.Or(def)
		}
		if err != nil || !reflect.DeepEqual(limits, c.want) {
			t.Errorf("ParseQuotas(%q) = %v, %v; want %v", c.in, limits, err, c.want)
		}
	}
}

func TestCloudsYAML(t *testing.T) {
	clearEnv(t)
	clouds := writeFile(t, "clouds.yaml", `
clouds:
  prod:
    region_name: RegionOne
    interface: internal
    auth:
      auth_url: https://keystone.example:5000/v3
      username: imagevol
      password: pw
      project_name: service
      user_domain_name: Default
      project_domain_name: Default
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example:5000/v3
      application_credential_id: abc
      application_credential_secret: s3
  nodomain:
    auth:
      auth_url: https://keystone.example:5000/v3
      username: imagevol
      password: pw
      project_id: p1
`)
	cfg := writeFile(t, "imagevol.yaml", "glance:\n  cloud: prod\n  clouds_file: "+clouds+"\n")
	f, err := LoadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := f.Glance.Auth
	if a == nil || a.AuthURL != "https://keystone.example:5000/v3" || a.RegionName != "RegionOne" {
		t.Fatalf("auth = %+v", a)
	}
	o := a.AuthOptions()
	if !o.AllowReauth || o.DomainName != "Default" || o.Scope == nil || o.Scope.ProjectName != "service" || o.Scope.DomainName != "Default" {
		t.Errorf("auth options = %+v scope %+v", o, o.Scope)
	}

	t.Setenv("IMAGEVOL_GLANCE_CLOUD", "appcred")
	t.Setenv("IMAGEVOL_GLANCE_CLOUDS_FILE", clouds)
	f, err = LoadFile("")
	if err != nil {
		t.Fatal(err)
	}
	if o := f.Glance.Auth.AuthOptions(); o.ApplicationCredentialID != "abc" || o.Scope != nil {
		t.Errorf("application credential options = %+v", o)
	}

	for cloud, want := range map[string]string{"nodomain": "user_domain_name", "absent": `no cloud "absent"`} {
		t.Setenv("IMAGEVOL_GLANCE_CLOUD", cloud)
		if _, err := LoadFile(""); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "glance.cloud") {
			t.Errorf("cloud %s: error %v, want one naming glance.cloud and %q", cloud, err, want)
		}
	}
}

// writePKI writes a self-signed CA-capable certificate and its key as PEM files.
func writePKI(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imagevol-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

func TestTLSConfig(t *testing.T) {
	if cfg, err := (Common{}).TLSConfig(); cfg != nil || err != nil {
		t.Fatalf("no TLS set: %v, %v; want nil, nil", cfg, err)
	}
	cert, key := writePKI(t)
	cfg, err := Common{TLS: TemporalTLS{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "temporal.example"}}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || cfg.ServerName != "temporal.example" || cfg.GetClientCertificate == nil {
		t.Fatalf("config = %+v", cfg)
	}
	if c, err := cfg.GetClientCertificate(nil); err != nil || len(c.Certificate) != 1 {
		t.Fatalf("client certificate: %v, %v", c, err)
	}
	notPEM := writeFile(t, "ca.pem", "not a certificate")
	for name, bad := range map[string]TemporalTLS{
		"temporal.tls.ca_file":   {CAFile: notPEM},
		"temporal.tls.cert_file": {CertFile: cert},
		"key_file":               {CertFile: cert, KeyFile: notPEM},
	} {
		if _, err := (Common{TLS: bad}).TLSConfig(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%+v: error %v, want one naming %s", bad, err, name)
		}
	}
}

// TestShippedConfigsLoad keeps the Kubernetes ConfigMap and the guide's example loadable.
func TestShippedConfigsLoad(t *testing.T) {
	clearEnv(t)
	data, err := os.ReadFile("../deploy/k8s/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if text, ok := doc.Data["imagevol.yaml"]; ok && doc.Kind == "ConfigMap" {
			found++
			if _, err := LoadFile(writeFile(t, "k8s.yaml", text)); err != nil {
				t.Errorf("deploy/k8s/config.yaml ConfigMap: %v", err)
			}
		}
	}
	if found != 1 {
		t.Errorf("%d ConfigMaps with imagevol.yaml, want 1", found)
	}

	guide, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```yaml\n# imagevol.yaml\n(.*?)```").FindSubmatch(guide)
	if block == nil {
		t.Fatal("docs/deploy.md has no ```yaml block starting with # imagevol.yaml")
	}
	if _, err := LoadFile(writeFile(t, "guide.yaml", string(block[1]))); err != nil {
		t.Errorf("docs/deploy.md example: %v", err)
	}
}

// TestReferenceDocumented keeps docs/deploy.md's key table complete: every key with its
// variable.
func TestReferenceDocumented(t *testing.T) {
	guide, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range declared() {
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(s.key) + "` \\| `" + regexp.QuoteMeta(s.env) + "` \\|")
		if !row.Match(guide) {
			t.Errorf("docs/deploy.md: no row | `%s` | `%s` | ...", s.key, s.env)
		}
	}
}

func TestGatewayKeystone(t *testing.T) {
	clearEnv(t)
	clouds := writeFile(t, "clouds.yaml", `
clouds:
  imagevol:
    region_name: RegionOne
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: imagevol
      password: pw
      project_name: service
      user_domain_name: Default
      project_domain_name: Default
`)
	f, err := LoadFile("")
	if err != nil {
		t.Fatal(err)
	}
	if k := f.Gateway.Keystone; k.Auth != nil || k.CacheTTL != time.Minute || k.CacheSize != 10000 || k.Timeout != 10*time.Second {
		t.Fatalf("defaults: %+v", k)
	}
	if f.Common().GlanceCloud != nil {
		t.Fatal("Common().GlanceCloud set without glance.cloud")
	}

	cfg := writeFile(t, "imagevol.yaml", "gateway:\n  keystone:\n    cloud: imagevol\n    clouds_file: "+clouds+
		"\n    cache_ttl: 30s\n    cache_size: 500\n    timeout: 3s\nglance:\n  cloud: imagevol\n  clouds_file: "+clouds+"\n")
	f, err = LoadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := f.Gateway.Keystone
	if k.Cloud != "imagevol" || k.Auth == nil || k.Auth.AuthURL != "http://127.0.0.1:5000/v3" || k.Auth.File != clouds ||
		k.CacheTTL != 30*time.Second || k.CacheSize != 500 || k.Timeout != 3*time.Second {
		t.Fatalf("from the file: %+v auth %+v", k, k.Auth)
	}
	if o := k.Auth.AuthOptions(); o.Username != "imagevol" || o.Scope == nil || o.Scope.ProjectName != "service" || !o.AllowReauth {
		t.Errorf("auth options %+v", o)
	}
	if c := f.Common(); c.GlanceCloud == nil || c.GlanceCloud.RegionName != "RegionOne" {
		t.Errorf("Common().GlanceCloud = %+v", c.GlanceCloud)
	}

	// The environment wins, and 0s is allowed (no cache).
	t.Setenv("IMAGEVOL_KEYSTONE_CACHE_TTL", "0s")
	t.Setenv("IMAGEVOL_KEYSTONE_CACHE_SIZE", "7")
	if f, err = LoadFile(cfg); err != nil {
		t.Fatal(err)
	}
	if k := f.Gateway.Keystone; k.CacheTTL != 0 || k.CacheSize != 7 {
		t.Errorf("env over file: %+v", k)
	}

	clearEnv(t)
	for _, c := range []struct {
		yaml string
		env  map[string]string
		want []string
	}{
		{yaml: "gateway: {keystone: {cloud: absent, clouds_file: " + clouds + "}}\n", want: []string{"gateway.keystone.cloud", `no cloud "absent"`}},
		{env: map[string]string{"IMAGEVOL_KEYSTONE_CLOUD": "imagevol", "IMAGEVOL_KEYSTONE_CLOUDS_FILE": "/nonexistent/clouds.yaml"},
			want: []string{"gateway.keystone.cloud (from IMAGEVOL_KEYSTONE_CLOUD)", "no clouds.yaml"}},
		{yaml: "gateway: {keystone: {cache_ttl: soon}}\n", want: []string{"gateway.keystone.cache_ttl", `"soon" is not a duration`}},
		{env: map[string]string{"IMAGEVOL_KEYSTONE_CACHE_SIZE": "-1"}, want: []string{"gateway.keystone.cache_size (from IMAGEVOL_KEYSTONE_CACHE_SIZE): -1 is negative"}},
		{env: map[string]string{"IMAGEVOL_KEYSTONE_TIMEOUT": "0s"}, want: []string{"gateway.keystone.timeout (from IMAGEVOL_KEYSTONE_TIMEOUT)"}},
		{yaml: "gateway:\n  keystone:\n    url: http://127.0.0.1:5000/v3\n", want: []string{"line 3: unknown key gateway.keystone.url"}},
	} {
		t.Run(strings.Join(c.want, " "), func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			path := ""
			if c.yaml != "" {
				path = writeFile(t, "imagevol.yaml", c.yaml)
			}
			_, err := LoadFile(path)
			for _, want := range c.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want one with %q", err, want)
				}
			}
		})
	}
}
