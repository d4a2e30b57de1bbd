// Package starter is imagevol's API gateway: it validates a request, records the volume, starts
// its CreateVolumeFromImage workflow on the chosen host, and serves volume status and the cache.
package starter

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/models"
)

// Gateway serves the REST API.
type Gateway struct {
	Store    *models.Store
	Temporal client.Client
	Images   imagesource.Source
	// Tokens maps bearer tokens to the project they act for.
	Tokens map[string]string
	// TokenRoles is the role of each of Tokens in its project; a token not in it is a member.
	TokenRoles map[string]Role
	// TokenValidator, when set, resolves a token that is none of Tokens (a Keystone token,
	// say) to the project it is scoped to and its role there; nil accepts only Tokens.
	TokenValidator TokenValidator
	// Hosts are the storage hosts volumes may be placed on.
	Hosts  []string
	Logger *slog.Logger
	// UIURL is the Temporal Web UI's address (e.g. http://127.0.0.1:8233) and Namespace the
	// provisions' namespace: with UIURL set, a volume links to its workflow's page.
	UIURL     string
	Namespace string
	// Quotas are the projects' quotas in volumes and gigabytes; nil sets none (tools and
	// tests: the gateway command always sets them).
	Quotas *Quotas
	// MaxVolumeSizeGB bounds size_gb, as Cinder's per_volume_gigabytes quota; 0 means
	// DefaultMaxVolumeSizeGB. It must not exceed models.MaxSizeGiB.
	MaxVolumeSizeGB int64
	// Metrics is served at /metrics with the gauges computed from the database; nil serves
	// only those gauges.
	Metrics *metrics.Registry
	// ProvisionTimeout sets each provision's deadline, this long after its request (or its
	// retry); 0 means none.
	ProvisionTimeout time.Duration

	next    atomic.Uint64 // round-robin placement of images no host caches
	workers workerWatch   // live workers per host, read from Temporal now and then
}

// Handler returns the HTTP routes.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", g.healthz)
	mux.HandleFunc("GET /readyz", g.readyz)
	mux.HandleFunc("GET /openapi.json", serveOpenAPI)
	mux.HandleFunc("GET /metrics", g.serveMetrics)
	// Exactly "/", any method: the page answers 405 itself, as "GET /{$}" cannot be named in
	// openapi.json.
	mux.HandleFunc("/{$}", g.statusPage)
	g.handle(mux, "POST /v1/volumes", g.createVolume)
	g.handle(mux, "GET /v1/volumes", g.listVolumes)
	g.handle(mux, "GET /v1/volumes/{id}", g.getVolume)
	g.handle(mux, "DELETE /v1/volumes/{id}", g.deleteVolume)
	g.handle(mux, "GET /v1/cache", g.listCache)
	g.handle(mux, "GET /v1/cache/stats", g.cacheStats)
	g.handle(mux, "POST /v1/cache/warm", g.warmCache)
	g.handle(mux, "POST /v1/cache/{id}/pin", g.pin(true))
	g.handle(mux, "DELETE /v1/cache/{id}/pin", g.pin(false))
	g.handle(mux, "DELETE /v1/cache/{id}", g.evictEntry)
	g.handle(mux, "GET /v1/reconcile/last", g.reconcileLast)
	g.cinderRoutes(mux)
	g.provisionRoutes(mux)
	// Registered last so that it only gets what no other pattern claims.
	g.handle(mux, "/v1/", g.unrouted(mux, "/v1/", writeError))
	return g.validateTokens(mux)
}

// handle serves an authenticated route of the /v1 API: the token must be known and its role
// at least the one Policy names for pattern. A pattern Policy does not name is a programming
// error, found when the routes are built.
func (g *Gateway) handle(mux *http.ServeMux, pattern string, next func(http.ResponseWriter, *http.Request)) {
	if _, ok := policy[pattern]; !ok {
		panic("starter: route " + pattern + " has no policy")
	}
	mux.Handle(pattern, g.auth(pattern, next))
}

// auth checks the bearer token and the role the route of pattern needs, and puts the caller's
// identity in the request context.
func (g *Gateway) auth(pattern string, next func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := g.identity(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, apiErr(http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token"))
			return
		}
		if !allowed(pattern, id.Role) {
			writeError(w, forbidden(id, pattern))
			return
		}
		next(w, r.WithContext(withIdentity(r.Context(), id)))
	})
}

// TokenValidator resolves a token that is not one of the gateway's static tokens, e.g. a
// Keystone token, to the ID of the project it is scoped to and the caller's role there. Its
// errors are *APIError: 401 for a token it refuses, 503 when it cannot tell (any other error
// counts as 503).
type TokenValidator interface {
	ValidateToken(ctx context.Context, token string) (Identity, error)
}

// validated is a TokenValidator's answer for the request's token, kept in its context.
type validated struct {
	token string
	id    Identity
}

