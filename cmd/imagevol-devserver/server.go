package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	"github.com/temporalio/ui-server/v2/server/server_options"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/metrics"
	"go.temporal.io/server/common/persistence/sql"
	"go.temporal.io/server/common/persistence/sql/sqlplugin"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/common/resolver"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/imagevol/imagevol/devtemporal"
	"github.com/imagevol/imagevol/searchattr"
)

const (
	// clusterName is the name of the single local cluster.
	clusterName = "active"
	// readyTimeout bounds the wait for the frontend to serve the namespace.
	readyTimeout = 60 * time.Second
	// uiStopTimeout bounds the wait for the UI goroutine after Stop.
	uiStopTimeout = 5 * time.Second
	// pollInterval is the pause between readiness probes.
	pollInterval = 100 * time.Millisecond
	// workflowServiceName is the gRPC health-check service name of the
	// frontend's WorkflowService.
	workflowServiceName = "temporal.api.workflowservice.v1.WorkflowService"
)

// run starts the server and the UI, reports readiness and blocks until ctx
// is cancelled, then stops both. started is the process start time used for
// the startup duration in the ready line.
func run(ctx context.Context, opts options, logger *slog.Logger, started time.Time) error {
	dbPath, err := filepath.Abs(opts.dbPath)
	if err != nil {
		return fmt.Errorf("resolve --db: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o755); err != nil {
		return fmt.Errorf("create database directory: %w", err)
	}

	// Clients need a concrete address even when binding to a wildcard.
	connectIP := opts.ip
	if ip := net.ParseIP(opts.ip); ip.IsUnspecified() {
		connectIP = "127.0.0.1"
		if ip.To4() == nil {
			connectIP = "::1"
		}
	}
	frontend := net.JoinHostPort(connectIP, strconv.Itoa(opts.port))

	cfg, err := serverConfig(opts, dbPath, connectIP)
	if err != nil {
		return err
	}
	sqlCfg := cfg.Persistence.DataStores[sqliteplugin.PluginName].SQL
	if err := prepareDatabase(sqlCfg, dbPath, opts.namespace); err != nil {
		return err
	}

	serverLogger, logLevel, err := newServerLogger()
	if err != nil {
		return err
	}
	srv, err := temporal.NewServer(
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithConfig(cfg),
		temporal.WithDynamicConfigClient(devtemporal.DynamicConfig()),
		temporal.WithLogger(serverLogger),
	)
	if err != nil {
		return fmt.Errorf("create temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start temporal server: %w", err)
	}
	stopServer := func() {
		// Services stop one after another and the ones still running log
		// errors about the ones already gone; hide that expected noise.
		logLevel.SetLevel(zapcore.DPanicLevel)
		if err := srv.Stop(); err != nil {
			logger.Warn("stop temporal server", "err", err)
		}
	}

	uiURL := "disabled"
	stopUI := func() {}
	if opts.uiPort != 0 {
		uiURL = "http://" + net.JoinHostPort(connectIP, strconv.Itoa(opts.uiPort))
		stopUI, err = startUI(opts, frontend, logger)
		if err != nil {
			stopServer()
			return err
		}
	}
	shutdown := func() {
		stopUI()
		stopServer()
	}

	if err := waitReady(ctx, frontend, opts.namespace, logger); err != nil {
		shutdown()
		if ctx.Err() != nil {
			logger.Info("interrupted before the server was ready")
			return nil
		}
		return err
	}

	fmt.Printf("temporal dev server ready: grpc=%s ui=%s db=%s (%.1fs)\n",
		frontend, uiURL, dbPath, time.Since(started).Seconds())

	<-ctx.Done()
	logger.Info("shutting down")
	shutdown()
	logger.Info("stopped")
	return nil
}

// newServerLogger returns the server's logger, writing warnings and errors
// to stderr on one line each, and the level that controls it.
func newServerLogger() (log.Logger, zap.AtomicLevel, error) {
	level := zap.NewAtomicLevelAt(zapcore.WarnLevel)
	zl, err := zap.Config{
		Level:             level,
		Encoding:          "console",
		EncoderConfig:     log.DefaultZapEncoderConfig,
		OutputPaths:       []string{"stderr"},
		ErrorOutputPaths:  []string{"stderr"},
		DisableCaller:     true,
		DisableStacktrace: true,
	}.Build()
	if err != nil {
		return nil, level, fmt.Errorf("build server logger: %w", err)
	}
	return log.NewZapLogger(zl), level, nil
}

// serverConfig builds the static configuration of a single-node server
// persisting to the SQLite file dbPath. Every service binds to opts.ip; the
// frontend uses opts.port and everything else a free port. connectIP is the
// address other components use to reach the frontend.
func serverConfig(opts options, dbPath, connectIP string) (*config.Config, error) {
	// Three gRPC ports (history, matching, worker), four membership ports
	// and the frontend's HTTP API port.
	ports, err := freePorts(opts.ip, 8)
	if err != nil {
		return nil, err
	}
	service := func(grpcPort, membershipPort int) config.Service {
		return config.Service{RPC: config.RPC{
			GRPCPort:       grpcPort,
			MembershipPort: membershipPort,
			BindOnIP:       opts.ip,
		}}
	}

	cfg := &config.Config{}
	cfg.Global.Membership = config.Membership{
		MaxJoinDuration:  30 * time.Second,
		BroadcastAddress: connectIP,
	}
	if opts.metricsPort != 0 {
		cfg.Global.Metrics = &metrics.Config{
			Prometheus: &metrics.PrometheusConfig{
				ListenAddress: net.JoinHostPort(opts.ip, strconv.Itoa(opts.metricsPort)),
				HandlerPath:   "/metrics",
			},
		}
	}
	cfg.Persistence = config.Persistence{
		DefaultStore:     sqliteplugin.PluginName,
		VisibilityStore:  sqliteplugin.PluginName,
		NumHistoryShards: 1,
		DataStores: map[string]config.DataStore{
			sqliteplugin.PluginName: {SQL: &config.SQL{
				PluginName:   sqliteplugin.PluginName,
				DatabaseName: dbPath,
				ConnectAttributes: map[string]string{
					"mode":          "rwc",
					"_journal_mode": "wal",
					"_synchronous":  "normal",
				},
			}},
		},
	}
	frontend := net.JoinHostPort(connectIP, strconv.Itoa(opts.port))
	cfg.ClusterMetadata = &cluster.Config{
		EnableGlobalNamespace:    false,
		FailoverVersionIncrement: 10,
		MasterClusterName:        clusterName,
		CurrentClusterName:       clusterName,
		ClusterInformation: map[string]cluster.ClusterInformation{
			clusterName: {
				Enabled:                true,
				InitialFailoverVersion: 1,
				RPCAddress:             frontend,
			},
		},
	}
	cfg.DCRedirectionPolicy = config.DCRedirectionPolicy{Policy: "noop"}
	frontendService := service(opts.port, ports[0])
	frontendService.RPC.HTTPPort = ports[7]
	cfg.Services = map[string]config.Service{
		"frontend": frontendService,
		"history":  service(ports[1], ports[2]),
		"matching": service(ports[3], ports[4]),
		"worker":   service(ports[5], ports[6]),
	}
	cfg.Archival = config.Archival{
		History:    config.HistoryArchival{State: "disabled"},
		Visibility: config.VisibilityArchival{State: "disabled"},
	}
	cfg.NamespaceDefaults = config.NamespaceDefaults{
		Archival: config.ArchivalNamespaceDefaults{
			History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
			Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
		},
	}
	cfg.PublicClient = config.PublicClient{HostPort: frontend}
	return cfg, nil
}

// prepareDatabase creates the schema when dbPath does not exist yet,
// registers namespace with the custom search attributes (an existing
// namespace is left unchanged) and forgets the cluster members recorded by
// earlier runs.
func prepareDatabase(sqlCfg *config.SQL, dbPath, namespace string) error {
	if _, err := os.Stat(dbPath); errors.Is(err, os.ErrNotExist) {
		if err := sqlite.SetupSchema(sqlCfg); err != nil {
			return fmt.Errorf("set up SQLite schema in %s: %w", dbPath, err)
		}
	} else if err != nil {
		return fmt.Errorf("stat database: %w", err)
	}
	ns, err := sqlite.NewNamespaceConfig(clusterName, namespace, false, searchattr.Types())
	if err != nil {
		return fmt.Errorf("namespace config: %w", err)
	}
	// CreateNamespaces skips namespaces that already exist, so restarting on
	// the same file is fine.
	if err := sqlite.CreateNamespaces(sqlCfg, ns); err != nil {
		return fmt.Errorf("register namespace %q: %w", namespace, err)
	}
	return pruneMembership(sqlCfg)
}

// pruneMembership deletes every row of the cluster membership table. The
// services of a run that stopped less than 20 s ago would otherwise be used
// as ring seeds on restart, splitting the membership ring so that, for a
// while, the frontend finds no matching or history host. This process is the
// only node of its cluster, so every recorded member is stale; running two
// servers on one database file is not supported.
func pruneMembership(sqlCfg *config.SQL) error {
	db, err := sql.NewSQLDB(sqlplugin.DbKindMain, sqlCfg, resolver.NewNoopResolver(),
		log.NewNoopLogger(), metrics.NoopMetricsHandler)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer func() { _ = db.Close() }()
	// Records expire two days after their last heartbeat; a cutoff a year
	// ahead matches all of them.
	_, err = db.PruneClusterMembership(context.Background(),
		&sqlplugin.PruneClusterMembershipFilter{PruneRecordsBefore: time.Now().AddDate(1, 0, 0)})
	if err != nil {
		return fmt.Errorf("prune cluster membership: %w", err)
	}
	return nil
}

// startUI starts the Web UI server in a goroutine, proxying to the frontend
// at frontend, and returns a function that stops it.
func startUI(opts options, frontend string, logger *slog.Logger) (func(), error) {
	addr := net.JoinHostPort(opts.ip, strconv.Itoa(opts.uiPort))
	// The UI server exits the process if it cannot listen, so check first.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("web UI port: %w", err)
	}
	if err := ln.Close(); err != nil {
		return nil, fmt.Errorf("web UI port: %w", err)
	}

	cfg := &uiconfig.Config{
		Host:                opts.ip,
		Port:                opts.uiPort,
		TemporalGRPCAddress: frontend,
		EnableUI:            true,
		DefaultNamespace:    opts.namespace,
		DisableNewsFetch:    true,
		HideLogs:            true,
		// Plain HTTP on a local address: the CSRF cookie cannot be Secure.
		CORS: uiconfig.CORS{CookieInsecure: true},
	}
	ui := uiserver.NewServer(server_options.WithConfigProvider(cfg))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ui.Start(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("web UI stopped", "err", err)
		}
	}()
	return func() {
		ui.Stop()
		select {
		case <-done:
		case <-time.After(uiStopTimeout):
			logger.Warn("web UI did not stop in time")
		}
	}, nil
}

