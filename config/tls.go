package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
)

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

// EnvTemporalTLS is temporal.tls from the environment alone, for tools that dial Temporal as
// the services do without reading their whole configuration (imagevolctl replay).
func EnvTemporalTLS() TemporalTLS {
	var f File
	for _, s := range declared() {
		if strings.HasPrefix(s.key, "temporal.tls.") {
			reflect.ValueOf(&f).Elem().FieldByIndex(s.index).SetString(Env(s.env, s.def))
		}
	}
	return f.Temporal.TLS
}