type validatedKey struct{}

// validateTokens asks TokenValidator, once per request to the authenticated APIs (/v1/, and
// /v3/ in Cinder's error shape), about a token that is not a static one. A refusal is answered
// here, 401 or 503 (auth_unavailable) with the reason; an accepted token's project is left in
// the request's context for tokenProject. Without a validator it is next itself.
func (g *Gateway) validateTokens(next *http.ServeMux) http.Handler {
	if g.TokenValidator == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cinder := strings.HasPrefix(r.URL.Path, "/v3/")
		tok := requestToken(r)
		if _, static := g.staticIdentity(tok); tok == "" || !(cinder || strings.HasPrefix(r.URL.Path, "/v1/")) || static {
			next.ServeHTTP(w, r)
			return
		}
		id, err := g.TokenValidator.ValidateToken(r.Context(), tok)
		if err == nil && id.Project == "" {
			err = apiErr(http.StatusUnauthorized, "unauthorized", "the token names no project")
		}
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) {
				ae = apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "token validation failed: %v", err)
			}
			if ae.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", "Bearer")
			} else {
				g.log().Warn("token validation failed", "path", r.URL.Path, "err", ae.Message)
			}
			if cinder {
				writeCinderError(w, ae)
			} else {
				writeError(w, ae)
			}
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), validatedKey{}, validated{tok, id})))
	})
}

// requestToken is the request's bearer token, or its X-Auth-Token as OpenStack clients send it.
func requestToken(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		tok = r.Header.Get("X-Auth-Token")
	}
	return tok
}

// staticIdentity is the identity of tok among Tokens: its project, and its role from
// TokenRoles (member when it has none there).
func (g *Gateway) staticIdentity(tok string) (Identity, bool) {
	var id Identity
	if tok == "" {
		return id, false
	}
	for t, p := range g.Tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 && p != "" {
			id = Identity{Project: p, Role: RoleMember}
			if role, ok := g.TokenRoles[t]; ok {
				id.Role = role
			}
		}
	}
	return id, id.Project != ""
}

// identity is who the request's token acts as, if it is known: a static token's identity,
// else the one TokenValidator gave it (validateTokens).
func (g *Gateway) identity(r *http.Request) (Identity, bool) {
	tok := requestToken(r)
	if id, ok := g.staticIdentity(tok); ok {
		return id, true
	}
	if v, ok := r.Context().Value(validatedKey{}).(validated); ok && tok != "" && v.token == tok && v.id.Project != "" {
		return v.id, true
	}
	return Identity{}, false
}

// deadline is the deadline of a provision requested at t.
func (g *Gateway) deadline(t time.Time) time.Time {
	if g.ProvisionTimeout <= 0 {
		return time.Time{}
	}
	return t.Add(g.ProvisionTimeout)
}

// Health is the answer of /healthz: "ok" or "unavailable", and "ok" or "down" per dependency.
// It is served without a token, so the reasons go to the log, never into the answer (a driver's
// error can name the database's address or user).
type Health struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (g *Gateway) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	h := Health{Status: "ok", Checks: map[string]string{"database": "ok", "temporal": "ok"}}
	down := func(check string, err error) {
		g.log().Warn("health check failed", "check", check, "err", err)
		h.Status, h.Checks[check] = "unavailable", "down"
	}
	if err := g.Store.Ping(ctx); err != nil {
		down("database", err)
	}
	if _, err := g.Temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		down("temporal", err)
	}
	status := http.StatusOK
	if h.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// CreateVolumeRequest is the body of POST /v1/volumes.
type CreateVolumeRequest struct {
	ImageID string `json:"image_id"`
	SizeGB  int    `json:"size_gb"`
	Name    string `json:"name"`
	// Host, when set, places the volume on that storage host instead of letting the gateway
	// choose.
	Host string `json:"host,omitempty"`
}

