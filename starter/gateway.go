// Package starter is imagevol's API gateway: it validates a request, records the volume, starts
// its CreateVolumeFromImage workflow on the chosen host, and serves volume status and the cache.
//
// Of imagevol's packages it may import contract, models, imagesource and metrics: it starts
// workflows by their registered names and never links the steps.
package starter

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/client"

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
	reads   progressCache // recent progress reads of running provisions
	// retrying holds the IDs of volumes whose retry is being started by this gateway, so that
	// two concurrent retries of one volume do not both reset its row; across gateways,
	// Temporal's workflow ID reuse policy lets only one start succeed.
	retrying sync.Map
}

// Handler returns the HTTP routes. Every answer carries the request's ID (RequestIDs).
func (g *Gateway) Handler() http.Handler {
	return RequestIDs(g.validateTokens(g.routes()))
}

// routes is the gateway's mux: every route it serves, behind a token or not.
func (g *Gateway) routes() *http.ServeMux {
	mux := http.NewServeMux()
	g.public(mux, "GET /healthz", g.healthz)
	g.public(mux, "GET /readyz", g.readyz)
	g.public(mux, "GET /openapi.json", serveOpenAPI)
	g.public(mux, "GET /metrics", g.serveMetrics)
	// Exactly "/", any method: the page answers 405 itself. Browsers get the status page, API
	// clients Cinder's version document (statusPage).
	g.public(mux, "/{$}", g.statusPage)
	g.cinderVersionRoutes(mux)
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
	g.extendRoutes(mux)
	// Registered last so that it only gets what no other pattern claims.
	g.handle(mux, "/v1/", g.unrouted(mux, "/v1/", writeError))
	return mux
}

// public serves a route open to all, which must be one of publicRoutes and not in the policy.
func (g *Gateway) public(mux *http.ServeMux, pattern string, next func(http.ResponseWriter, *http.Request)) {
	if _, ok := policy[pattern]; ok || !publicRoutes[pattern] {
		panic("starter: route " + pattern + " is not listed as public")
	}
	mux.HandleFunc(pattern, next)
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
func (g *Gateway) validateTokens(next http.Handler) http.Handler {
	if g.TokenValidator == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cinder := strings.HasPrefix(r.URL.Path, "/v3/")
		tok := requestToken(r)
		// Version discovery (/v3/) is open to all: a client may send its token along, good or not.
		discovery := r.URL.Path == "/v3/"
		if _, static := g.staticIdentity(tok); tok == "" || !(cinder || strings.HasPrefix(r.URL.Path, "/v1/")) || static || discovery {
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
				g.logCtx(r.Context()).Warn("token validation failed", "path", r.URL.Path, "err", ae.Message)
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
		g.logCtx(r.Context()).Warn("health check failed", "check", check, "err", err)
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

func (g *Gateway) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}
