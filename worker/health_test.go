package worker

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func healthz(t *testing.T, h *Health) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

// /healthz is 503 until the workers run, 200 while they do, and 503 for good once they stop.
func TestHealthHandler(t *testing.T) {
	h := &Health{}
	for _, step := range []struct {
		do   func()
		code int
		body string
	}{
		{func() {}, http.StatusServiceUnavailable, "starting"},
		{h.SetRunning, http.StatusOK, "ok"},
		{h.SetRunning, http.StatusOK, "ok"},
		{h.SetStopping, http.StatusServiceUnavailable, "stopping"},
		{h.SetRunning, http.StatusServiceUnavailable, "stopping"}, // a stopping worker does not come back
	} {
		step.do()
		if code, body := healthz(t, h); code != step.code || body != step.body {
			t.Fatalf("healthz = %d %q, want %d %q", code, body, step.code, step.body)
		}
	}
}

// A nil *Health (a worker started without one) ignores the transitions.
func TestNilHealth(t *testing.T) {
	var h *Health
	h.SetRunning()
	h.SetStopping()
}
