package starter

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/workflows"
)

// workersTTL is how long one reading of the hosts' pollers serves readiness, volume views and
// scrapes, so that clients polling volumes do not each ask Temporal.
const workersTTL = 5 * time.Second

// workerWatch caches which storage hosts have a live worker on their task queue.
type workerWatch struct {
	mu   sync.Mutex
	at   time.Time
	live map[string]int // host -> workers that polled its queue within pollerFresh
}

// liveWorkers reports, for each of the gateway's hosts, how many workers polled its queue
// within pollerFresh; a host whose queue Temporal could not describe is left out.
func (g *Gateway) liveWorkers(ctx context.Context) map[string]int {
	g.workers.mu.Lock()
	defer g.workers.mu.Unlock()
	now := time.Now()
	if g.workers.live != nil && now.Sub(g.workers.at) < workersTTL {
		return g.workers.live
	}
	live := map[string]int{}
	for _, name := range g.Hosts {
		h := hostStatus{Name: name}
		g.pollers(ctx, &h, workflows.HostQueue(name), enums.TASK_QUEUE_TYPE_ACTIVITY, now)
		if h.PollError == "" {
			live[name] = h.Pollers
		}
	}
	g.workers.live, g.workers.at = live, now
	return live
}

// Readiness is the answer of GET /readyz.
type Readiness struct {
	Ready    bool           `json:"ready"`
	Database string         `json:"database"`
	Temporal string         `json:"temporal"`
	Workers  map[string]int `json:"workers"` // live workers on each storage host's queue
	// HostsWithoutWorker are storage hosts that no worker serves now: volumes placed there are
	// accepted and wait for a worker.
	HostsWithoutWorker []string `json:"hosts_without_worker"`
}

// readyz answers 200 when the database and Temporal answer and every storage host has a live
// worker, else 503 with what is missing. Unlike /healthz (the gateway itself can serve), it
// tells whether volumes can be provisioned now on every host. Errors are logged, not shown.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rd := Readiness{Ready: true, Database: "ok", Temporal: "ok", Workers: map[string]int{}, HostsWithoutWorker: []string{}}
	if err := g.Store.Ping(ctx); err != nil {
		g.log().Warn("readiness: database", "err", err)
		rd.Database, rd.Ready = "unavailable", false
	}
	if _, err := g.Temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		g.log().Warn("readiness: temporal", "err", err)
		rd.Temporal, rd.Ready = "unavailable", false
	} else {
		live := g.liveWorkers(ctx)
		for _, h := range g.Hosts {
			n, known := live[h]
			rd.Workers[h] = n
			if !known || n == 0 {
				rd.HostsWithoutWorker = append(rd.HostsWithoutWorker, h)
			}
		}
		slices.Sort(rd.HostsWithoutWorker)
		if len(rd.HostsWithoutWorker) > 0 {
			rd.Ready = false
		}
	}
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}

// waitingFor says why a creating volume makes no progress when no worker serves its host.
func (g *Gateway) waitingFor(ctx context.Context, host string) string {
	if n, known := g.liveWorkers(ctx)[host]; known && n == 0 {
		return "no worker serves storage host " + host + "; the provision goes on when one polls its queue"
	}
	return ""
}
