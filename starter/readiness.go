package starter

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/contract"
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
		g.pollers(ctx, &h, contract.HostQueue(name), enums.TASK_QUEUE_TYPE_ACTIVITY, now)
		if h.PollError == "" {
			live[name] = h.Pollers
		}
	}
	g.workers.live, g.workers.at = live, now
	return live
}

// Readiness is the answer of GET /readyz. Host names are shown to operators only, as on the
// status page.
type Readiness struct {
	Ready    bool   `json:"ready"`
	Database string `json:"database"` // ok or down
	Temporal string `json:"temporal"` // ok or down
	Hosts    int    `json:"hosts"`    // storage hosts volumes are placed on
	// HostsWithoutWorker counts the storage hosts no worker serves now: volumes placed there
	// are accepted and wait for a worker.
	HostsWithoutWorker int `json:"hosts_without_worker"`
	// Workers (live workers on each host's queue) and UnservedHosts name the hosts, for an
	// operator's token only.
	Workers       map[string]int `json:"workers,omitempty"`
	UnservedHosts []string       `json:"unserved_hosts,omitempty"`
}

// readyz answers 200 when the database and Temporal answer and every storage host has a live
// worker, else 503 with what is missing. Unlike /healthz (the gateway itself can serve), it
// tells whether volumes can be provisioned now on every host. Errors are logged, not shown.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rd := Readiness{Ready: true, Database: "ok", Temporal: "ok", Hosts: len(g.Hosts)}
	if err := g.Store.Ping(ctx); err != nil {
		g.logCtx(ctx).Warn("readiness: database", "err", err)
		rd.Database, rd.Ready = "down", false
	}
	if _, err := g.Temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		g.logCtx(ctx).Warn("readiness: temporal", "err", err)
		rd.Temporal, rd.Ready = "down", false
	} else {
		live := g.liveWorkers(ctx)
		workers, unserved := map[string]int{}, []string{}
		for _, h := range g.Hosts {
			n, known := live[h]
			workers[h] = n
			if !known || n == 0 {
				unserved = append(unserved, h)
			}
		}
		slices.Sort(unserved)
		rd.HostsWithoutWorker = len(unserved)
		if len(unserved) > 0 {
			rd.Ready = false
		}
		if g.isAdminRequest(r) {
			rd.Workers, rd.UnservedHosts = workers, unserved
		}
	}
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, rd)
}

// waitingFor says why a creating volume makes no progress when no worker serves its host (not
// naming the host, which only operators see).
func (g *Gateway) waitingFor(ctx context.Context, host string) string {
	if n, known := g.liveWorkers(ctx)[host]; known && n == 0 {
		return "a worker of its storage host: none serves it now; the provision goes on when one does"
	}
	return ""
}
