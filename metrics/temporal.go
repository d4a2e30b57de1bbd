package metrics

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
)

// sdkBuckets are the Temporal SDK's timers' buckets: RPCs take milliseconds, long polls a minute.
var sdkBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

type kind int

const (
	counterKind kind = iota
	gaugeKind
	timerKind
)

// sdkCollector keeps what the Temporal SDK records and exposes it when scraped. The SDK does not
// promise one tag set per metric name, which Prometheus requires of a family, so every series
// of a family is exposed with the union of the family's tag names, absent ones empty (which
// Prometheus treats as no label).
type sdkCollector struct {
	mu       sync.Mutex
	families map[string]*family
}

type family struct {
	kind   kind
	series map[string]*series
}

type series struct {
	labels map[string]string

	mu      sync.Mutex
	value   float64  // counter or gauge
	count   uint64   // timer
	sum     float64  // timer, seconds
	buckets []uint64 // timer: observations ≤ sdkBuckets[i], not cumulative
}

func newSDKCollector() *sdkCollector { return &sdkCollector{families: map[string]*family{}} }

// series returns the series of a metric and tag set, or nil when the name is already used by a
// metric of another kind.
func (c *sdkCollector) series(name string, k kind, tags map[string]string) *series {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.families[name]
	if f == nil {
		f = &family{kind: k, series: map[string]*series{}}
		c.families[name] = f
	}
	if f.kind != k {
		return nil
	}
	var key strings.Builder
	for _, n := range slices.Sorted(maps.Keys(tags)) {
		key.WriteString(n + "\x00" + tags[n] + "\x00")
	}
	s := f.series[key.String()]
	if s == nil {
		s = &series{labels: tags}
		if k == timerKind {
			s.buckets = make([]uint64, len(sdkBuckets))
		}
		f.series[key.String()] = s
	}
	return s
}

// Describe sends nothing: the SDK's metrics are only known once recorded, so the collector is
// unchecked.
func (c *sdkCollector) Describe(chan<- *prometheus.Desc) {}

// Collect sends every series recorded so far.
func (c *sdkCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, f := range c.families {
		names := map[string]bool{}
		for _, s := range f.series {
			for n := range s.labels {
				names[n] = true
			}
		}
		labelNames := slices.Sorted(maps.Keys(names))
		desc := prometheus.NewDesc(name, "Temporal SDK metric "+name+".", labelNames, nil)
		for _, s := range f.series {
			values := make([]string, len(labelNames))
			for i, n := range labelNames {
				values[i] = s.labels[n]
			}
			s.mu.Lock()
			var m prometheus.Metric
			var err error
			switch f.kind {
			case counterKind:
				m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.value, values...)
			case gaugeKind:
				m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.value, values...)
			case timerKind:
				cum := make(map[float64]uint64, len(sdkBuckets))
				var acc uint64
				for i, b := range sdkBuckets {
					acc += s.buckets[i]
					cum[b] = acc
				}
				m, err = prometheus.NewConstHistogram(desc, s.count, s.sum, cum, values...)
			}
			s.mu.Unlock()
			if err != nil {
				m = prometheus.NewInvalidMetric(desc, err)
			}
			ch <- m
		}
	}
}

// sdkHandler is the client.MetricsHandler of a registry, with the tags given so far.
type sdkHandler struct {
	c    *sdkCollector
	tags map[string]string
}

var _ client.MetricsHandler = (*sdkHandler)(nil)

// WithTags returns a handler whose metrics also carry tags (overriding tags of the same name).
func (h *sdkHandler) WithTags(tags map[string]string) client.MetricsHandler {
	merged := maps.Clone(h.tags)
	if merged == nil {
		merged = map[string]string{}
	}
	for k, v := range tags {
		merged[labelName(k)] = v
	}
	return &sdkHandler{c: h.c, tags: merged}
}

// Counter returns the counter of that name and the handler's tags, exposed as <name>_total:
// Prometheus names counters so, and Temporal's dashboards query the SDK's counters by those names
// (temporal_request_total, temporal_workflow_completed_total).
func (h *sdkHandler) Counter(name string) client.MetricsCounter {
	s := h.c.series(counterName(name), counterKind, h.tags)
	return counterFunc(func(d int64) {
		if s == nil {
			return
		}
		s.mu.Lock()
		s.value += float64(d)
		s.mu.Unlock()
	})
}

// Gauge returns the gauge of that name and the handler's tags.
func (h *sdkHandler) Gauge(name string) client.MetricsGauge {
	s := h.c.series(metricName(name), gaugeKind, h.tags)
	return gaugeFunc(func(v float64) {
		if s == nil {
			return
		}
		s.mu.Lock()
		s.value = v
		s.mu.Unlock()
	})
}

// Timer returns the timer of that name and the handler's tags, exposed as a histogram in
// seconds named <name>_seconds, the naming Temporal's dashboards expect.
func (h *sdkHandler) Timer(name string) client.MetricsTimer {
	s := h.c.series(metricName(name)+"_seconds", timerKind, h.tags)
	return timerFunc(func(d time.Duration) {
		if s == nil {
			return
		}
		sec := d.Seconds()
		i, _ := slices.BinarySearch(sdkBuckets, sec)
		s.mu.Lock()
		s.count++
		s.sum += sec
		if i < len(s.buckets) {
			s.buckets[i]++
		}
		s.mu.Unlock()
	})
}

type counterFunc func(int64)

func (f counterFunc) Inc(d int64) { f(d) }

type gaugeFunc func(float64)

func (f gaugeFunc) Update(v float64) { f(v) }

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }

// metricName makes name a valid Prometheus metric name.
func metricName(name string) string { return sanitize(name, true) }

// counterName is the Prometheus name of the SDK's counter name: valid, and ending in _total.
func counterName(name string) string {
	n := metricName(name)
	if strings.HasSuffix(n, "_total") {
		return n
	}
	return n + "_total"
}

// labelName makes name a valid Prometheus label name.
func labelName(name string) string { return sanitize(name, false) }

func sanitize(name string, colon bool) string {
	var b strings.Builder
	for i, r := range name {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9') || (colon && r == ':')
		if !ok {
			r = '_'
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}
