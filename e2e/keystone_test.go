//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/starter"
)

// keystoneEnv is what deploy/keystone.sh set up and wrote to .run/keystone/env.
type keystoneEnv struct {
	url, cloudsFile                   string
	adminPW, demoPW, otherPW          string
	demoProject, otherProject         string
	demoProjectName, otherProjectName string
}

// needKeystone reads the Keystone the tests run against; without one the test fails.
func needKeystone(t *testing.T) keystoneEnv {
	t.Helper()
	e := keystoneEnv{
		url: os.Getenv("KEYSTONE_URL"), cloudsFile: os.Getenv("KEYSTONE_CLOUDS_FILE"),
		adminPW: os.Getenv("KEYSTONE_ADMIN_PASSWORD"), demoPW: os.Getenv("KEYSTONE_DEMO_PASSWORD"),
		otherPW: os.Getenv("KEYSTONE_OTHER_PASSWORD"), demoProject: os.Getenv("KEYSTONE_DEMO_PROJECT_ID"),
		otherProject: os.Getenv("KEYSTONE_OTHER_PROJECT_ID"), demoProjectName: "demo", otherProjectName: "other",
	}
	if e.url == "" || e.cloudsFile == "" || e.demoPW == "" || e.otherPW == "" || e.adminPW == "" || e.demoProject == "" || e.otherProject == "" {
		t.Fatal("KEYSTONE_URL and the rest of .run/keystone/env are not set: run these tests through `make test`, " +
			"which starts Keystone with deploy/keystone.sh and exports them")
	}
	return e
}

// ksToken authenticates to Keystone with a password and returns the token, and a client of
// the identity API acting with it.
func ksToken(t *testing.T, e keystoneEnv, user, password string, scope *gophercloud.AuthScope) (string, *gophercloud.ServiceClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: e.url, Username: user, Password: password, DomainName: "Default", Scope: scope,
	})
	if err != nil {
		t.Fatalf("token of %s from keystone: %v", user, err)
	}
	identity, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return pc.Token(), identity
}

func projectScope(name string) *gophercloud.AuthScope {
	return &gophercloud.AuthScope{ProjectName: name, DomainName: "Default"}
}

