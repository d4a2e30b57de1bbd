// Command imagevol-worker runs the Temporal workers of one storage host: the steps that touch
// its Ceph pool on the queue imagevol.host.<host>, and workflow tasks on the shared queue. With
// --metrics-listen (IMAGEVOL_METRICS_LISTEN) it serves Prometheus metrics at /metrics there, and
// its health at /healthz: 200 while the workers run, 503 once they are stopping.
//
//	imagevol-worker replay [--address HOST:PORT] [--namespace NS] [--run RUN] [--save FILE] VOLUME
//	imagevol-worker replay --file HISTORY.json
//
// replays a volume's workflow history against this binary's workflow code instead, and exits 1
// if the code is no longer deterministic. It talks to Temporal only (IMAGEVOL_TEMPORAL_ADDRESS,
// IMAGEVOL_TEMPORAL_NAMESPACE, IMAGEVOL_TEMPORAL_TLS_*), and needs no Ceph and no database.
//
// It imports worker, activities, config, metrics, tracing, cmd/internal/cli and storage/librbd
// (the only binary with librados), never the Temporal server (cmd/deps_test.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/cmd/internal/cli"
	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/storage/librbd"
	"github.com/imagevol/imagevol/tracing"
	"github.com/imagevol/imagevol/worker"
)

func main() {
	// --version answers before anything else: no config read, nothing dialled.
	if cli.PrintVersion(os.Stdout, "imagevol-worker", os.Args[1:]) {
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "replay" {
		if err := replay(context.Background(), os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "imagevol-worker replay:", err)
			os.Exit(1)
		}
		return
	}
	logger := newLogger(os.Stderr)
	slog.SetDefault(logger)
	if err := run(logger); err != nil {
		logger.Error("worker failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	// Defaults < config file (--config or IMAGEVOL_CONFIG) < environment < flags.
	file, err := config.Load(flag.CommandLine, os.Args[1:], "worker", "metrics")
	if err != nil {
		return err
	}
	common, cfg := file.Common(), file.Worker

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The activities add the host to their own lines (a.log); everything else gets it here.
	actLogger := logger
	logger = logger.With("host", cfg.Host)

	// A worker that cannot confine qemu-img does not start: conversions never run unconfined
	// unless the sandbox is turned off explicitly.
	conv, err := activities.NewConverter(cfg)
	if err != nil {
		return err
	}
	if err := conv.Check(ctx); err != nil {
		return err
	}
	if conv.Sandboxed() {
		logger.Info("qemu-img runs sandboxed", "max_concurrent_conversions", cfg.MaxConcurrentConversions,
			"cpu_time", cfg.SandboxCPUTime.String(), "memory_mb", cfg.SandboxMemoryMB)
	} else {
		logger.Warn("qemu-img runs WITHOUT its sandbox (worker.sandbox.enabled is false): a crafted image could read the worker's files")
	}

	reg := metrics.NewRegistry()
	// 503 until the workers poll (after Temporal, the database and Ceph were reached), 200 while
	// they do, 503 again once they stop.
	health := &worker.Health{}
	if file.Metrics.Listen != "" {
		stopMetrics, err := serveMetrics(file.Metrics.Listen, reg, health, logger)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	tracer, err := tracing.Start(ctx, file.Tracing.For("imagevol-worker"))
	if err != nil {
		return err
	}
	defer tracer.Close(logger)
	common.Interceptors = tracer.ClientInterceptors()
	svc, err := common.Connect(ctx, logger, reg.Temporal())
	if err != nil {
		return err
	}
	defer svc.Close()
	cluster, err := librbd.ConnectAs(cfg.CephConf, cfg.CephUser, cfg.CephKeyring)
	if err != nil {
		return err
	}
	defer cluster.Close()
	cephUser := cfg.CephUser
	if cephUser == "" {
		cephUser = "admin"
	}
	cephAddr, err := cluster.ClientAddr()
	if err != nil {
		logger.Warn("no Ceph client address: a successor cannot fence this worker after a crash", "err", err)
	}
	logger.Info("connected to ceph", "ceph_user", "client."+cephUser, "pool", cfg.Pool, "ceph_addr", cephAddr)
	fsid, err := cluster.FSID()
	if err != nil {
		return err
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = fsid
	}
	fence := func(addr string) error { return cluster.Blocklist(addr, 3600) }
	machine, _ := os.Hostname()
	acts := &activities.Activities{Store: svc.Store, Storage: cluster, Images: svc.Glance, Temporal: svc.Temporal, Config: cfg, Logger: actLogger, Metrics: reg,
		Converter: conv, FSID: fsid, Identity: worker.HostIdentity(cfg.Host, machine, os.Getpid(), cephAddr),
		FenceWriter: worker.DeadWriterFence(cfg.Host, machine, os.Getpid(), fence, logger)}
	return worker.Run(ctx, svc.Temporal, acts, worker.Options{Metrics: reg, MaxConcurrentActivities: cfg.MaxConcurrentActivities, Namespace: common.Namespace,
		CephAddr: cephAddr, Fence: fence, Health: health})
}

// serveMetrics serves reg at addr/metrics and health at addr/healthz until the returned function
// is called. The listener is opened here, so a taken port fails the start rather than going
// unnoticed.
func serveMetrics(addr string, reg *metrics.Registry, health http.Handler, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", reg.Handler())
	mux.Handle("GET /healthz", health)
	// Scrapes are short: a client that holds a connection longer is cut off.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "err", err)
		}
	}()
	logger.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// newLogger logs JSON for log collectors, or text for a person when w is a terminal.
func newLogger(w *os.File) *slog.Logger {
	if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}
