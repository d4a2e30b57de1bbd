// Package tracing sets up OpenTelemetry tracing for imagevol's processes: the Temporal SDK's
// tracing interceptor on clients and workers, so that one trace runs from the gateway's HTTP
// request through the workflow, the cache fill it joins and every activity, and an exporter
// (OTLP over gRPC, or JSON lines to a file or standard output). Tracing is off by default.
//
// It imports none of imagevol's packages.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"
	"go.temporal.io/sdk/interceptor"
)

// Exporters.
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout" // JSON, one span per line, to File or standard output
	ExporterOTLP   = "otlp"   // OTLP over gRPC to Endpoint
)

// Config says where spans go.
type Config struct {
	// The tags declare the settings tracing.* of package config.
	Exporter string `key:"exporter" env:"IMAGEVOL_TRACING_EXPORTER" default:"none" help:"where spans go: none (or empty), stdout or otlp"`
	Endpoint string `key:"endpoint" env:"IMAGEVOL_TRACING_ENDPOINT" check:"hostport?" help:"otlp: the collector's host:port"`
	Insecure bool   `key:"insecure" env:"IMAGEVOL_TRACING_INSECURE" default:"false" help:"otlp: plain-text gRPC (a collector beside the process)"`
	File     string `key:"file" env:"IMAGEVOL_TRACING_FILE" help:"stdout: the file to append spans to; empty: standard output"`
	// ServiceName names the process in every span (service.name); set by the command.
	ServiceName string
}

// For is the configuration for the process named service.
func (c Config) For(service string) Config {
	c.ServiceName = service
	return c
}

// Enabled reports whether spans are exported at all.
func (c Config) Enabled() bool { return c.Exporter != "" && c.Exporter != ExporterNone }

// Validate checks the exporter's name and settings.
func (c Config) Validate() error {
	switch c.Exporter {
	case "", ExporterNone, ExporterStdout:
		return nil
	case ExporterOTLP:
		if c.Endpoint == "" {
			return errors.New("tracing: the otlp exporter needs an endpoint (host:port)")
		}
		return nil
	}
	return fmt.Errorf("tracing: unknown exporter %q (want none, stdout or otlp)", c.Exporter)
}

// Tracing is a process's tracer provider and the Temporal interceptor that uses it. The zero
// value (tracing off) is ready to use: it adds no interceptor and wraps no handler.
type Tracing struct {
	provider    *sdktrace.TracerProvider
	interceptor interceptor.Interceptor
	out         io.Closer
}

// Start builds the exporter and the tracer provider. With tracing off it returns a zero
// Tracing.
func Start(ctx context.Context, cfg Config) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return &Tracing{}, nil
	}
	t := &Tracing{}
	var exp sdktrace.SpanExporter
	switch cfg.Exporter {
	case ExporterStdout:
		var w io.Writer = os.Stdout
		if cfg.File != "" {
			f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, fmt.Errorf("tracing: %w", err)
			}
			w, t.out = f, f
		}
		e, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			t.close()
			return nil, fmt.Errorf("tracing: stdout exporter: %w", err)
		}
		exp = e
	case ExporterOTLP:
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		// The exporter connects lazily: a collector that is down costs spans, not the process.
		e, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
		}
		exp = e
	}
	name := cfg.ServiceName
	if name == "" {
		name = "imagevol"
	}
	t.provider = sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", name))),
	)
	ic, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{Tracer: t.provider.Tracer("imagevol")})
	if err != nil {
		_ = t.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: temporal interceptor: %w", err)
	}
	t.interceptor = ic
	return t, nil
}

// ClientInterceptors are the interceptors of the process's Temporal client. Workers made from
// that client take them too, so workflows and activities continue the caller's trace.
func (t *Tracing) ClientInterceptors() []interceptor.ClientInterceptor {
	if t == nil || t.interceptor == nil {
		return nil
	}
	return []interceptor.ClientInterceptor{t.interceptor}
}

// Handler wraps an HTTP handler so that every request is a span (continuing a caller's W3C
// trace context), under which the workflows it starts are traced.
func (t *Tracing) Handler(h http.Handler) http.Handler {
	if t == nil || t.provider == nil {
		return h
	}
	return otelhttp.NewHandler(h, "gateway",
		otelhttp.WithTracerProvider(t.provider),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
	)
}

// Shutdown flushes the spans still buffered and closes the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.provider == nil {
		return nil
	}
	err := t.provider.Shutdown(ctx)
	return errors.Join(err, t.close())
}

// Close is Shutdown within 10 s, for a deferred call at the end of a process: spans that could
// not be flushed are logged, not returned.
func (t *Tracing) Close(logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		logger.Warn("tracing: spans not flushed", "err", err)
	}
}

func (t *Tracing) close() error {
	if t.out == nil {
		return nil
	}
	return t.out.Close()
}
