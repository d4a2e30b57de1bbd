package starter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/imagevol/imagevol/contract"
)

var requestIDForm = regexp.MustCompile(`^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Every answer carries its own request ID: successes, refusals and errors, on every API; one the
// client sends is not taken as the request's (Cinder makes its own).
func TestRequestIDOnEveryAnswer(t *testing.T) {
	g, tokens := policyGateway(t)
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	reader := map[string]string{"X-Auth-Token": tokens[RoleReader]}
	const theirs = "req-00000000-0000-4000-8000-000000000001"
	cases := []struct {
		name, path string
		header     map[string]string
		status     int
	}{
		{"cinder list", "/v3/p/volumes/detail", reader, http.StatusOK},
		{"cinder without a token", "/v3/p/volumes/detail", nil, http.StatusUnauthorized},
		{"cinder not found", "/v3/p/volumes/nothing-here/x", reader, http.StatusNotFound},
		{"cinder microversion not served", "/v3/p/volumes/detail", map[string]string{"X-Auth-Token": tokens[RoleReader], APIVersionHeader: "volume 3.99"}, http.StatusNotAcceptable},
		{"cinder forbidden", "/v3/p/volumes/detail", map[string]string{"X-Auth-Token": tokens[RoleNone]}, http.StatusForbidden},
		{"v1 list", "/v1/volumes", reader, http.StatusOK},
		{"v1 without a token", "/v1/volumes", nil, http.StatusUnauthorized},
		{"v1 not found", "/v1/nothing", reader, http.StatusNotFound},
		{"discovery", "/", nil, http.StatusMultipleChoices},
		{"v3 discovery", "/v3/", nil, http.StatusOK},
		{"openapi", "/openapi.json", nil, http.StatusOK},
		{"the client's own ID", "/v3/p/volumes/detail", map[string]string{"X-Auth-Token": tokens[RoleReader], RequestIDHeader: theirs}, http.StatusOK},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := get(t, srv, c.path, c.header)
			if resp.StatusCode != c.status {
				t.Fatalf("GET %s: HTTP %d %s, want %d", c.path, resp.StatusCode, body, c.status)
			}
			id := resp.Header.Get(RequestIDHeader)
			if !requestIDForm.MatchString(id) || id == theirs {
				t.Fatalf("%s %q, want a req-<uuid> of the gateway's", RequestIDHeader, id)
			}
			if len(resp.Header.Values(RequestIDHeader)) != 1 {
				t.Errorf("%s given %d times", RequestIDHeader, len(resp.Header.Values(RequestIDHeader)))
			}
			if seen[id] {
				t.Errorf("request ID %s given twice", id)
			}
			seen[id] = true
		})
	}
}

// LogRequests gives the request its ID, so that a handler in front of Handler (the limiter)
// answers with it too, names it in the request's line, and Handler keeps it rather than making
// another; a well-formed ID of the caller's is logged as its global request ID.
func TestRequestIDLogged(t *testing.T) {
	g, tokens := policyGateway(t)
	var logs bytes.Buffer
	g.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	const theirs = "req-00000000-0000-4000-8000-000000000002"
	for _, h := range []http.Handler{
		g.LogRequests(g.Handler()),
		g.LogRequests(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeCinderError(w, apiErr(http.StatusTooManyRequests, CodeTooManyAuthFailures, "slow down"))
		})),
	} {
		logs.Reset()
		req := httptest.NewRequest(http.MethodGet, "/v3/p/volumes/detail", nil)
		req.Header.Set("X-Auth-Token", tokens[RoleReader])
		req.Header.Set(RequestIDHeader, theirs)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		id := rec.Header().Get(RequestIDHeader)
		if !requestIDForm.MatchString(id) || len(rec.Header().Values(RequestIDHeader)) != 1 {
			t.Fatalf("HTTP %d: %s %v", rec.Code, RequestIDHeader, rec.Header().Values(RequestIDHeader))
		}
		found := false
		sc := bufio.NewScanner(&logs)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
			if line["msg"] == "request" {
				found = true
				if line["request_id"] != id || line["global_request_id"] != theirs {
					t.Errorf("log line %s: want request_id %s, global_request_id %s", sc.Bytes(), id, theirs)
				}
			}
		}
		if !found {
			t.Fatalf("no request line in %s", logs.String())
		}
	}
}

// A caller's ID that is not of the form req-<uuid> is not logged as its global ID.
func TestMalformedGlobalRequestIDIgnored(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set(RequestIDHeader, "req-not-a-uuid\nforged=1")
	r := withRequestID(httptest.NewRecorder(), req)
	attrs := requestAttrs(r.Context())
	if len(attrs) != 2 || attrs[0] != "request_id" || attrs[1] != RequestIDOf(r.Context()) {
		t.Fatalf("attrs %v", attrs)
	}
}

// A provision's run carries the ID of the request that started it in its memo.
func TestProvisionOptionsMemo(t *testing.T) {
	r := withRequestID(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v3/p/volumes", nil))
	opts := provisionOptions(r.Context(), "vol-1", "node1")
	if opts.ID != "vol-1" || opts.TaskQueue != contract.HostQueue("node1") {
		t.Fatalf("options %+v are not contract.ProvisionOptions'", opts)
	}
	if got := opts.Memo[contract.MemoRequestID]; got != RequestIDOf(r.Context()) || got == "" {
		t.Fatalf("memo %v, want %s: %s", opts.Memo, contract.MemoRequestID, RequestIDOf(r.Context()))
	}
	if opts := provisionOptions(context.Background(), "vol-2", "node1"); opts.Memo != nil {
		t.Fatalf("memo %v outside a request", opts.Memo)
	}
}

// The request's trace span names its request ID (and the caller's global one), so that the
// trace of an answer is found from the ID a client reports.
func TestRequestIDOnTraceSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	const global = "req-0f0e0d0c-0b0a-4908-8706-050403020100"
	h := RequestIDs(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	r := httptest.NewRequest(http.MethodGet, "/v3/", nil)
	r.Header.Set(RequestIDHeader, global)
	ctx, span := tp.Tracer("test").Start(r.Context(), "GET /v3/")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r.WithContext(ctx))
	span.End()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1", len(spans))
	}
	got := map[string]string{}
	for _, kv := range spans[0].Attributes() {
		got[string(kv.Key)] = kv.Value.AsString()
	}
	if id := w.Header().Get(RequestIDHeader); id == "" || got["openstack.request_id"] != id {
		t.Errorf("span attributes %v; want openstack.request_id = the answer's %q", got, id)
	}
	if got["openstack.global_request_id"] != global {
		t.Errorf("span attributes %v; want openstack.global_request_id %q", got, global)
	}
}
