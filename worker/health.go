package worker

import (
	"net/http"
	"sync/atomic"
)

// Health is a worker process's health as /healthz reports it: 200 while its Temporal workers
// run, which Run only starts once the command has reached its dependencies (Temporal, the
// database, Ceph), and 503 before that and once they are stopping, so that a supervisor or
// load balancer stops counting on a worker that is draining. The zero value is "starting"; a
// nil *Health records nothing.
type Health struct {
	state atomic.Int32
}

const (
	healthStarting int32 = iota
	healthRunning
	healthStopping
)

// SetRunning marks the workers as started and polling.
func (h *Health) SetRunning() {
	if h != nil {
		h.state.CompareAndSwap(healthStarting, healthRunning)
	}
}

// SetStopping marks the workers as stopping: from now on the health is 503 for good.
func (h *Health) SetStopping() {
	if h != nil {
		h.state.Store(healthStopping)
	}
}

// ServeHTTP answers 200 "ok" while the workers run, else 503 with "starting" or "stopping".
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	switch h.state.Load() {
	case healthRunning:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	case healthStopping:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("stopping\n"))
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("starting\n"))
	}
}
