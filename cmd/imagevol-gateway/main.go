// Command imagevol-gateway serves imagevol's REST API on 127.0.0.1:8776: it records volumes and
// starts their provisioning workflows. The same port serves Prometheus metrics at /metrics and a
// status page at /.
//
// It imports config, starter, metrics, tracing and cmd/internal/cli; it links neither go-ceph
// nor the Temporal server (cmd/deps_test.go).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/imagevol/imagevol/cmd/internal/cli"
	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/starter"
	"github.com/imagevol/imagevol/tracing"
)

func main() {
	// --version answers before anything else: no config read, nothing dialled.
	if cli.PrintVersion(os.Stdout, "imagevol-gateway", os.Args[1:]) {
		return
	}
	logger := newLogger(os.Stderr)
	slog.SetDefault(logger)
	if err := run(logger); err != nil {
		logger.Error("gateway failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	// Defaults < config file (--config or IMAGEVOL_CONFIG) < environment < flags.
	file, err := config.Load(flag.CommandLine, os.Args[1:], "gateway")
	if err != nil {
		return err
	}
	common, gwc := file.Common(), file.Gateway

	tokens, roles, err := loadTokens(gwc.TokensFile)
	if err != nil {
		return err
	}
	if len(tokens) == 0 && gwc.Keystone.Auth == nil {
		return errors.New("no API tokens: set IMAGEVOL_TOKEN (and IMAGEVOL_PROJECT) or IMAGEVOL_TOKENS_FILE, or gateway.keystone.cloud (IMAGEVOL_KEYSTONE_CLOUD)")
	}
	quota := gatewayQuotas(gwc.Quotas, gwc.DefaultQuota())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := metrics.NewRegistry()
	tracer, err := tracing.Start(ctx, file.Tracing.For("imagevol-gateway"))
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

	gw := &starter.Gateway{Store: svc.Store, Temporal: svc.Temporal, Images: svc.Glance, Tokens: tokens, TokenRoles: roles, Hosts: gwc.Hosts, Logger: logger,
		UIURL: gwc.TemporalUI, Namespace: common.Namespace, Quotas: quota, MaxVolumeSizeGB: int64(gwc.MaxVolumeSizeGB), Metrics: reg, ProvisionTimeout: gwc.ProvisionTimeout}
	if ks := gwc.Keystone; ks.Auth != nil {
		ttl := ks.CacheTTL
		if ttl == 0 {
			ttl = -1 // gateway.keystone.cache_ttl 0s: every request asks Keystone
		}
		v, err := starter.NewKeystoneValidator(ctx, starter.KeystoneOptions{
			Auth: ks.Auth.AuthOptions(), CacheTTL: ttl, CacheSize: ks.CacheSize, Timeout: ks.Timeout})
		if err != nil {
			return fmt.Errorf("config: gateway.keystone.cloud %s (%s): %w", ks.Cloud, ks.Auth.File, err)
		}
		gw.TokenValidator = v
		logger.Info("validating Keystone tokens", "keystone", ks.Auth.AuthURL, "cache_ttl", ks.CacheTTL, "cache_size", ks.CacheSize)
	}
	if gwc.ReconcileEvery > 0 {
		if err := gw.EnsureReconcileSchedule(ctx, gwc.ReconcileEvery); err != nil {
			return err
		}
	}
	limiter := starter.NewAuthFailureLimiter(gwc.AuthFailuresPerMinute)
	srv, err := newServer(gwc.Listen, tracer.Handler(gw.LogRequests(limiter.Wrap(gw.Handler()))), gwc)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", gwc.Listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(srv, ln) }()
	logger.Info("gateway listening", "addr", gwc.Listen, "hosts", gw.Hosts, "tls", gwc.TLSCertFile != "")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// newLogger logs JSON for log collectors, or text for a person when w is a terminal.
func newLogger(w *os.File) *slog.Logger {
	if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// loadTokens reads "token project [role]" lines from path (role: admin, member or reader;
// member when left out), plus IMAGEVOL_TOKEN for IMAGEVOL_PROJECT with the role
// IMAGEVOL_TOKEN_ROLE (admin when unset: the one token of a single operator's setup) and
// IMAGEVOL_ADMIN_TOKEN, an operator's, for project admin. A tokens file others may read is
// refused.
func loadTokens(path string) (map[string]string, map[string]starter.Role, error) {
	tokens, roles := map[string]string{}, map[string]starter.Role{}
	if t := config.Env("IMAGEVOL_TOKEN", ""); t != "" {
		role, err := starter.ParseRole(config.Env("IMAGEVOL_TOKEN_ROLE", "admin"))
		if err != nil {
			return nil, nil, fmt.Errorf("IMAGEVOL_TOKEN_ROLE: %w", err)
		}
		tokens[t], roles[t] = config.Env("IMAGEVOL_PROJECT", "demo"), role
	}
	if t := config.Env("IMAGEVOL_ADMIN_TOKEN", ""); t != "" {
		tokens[t], roles[t] = "admin", starter.RoleAdmin
	}
	if path == "" {
		return tokens, roles, nil
	}
	if err := config.CheckPrivate("tokens file", path); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 && len(fields) != 3 {
			return nil, nil, fmt.Errorf("tokens file %s:%d: want 'token project [role]'", path, n)
		}
		role := starter.RoleMember
		if len(fields) == 3 {
			if role, err = starter.ParseRole(fields[2]); err != nil {
				return nil, nil, fmt.Errorf("tokens file %s:%d: %w", path, n, err)
			}
		}
		tokens[fields[0]], roles[fields[0]] = fields[1], role
	}
	return tokens, roles, sc.Err()
}

// gatewayQuotas builds the gateway's quotas: the projects' own over the defaults.
func gatewayQuotas(projects map[string]config.Quota, def config.QuotaLimits) *starter.Quotas {
	limits := func(l config.QuotaLimits) starter.QuotaLimits {
		return starter.QuotaLimits{Volumes: int64(l.Volumes), Gigabytes: int64(l.Gigabytes)}
	}
	q := &starter.Quotas{Default: limits(def), Projects: map[string]starter.QuotaLimits{}}
	for p, pq := range projects {
		q.Projects[p] = limits(pq.Or(def))
	}
	return q
}
