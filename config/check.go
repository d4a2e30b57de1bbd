package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/imagevol/imagevol/models"
)

// check checks what one setting's kind and check tag cannot: ranges, settings that go
// together, and clouds.yaml. It also loads the clouds that glance.cloud and
// gateway.keystone.cloud name.
func (l *loader) check(f *File) {
	if t := f.Temporal.TLS; (t.CertFile == "") != (t.KeyFile == "") {
		l.bad("temporal.tls.cert_file", "set together with temporal.tls.key_file")
	}
	if dsn := f.Database.DSN; dsn != "" && !strings.HasPrefix(dsn, "sqlite:") {
		// The DSN holds a password: say what is wrong, never what it is.
		if _, err := mysqldrv.ParseDSN(dsn); err != nil {
			l.bad("database.dsn", "not a MySQL DSN user:pass@tcp(host:3306)/db or sqlite:PATH")
		}
	}
	if f.Glance.Cloud != "" {
		auth, err := loadCloud(f.Glance.Cloud, f.Glance.CloudsFile)
		if err != nil {
			l.bad("glance.cloud", "%v", err)
		}
		f.Glance.Auth = auth
	}

	g := &f.Gateway
	if len(g.Hosts) == 0 {
		l.bad("gateway.hosts", "must name at least one storage host")
	}
	seen := map[string]bool{}
	for _, h := range g.Hosts {
		if h == "" || seen[h] {
			l.bad("gateway.hosts", "empty or repeated host %q", h)
		}
		seen[h] = true
	}
	if n := g.MaxVolumeSizeGB; n < 1 || int64(n) > models.MaxSizeGiB {
		l.bad("gateway.max_volume_size_gb", "%d: want 1 to %d", n, models.MaxSizeGiB)
	}
	if (g.TLSCertFile == "") != (g.TLSKeyFile == "") {
		l.bad("gateway.tls_cert_file", "set together with gateway.tls_key_file")
	}
	if g.Keystone.Cloud != "" {
		auth, err := loadCloud(g.Keystone.Cloud, g.Keystone.CloudsFile)
		if err != nil {
			l.bad("gateway.keystone.cloud", "%v", err)
		}
		g.Keystone.Auth = auth
	}
	if g.Keystone.Timeout == 0 {
		l.bad("gateway.keystone.timeout", "must be more than 0s")
	}

	w := &f.Worker
	w.CephUser = strings.TrimPrefix(w.CephUser, "client.")
	if !validFlatten(w.FlattenPolicy) {
		l.bad("worker.flatten", "%q: want never, always or depth>N", w.FlattenPolicy)
	}
	if w.SandboxCPUTime < time.Second {
		l.bad("worker.sandbox.cpu_time", "must be at least 1s")
	}
	if w.SandboxMemoryMB < 256 {
		l.bad("worker.sandbox.memory_mb", "must be at least 256")
	}

	if err := f.Tracing.Validate(); err != nil {
		l.bad("tracing.exporter", "%v", err)
	}
}

// validFlatten reports whether p is a flatten policy activities.ShouldFlatten takes: never
// (or empty), always, or depth>N with N >= 0.
func validFlatten(p string) bool {
	switch p {
	case "", "never", "always":
		return true
	}
	n, ok := strings.CutPrefix(p, "depth>")
	limit, err := strconv.Atoi(n)
	return ok && err == nil && limit >= 0
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
