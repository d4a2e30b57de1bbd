package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/starter"
)

func writeTokens(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// The tokens file must be private; IMAGEVOL_ADMIN_TOKEN is an operator's token of project admin.
func TestLoadTokensPrivateFileAndAdmins(t *testing.T) {
	t.Setenv("IMAGEVOL_TOKEN", "")
	t.Setenv("IMAGEVOL_ADMIN_TOKEN", "")
	t.Setenv("IMAGEVOL_TOKEN_ROLE", "member")
	const text = "# comment\ntok-demo demo member\ntok-old demo2\ntok-admin admin admin\ntok-read demo reader\n"
	cases := []struct {
		name       string
		text       string
		mode       os.FileMode
		env        map[string]string
		wantErr    []string
		wantTokens map[string]string
		wantAdmins []string
	}{
		{
			name: "roles", text: text, mode: 0o600,
			wantTokens: map[string]string{"tok-demo": "demo", "tok-old": "demo2", "tok-admin": "admin", "tok-read": "demo"},
			wantAdmins: []string{"tok-admin"},
		},
		{
			name: "admin token from the environment", text: "tok-demo demo\n", mode: 0o400,
			env:        map[string]string{"IMAGEVOL_ADMIN_TOKEN": "tok-env-admin", "IMAGEVOL_TOKEN": "tok-env"},
			wantTokens: map[string]string{"tok-demo": "demo", "tok-env": "demo", "tok-env-admin": "admin"},
			wantAdmins: []string{"tok-env-admin"},
		},
		{name: "group can read", text: text, mode: 0o640, wantErr: []string{"tokens file", "chmod 600", "0640"}},
		{name: "others can read", text: text, mode: 0o604, wantErr: []string{"chmod 600", "0604"}},
		{name: "group can write", text: text, mode: 0o620, wantErr: []string{"chmod 600"}},
		{name: "unknown role", text: "tok demo root\n", mode: 0o600, wantErr: []string{":1:", `role "root"`}},
		{name: "four columns", text: "tok demo admin extra\n", mode: 0o600, wantErr: []string{":1:", "token project [role]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := writeTokens(t, tc.text, tc.mode)
			tokens, roles, err := loadTokens(path)
			var admins []string
			for tok, r := range roles {
				if r == starter.RoleAdmin {
					admins = append(admins, tok)
				}
			}
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", tc.wantErr)
				}
				for _, want := range append(tc.wantErr, path) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
				if tc.mode&0o077 != 0 && !errors.Is(err, config.ErrFileNotPrivate) {
					t.Errorf("error %v is not ErrFileNotPrivate", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tokens) != len(tc.wantTokens) {
				t.Errorf("tokens %v, want %v", tokens, tc.wantTokens)
			}
			for tok, p := range tc.wantTokens {
				if tokens[tok] != p {
					t.Errorf("token %s: project %q, want %q", tok, tokens[tok], p)
				}
			}
			slices.Sort(admins)
			if !slices.Equal(admins, tc.wantAdmins) {
				t.Errorf("admins %v, want %v", admins, tc.wantAdmins)
			}
		})
	}
}

func TestNewServer(t *testing.T) {
	for _, k := range []string{"IMAGEVOL_READ_HEADER_TIMEOUT", "IMAGEVOL_READ_TIMEOUT", "IMAGEVOL_WRITE_TIMEOUT", "IMAGEVOL_IDLE_TIMEOUT",
		"IMAGEVOL_GATEWAY_TLS_CERT", "IMAGEVOL_GATEWAY_TLS_KEY", "IMAGEVOL_CONFIG"} {
		t.Setenv(k, "")
	}
	f, err := config.LoadFile("")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := newServer("127.0.0.1:0", http.NotFoundHandler(), f.Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if srv.ReadHeaderTimeout != 10*time.Second || srv.ReadTimeout != time.Minute || srv.WriteTimeout != time.Minute ||
		srv.IdleTimeout != 2*time.Minute || srv.TLSConfig != nil {
		t.Errorf("default server: read header %v, read %v, write %v, idle %v, tls %v",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.TLSConfig != nil)
	}

	cert, key := selfSigned(t)
	gwc := f.Gateway
	gwc.TLSCertFile, gwc.TLSKeyFile, gwc.WriteTimeout = cert, key, 5*time.Minute
	srv, err = newServer("127.0.0.1:0", http.NotFoundHandler(), gwc)
	if err != nil {
		t.Fatal(err)
	}
	if srv.TLSConfig == nil || len(srv.TLSConfig.Certificates) != 1 || srv.WriteTimeout != 5*time.Minute {
		t.Errorf("TLS server: %+v", srv)
	}
	// It serves HTTPS with that certificate.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "over TLS") })
	done := make(chan error, 1)
	go func() { done <- serve(srv, ln) }()
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(cert)
	if err != nil || !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("read %s: %v", cert, err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: time.Minute}
	resp, err := hc.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "over TLS" || resp.TLS == nil {
		t.Errorf("HTTPS answer %q, TLS %v", body, resp.TLS != nil)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("serve: %v", err)
	}

	gwc.TLSKeyFile = filepath.Join(t.TempDir(), "missing.key")
	if _, err := newServer("127.0.0.1:0", http.NotFoundHandler(), gwc); err == nil || !strings.Contains(err.Error(), "gateway.tls_cert_file") {
		t.Errorf("missing key: %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns their paths.
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, BasicConstraintsValid: true, IsCA: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
