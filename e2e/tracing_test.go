//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
	"github.com/imagevol/imagevol/tracing"
	"github.com/imagevol/imagevol/worker"
)

// span is the part of a span, as the stdout exporter writes it, that the test reads.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
}

// TestTracingFromRequestThroughEveryActivity runs a gateway and a storage host with tracing on
// (the stdout exporter, to a file) and checks that a miss makes one trace from the HTTP request
// through the provision, the cache fill it joins and every activity of both.
func TestTracingFromRequestThroughEveryActivity(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "spans.json")
	tr, err := tracing.Start(ctx, tracing.Config{Exporter: tracing.ExporterStdout, File: file, ServiceName: "imagevol-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	tc, err := client.NewClientFromExisting(stack.temporal, client.Options{
		Namespace: stack.namespace, Interceptors: tr.ClientInterceptors(), Logger: sdklog.NewStructuredLogger(quiet),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()

	host := "traced"
	acts := &activities.Activities{
		Store: stack.store, Storage: stack.ceph, Images: stack.glance, Temporal: tc, Config: hostConfig(host),
		Logger: quiet,
	}
	ws, err := worker.Start(tc, acts, worker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gw := &starter.Gateway{
		Store: stack.store, Temporal: tc, Images: stack.glance, Tokens: map[string]string{testToken: "project-e2e"}, TokenRoles: testRoles,
		Hosts: []string{host}, Namespace: stack.namespace, ProvisionTimeout: 30 * time.Minute,
		Logger: quiet,
	}
	srv := httptest.NewServer(tr.Handler(gw.Handler()))
	defer srv.Close()
	api := &apiClient{t: t, base: srv.URL}

	img := uploadImage(t, "traced", "raw", imageBytes(64*mib, 91, 2))
	v := api.createVolume(img.ID, 1)
	requireAvailable(t, v, models.CacheMiss)
	for _, w := range ws {
		w.Stop()
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("flush spans: %v", err)
	}

	spans := readSpans(t, file)
	var root *span
	for i := range spans {
		if spans[i].Name == "POST /v1/volumes" {
			root = &spans[i]
		}
	}
	if root == nil {
		t.Fatalf("no span of the create request among %d spans", len(spans))
	}
	trace := map[string]span{}
	for _, s := range spans {
		if s.SpanContext.TraceID == root.SpanContext.TraceID {
			trace[s.SpanContext.SpanID] = s
		}
	}
	var names []string
	for _, s := range trace {
		names = append(names, s.Name)
		// Every span but the request's hangs from another span of the same trace.
		if s.SpanContext.SpanID != root.SpanContext.SpanID {
			if _, ok := trace[s.Parent.SpanID]; !ok {
				t.Errorf("span %q: parent %s is not in the trace", s.Name, s.Parent.SpanID)
			}
		}
	}
	want := []string{
		"POST /v1/volumes", "StartWorkflow:CreateVolumeFromImage", "RunWorkflow:CreateVolumeFromImage",
		"RunActivity:ProvisionFromCache", "RunActivity:RegisterFillWaiter",
		"SignalWithStartWorkflow:" + contract.FillWorkflow, "RunWorkflow:" + contract.FillWorkflow,
		"RunActivity:EvictLRU", "RunActivity:DownloadImage", "RunActivity:ImportImage", "RunActivity:CloneToCache",
		"RunActivity:CloneVolume", "RunActivity:ExtendVolume", "RunActivity:SetVolumeState",
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("trace %s has no span %q", root.SpanContext.TraceID, w)
		}
	}
	t.Logf("trace %s of volume %s: %d spans\n%s", root.SpanContext.TraceID, v.ID, len(trace), spanTree(trace, root.SpanContext.SpanID, 0))
}

// readSpans decodes the exporter's file: one JSON object per span.
func readSpans(t *testing.T, file string) []span {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []span
	dec := json.NewDecoder(f)
	for {
		var s span
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("spans file: %v", err)
		}
		out = append(out, s)
	}
}

// spanTree renders the spans below id, indented by depth, children in name order.
func spanTree(trace map[string]span, id string, depth int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s\n", strings.Repeat("  ", depth), trace[id].Name)
	var kids []span
	for _, s := range trace {
		if s.Parent.SpanID == id && s.SpanContext.SpanID != id {
			kids = append(kids, s)
		}
	}
	slices.SortFunc(kids, func(a, b span) int { return strings.Compare(a.Name, b.Name) })
	for _, k := range kids {
		b.WriteString(spanTree(trace, k.SpanContext.SpanID, depth+1))
	}
	return b.String()
}
