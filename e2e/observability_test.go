//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
	"github.com/imagevol/imagevol/worker"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A host and a gateway wired as the commands wire them — one metrics registry, a Temporal client
// reporting the SDK's metrics into it, JSON logs — provision a miss and a hit. Then /metrics shows
// our counters and step durations and the SDK's metrics, the activities' log lines carry their
// workflow and host, and the status page lists the host, the cache entry and both provisions
// with links to their workflows; Chromium screenshots it (into docs/status-page.png with
// IMAGEVOL_UPDATE_DOCS=1, else into the test's temporary folder, so a test run leaves the tree
// as it was).
func TestObservability(t *testing.T) {
	host := "e2e-obs"
	reg := metrics.NewRegistry()
	tc, err := client.Dial(client.Options{
		HostPort: stack.frontend, Namespace: stack.namespace, MetricsHandler: reg.Temporal(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)

	logs := &lockedBuffer{}
	acts := &activities.Activities{
		Store: stack.store, Storage: stack.ceph, Images: stack.glance, Temporal: tc, Config: hostConfig(host),
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Metrics: reg,
	}
	ws, err := worker.Start(tc, acts, worker.Options{Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, w := range ws {
			w.Stop()
		}
	})
	gw := &starter.Gateway{
		Store: stack.store, Temporal: tc, Images: stack.glance,
		Tokens: map[string]string{testToken: "project-e2e", adminToken: "admin"}, TokenRoles: testRoles,
		Hosts: []string{host}, UIURL: "http://127.0.0.1:8233", Namespace: stack.namespace,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Metrics: reg,
	}
	srv := httptest.NewServer(gw.LogRequests(gw.Handler()))
	t.Cleanup(srv.Close)
	api := &apiClient{t: t, base: srv.URL}

	size := 12 * mib
	img := uploadImage(t, "observability", "raw", imageBytes(size, 91, 3))
	miss := api.createVolume(img.ID, 1)
	requireAvailable(t, miss, models.CacheMiss)
	hit := api.createVolume(img.ID, 1)
	requireAvailable(t, hit, models.CacheHit)
	// A volume is available a moment before its workflow completes (the worker counts the
	// completion then): wait for both runs to close before reading the SDK's counters.
	for _, id := range []string{miss.ID, hit.ID} {
		if err := stack.temporal.GetWorkflow(context.Background(), id, "").Get(context.Background(), nil); err != nil {
			t.Fatalf("provision %s: %v", id, err)
		}
	}
	page := get(t, srv.URL+"/metrics")
	for deadline := time.Now().Add(10 * time.Second); sample(t, page, "temporal_workflow_completed_total", `workflow_type="CreateVolumeFromImage"`) < 2 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		page = get(t, srv.URL+"/metrics")
	}

	// Prometheus metrics.
	hostLabel := fmt.Sprintf(`host=%q`, host)
	for name, want := range map[string]float64{
		"imagevol_cache_hits_total":       1,
		"imagevol_cache_misses_total":     1,
		"imagevol_downloads_total":        1,
		"imagevol_downloaded_bytes_total": float64(size),
		"imagevol_imported_bytes_total":   float64(size),
	} {
		if got := sample(t, page, name, hostLabel); got != want {
			t.Errorf("%s{%s} = %v, want %v", name, hostLabel, got, want)
		}
	}
	// The miss clones in a step of its own; the hit's one local step looks up and clones, and
	// the miss looked up in it too.
	if n := sample(t, page, "imagevol_step_duration_seconds_count", hostLabel, `activity="CloneVolume"`, `outcome="ok"`); n < 1 {
		t.Errorf("CloneVolume step histogram has %v samples, want ≥ 1 (the miss)", n)
	}
	if n := sample(t, page, "imagevol_step_duration_seconds_count", hostLabel, `activity="ProvisionFromCache"`, `outcome="ok"`); n < 2 {
		t.Errorf("ProvisionFromCache step histogram has %v samples, want ≥ 2 (a miss and a hit)", n)
	}
	if n := sample(t, page, "imagevol_step_duration_seconds_count", hostLabel, `activity="SetVolumeState"`, `outcome="ok"`); n < 1 {
		t.Errorf("local activity SetVolumeState not timed: %v samples", n)
	}
	if n := sample(t, page, "imagevol_cache_entries", hostLabel, `state="ready"`); n != 1 {
		t.Errorf("imagevol_cache_entries{%s,state=ready} = %v, want 1", hostLabel, n)
	}
	if n := sample(t, page, "imagevol_cache_bytes", hostLabel); n != float64(size) {
		t.Errorf("imagevol_cache_bytes{%s} = %v, want %d", hostLabel, n, size)
	}
	if !regexp.MustCompile(`(?m)^imagevol_provisions_in_flight \d+$`).MatchString(page) {
		t.Error("imagevol_provisions_in_flight missing")
	}
	// The SDK's own: requests of the client, and the workflows its workflow worker completed.
	if n := sample(t, page, "temporal_request_total", `operation="StartWorkflowExecution"`); n < 2 {
		t.Errorf("temporal_request_total{operation=StartWorkflowExecution} = %v, want ≥ 2", n)
	}
	if n := sample(t, page, "temporal_workflow_completed_total", `workflow_type="CreateVolumeFromImage"`); n < 2 {
		t.Errorf("temporal_workflow_completed_total{workflow_type=CreateVolumeFromImage} = %v, want ≥ 2", n)
	}
	if !strings.Contains(page, "temporal_activity_execution_latency_seconds_bucket{") {
		t.Error("the SDK's timers are not exposed as histograms in seconds")
	}

	// Every activity line says which workflow and host it is about.
	activityLines := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		if line["activity"] == nil {
			continue
		}
		activityLines++
		if line["workflow_id"] == nil || line["host"] != host {
			t.Errorf("activity log line without workflow_id or host %s: %s", host, sc.Text())
		}
		if wf, _ := line["workflow_id"].(string); (wf == miss.ID || wf == hit.ID) && line["volume_id"] != wf {
			t.Errorf("provision's log line without its volume_id: %s", sc.Text())
		}
	}
	if activityLines == 0 {
		t.Error("no activity logged a line")
	}
	if !strings.Contains(logs.String(), `"volume_id":"`+miss.ID+`"`) {
		t.Errorf("the gateway's request log has no line for volume %s", miss.ID)
	}

	// The status page: an operator's.
	status := getWith(t, srv.URL+"/", adminToken)
	for _, want := range []string{
		host, "polling (", img.ID, miss.ID, hit.ID,
		fmt.Sprintf(`href="http://127.0.0.1:8233/namespaces/%s/workflows/%s"`, stack.namespace, miss.ID),
		fmt.Sprintf(`href="http://127.0.0.1:8233/namespaces/%s/workflows/%s"`, stack.namespace, hit.ID),
	} {
		if !strings.Contains(status, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(status, "project-e2e") {
		t.Error("the status page shows a project")
	}
	// Without a token: counts only (TestAnonymousSurface checks it in detail).
	anonymous := get(t, srv.URL+"/")
	for _, secret := range []string{host, img.ID, miss.ID, hit.ID} {
		if strings.Contains(anonymous, secret) {
			t.Errorf("the anonymous status page shows %q", secret)
		}
	}
	if resp, err := http.Post(srv.URL+"/", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %v %v, want 405", resp.Status, err)
	}

	shot := filepath.Join(t.TempDir(), "status-page.png")
	if os.Getenv("IMAGEVOL_UPDATE_DOCS") == "1" {
		shot = filepath.Join("..", "docs", "status-page.png")
	}
	// Chromium cannot send a header: a server in front adds the operator's token.
	asAdmin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("X-Auth-Token", adminToken)
		gw.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(asAdmin.Close)
	screenshot(t, asAdmin.URL+"/", shot)
}

func get(t *testing.T, url string) string {
	t.Helper()
	return getWith(t, url, "")
}

// getWith GETs url with token in X-Auth-Token (none when empty) and fails the test unless the
// answer is 200.
func getWith(t *testing.T, url, token string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	// As a browser asks: "/" serves API clients Cinder's version document instead of the page.
	req.Header.Set("Accept", "text/html,*/*;q=0.8")
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body)
}

// sample sums the values of a metric's samples whose labels include every one of labels.
func sample(t *testing.T, page, name string, labels ...string) float64 {
	t.Helper()
	sum, found := 0.0, false
	for _, line := range strings.Split(page, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(rest, l)
		}
		if !matches {
			continue
		}
		v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		t.Errorf("no %s sample with %v", name, labels)
	}
	return sum
}

// screenshot saves a PNG of url as headless Chromium renders it.
func screenshot(t *testing.T, url, file string) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): run deploy/install-deps.sh chromium", err)
	}
	out, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--window-size=1400,900", "--screenshot="+out, url)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v: %s", err, msg)
	}
	png, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10_000 {
		t.Fatalf("%s is not a screenshot: %d bytes", out, len(png))
	}
	t.Logf("status page screenshot: %s (%d bytes)", out, len(png))
}
