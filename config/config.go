// Package config reads the settings imagevol's processes share from the environment, with the
// defaults of a single-machine setup (everything on 127.0.0.1, state under .run/).
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.temporal.io/sdk/interceptor"
)

// Common is what the gateway and the workers both need.
type Common struct {
	TemporalAddress string // IMAGEVOL_TEMPORAL_ADDRESS, default 127.0.0.1:7233
	Namespace       string // IMAGEVOL_TEMPORAL_NAMESPACE, default "default"
	DBDSN           string // IMAGEVOL_DB_DSN: MySQL DSN; empty means the embedded SQLite file
	RunDir          string // IMAGEVOL_RUN_DIR, default .run
	GlanceURL       string // GLANCE_URL, default http://127.0.0.1:9292/
	GlanceToken     string // GLANCE_TOKEN, empty for a Glance without Keystone
	// GlanceCloud, when set (glance.cloud), is used instead of GlanceURL and GlanceToken: the
	// Glance endpoint comes from its Keystone catalog.
	GlanceCloud *CloudAuth
	// TLS to Temporal: IMAGEVOL_TEMPORAL_TLS_CA, _CERT, _KEY, _SERVER_NAME; unset means plain TCP.
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

// EnvInt parses an integer variable.
func EnvInt(name string, def int) (int, error) {
	v := Env(name, "")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("config: %s=%q is not an integer", name, v)
	}
	return n, nil
}

// EnvBool parses a boolean variable (true/false, 1/0, yes/no).
func EnvBool(name string, def bool) (bool, error) {
	switch strings.ToLower(Env(name, "")) {
	case "":
		return def, nil
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("config: %s=%q is not a boolean", name, os.Getenv(name))
}

// LoadCommon reads the shared settings.
func LoadCommon() Common {
	return Common{
		TemporalAddress: Env("IMAGEVOL_TEMPORAL_ADDRESS", "127.0.0.1:7233"),
		Namespace:       Env("IMAGEVOL_TEMPORAL_NAMESPACE", "default"),
		DBDSN:           Env("IMAGEVOL_DB_DSN", ""),
		RunDir:          Env("IMAGEVOL_RUN_DIR", ".run"),
		GlanceURL:       Env("GLANCE_URL", "http://127.0.0.1:9292/"),
		GlanceToken:     Env("GLANCE_TOKEN", ""),
		TLS: TemporalTLS{
			CAFile:     Env("IMAGEVOL_TEMPORAL_TLS_CA", ""),
			CertFile:   Env("IMAGEVOL_TEMPORAL_TLS_CERT", ""),
			KeyFile:    Env("IMAGEVOL_TEMPORAL_TLS_KEY", ""),
			ServerName: Env("IMAGEVOL_TEMPORAL_TLS_SERVER_NAME", ""),
		},
	}
}
