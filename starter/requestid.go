package starter

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader names the ID of a request in its answer, as every OpenStack service does.
const RequestIDHeader = "X-OpenStack-Request-Id"

// globalRequestID is the form of an ID another OpenStack service sent as RequestIDHeader: Cinder
// (oslo.middleware) never takes it as the request's own ID, but keeps it as the "global" request
// ID that ties the calls of one operation across services together.
var globalRequestID = regexp.MustCompile(`^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// requestIDs are the IDs of a request, kept in its context.
type requestIDs struct {
	local  string // req-<uuid>, made by the gateway
	global string // the caller's, when it sent a well-formed one
}

type requestIDKey struct{}

// RequestIDOf is the ID the gateway gave the request of ctx ("" outside a request).
func RequestIDOf(ctx context.Context) string {
	ids, _ := ctx.Value(requestIDKey{}).(requestIDs)
	return ids.local
}

// withRequestID gives r an ID, unless a handler in front of this one already did: it is put in
// r's context and in the answer's RequestIDHeader before anything is written, so every answer,
// errors included, carries it.
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	if RequestIDOf(r.Context()) != "" {
		return r
	}
	ids := requestIDs{local: "req-" + uuid.NewString()}
	if in := r.Header.Get(RequestIDHeader); globalRequestID.MatchString(in) {
		ids.global = in
	}
	w.Header().Set(RequestIDHeader, ids.local)
	// The request's trace span (when tracing is on) carries the IDs too, so a trace is found
	// from the ID a client reports.
	span := trace.SpanFromContext(r.Context())
	span.SetAttributes(attribute.String("openstack.request_id", ids.local))
	if ids.global != "" {
		span.SetAttributes(attribute.String("openstack.global_request_id", ids.global))
	}
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, ids))
}

// RequestIDs gives every request next serves an ID (withRequestID).
func RequestIDs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, withRequestID(w, r))
	})
}

// requestAttrs are the log attributes naming the request of ctx, if any.
func requestAttrs(ctx context.Context) []any {
	ids, ok := ctx.Value(requestIDKey{}).(requestIDs)
	if !ok {
		return nil
	}
	attrs := []any{"request_id", ids.local}
	if ids.global != "" {
		attrs = append(attrs, "global_request_id", ids.global)
	}
	return attrs
}

// logCtx is the gateway's logger, its lines naming the request of ctx when there is one.
func (g *Gateway) logCtx(ctx context.Context) *slog.Logger {
	if attrs := requestAttrs(ctx); attrs != nil {
		return g.log().With(attrs...)
	}
	return g.log()
}
