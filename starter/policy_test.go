package starter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/models"
)

// policyGateway is a gateway over a fresh SQLite store with one static token per role, for
// project "p". Its Temporal client points nowhere: no request of the policy test starts work.
func policyGateway(t *testing.T) (*Gateway, map[Role]string) {
	t.Helper()
	store, err := models.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "db"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	tc, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	tokens := map[Role]string{RoleNone: "t-none", RoleReader: "t-reader", RoleMember: "t-member", RoleAdmin: "t-admin"}
	g := &Gateway{Store: store, Temporal: tc, Hosts: []string{"h"}, Tokens: map[string]string{}, TokenRoles: map[string]Role{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for role, tok := range tokens {
		g.Tokens[tok], g.TokenRoles[tok] = "p", role
	}
	return g, tokens
}

// requestFor is a request matching a route's pattern, for project "p": path values are
// placeholders, and a body, if any, one the handler refuses before doing anything.
func requestFor(pattern string) (method, path, body string) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = http.MethodGet, pattern+"nothing"
	}
	path = strings.NewReplacer("{project_id}", "p", "{id}", "x").Replace(path)
	if method == http.MethodPost {
		body = "{}"
	}
	return method, path, body
}

// TestPolicyTable walks the policy: each role on each route, through the gateway's handler,
// in the /v1 and the Cinder error shapes. A role below the route's gets 403 forbidden and the
// handler never runs; one at or above it gets past authorization (the handler's own answer).
func TestPolicyTable(t *testing.T) {
	g, tokens := policyGateway(t)
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	patterns := make([]string, 0, len(policy))
	for p := range policy {
		patterns = append(patterns, p)
	}
	slices.Sort(patterns)
	for _, pattern := range patterns {
		for _, role := range []Role{RoleNone, RoleReader, RoleMember, RoleAdmin} {
			t.Run(fmt.Sprintf("%s as %s", pattern, role), func(t *testing.T) {
				method, path, body := requestFor(pattern)
				req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
				req.Header.Set("X-Auth-Token", tokens[role])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := role >= policy[pattern]
				if !want {
					if resp.StatusCode != http.StatusForbidden {
						t.Fatalf("%s %s: HTTP %d %s, want 403", method, path, resp.StatusCode, data)
					}
					if strings.HasPrefix(path, "/v3/") {
						var f map[string]CinderFault
						if json.Unmarshal(data, &f) != nil || f["forbidden"].Code != http.StatusForbidden || f["forbidden"].Message == "" {
							t.Fatalf("Cinder body %s, want {\"forbidden\":{\"code\":403,...}}", data)
						}
					} else {
						var e struct{ Error APIError }
						if json.Unmarshal(data, &e) != nil || e.Error.Code != CodeForbidden || !strings.Contains(e.Error.Message, "role "+role.String()) {
							t.Fatalf("body %s, want code forbidden naming role %s", data, role)
						}
					}
					return
				}
				if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized {
					t.Fatalf("%s %s: HTTP %d %s, want past authorization", method, path, resp.StatusCode, data)
				}
			})
		}
	}
}

// Every route the gateway serves behind a token is in the policy, and the policy names no
// route that is not served; the ones open to all are as documented.
func TestPolicyCoversRoutes(t *testing.T) {
	g, _ := policyGateway(t)
	h := g.Handler() // panics on a route without a policy
	for pattern := range policy {
		method, path, body := requestFor(pattern)
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s without a token: HTTP %d, want 401 (a route of the policy that is not served?)", pattern, rec.Code)
		}
	}
	for _, open := range []string{"/healthz", "/openapi.json", "/metrics", "/", "/v3/", "/v3"} {
		if _, ok := policy["GET "+open]; ok {
			t.Errorf("%s is open to all, but the policy names it", open)
		}
	}
	// The public routes need no token; the health checks are left out, as they ask Temporal.
	for pattern := range publicRoutes {
		if _, ok := policy[pattern]; ok {
			t.Errorf("%s is both public and in the policy", pattern)
		}
		method, path, _ := strings.Cut(pattern, " ")
		if path == "" {
			method, path = http.MethodGet, pattern
		}
		path = strings.TrimSuffix(path, "{$}")
		if path == "/healthz" || path == "/readyz" || path == "/metrics" {
			continue
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		if rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden || rec.Code >= 500 {
			t.Errorf("%s without a token: HTTP %d, want it served", pattern, rec.Code)
		}
	}
	if policy["GET /v1/cache"] != RoleAdmin || policy["GET /v1/reconcile/last"] != RoleAdmin ||
		policy["GET /v1/volumes/{id}"] != RoleReader || policy["POST /v1/volumes"] != RoleMember {
		t.Errorf("policy %v", policy)
	}
}

func TestRoles(t *testing.T) {
	cases := []struct {
		names []string
		want  Role
	}{
		{nil, RoleNone},
		{[]string{"service"}, RoleNone},
		{[]string{"reader"}, RoleReader},
		{[]string{"reader", "member"}, RoleMember},
		{[]string{"_member_"}, RoleMember},
		{[]string{"member", "admin", "reader"}, RoleAdmin},
		{[]string{"Admin"}, RoleAdmin},
	}
	for _, c := range cases {
		if got := roleOfNames(c.names); got != c.want {
			t.Errorf("roles %v: %s, want %s", c.names, got, c.want)
		}
	}
	for _, bad := range []string{"", "none", "root", "owner"} {
		if _, err := ParseRole(bad); err == nil {
			t.Errorf("ParseRole(%q): no error", bad)
		}
	}
}

// Only admins see a volume's host, in /v1 and in Cinder's views.
func TestHostShownToAdminsOnly(t *testing.T) {
	v := &models.Volume{ID: "v", ProjectID: "p", Host: "node1", Pool: "volumes", Status: models.StatusAvailable}
	for _, role := range []Role{RoleReader, RoleMember, RoleAdmin} {
		r := httptest.NewRequest("GET", "/v1/volumes/v", nil)
		r = r.WithContext(withIdentity(r.Context(), Identity{Project: "p", Role: role}))
		view, cv := viewFor(r, v), cinderViewOf(r, v)
		v1, _ := json.Marshal(view)
		v3, _ := json.Marshal(cv)
		admin := role == RoleAdmin
		if strings.Contains(string(v1), `"host"`) != admin || strings.Contains(string(v3), `"os-vol-host-attr:host":"node1@rbd#volumes"`) != admin ||
			strings.Contains(string(v3), "os-vol-host-attr") != admin {
			t.Errorf("as %s: /v1 %s\n/v3 %s", role, v1, v3)
		}
	}
}
