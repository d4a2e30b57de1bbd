//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// What a caller without a token learns from the gateway, wired as the command wires it (request
// log, then the limiter of failed authentications): after a real provision, "/" shows counts
// and no host, image, volume or project; an operator's token shows them; /metrics and
// /openapi.json name no image, volume or project either; /healthz answers in its fixed shape;
// and an address that keeps failing authentication is answered 429 with Retry-After.
func TestAnonymousSurface(t *testing.T) {
	host := "e2e-surface"
	startHost(t, hostConfig(host))
	const project = "project-surface"
	gw := &starter.Gateway{
		Store: stack.store, Temporal: stack.temporal, Images: stack.glance,
		Tokens: map[string]string{testToken: project, adminToken: "admin"}, TokenRoles: map[string]starter.Role{adminToken: starter.RoleAdmin},
		Hosts: []string{host}, UIURL: "http://127.0.0.1:8233", Namespace: stack.namespace,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	const perMinute = 3
	srv := httptest.NewServer(gw.LogRequests(starter.NewAuthFailureLimiter(perMinute).Wrap(gw.Handler())))
	t.Cleanup(srv.Close)
	api := &apiClient{t: t, base: srv.URL}

	img := uploadImage(t, "surface", "raw", imageBytes(4*mib, 77, 2))
	v := api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	secrets := []string{img.ID, v.ID, host, project}

	anonymous := get(t, srv.URL+"/")
	for _, s := range secrets {
		if strings.Contains(anonymous, s) {
			t.Errorf("the anonymous status page shows %q", s)
		}
	}
	for _, want := range []string{"volumes in", "with a polling worker", "ready entries", "provisions in flight"} {
		if !strings.Contains(anonymous, want) {
			t.Errorf("the anonymous status page lacks %q", want)
		}
	}
	admin := getWith(t, srv.URL+"/", adminToken)
	for _, want := range []string{img.ID, v.ID, host} {
		if !strings.Contains(admin, want) {
			t.Errorf("the operator's status page lacks %q", want)
		}
	}
	if member := getWith(t, srv.URL+"/", testToken); strings.Contains(member, v.ID) {
		t.Error("a member's token shows the operator's status page")
	}

	for _, path := range []string{"/metrics", "/openapi.json"} {
		page := get(t, srv.URL+path)
		for _, s := range []string{img.ID, v.ID, project} {
			if strings.Contains(page, s) {
				t.Errorf("%s shows %q", path, s)
			}
		}
	}

	var health starter.Health
	if err := json.Unmarshal([]byte(get(t, srv.URL+"/healthz")), &health); err != nil {
		t.Fatal(err)
	}
	if health.Status != "ok" || health.Checks["database"] != "ok" || health.Checks["temporal"] != "ok" {
		t.Errorf("/healthz: %+v", health)
	}

	// Failed authentications: perMinute answered 401, then 429 even for a good token.
	try := func(token string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/volumes", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Auth-Token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := try(testToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("good token: %s", resp.Status)
	}
	for i := range perMinute {
		if resp := try("wrong-token"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %s, want 401", i, resp.Status)
		}
	}
	for _, tok := range []string{"wrong-token", testToken} {
		resp := try(tok)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("after %d failures, token %s: %s, Retry-After %q; want 429 with Retry-After", perMinute, tok, resp.Status, resp.Header.Get("Retry-After"))
		}
	}
}
