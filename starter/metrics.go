package starter

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagevol/imagevol/models"
)

var (
	inFlightDesc = prometheus.NewDesc("imagevol_provisions_in_flight", "Volumes being provisioned (status creating).", nil, nil)
	volumesDesc  = prometheus.NewDesc("imagevol_volumes", "User volumes by status.", []string{"status"}, nil)
	entriesDesc  = prometheus.NewDesc("imagevol_cache_entries", "Cache entries by host and state.", []string{"host", "state"}, nil)
	cachedDesc   = prometheus.NewDesc("imagevol_cache_bytes", "Bytes held by ready cache entries, by host.", []string{"host"}, nil)
	trashedDesc  = prometheus.NewDesc("imagevol_cache_trashed_bytes", "Bytes of evicted cache volumes kept in the trash for their clones, by host.", []string{"host"}, nil)
	workersDesc  = prometheus.NewDesc("imagevol_host_workers", "Workers that polled each storage host's task queue lately; 0: volumes placed there wait.", []string{"host"}, nil)
)

// storeCollector computes the gateway's gauges from the database when scraped, so they are right
// whichever gateway or worker changed the rows.
type storeCollector struct {
	ctx context.Context
	g   *Gateway
}

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{inFlightDesc, volumesDesc, entriesDesc, cachedDesc, trashedDesc, workersDesc} {
		ch <- d
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	snap, err := c.g.snapshot(c.ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(inFlightDesc, err)
		return
	}
	byStatus := map[string]int{models.StatusCreating: 0}
	for _, v := range snap.volumes {
		byStatus[v.Status]++
	}
	ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(byStatus[models.StatusCreating]))
	for s, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(n), s)
	}
	type hostState struct{ host, state string }
	entries, cached, trashed := map[hostState]int{}, map[string]int64{}, map[string]int64{}
	for _, e := range snap.entries {
		entries[hostState{e.Host, e.State}]++
		if e.State == models.EntryReady {
			cached[e.Host] += e.SizeBytes
		}
	}
	for _, t := range snap.trash {
		trashed[t.Host] += t.SizeBytes
	}
	for hs, n := range entries {
		ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(n), hs.host, hs.state)
	}
	for h, n := range cached {
		ch <- prometheus.MustNewConstMetric(cachedDesc, prometheus.GaugeValue, float64(n), h)
	}
	for h, n := range trashed {
		ch <- prometheus.MustNewConstMetric(trashedDesc, prometheus.GaugeValue, float64(n), h)
	}
	for h, n := range c.g.liveWorkers(c.ctx) {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(n), h)
	}
}

// serveMetrics serves the gateway's registry (its Temporal client's metrics, and in a process
// that also runs workers theirs) and the gauges read from the database for this scrape.
func (g *Gateway) serveMetrics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	store := prometheus.NewRegistry()
	store.MustRegister(storeCollector{ctx: ctx, g: g})
	if g.Metrics == nil {
		promhttp.HandlerFor(store, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return
	}
	g.Metrics.Handler(store).ServeHTTP(w, r)
}

// LogRequests logs every request next serves: method, route, status, duration, its request ID
// and, on a volume's route, the volume's ID. Scrapes and health checks log at debug level only.
// It gives the request its ID (withRequestID), so that the ID is known here and answered even
// when a handler between this one and Handler answers itself.
func (g *Gateway) LogRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		r = withRequestID(w, r)
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		// The mux has set the matched pattern and path values on r by now.
		attrs := []any{"method", r.Method, "path", r.URL.Path, "route", r.Pattern, "status", rec.status, "duration", time.Since(start)}
		if id := r.PathValue("id"); id != "" && strings.Contains(r.Pattern, "/volumes/") {
			attrs = append(attrs, "volume_id", id)
		}
		level := slog.LevelInfo
		switch {
		case rec.status >= 500:
			level = slog.LevelError
		case r.URL.Path == "/metrics" || r.URL.Path == "/healthz":
			level = slog.LevelDebug
		}
		g.logCtx(r.Context()).Log(r.Context(), level, "request", attrs...)
	})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
