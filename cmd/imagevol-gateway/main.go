// Command imagevol-gateway serves imagevol's REST API on 127.0.0.1:8776: it records volumes and
// starts their provisioning workflows. The same port serves Prometheus metrics at /metrics and a
// status page at /.
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

	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
	"github.com/imagevol/imagevol/tracing"
)

func main() {
	logger := newLogger(os.Stderr)
	slog.SetDefault(logger)
	if err := run(logger); err != nil {
		logger.Error("gateway failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	// Defaults < config file (--config or IMAGEVOL_CONFIG) < environment < flags.
	file, err := config.LoadFile(config.ConfigPath(os.Args[1:]))
	if err != nil {
		return err
	}
	common, gwc := file.Common(), file.Gateway
	flag.String("config", "", "YAML config file (or IMAGEVOL_CONFIG); see docs/deploy.md")
	listen := flag.String("listen", gwc.Listen, "address to serve the API on")
	hosts := flag.String("hosts", strings.Join(gwc.Hosts, ","), "comma-separated storage hosts")
	tokensFile := flag.String("tokens", gwc.TokensFile, "file of 'token project [role]' lines, mode 0600 (role: admin, member or reader; default member)")
	uiURL := flag.String("temporal-ui", gwc.TemporalUI, "Temporal Web UI address, for links to each provision's workflow (empty: none)")
	quotas := flag.String("quotas", config.FormatQuotas(gwc.Quotas), "comma-separated project=N (most volumes) or project=volumes:N:gigabytes:M; -1 is no limit")
	defVolumes := flag.Int("default-quota-volumes", gwc.DefaultQuota.Volumes, "most volumes of a project --quotas does not list (-1: no limit)")
	defGigabytes := flag.Int("default-quota-gigabytes", gwc.DefaultQuota.Gigabytes, "most GiB of the volumes of a project --quotas does not list (-1: no limit)")
	maxSize := flag.Int("max-volume-size-gb", gwc.MaxVolumeSizeGB, "largest size_gb a volume may have")
	reconcile := flag.Duration("reconcile-every", gwc.ReconcileEvery, "how often the cache reconcile workflow runs (0: no schedule)")
	provisionTimeout := flag.Duration("provision-timeout", gwc.ProvisionTimeout, "deadline of each provision after its request (0: none)")
	flag.Parse()

	tokens, roles, err := loadTokens(*tokensFile)
	if err != nil {
		return err
	}
	if len(tokens) == 0 && gwc.Keystone.Auth == nil {
		return errors.New("no API tokens: set IMAGEVOL_TOKEN (and IMAGEVOL_PROJECT) or IMAGEVOL_TOKENS_FILE, or gateway.keystone.cloud (IMAGEVOL_KEYSTONE_CLOUD)")
	}
	quota, err := gatewayQuotas(*quotas, config.QuotaLimits{Volumes: *defVolumes, Gigabytes: *defGigabytes})
	if err != nil {
		return err
	}
	if *maxSize < 1 || int64(*maxSize) > models.MaxSizeGiB {
		return fmt.Errorf("--max-volume-size-gb %d: want 1 to %d", *maxSize, models.MaxSizeGiB)
	}
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

	gw := &starter.Gateway{Store: svc.Store, Temporal: svc.Temporal, Images: svc.Glance, Tokens: tokens, TokenRoles: roles, Hosts: config.SplitList(*hosts), Logger: logger,
		UIURL: *uiURL, Namespace: common.Namespace, Quotas: quota, MaxVolumeSizeGB: int64(*maxSize), Metrics: reg, ProvisionTimeout: *provisionTimeout}
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
	if *reconcile > 0 {
		if err := gw.EnsureReconcileSchedule(ctx, *reconcile); err != nil {
			return err
		}
	}
	limiter := starter.NewAuthFailureLimiter(gwc.AuthFailuresPerMinute)
	srv, err := newServer(*listen, tracer.Handler(gw.LogRequests(limiter.Wrap(gw.Handler()))), gwc)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(srv, ln) }()
	logger.Info("gateway listening", "addr", *listen, "hosts", gw.Hosts, "tls", gwc.TLSCertFile != "")
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

// gatewayQuotas builds the gateway's quotas from --quotas over the defaults.
func gatewayQuotas(text string, def config.QuotaLimits) (*starter.Quotas, error) {
	for name, n := range map[string]int{"--default-quota-volumes": def.Volumes, "--default-quota-gigabytes": def.Gigabytes} {
		if n < -1 {
			return nil, fmt.Errorf("%s %d: want a limit >= 0, or -1 for none", name, n)
		}
	}
	projects, err := config.ParseQuotas(text)
	if err != nil {
		return nil, err
	}
	limits := func(l config.QuotaLimits) starter.QuotaLimits {
		return starter.QuotaLimits{Volumes: int64(l.Volumes), Gigabytes: int64(l.Gigabytes)}
	}
	q := &starter.Quotas{Default: limits(def), Projects: map[string]starter.QuotaLimits{}}
	for p, pq := range projects {
		q.Projects[p] = limits(pq.Or(def))
	}
	return q, nil
}