// ksCall sends a request with X-Auth-Token and returns the status and body.
func ksCall(t *testing.T, base, method, path, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// requireAPIError checks a /v1 error body's status and code, and that its message mentions want.
func requireAPIError(t *testing.T, status int, body []byte, wantStatus int, code, want string) {
	t.Helper()
	var e struct{ Error starter.APIError }
	if err := json.Unmarshal(body, &e); err != nil || status != wantStatus || e.Error.Code != code || !strings.Contains(e.Error.Message, want) {
		t.Fatalf("HTTP %d %s; want %d %s mentioning %q", status, body, wantStatus, code, want)
	}
}

// ksGateway runs a gateway that accepts the static test token and Keystone tokens through v.
func ksGateway(t *testing.T, v starter.TokenValidator, images imagesource.Source, hosts ...string) string {
	t.Helper()
	gw := &starter.Gateway{
		Store: stack.store, Temporal: stack.temporal, Images: images,
		Tokens: map[string]string{testToken: "project-e2e"}, TokenRoles: testRoles, TokenValidator: v, Hosts: hosts,
		Namespace: stack.namespace, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// loadKeystoneConfig reads imagevol's settings as the commands do, with the gateway validating
// Keystone tokens and Glance found in the catalog, both as clouds.yaml's "imagevol" cloud.
func loadKeystoneConfig(t *testing.T, e keystoneEnv, ttl time.Duration) config.File {
	t.Helper()
	t.Setenv("IMAGEVOL_KEYSTONE_CLOUD", "imagevol")
	t.Setenv("IMAGEVOL_KEYSTONE_CLOUDS_FILE", e.cloudsFile)
	t.Setenv("IMAGEVOL_KEYSTONE_CACHE_TTL", ttl.String())
	t.Setenv("IMAGEVOL_GLANCE_CLOUD", "imagevol")
	t.Setenv("IMAGEVOL_GLANCE_CLOUDS_FILE", e.cloudsFile)
	t.Setenv("IMAGEVOL_CONFIG", "")
	f, err := config.LoadFile("")
	if err != nil {
		t.Fatal(err)
	}
	if f.Gateway.Keystone.Auth == nil || f.Glance.Auth == nil || f.Gateway.Keystone.CacheTTL != ttl {
		t.Fatalf("config: keystone %+v glance %+v", f.Gateway.Keystone, f.Glance)
	}
	return f
}

// TestKeystone runs the gateway against the real Keystone of deploy/keystone.sh: users' tokens
// are validated there and act for their projects; invalid, unscoped and revoked tokens are
// refused; an unreachable Keystone is a 503; and Glance is found through the Keystone catalog.
func TestKeystone(t *testing.T) {
	e := needKeystone(t)
	const ttl = 2 * time.Second
	f := loadKeystoneConfig(t, e, ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Glance from the catalog, through the same Connect the commands use.
	c := f.Common()
	c.DBDSN, c.TemporalAddress, c.Namespace = stack.dsn, stack.frontend, stack.namespace
	start := time.Now()
	svc, err := c.Connect(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatalf("connect with glance.cloud: %v", err)
	}
	defer svc.Close()
	t.Logf("glance client from the keystone catalog in %v: endpoint %s", time.Since(start).Round(time.Millisecond), svc.Glance.Endpoint())
	if want := strings.TrimSuffix(os.Getenv("GLANCE_URL"), "/") + "/"; svc.Glance.Endpoint() != want {
		t.Fatalf("catalog gave glance endpoint %s, want %s", svc.Glance.Endpoint(), want)
	}
	img := uploadImage(t, "keystone", "raw", imageBytes(8*mib, 61, 2))
	got, err := svc.Glance.Get(ctx, img.ID)
	if err != nil || got.ID != img.ID || got.HashValue != img.HashValue || got.Status != imagesource.StatusActive {
		t.Fatalf("get image %s through the catalog's glance: %+v, %v", img.ID, got, err)
	}
	if _, err := glance.NewFromKeystone(ctx, f.Glance.Auth.AuthOptions(), "Nowhere"); err == nil || !strings.Contains(err.Error(), "region Nowhere") {
		t.Fatalf("glance in a region the catalog lacks: %v, want an error naming it", err)
	}

	// The gateway's validator, as imagevol-gateway builds it from gateway.keystone.
	start = time.Now()
	v, err := starter.NewKeystoneValidator(ctx, starter.KeystoneOptions{
		Auth: f.Gateway.Keystone.Auth.AuthOptions(), CacheTTL: ttl, CacheSize: f.Gateway.Keystone.CacheSize, Timeout: f.Gateway.Keystone.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("validator: service user authenticated in %v", time.Since(start).Round(time.Millisecond))
	host := "e2e-keystone"
	startHost(t, hostConfig(host))
	base := ksGateway(t, v, svc.Glance, host)

	demoTok, demoIdentity := ksToken(t, e, "demo", e.demoPW, projectScope(e.demoProjectName))
	otherTok, _ := ksToken(t, e, "other", e.otherPW, projectScope(e.otherProjectName))

	// Latency: one validation that asks Keystone, then the same token from the cache.
	start = time.Now()
	if p, err := v.ValidateToken(ctx, otherTok); err != nil || p.Project != e.otherProject || p.Role != starter.RoleMember {
		t.Fatalf("validate other's token: %q, %v; want project %s", p, err, e.otherProject)
	}
	miss := time.Since(start)
	start = time.Now()
	const n = 1000
	for i := 0; i < n; i++ {
		if _, err := v.ValidateToken(ctx, otherTok); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("validation latency: %v asking keystone, %v from the cache (mean of %d)", miss.Round(time.Microsecond), time.Since(start)/n, n)

	t.Run("demo's token creates and lists volumes of project demo", func(t *testing.T) {
		sc := cinderClient(base, e.demoProject, demoTok)
		created, err := volumes.Create(ctx, sc, volumes.CreateOpts{Size: 1, ImageID: img.ID, Name: "keystone-e2e"}, nil).Extract()
		if err != nil {
			t.Fatalf("create as demo: %v", err)
		}
		if created.TenantID != e.demoProject {
			t.Fatalf("volume of tenant %s, want demo's project %s", created.TenantID, e.demoProject)
		}
		var vol *volumes.Volume
		for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if vol, err = volumes.Get(ctx, sc, created.ID).Extract(); err != nil {
				t.Fatalf("get as demo: %v", err)
			}
			if vol.Status != "creating" && vol.Status != starter.CinderStatusDownloading {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("volume %s still %s", vol.ID, vol.Status)
			}
		}
		if vol.Status != "available" {
			t.Fatalf("volume %+v", vol)
		}
		if row, err := stack.store.GetVolume(ctx, vol.ID); err != nil || row.ProjectID != e.demoProject {
			t.Fatalf("row %+v, %v: want project %s", row, err, e.demoProject)
		}
		pages, err := volumes.List(sc, volumes.ListOpts{}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all, err := volumes.ExtractVolumes(pages)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(all, func(x volumes.Volume) bool { return x.ID == vol.ID }) {
			t.Fatalf("demo's list lacks volume %s", vol.ID)
		}
		// The same through /v1 with X-Auth-Token.
		status, body := ksCall(t, base, "GET", "/v1/volumes", demoTok, "")
		var list struct{ Volumes []starter.VolumeView }
		if status != http.StatusOK || json.Unmarshal(body, &list) != nil ||
			!slices.ContainsFunc(list.Volumes, func(x starter.VolumeView) bool { return x.ID == vol.ID }) {
			t.Fatalf("GET /v1/volumes as demo: HTTP %d %s", status, body)
		}

		// Another project's Keystone token does not see it, on either API.
		status, body = ksCall(t, base, "GET", "/v1/volumes/"+vol.ID, otherTok, "")
		requireAPIError(t, status, body, http.StatusNotFound, "volume_not_found", vol.ID)
		_, err = volumes.Get(ctx, cinderClient(base, e.otherProject, otherTok), vol.ID).Extract()
		requireFault(t, err, http.StatusNotFound, "itemNotFound")
		_, err = volumes.Get(ctx, cinderClient(base, e.demoProject, otherTok), vol.ID).Extract()
		requireFault(t, err, http.StatusNotFound, "itemNotFound")
		status, body = ksCall(t, base, "GET", "/v1/volumes", otherTok, "")
		if status != http.StatusOK || strings.Contains(string(body), vol.ID) {
			t.Fatalf("other's list: HTTP %d %s", status, body)
		}
		// The static token still works beside Keystone, and acts for its own project.
		status, body = ksCall(t, base, "GET", "/v1/volumes/"+vol.ID, testToken, "")
		requireAPIError(t, status, body, http.StatusNotFound, "volume_not_found", vol.ID)

		if err := volumes.Delete(ctx, sc, vol.ID, nil).ExtractErr(); err != nil {
			t.Fatalf("delete as demo: %v", err)
		}
	})

	t.Run("garbage and unscoped tokens get 401", func(t *testing.T) {
		status, body := ksCall(t, base, "GET", "/v1/volumes", "gAAAAABnot-a-real-fernet-token", "")
		requireAPIError(t, status, body, http.StatusUnauthorized, starter.CodeInvalidToken, "invalid, expired or revoked")
		_, err := volumes.List(cinderClient(base, e.demoProject, "garbage"), volumes.ListOpts{}).AllPages(ctx)
		requireFault(t, err, http.StatusUnauthorized, "unauthorized")

		unscoped, _ := ksToken(t, e, "admin", e.adminPW, nil)
		status, body = ksCall(t, base, "GET", "/v1/volumes", unscoped, "")
		requireAPIError(t, status, body, http.StatusUnauthorized, starter.CodeUnscopedToken, "unscoped")
		system, _ := ksToken(t, e, "admin", e.adminPW, &gophercloud.AuthScope{System: true})
		status, body = ksCall(t, base, "GET", "/v1/volumes", system, "")
		requireAPIError(t, status, body, http.StatusUnauthorized, starter.CodeUnscopedToken, "system-scoped")
	})

	t.Run("a revoked token is refused once its cache entry ends", func(t *testing.T) {
		// A gateway that asks Keystone every time refuses a revoked token at once; the cached
		// one accepts it until its entry (at most the TTL) ends.
		uncached, err := starter.NewKeystoneValidator(ctx, starter.KeystoneOptions{Auth: f.Gateway.Keystone.Auth.AuthOptions(), CacheTTL: -1})
		if err != nil {
			t.Fatal(err)
		}
		baseUncached := ksGateway(t, uncached, svc.Glance, host)
		tok, _ := ksToken(t, e, "demo", e.demoPW, projectScope(e.demoProjectName))
		cachedAt := time.Now() // the cached gateway keeps the token until at least cachedAt+ttl
		for _, b := range []string{base, baseUncached} {
			if status, body := ksCall(t, b, "GET", "/v1/volumes", tok, ""); status != http.StatusOK {
				t.Fatalf("fresh token: HTTP %d %s", status, body)
			}
		}
		// HTTP latency of one request: validated at Keystone, and from the cache.
		t0 := time.Now()
		ksCall(t, baseUncached, "GET", "/v1/volumes", tok, "")
		t1 := time.Now()
		ksCall(t, base, "GET", "/v1/volumes", tok, "")
		t.Logf("GET /v1/volumes: %v validating at keystone, %v with the token cached", t1.Sub(t0).Round(time.Microsecond), time.Since(t1).Round(time.Microsecond))

		if err := tokens.Revoke(ctx, demoIdentity, tok).Err; err != nil {
			t.Fatalf("revoke: %v", err)
		}
		revoked := time.Now()
		status, body := ksCall(t, baseUncached, "GET", "/v1/volumes", tok, "")
		requireAPIError(t, status, body, http.StatusUnauthorized, starter.CodeInvalidToken, "revoked")
		if status, _ := ksCall(t, base, "GET", "/v1/volumes", tok, ""); status != http.StatusOK && time.Since(cachedAt) < ttl-100*time.Millisecond {
			t.Fatalf("cached token right after revocation: HTTP %d, want 200 (still cached)", status)
		}
		for {
			status, body = ksCall(t, base, "GET", "/v1/volumes", tok, "")
			if status == http.StatusUnauthorized {
				requireAPIError(t, status, body, http.StatusUnauthorized, starter.CodeInvalidToken, "revoked")
				break
			}
			if time.Since(cachedAt) > ttl+2*time.Second {
				t.Fatalf("revoked token still accepted %v after revocation (cache TTL %v): HTTP %d", time.Since(revoked), ttl, status)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("revoked token: refused at once without the cache; with it, accepted until %v after revocation, %v after it was cached (TTL %v)",
			time.Since(revoked).Round(time.Millisecond), time.Since(cachedAt).Round(time.Millisecond), ttl)
		// demo's other token is untouched.
		if status, body := ksCall(t, base, "GET", "/v1/volumes", demoTok, ""); status != http.StatusOK {
			t.Fatalf("demo's first token after revoking another: HTTP %d %s", status, body)
		}
	})

	t.Run("keystone unreachable is a 503", func(t *testing.T) {
		// The validator reaches Keystone through a proxy, which then goes away.
		target, err := url.Parse(e.url)
		if err != nil {
			t.Fatal(err)
		}
		target.Path = ""
		proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
		auth := f.Gateway.Keystone.Auth.AuthOptions()
		auth.IdentityEndpoint = proxy.URL + "/v3"
		pv, err := starter.NewKeystoneValidator(ctx, starter.KeystoneOptions{Auth: auth, Timeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		b := ksGateway(t, pv, svc.Glance, host)
		if status, body := ksCall(t, b, "GET", "/v1/volumes", demoTok, ""); status != http.StatusOK {
			t.Fatalf("through the proxy: HTTP %d %s", status, body)
		}
		proxy.Close()
		status, body := ksCall(t, b, "GET", "/v1/volumes", otherTok, "")
		requireAPIError(t, status, body, http.StatusServiceUnavailable, starter.CodeAuthUnavailable, "keystone")
		_, err = volumes.List(cinderClient(b, e.otherProject, otherTok), volumes.ListOpts{}).AllPages(ctx)
		requireFault(t, err, http.StatusServiceUnavailable, "serviceUnavailable")
		// A token validated before is still served from the cache; the static token needs no Keystone.
		if status, body := ksCall(t, b, "GET", "/v1/volumes", demoTok, ""); status != http.StatusOK {
			t.Fatalf("cached token with keystone away: HTTP %d %s", status, body)
		}
		if status, body := ksCall(t, b, "GET", "/v1/volumes", testToken, ""); status != http.StatusOK {
			t.Fatalf("static token with keystone away: HTTP %d %s", status, body)
		}
	})

	hits, misses := v.CacheStats()
	t.Logf("gateway validator: %d validations from the cache, %d asked keystone", hits, misses)
	if hits == 0 || misses == 0 {
		t.Fatalf("cache hits %d, misses %d: want both", hits, misses)
	}
}
