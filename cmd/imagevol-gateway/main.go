// Command imagevol-gateway serves imagevol's REST API on 127.0.0.1:8776: it records volumes and
// starts their provisioning workflows.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/starter"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(logger)
	if err := run(logger); err != nil {
		logger.Error("gateway failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	common := config.LoadCommon()
	listen := flag.String("listen", config.Env("IMAGEVOL_LISTEN", "127.0.0.1:8776"), "address to serve the API on")
	hosts := flag.String("hosts", config.Env("IMAGEVOL_HOSTS", "node1"), "comma-separated storage hosts")
	tokensFile := flag.String("tokens", config.Env("IMAGEVOL_TOKENS_FILE", ""), "file of 'token project' lines")
	uiURL := flag.String("temporal-ui", config.Env("TEMPORAL_UI_URL", "http://127.0.0.1:8233"), "Temporal Web UI address, for links to each provision's workflow (empty: none)")
	quotas := flag.String("quotas", config.Env("IMAGEVOL_QUOTAS", ""), "comma-separated project=N: most volumes each project may have")
	reconcile := flag.Duration("reconcile-every", 10*time.Minute, "how often the cache reconcile workflow runs (0: no schedule)")
	flag.Parse()

	tokens, err := loadTokens(*tokensFile)
	if err != nil {
		return err
	}
	if len(tokens) == 0 {
		return errors.New("no API tokens: set IMAGEVOL_TOKEN (and IMAGEVOL_PROJECT) or IMAGEVOL_TOKENS_FILE")
	}
	quota, err := parseQuotas(*quotas)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	svc, err := common.Connect(ctx, logger)
	if err != nil {
		return err
	}
	defer svc.Close()

	gw := &starter.Gateway{Store: svc.Store, Temporal: svc.Temporal, Images: svc.Glance, Tokens: tokens, Hosts: splitList(*hosts), Logger: logger,
		UIURL: *uiURL, Namespace: common.Namespace, Quotas: quota}
	if *reconcile > 0 {
		if err := gw.EnsureReconcileSchedule(ctx, *reconcile); err != nil {
			return err
		}
	}
	srv := &http.Server{Addr: *listen, Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	logger.Info("gateway listening", "addr", *listen, "hosts", gw.Hosts)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// loadTokens reads "token project" lines from path, plus IMAGEVOL_TOKEN for IMAGEVOL_PROJECT.
func loadTokens(path string) (map[string]string, error) {
	tokens := map[string]string{}
	if t := config.Env("IMAGEVOL_TOKEN", ""); t != "" {
		tokens[t] = config.Env("IMAGEVOL_PROJECT", "demo")
	}
	if path == "" {
		return tokens, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("tokens file %s:%d: want 'token project'", path, n)
		}
		tokens[fields[0]] = fields[1]
	}
	return tokens, sc.Err()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseQuotas reads "project=N,project2=M".
func parseQuotas(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, kv := range splitList(s) {
		project, n, ok := strings.Cut(kv, "=")
		v, err := strconv.Atoi(n)
		if !ok || project == "" || err != nil {
			return nil, fmt.Errorf("quota %q: want project=N", kv)
		}
		out[project] = v
	}
	return out, nil
}