// VolumeView is a volume as the API shows it.
type VolumeView struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	ImageID     string    `json:"image_id"`
	SizeGB      int       `json:"size_gb"`
	Host        string    `json:"host,omitempty"` // admins only
	Cache       string    `json:"cache,omitempty"`
	CacheReason string    `json:"cache_reason,omitempty"`
	Error       string    `json:"error,omitempty"`
	WorkflowID  string    `json:"workflow_id"`
	WorkflowURL string    `json:"workflow_url,omitempty"`
	Flatten     string    `json:"flatten,omitempty"`
	Progress    *Progress `json:"progress,omitempty"`
	// WaitingFor, on a volume still creating, says what it waits for when that is not a step
	// under way: a storage host that no worker serves.
	WaitingFor string    `json:"waiting_for,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// viewFor is a volume as the request's caller may see it: its host only for admins.
func viewFor(r *http.Request, v *models.Volume) VolumeView {
	view := viewOf(v)
	if !isAdmin(r) {
		view.Host = ""
	}
	return view
}

func viewOf(v *models.Volume) VolumeView {
	return VolumeView{
		ID: v.ID, Name: v.Name, Status: v.Status, ImageID: v.ImageID, SizeGB: v.SizeGB, Host: v.Host,
		Cache: v.Cache, CacheReason: v.CacheReason, Error: v.Error, WorkflowID: v.WorkflowID, Flatten: v.Flatten,
		CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
	}
}

const maxBody = 1 << 20

func (g *Gateway) createVolume(w http.ResponseWriter, r *http.Request) {
	v, err := g.create(r.Context(), projectOf(r), r.Body)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": v.ID, "status": v.Status, "workflow_id": v.WorkflowID})
}

func (g *Gateway) create(ctx context.Context, project string, body io.Reader) (*models.Volume, error) {
	var req CreateVolumeRequest
	dec := json.NewDecoder(io.LimitReader(body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, apiErr(http.StatusBadRequest, "bad_request", "malformed JSON body: %v", err)
	}
	return g.createFrom(ctx, project, req)
}

// createFrom validates a request, records the volume and starts its provision.
func (g *Gateway) createFrom(ctx context.Context, project string, req CreateVolumeRequest) (*models.Volume, error) {
	if req.ImageID == "" {
		return nil, apiErr(http.StatusBadRequest, "bad_request", "image_id is required")
	}
	if err := g.checkSize(req.SizeGB); err != nil {
		return nil, err
	}
	read := time.Now().UTC()
	img, err := g.usableImage(ctx, project, req.ImageID)
	if err != nil {
		return nil, err
	}
	need := img.VirtualSize
	if need == 0 {
		need = img.Size
	}
	if models.ExceedsGiB(need, int64(req.SizeGB)) {
		return nil, apiErr(http.StatusBadRequest, "volume_too_small", "image %s needs %d GiB, size_gb is %d", img.ID, models.GiBCeil(need), req.SizeGB)
	}
	host := req.Host
	if host != "" && !slices.Contains(g.Hosts, host) {
		return nil, apiErr(http.StatusBadRequest, "unknown_host", "host %q is not one of the storage hosts %v", host, g.Hosts)
	}
	if host == "" {
		if host, err = g.place(ctx, img); err != nil {
			return nil, err
		}
	}
	id := uuid.NewString()
	v := &models.Volume{
		ID: id, ProjectID: project, Name: req.Name, SizeGB: req.SizeGB, ImageID: img.ID, Host: host,
		Status: models.StatusCreating, WorkflowID: id,
	}
	limits := g.Quotas.For(project)
	if err := g.Store.CreateVolumeWithin(ctx, v, func(u models.ProjectUsage) error { return limits.check(project, u, int64(req.SizeGB)) }); err != nil {
		return nil, err
	}
	opts := contract.ProvisionOptions(id)
	opts.TypedSearchAttributes = contract.ProvisionSearch(img.ID, host, project)
	_, err = g.Temporal.ExecuteWorkflow(ctx, opts, contract.CreateVolumeWorkflow, contract.CreateVolumeInput{
		VolumeID: id, ImageID: img.ID, SizeGB: req.SizeGB, Host: host, Image: &img, ImageRead: read,
		Deadline: g.deadline(read),
	})
	if err != nil {
		// Nothing was started: the row must not stay "creating" forever.
		_ = g.Store.UpdateVolume(context.WithoutCancel(ctx), id, map[string]any{"status": models.StatusError, "error": "could not start provisioning: " + err.Error()})
		return nil, apiErr(http.StatusServiceUnavailable, "temporal_unavailable", "could not start provisioning: %v", err)
	}
	g.log().Info("provision started", "volume_id", id, "workflow_id", id, "image_id", img.ID, "host", host)
	return v, nil
}

// place picks the host for a new volume: a host that already caches the image's content if one
// is configured here (its clone needs no download, and no cross-pool clone), else the next host
// in turn.
func (g *Gateway) place(ctx context.Context, img imagesource.Image) (string, error) {
	if len(g.Hosts) == 0 {
		return "", apiErr(http.StatusServiceUnavailable, "no_hosts", "no storage hosts are configured")
	}
	entries, err := g.Store.ListEntriesOfImage(ctx, img.ID)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.ContentHash == img.ContentHash() && e.State == models.EntryReady && slices.Contains(g.Hosts, e.Host) {
			return e.Host, nil
		}
	}
	return g.Hosts[(g.next.Add(1)-1)%uint64(len(g.Hosts))], nil
}

// workflowURL is the Temporal UI page of a workflow, or "" without a UI address.
func (g *Gateway) workflowURL(id string) string {
	if g.UIURL == "" || id == "" {
		return ""
	}
	ns := g.Namespace
	if ns == "" {
		ns = "default"
	}
	return strings.TrimSuffix(g.UIURL, "/") + "/namespaces/" + url.PathEscape(ns) + "/workflows/" + url.PathEscape(id)
}

// ownVolume reads a volume of the caller's project; another project's volume is not found.
func (g *Gateway) ownVolume(r *http.Request) (*models.Volume, error) {
	v, err := g.Store.GetVolume(r.Context(), r.PathValue("id"))
	if errors.Is(err, models.ErrNotFound) || (err == nil && v.ProjectID != projectOf(r)) {
		return nil, apiErr(http.StatusNotFound, "volume_not_found", "volume %s not found", r.PathValue("id"))
	}
	return v, err
}

func (g *Gateway) getVolume(w http.ResponseWriter, r *http.Request) {
	v, err := g.ownVolume(r)
	if err != nil {
		writeError(w, err)
		return
	}
	view := viewFor(r, v)
	view.WorkflowURL = g.workflowURL(v.WorkflowID)
	if v.Status == models.StatusCreating || v.Flatten == models.FlattenPending || v.Flatten == models.FlattenRunning {
		view.Progress = g.progress(r.Context(), v.WorkflowID)
	}
	if v.Status == models.StatusCreating && v.Host != "" {
		view.WaitingFor = g.waitingFor(r.Context(), v.Host)
	}
	writeJSON(w, http.StatusOK, view)
}

// Progress is what a running provision is doing: its current step and, while data moves, how
// many bytes of how many are done.
type Progress struct {
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// progress reads a provision's pending step and its last heartbeat from Temporal, following a
// provision that waits on a cache fill into the fill's own steps. It is best-effort and returns
// nil when Temporal does not answer quickly.
func (g *Gateway) progress(ctx context.Context, workflowID string) *Progress {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	p := &Progress{Phase: "starting"}
	for hop := 0; hop < 2 && workflowID != ""; hop++ {
		desc, err := g.Temporal.DescribeWorkflowExecution(ctx, workflowID, "")
		if err != nil {
			return nil
		}
		workflowID = ""
		if len(desc.GetPendingActivities()) == 0 {
			// Waiting on a fill by signal: its memo names the fill.
			var fillID string
			if m := desc.GetWorkflowExecutionInfo().GetMemo().GetFields()[contract.MemoFill]; m != nil &&
				converter.GetDefaultDataConverter().FromPayload(m, &fillID) == nil && fillID != "" {
				p.Phase, workflowID = "FillCache", fillID
				continue
			}
		}
		for _, pa := range desc.GetPendingActivities() {
			p.Phase = pa.GetActivityType().GetName()
			if pa.GetHeartbeatDetails() == nil {
				continue
			}
			dc := converter.GetDefaultDataConverter()
			var d contract.DownloadProgress
			var fillID string
			switch {
			case p.Phase == "JoinFill" && dc.FromPayloads(pa.GetHeartbeatDetails(), &fillID) == nil:
				workflowID = fillID
			case dc.FromPayloads(pa.GetHeartbeatDetails(), &d) == nil:
				p.BytesDone, p.BytesTotal = d.Offset, d.Total
			}
		}
	}
	return p
}

func (g *Gateway) listVolumes(w http.ResponseWriter, r *http.Request) {
	vs, err := g.Store.ListVolumes(r.Context(), projectOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]VolumeView, 0, len(vs))
	for i := range vs {
		out = append(out, viewFor(r, &vs[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"volumes": out})
}

// CacheEntryView is a cache entry as the API shows it.
type CacheEntryView struct {
	ID          uint      `json:"id"`
	Host        string    `json:"host"`
	Pool        string    `json:"pool"`
	ImageID     string    `json:"image_id"`
	ContentHash string    `json:"content_hash"`
	VolumeID    string    `json:"volume_id"`
	SizeBytes   int64     `json:"size_bytes"`
	Hits        int64     `json:"hits"`
	LastUsed    time.Time `json:"last_used"`
	Pinned      bool      `json:"pinned"`
	State       string    `json:"state"`
}

func (g *Gateway) listCache(w http.ResponseWriter, r *http.Request) {
	es, err := g.Store.ListCacheEntries(r.Context(), r.URL.Query().Get("host"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]CacheEntryView, 0, len(es))
	for i := range es {
		out = append(out, entryView(&es[i]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out})
}

func entryView(e *models.CacheEntry) CacheEntryView {
	return CacheEntryView{
		ID: e.ID, Host: e.Host, Pool: e.Pool, ImageID: e.ImageID, ContentHash: e.ContentHash, VolumeID: e.VolumeID,
		SizeBytes: e.SizeBytes, Hits: e.Hits, LastUsed: e.LastUsed, Pinned: e.Pinned, State: e.State,
	}
}

func (g *Gateway) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}
