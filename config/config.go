// Package config is imagevol's configuration: every setting of the gateway and the workers,
// declared once (settings.go) with its YAML key, environment variable, flag, default and help,
// and read from a YAML file, the environment and the command line (load.go, check.go); the
// clouds.yaml clouds it names (clouds.go); and the connections the processes open from it
// (connect.go).
//
// It sits below the packages that take settings (activities, starter, worker) and the
// commands: it may import the packages it connects to or checks values with (models,
// imagesource/glance, importer, tracing) and libraries, but never activities, workflows,
// starter, worker or a command.
package config

import (
	"os"
	"path/filepath"
	"strings"

	"go.temporal.io/sdk/interceptor"
)

// Common is what the gateway and the workers both need: File.Common.
type Common struct {
	TemporalAddress string // temporal.address
	Namespace       string // temporal.namespace
	DBDSN           string // database.dsn: MySQL DSN; empty means the embedded SQLite file
	RunDir          string // database.run_dir
	GlanceURL       string // glance.url
	GlanceToken     string // glance.token
	// GlanceCloud, when set (glance.cloud), is used instead of GlanceURL and GlanceToken: the
	// Glance endpoint comes from its Keystone catalog.
	GlanceCloud *CloudAuth
	// TLS to Temporal (temporal.tls); unset means plain TCP.
	TLS TemporalTLS
	// Interceptors of the Temporal client (tracing); not read from the file, set by the command.
	Interceptors []interceptor.ClientInterceptor
}

// DBFile is the embedded database used when no DSN is configured.
func (c Common) DBFile() string { return filepath.Join(c.RunDir, "imagevol.db") }

// Env returns the variable's value, or def when it is unset or empty.
func Env(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
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
