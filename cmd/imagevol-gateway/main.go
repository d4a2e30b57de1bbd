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
	tokensFile := flag.String("tokens", gwc.TokensFile, "file of 'token project [role]' lines (mode 0600)")
	uiURL := flag.String("temporal-ui", gwc.TemporalUI, "Temporal Web UI address, for links to each provision's workflow (empty: none)")
	quotas := flag.String("quotas", config.FormatQuotas(gwc.Quotas), "comma-separated project=N: most volumes each project may have")
	reconcile := flag.Duration("reconcile-every", gwc.ReconcileEvery, "how often the cache reconcile workflow runs (0: no schedule)")
	provisionTimeout := flag.Duration("provision-timeout", gwc.ProvisionTimeout, "deadline of each provision after its request (0: none)")
	flag.Parse()

	tokens, admins, err := loadTokens(*tokensFile)
	if err != nil {
		return err
	}
	if len(tokens) == 0 && gwc.Keystone.Auth == nil {
		return errors.New("no API tokens: set IMAGEVOL_TOKEN (and IMAGEVOL_PROJECT) or IMAGEVOL_TOKENS_FILE, or gateway.keystone.cloud (IMAGEVOL_KEYSTONE_CLOUD)")
	}
	quota, err := config.ParseQuotas(*quotas)
	if err != nil {
		return err
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

	gw := &starter.Gateway{Store: svc.Store, Temporal: svc.Temporal, Images: svc.Glance, Tokens: tokens, Hosts: config.SplitList(*hosts), Logger: logger,
		UIURL: *uiURL, Namespace: common.Namespace, Quotas: quota, Metrics: reg, ProvisionTimeout: *provisionTimeout,
		AdminTokens: admins}
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

// loadTokens reads "token project [role]" lines from path, plus IMAGEVOL_TOKEN for
// IMAGEVOL_PROJECT and IMAGEVOL_ADMIN_TOKEN for project admin. It returns each token's project
// and the tokens of operators (role admin). A tokens file others may read is refused.
func loadTokens(path string) (map[string]string, []string, error) {
	tokens, admins := map[string]string{}, []string(nil)
	if t := config.Env("IMAGEVOL_TOKEN", ""); t != "" {
		tokens[t] = config.Env("IMAGEVOL_PROJECT", "demo")
	}
	if t := config.Env("IMAGEVOL_ADMIN_TOKEN", ""); t != "" {
		tokens[t], admins = "admin", append(admins, t)
	}
	if path == "" {
		return tokens, admins, nil
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
		tokens[fields[0]] = fields[1]
		if len(fields) == 3 {
			switch fields[2] {
			case starter.RoleAdmin:
				admins = append(admins, fields[0])
			case "member", "reader":
			default:
				return nil, nil, fmt.Errorf("tokens file %s:%d: role %q: want admin, member or reader", path, n, fields[2])
			}
		}
	}
	return tokens, admins, sc.Err()
}