// waitReady waits, for at most readyTimeout, until the frontend at hostPort
// reports its WorkflowService healthy and namespace can be described, and
// then makes sure the custom search attributes exist on it.
func waitReady(ctx context.Context, hostPort, namespace string, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()

	// Probe the health service first: it answers NOT_SERVING quietly,
	// whereas SDK calls to a starting frontend make the server log errors.
	if err := waitHealthy(ctx, hostPort); err != nil {
		return fmt.Errorf("frontend not healthy after %s: %w", readyTimeout, err)
	}

	quiet := sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := client.DialContext(ctx, client.Options{HostPort: hostPort, Namespace: namespace, Logger: quiet})
	if err != nil {
		return fmt.Errorf("connect to frontend: %w", err)
	}
	defer c.Close()
	err = poll(ctx, func() error {
		_, err := c.WorkflowService().DescribeNamespace(ctx,
			&workflowservice.DescribeNamespaceRequest{Namespace: namespace})
		return err
	})
	if err != nil {
		return fmt.Errorf("namespace %q not ready after %s: %w", namespace, readyTimeout, err)
	}
	return searchattr.Ensure(ctx, c, namespace, logger)
}

// waitHealthy polls the gRPC health service of the frontend at hostPort
// until its WorkflowService is SERVING or ctx ends.
func waitHealthy(ctx context.Context, hostPort string) error {
	conn, err := grpc.NewClient(hostPort, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	health := healthpb.NewHealthClient(conn)
	return poll(ctx, func() error {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: workflowServiceName})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %s", resp.GetStatus())
		}
		return nil
	})
}

// poll calls probe every pollInterval until it succeeds or ctx ends, and
// then returns the last error of probe.
func poll(ctx context.Context, probe func() error) error {
	for {
		err := probe()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pollInterval):
		}
	}
}

// freePorts returns n distinct TCP ports that are currently free on ip. All
// listeners are held until every port is chosen so none is returned twice.
func freePorts(ip string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range listeners {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
