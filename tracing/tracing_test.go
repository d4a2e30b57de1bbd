package tracing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		on      bool
		wantErr string
	}{
		{name: "off by default", cfg: Config{}},
		{name: "none", cfg: Config{Exporter: ExporterNone}},
		{name: "stdout", cfg: Config{Exporter: ExporterStdout}, on: true},
		{name: "otlp", cfg: Config{Exporter: ExporterOTLP, Endpoint: "127.0.0.1:4317"}, on: true},
		{name: "otlp without endpoint", cfg: Config{Exporter: ExporterOTLP}, on: true, wantErr: "endpoint"},
		{name: "unknown", cfg: Config{Exporter: "zipkin"}, on: true, wantErr: `unknown exporter "zipkin"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.cfg.Enabled() != tc.on {
				t.Errorf("Enabled() = %v", tc.cfg.Enabled())
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// Off, nothing is wrapped or intercepted; on, a request through Handler becomes a span in the
// exporter's file once the provider is shut down.
func TestOffAndStdout(t *testing.T) {
	ctx := context.Background()
	off, err := Start(ctx, Config{})
	if err != nil || off.ClientInterceptors() != nil {
		t.Fatalf("off: %v, %v", off.ClientInterceptors(), err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	file := filepath.Join(t.TempDir(), "spans.json")
	on, err := Start(ctx, Config{Exporter: ExporterStdout, File: file, ServiceName: "unit"})
	if err != nil {
		t.Fatal(err)
	}
	if len(on.ClientInterceptors()) != 1 {
		t.Fatalf("on: %d interceptors", len(on.ClientInterceptors()))
	}
	on.Handler(h).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/volumes", nil))
	if err := on.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"Name":"GET /v1/volumes"`) || !strings.Contains(string(data), `"unit"`) {
		t.Fatalf("spans file holds no span of the request: %.300s", data)
	}
}
