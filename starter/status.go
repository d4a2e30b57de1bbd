package starter

import (
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"time"

	"go.temporal.io/api/enums/v1"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

//go:embed status.html
var statusHTML string

// statusTemplate is parsed once per gateway process; a parse error is a build-time mistake that
// the status page test catches.
var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"ago":   func(t, now time.Time) string { return ago(now.Sub(t)) },
}).Parse(statusHTML))

// recentProvisions is how many of the newest volumes the status page lists.
const recentProvisions = 50

// pollerFresh is how recently a worker must have polled to count as polling: a long poll lasts
// about a minute, and Temporal remembers pollers for minutes after they stop.
const pollerFresh = 2 * time.Minute

// snapshot is what the database says about the volumes and the cache, read once for the status
// page or a scrape.
type snapshot struct {
	volumes []models.Volume // user volumes only, newest first
	entries []models.CacheEntry
	trash   []models.TrashedCacheVolume
	stats   []models.CacheStat
}

func (g *Gateway) snapshot(ctx context.Context) (*snapshot, error) {
	s := &snapshot{}
	var err error
	if s.entries, err = g.Store.ListCacheEntries(ctx, ""); err != nil {
		return nil, err
	}
	all, err := g.Store.ListVolumes(ctx, "")
	if err != nil {
		return nil, err
	}
	// Cache volumes are rows too; they are the cache's, not provisions.
	cacheVolume := map[string]bool{}
	for _, e := range s.entries {
		cacheVolume[e.VolumeID] = true
	}
	for _, v := range all {
		if !cacheVolume[v.ID] {
			s.volumes = append(s.volumes, v)
		}
	}
	if s.trash, err = g.Store.ListTrashed(ctx, ""); err != nil {
		return nil, err
	}
	if s.stats, err = g.Store.Stats(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// hostStatus is one storage host as the status page shows it.
type hostStatus struct {
	Name       string
	Configured bool // one of the gateway's hosts (volumes may be placed on it)
	Pollers    int  // workers that polled its queue within pollerFresh
	LastPoll   time.Time
	PollError  string
	Entries    int
	Bytes      int64
	Stat       models.CacheStat
}

// volumeRow is a provision on the status page: no name and no project, which the page, served
// without a token, must not show.
type volumeRow struct {
	ID, ImageID, Status, Cache, CacheReason, Host, Error, URL string
	SizeGB                                                    int
	CreatedAt                                                 time.Time
}

// statusData is what the page shows. Without Admin, only counts and sums are filled in: the
// per-host, per-entry and per-volume fields stay empty, so the template cannot leak them.
type statusData struct {
	Admin           bool
	Now             time.Time
	Hosts           []hostStatus
	Workflow        hostStatus // the shared workflow queue
	Entries         []CacheEntryView
	Total           CacheStats
	Volumes         []volumeRow
	VolumeCount     int
	ProjectCount    int
	InFlight        int // volumes being provisioned
	ByStatus        map[string]int
	Health          hostHealth
	TemporalUI      string
	WorkflowQueue   string
	RecentProvision int
}

// hostHealth counts the storage hosts by whether a worker polls their queue.
type hostHealth struct {
	Hosts, Polling, NoWorker, Unknown int
	WorkflowPolling                   bool // a worker polls the shared workflow queue
	WorkflowUnknown                   bool // Temporal could not be asked about it
}

func (h *hostHealth) count(s hostStatus) {
	h.Hosts++
	switch {
	case s.PollError != "":
		h.Unknown++
	case s.Pollers > 0:
		h.Polling++
	default:
		h.NoWorker++
	}
}

// statusPage renders the gateway's status at "/" for a browser (an Accept preferring HTML);
// any other client gets Cinder's version document (serveRootVersions). Anyone may read the
// aggregates: volume counts, host health, cache totals. Hosts by name, cache entries and the newest provisions with their
// image IDs and links to their workflows are shown only to a request with an operator's token
// (isAdminRequest); it never shows names or projects.
func (g *Gateway) statusPage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, apiErr(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on /", r.Method))
		return
	}
	// "/" is also where OpenStack clients discover the API's versions: they get the JSON
	// document, browsers this page.
	w.Header().Add("Vary", "Accept")
	if !prefersHTML(r.Header.Get("Accept")) {
		serveRootVersions(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	snap, err := g.snapshot(ctx)
	if err != nil {
		// The error may name the database's address: it goes to the log, not to the caller.
		g.logCtx(ctx).Error("status page", "err", err)
		http.Error(w, "status unavailable", http.StatusServiceUnavailable)
		return
	}
	d := statusData{
		Admin: g.isAdminRequest(r), Now: time.Now().UTC(), WorkflowQueue: contract.WorkflowQueue, RecentProvision: recentProvisions,
		ByStatus: map[string]int{}, Total: CacheStats{},
	}
	hosts := map[string]*hostStatus{}
	host := func(name string) *hostStatus {
		if hosts[name] == nil {
			hosts[name] = &hostStatus{Name: name}
		}
		return hosts[name]
	}
	for _, h := range g.Hosts {
		host(h).Configured = true
	}
	for _, st := range snap.stats {
		host(st.Host).Stat = st
		d.Total.add(st)
	}
	for i := range snap.entries {
		e := &snap.entries[i]
		d.Entries = append(d.Entries, entryView(e))
		if e.State == models.EntryReady {
			h := host(e.Host)
			h.Entries++
			h.Bytes += e.SizeBytes
			d.Total.Entries++
			d.Total.BytesCached += e.SizeBytes
		}
	}
	for _, t := range snap.trash {
		d.Total.BytesTrashed += t.SizeBytes
	}
	slices.SortFunc(d.Entries, func(a, b CacheEntryView) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), b.LastUsed.Compare(a.LastUsed))
	})
	projects := map[string]bool{}
	for _, v := range snap.volumes {
		projects[v.ProjectID] = true
		d.ByStatus[v.Status]++
		if len(d.Volumes) < recentProvisions {
			d.Volumes = append(d.Volumes, volumeRow{
				ID: v.ID, ImageID: v.ImageID, Status: v.Status, Cache: v.Cache, CacheReason: v.CacheReason, Host: v.Host,
				Error: v.Error, URL: g.workflowURL(v.WorkflowID), SizeGB: v.SizeGB, CreatedAt: v.CreatedAt,
			})
		}
		if v.Host != "" {
			host(v.Host)
		}
	}
	d.VolumeCount, d.ProjectCount, d.InFlight = len(snap.volumes), len(projects), d.ByStatus[models.StatusCreating]
	for _, name := range slices.Sorted(maps.Keys(hosts)) {
		h := hosts[name]
		g.pollers(ctx, h, contract.HostQueue(name), enums.TASK_QUEUE_TYPE_ACTIVITY, d.Now)
		d.Hosts = append(d.Hosts, *h)
		d.Health.count(*h)
	}
	d.Workflow.Name = contract.WorkflowQueue
	g.pollers(ctx, &d.Workflow, contract.WorkflowQueue, enums.TASK_QUEUE_TYPE_WORKFLOW, d.Now)
	d.Health.WorkflowPolling, d.Health.WorkflowUnknown = d.Workflow.Pollers > 0, d.Workflow.PollError != ""
	if d.Admin {
		d.TemporalUI = g.UIURL
	} else {
		// Anonymous: host names, image and volume IDs, entry details and Temporal's error
		// texts stay on the server.
		d.Hosts, d.Workflow, d.Entries, d.Volumes = nil, hostStatus{}, nil, nil
	}

	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := statusTemplate.Execute(w, d); err != nil {
		g.logCtx(ctx).Error("status page: render", "err", err)
	}
}

// pollers asks Temporal which workers polled a task queue lately.
func (g *Gateway) pollers(ctx context.Context, h *hostStatus, queue string, kind enums.TaskQueueType, now time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := g.Temporal.DescribeTaskQueue(ctx, queue, kind)
	if err != nil {
		h.PollError = err.Error()
		return
	}
	for _, p := range resp.GetPollers() {
		last := p.GetLastAccessTime().AsTime()
		if last.After(h.LastPoll) {
			h.LastPoll = last
		}
		if now.Sub(last) < pollerFresh {
			h.Pollers++
		}
	}
}

// humanBytes writes n in binary units, as the cache's sizes are powers of two.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n), 0
	for f >= 1024 && u < 5 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %s", f, [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}[u])
}

// ago is a duration rounded for people.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return d.Round(time.Second).String() + " ago"
	case d < time.Hour:
		return d.Round(time.Minute).String() + " ago"
	}
	return d.Round(time.Hour).String() + " ago"
}
