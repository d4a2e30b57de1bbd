// Package metrics holds one process's Prometheus registry: imagevol's own metrics (cache
// counters, step durations), the Temporal SDK's metrics through a client.MetricsHandler, and the
// HTTP handler that serves them all at /metrics.
//
// Of imagevol's packages it imports only models.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/models"
)

// Registry is a process's metrics. A nil *Registry records nothing, so code paths that run
// without metrics (tests, tools) need no checks.
type Registry struct {
	prom     *prometheus.Registry
	temporal *sdkCollector

	hits, misses, evictions, downloads *prometheus.CounterVec
	bytesDownloaded, bytesImported     *prometheus.CounterVec
	steps                              *prometheus.HistogramVec
}

// stepBuckets span a status update (milliseconds) to the download of a large image (tens of
// minutes).
var stepBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}

// NewRegistry creates a registry with imagevol's metrics, the Go runtime's and the process's.
func NewRegistry() *Registry {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imagevol", Name: name, Help: help}, []string{"host"})
	}
	r := &Registry{
		prom:            prometheus.NewRegistry(),
		temporal:        newSDKCollector(),
		hits:            counter("cache_hits_total", "Provisions that found the image in the cache."),
		misses:          counter("cache_misses_total", "Provisions that did not find the image in the cache."),
		evictions:       counter("cache_evictions_total", "Cache entries evicted."),
		downloads:       counter("downloads_total", "Images downloaded from the image service."),
		bytesDownloaded: counter("downloaded_bytes_total", "Bytes downloaded from the image service."),
		bytesImported:   counter("imported_bytes_total", "Virtual bytes of images imported into volumes."),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "imagevol", Name: "step_duration_seconds", Buckets: stepBuckets,
			Help: "Duration of one attempt of a provisioning step (Temporal activity), by outcome.",
		}, []string{"host", "activity", "outcome"}),
	}
	r.prom.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		r.temporal, r.hits, r.misses, r.evictions, r.downloads, r.bytesDownloaded, r.bytesImported, r.steps,
	)
	return r
}

// Gather implements prometheus.Gatherer, so a registry can be combined with others.
func (r *Registry) Gather() ([]*dto.MetricFamily, error) {
	if r == nil {
		return nil, nil
	}
	return r.prom.Gather()
}

// Handler serves the registry in the Prometheus text format, followed by whatever extra gathers
// (the gateway's gauges computed from the database when scraped).
func (r *Registry) Handler(extra ...prometheus.Gatherer) http.Handler {
	g := append(prometheus.Gatherers{r}, extra...)
	// A collector that fails (a database error, say) must not hide every other metric.
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Temporal is the handler to give the Temporal client (client.Options.MetricsHandler): the
// SDK's metrics are served with the registry's. Nil for a nil registry, which the SDK takes as
// "no metrics".
func (r *Registry) Temporal() client.MetricsHandler {
	if r == nil {
		return nil
	}
	return &sdkHandler{c: r.temporal}
}

// CountCache adds one host's cache events, as models.CacheStat counts them in the database.
func (r *Registry) CountCache(host string, d models.CacheStat) {
	if r == nil {
		return
	}
	for _, c := range []struct {
		vec *prometheus.CounterVec
		n   int64
	}{{r.hits, d.Hits}, {r.misses, d.Misses}, {r.evictions, d.Evictions}, {r.downloads, d.Downloads}, {r.bytesDownloaded, d.BytesDownloaded}} {
		if c.n > 0 {
			c.vec.WithLabelValues(host).Add(float64(c.n))
		}
	}
}

// CountImported adds the bytes of an image imported into a cache or user volume on host.
func (r *Registry) CountImported(host string, bytes int64) {
	if r == nil || bytes <= 0 {
		return
	}
	r.bytesImported.WithLabelValues(host).Add(float64(bytes))
}

// ObserveStep records how long one attempt of a step took on host; err is its outcome.
func (r *Registry) ObserveStep(host, activity string, d time.Duration, err error) {
	if r == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	r.steps.WithLabelValues(host, activity, outcome).Observe(d.Seconds())
}
