package starter

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/imagevol/imagevol/models"
)

// unreachableTemporal is a Temporal client of a frontend that is not there (nothing listens on
// port 1): every call fails, as when Temporal is down.
func unreachableTemporal(t *testing.T) client.Client {
	t.Helper()
	c, err := client.NewLazyClient(client.Options{HostPort: "127.0.0.1:1", Logger: sdklog.NewStructuredLogger(quietLogger())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// sqliteStore is an embedded database of the test's own.
func sqliteStore(t *testing.T) *models.Store {
	t.Helper()
	s, err := models.Open(context.Background(), "", filepath.Join(t.TempDir(), "imagevol.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Anonymous callers of "/" get counts only; the request with an operator's token in a header
// gets the hosts by name, the cache entries and the provisions with their image IDs.
func TestStatusPageAnonymousAndAdmin(t *testing.T) {
	ctx := context.Background()
	store := sqliteStore(t)
	const (
		volID      = "0b7c3f4e-0000-4000-8000-00000000c0de"
		imageID    = "5e1f2a3b-0000-4000-8000-0000000face1"
		cacheVolID = "9a8b7c6d-0000-4000-8000-00000000cace"
		host       = "storage-host-a"
		adminToken = "tok-operator"
	)
	if err := store.CreateVolume(ctx, &models.Volume{ID: volID, ProjectID: "project-a", Name: "db-disk", SizeGB: 2,
		ImageID: imageID, Host: host, Status: models.StatusCreating, WorkflowID: volID}); err != nil {
		t.Fatal(err)
	}
	if err := store.InsertCacheEntry(ctx, &models.CacheEntry{Host: host, Pool: "volumes", ImageID: imageID,
		ImageUpdatedAt: time.Now(), ContentHash: "sha512:ab", VolumeID: cacheVolID, Size: 1, SizeBytes: 3 << 20,
		LastUsed: time.Now(), State: models.EntryReady}); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{Store: store, Temporal: unreachableTemporal(t), Hosts: []string{host}, Logger: quietLogger(),
		Tokens: map[string]string{adminToken: "admin", "tok-member": "project-a"}, TokenRoles: map[string]Role{adminToken: RoleAdmin},
		UIURL: "http://temporal-ui.internal:8233"}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)

	page := func(t *testing.T, path string, header map[string]string) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		// As a browser asks for it: API clients get the version document at "/".
		req.Header.Set("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
		}
		return string(body)
	}
	// What only operators may see: IDs, the host's name, Temporal's addresses and error texts.
	secret := []string{volID, imageID, cacheVolID, host, "temporal-ui.internal", "127.0.0.1:1", "project-a", "db-disk"}

	anonymous := map[string]struct {
		path   string
		header map[string]string
	}{
		"no token":                   {"/", nil},
		"a member's token":           {"/", map[string]string{"X-Auth-Token": "tok-member"}},
		"admin token in the query":   {"/?token=" + adminToken + "&X-Auth-Token=" + adminToken, nil},
		"admin token in a cookie":    {"/", map[string]string{"Cookie": "X-Auth-Token=" + adminToken + "; token=" + adminToken}},
		"admin token without Bearer": {"/", map[string]string{"Authorization": adminToken}},
	}
	for name, c := range anonymous {
		t.Run(name, func(t *testing.T) {
			body := page(t, c.path, c.header)
			for _, s := range secret {
				if strings.Contains(body, s) {
					t.Errorf("the anonymous page shows %q", s)
				}
			}
			for _, want := range []string{
				"1 volumes in 1 projects", "1 provisions in flight", "<b>1</b>hosts", "<b>1</b>ready entries", "3.0 MiB",
				"unknown (Temporal did not answer)", "shown with an operator's token",
			} {
				if !strings.Contains(body, want) {
					t.Errorf("the anonymous page lacks %q", want)
				}
			}
		})
	}
	for name, header := range map[string]map[string]string{
		"X-Auth-Token": {"X-Auth-Token": adminToken},
		"Bearer":       {"Authorization": "Bearer " + adminToken},
	} {
		t.Run("admin by "+name, func(t *testing.T) {
			body := page(t, "/", header)
			for _, want := range []string{volID, imageID, cacheVolID, host, "http://temporal-ui.internal:8233/namespaces/default/workflows/" + volID} {
				if !strings.Contains(body, want) {
					t.Errorf("the operator's page lacks %q", want)
				}
			}
			for _, s := range []string{"project-a", "db-disk"} {
				if strings.Contains(body, s) {
					t.Errorf("the operator's page shows %q (names and projects are never shown)", s)
				}
			}
		})
	}
}

// /healthz says what is down, never why: the reasons go to the log.
func TestHealthzHidesErrors(t *testing.T) {
	store := sqliteStore(t)
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	logs := &strings.Builder{}
	g := &Gateway{Store: store, Temporal: unreachableTemporal(t), Logger: slog.New(slog.NewTextHandler(logs, nil))}
	rec := httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
	var h Health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	if h.Status != "unavailable" || len(h.Checks) != 2 || h.Checks["database"] != "down" || h.Checks["temporal"] != "down" {
		t.Errorf("answer %s", rec.Body)
	}
	for _, leak := range []string{"closed", "127.0.0.1", "sql", "dial"} {
		if strings.Contains(rec.Body.String(), leak) {
			t.Errorf("answer %s shows %q", rec.Body, leak)
		}
	}
	if !strings.Contains(logs.String(), "database is closed") {
		t.Errorf("the database's error is not logged: %s", logs)
	}
}

// The writers the gateway wraps a response in (request log, rate limiter) let a handler set its
// own deadlines, as allowWait does for requests that wait on a workflow.
func TestDeadlinesReachTheConnection(t *testing.T) {
	g := &Gateway{Logger: quietLogger()}
	errc := make(chan error, 2)
	h := g.LogRequests(NewAuthFailureLimiter(10).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		until := time.Now().Add(time.Hour)
		errc <- rc.SetReadDeadline(until)
		errc <- rc.SetWriteDeadline(until)
	})))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for range 2 {
		if err := <-errc; err != nil {
			t.Errorf("set deadline through the wrappers: %v", err)
		}
	}
}
