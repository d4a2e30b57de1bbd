package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imagevol/imagevol/models"
)

func scrape(t *testing.T, r *Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 {
		t.Fatalf("scrape: %d: %s", rec.Code, body)
	}
	return string(body)
}

// The SDK may record one metric name with different tag sets; the scrape must still be valid,
// every series carrying the family's union of labels.
func TestTemporalHandlerMixedTags(t *testing.T) {
	r := NewRegistry()
	h := r.Temporal().WithTags(map[string]string{"namespace": "ns"})
	h.Counter("temporal_request").Inc(2)
	h.WithTags(map[string]string{"operation": "Poll"}).Counter("temporal_request").Inc(3)
	h.Timer("temporal_request_latency").Record(20 * time.Millisecond)
	h.Gauge("temporal_num_pollers").Update(4)
	h.Counter("temporal_long_request_total").Inc(5) // already suffixed: not doubled
	h.Gauge("temporal_request_total").Update(99)    // another kind under a used name: dropped

	page := scrape(t, r)
	for _, want := range []string{
		// An empty label is no label to Prometheus.
		// Counters end in _total, as Prometheus names them and Temporal's dashboards query them.
		`# TYPE temporal_request_total counter`,
		`temporal_request_total{namespace="ns",operation=""} 2`,
		`temporal_request_total{namespace="ns",operation="Poll"} 3`,
		`temporal_long_request_total{namespace="ns"} 5`,
		`temporal_request_latency_seconds_bucket{namespace="ns",le="0.025"} 1`,
		`temporal_request_latency_seconds_bucket{namespace="ns",le="0.01"} 0`,
		`temporal_request_latency_seconds_count{namespace="ns"} 1`,
		`temporal_num_pollers{namespace="ns"} 4`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("scrape lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, " 99\n") {
		t.Error("a gauge recorded under a counter's name was exposed")
	}
	for _, unwanted := range []string{"temporal_request{", "temporal_long_request_total_total"} {
		if strings.Contains(page, unwanted) {
			t.Errorf("scrape has %q: a counter without its _total suffix, or with it twice", unwanted)
		}
	}
}

func TestImagevolMetrics(t *testing.T) {
	r := NewRegistry()
	r.CountCache("h1", models.CacheStat{Hits: 2, Downloads: 1, BytesDownloaded: 4096})
	r.CountImported("h1", 8192)
	r.ObserveStep("h1", "CloneVolume", 30*time.Millisecond, nil)
	r.ObserveStep("h1", "CloneVolume", time.Second, errors.New("boom"))
	page := scrape(t, r)
	for _, want := range []string{
		`imagevol_cache_hits_total{host="h1"} 2`,
		`imagevol_downloads_total{host="h1"} 1`,
		`imagevol_downloaded_bytes_total{host="h1"} 4096`,
		`imagevol_imported_bytes_total{host="h1"} 8192`,
		`imagevol_step_duration_seconds_count{activity="CloneVolume",host="h1",outcome="ok"} 1`,
		`imagevol_step_duration_seconds_count{activity="CloneVolume",host="h1",outcome="error"} 1`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	// Events that did not happen are not invented as zero series.
	if strings.Contains(page, "imagevol_cache_misses_total{") {
		t.Error("a miss series exists without a miss")
	}
}

// A nil registry records nothing and does not panic: tests and tools run without metrics.
func TestNilRegistry(t *testing.T) {
	var r *Registry
	r.CountCache("h", models.CacheStat{Hits: 1})
	r.CountImported("h", 1)
	r.ObserveStep("h", "x", time.Second, nil)
	if r.Temporal() != nil || r.StepInterceptor("h") != nil {
		t.Fatal("a nil registry hands out a handler or interceptor")
	}
	if mfs, err := r.Gather(); mfs != nil || err != nil {
		t.Fatalf("nil registry gathered %v, %v", mfs, err)
	}
}
