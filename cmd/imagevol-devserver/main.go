// Command imagevol-devserver runs an in-process Temporal development server
// with the Temporal Web UI, for local runs of imagevol.
//
// State is kept in a SQLite file (--db), so workflows survive a restart of
// the server. On first start the schema is created and the namespace is
// registered with the custom search attributes imagevol uses (ImageID, Host,
// CacheResult, ProjectID and Phase, all Keyword); later starts reuse the file
// and add any of those attributes that are missing.
//
// Usage:
//
//	imagevol-devserver --db ./.local/temporal.db [--ip 127.0.0.1] [--port 7233]
//	    [--ui-port 8233] [--namespace default] [--metrics-port 0]
//
// Every flag falls back to an environment variable when it is not given on
// the command line:
//
//	--db            IMAGEVOL_DEVSERVER_DB            SQLite file (required; parent directory is created)
//	--ip            IMAGEVOL_DEVSERVER_IP            address every listener binds to (default 127.0.0.1)
//	--port          IMAGEVOL_DEVSERVER_PORT          frontend gRPC port (default 7233)
//	--ui-port       IMAGEVOL_DEVSERVER_UI_PORT       Web UI HTTP port (default 8233; 0 disables the UI)
//	--namespace     IMAGEVOL_DEVSERVER_NAMESPACE     namespace to register (default "default")
//	--metrics-port  IMAGEVOL_DEVSERVER_METRICS_PORT  Prometheus /metrics port (default 0 = no metrics)
//
// The history, matching and worker services, the membership ring and the
// frontend's HTTP API listen on free ports of the same address. The server's
// own log goes to stderr at warn level (silenced while shutting down, when the
// services log errors about each other's disappearance); this command's own
// messages go to stderr through log/slog. When the namespace can be described
// through the frontend, one line is written to stdout:
//
//	temporal dev server ready: grpc=127.0.0.1:7233 ui=http://127.0.0.1:8233 db=PATH (1.2s)
//
// SIGINT or SIGTERM stops the UI and the server and exits with status 0.
//
// It imports devtemporal, searchattr and cmd/internal/cli, and is the one binary that links the
// Temporal server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/imagevol/imagevol/cmd/internal/cli"
)

// envPrefix is the prefix of the environment variables that provide flag
// defaults.
const envPrefix = "IMAGEVOL_DEVSERVER_"

// options holds the parsed command-line configuration.
type options struct {
	// dbPath is the SQLite database file.
	dbPath string
	// ip is the address every listener binds to.
	ip string
	// port is the frontend gRPC port.
	port int
	// uiPort is the Web UI HTTP port; 0 disables the UI.
	uiPort int
	// namespace is the namespace registered at startup.
	namespace string
	// metricsPort is the Prometheus metrics port; 0 disables metrics.
	metricsPort int
}

func main() {
	// --version answers before anything else: no config read, nothing dialled.
	if cli.PrintVersion(os.Stdout, "imagevol-devserver", os.Args[1:]) {
		return
	}
	started := time.Now()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	opts, err := parseOptions(os.Args[0], os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("invalid arguments", "err", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := run(ctx, opts, logger, started); err != nil {
		logger.Error("temporal dev server failed", "err", err)
		stop()
		os.Exit(1)
	}
}

// parseOptions parses args (without the program name) into options, taking
// defaults from IMAGEVOL_DEVSERVER_* environment variables, and validates
// the result.
func parseOptions(name string, args []string) (options, error) {
	var opts options
	fs := flag.NewFlagSet(name, flag.ContinueOnError)

	uiPort, err := envInt("UI_PORT", 8233)
	if err != nil {
		return opts, err
	}
	port, err := envInt("PORT", 7233)
	if err != nil {
		return opts, err
	}
	metricsPort, err := envInt("METRICS_PORT", 0)
	if err != nil {
		return opts, err
	}

	fs.StringVar(&opts.dbPath, "db", envString("DB", ""),
		"SQLite database file; created with the schema if missing (env "+envPrefix+"DB)")
	fs.StringVar(&opts.ip, "ip", envString("IP", "127.0.0.1"),
		"IP address all listeners bind to (env "+envPrefix+"IP)")
	fs.IntVar(&opts.port, "port", port,
		"frontend gRPC port (env "+envPrefix+"PORT)")
	fs.IntVar(&opts.uiPort, "ui-port", uiPort,
		"Web UI HTTP port, 0 disables the UI (env "+envPrefix+"UI_PORT)")
	fs.StringVar(&opts.namespace, "namespace", envString("NAMESPACE", "default"),
		"namespace to register (env "+envPrefix+"NAMESPACE)")
	fs.IntVar(&opts.metricsPort, "metrics-port", metricsPort,
		"Prometheus metrics port serving /metrics, 0 disables metrics (env "+envPrefix+"METRICS_PORT)")

	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return opts, opts.validate()
}

// validate reports the first invalid option.
func (o options) validate() error {
	if o.dbPath == "" {
		return errors.New("--db is required")
	}
	if net.ParseIP(o.ip) == nil {
		return fmt.Errorf("--ip %q is not an IP address", o.ip)
	}
	if o.port < 1 || o.port > 65535 {
		return fmt.Errorf("--port %d out of range 1-65535", o.port)
	}
	if o.uiPort < 0 || o.uiPort > 65535 {
		return fmt.Errorf("--ui-port %d out of range 0-65535", o.uiPort)
	}
	if o.metricsPort < 0 || o.metricsPort > 65535 {
		return fmt.Errorf("--metrics-port %d out of range 0-65535", o.metricsPort)
	}
	if o.namespace == "" {
		return errors.New("--namespace must not be empty")
	}
	return nil
}

// envString returns the environment variable envPrefix+key, or def when it
// is unset or empty.
func envString(key, def string) string {
	if v := os.Getenv(envPrefix + key); v != "" {
		return v
	}
	return def
}

// envInt returns the environment variable envPrefix+key as an integer, or
// def when it is unset or empty.
func envInt(key string, def int) (int, error) {
	v := os.Getenv(envPrefix + key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s%s=%q: %w", envPrefix, key, v, err)
	}
	return n, nil
}
