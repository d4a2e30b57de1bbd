// Command imagevol-bench measures imagevol's performance figures against a running stack (API
// gateway, workers node1 and node2, Temporal, Glance and Ceph) and writes each beside its floor:
// the same storage or data work done directly, in the same run, on the same cluster.
//
//	imagevol-bench [-quick] [-out bench/results] [-work .run/bench]
//	imagevol-bench -only hits -row standalone -gateway URL -temporal HOST:PORT -namespace NS ...
//
// The second form measures only the cache-hit figures, against another stack (deploy/bench.sh
// uses it for the standalone Temporal server on PostgreSQL), and merges them into the
// latest.json and latest.md already in -out as their "standalone" row.
//
// It reads the gateway's address and token from IMAGEVOL_URL and IMAGEVOL_TOKEN, Glance from
// GLANCE_URL, Ceph from CEPH_CONF and the workers' pid files from IMAGEVOL_RUN_DIR; deploy/bench.sh
// (`make bench`) brings the stack up and runs it. It writes latest.json, latest.md,
// hit_latency.png and miss_by_size.png to the output directory.
//
// It imports apiclient, contract and cmd/internal/cli, and talks to the stack through its API
// and Ceph's CLI.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imagevol/imagevol/cmd/internal/cli"
)

func main() {
	// --version answers before anything else: no config read, nothing dialled.
	if cli.PrintVersion(os.Stdout, "imagevol-bench", os.Args[1:]) {
		return
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		logger.Error("bad arguments", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, cfg); err != nil {
		logger.Error("benchmark failed", "err", err)
		os.Exit(1)
	}
}

// Config is where the stack is and where the benchmark writes.
type Config struct {
	GatewayURL      string        // IMAGEVOL_URL
	Token           string        // IMAGEVOL_TOKEN
	GlanceURL       string        // GLANCE_URL
	CephConf        string        // CEPH_CONF
	TemporalAddress string        // Temporal frontend host:port
	Namespace       string        // Temporal namespace
	RunDir          string        // holds pids/worker-node1.pid
	WorkDir         string        // scratch image files
	OutDir          string        // results
	Host            string        // the host measured for misses, hits and RSS
	Pool            string        // that host's RBD pool, also used for the floors
	BurstHosts      []string      // hosts the burst spreads its requests over
	Quick           bool          // BENCH_QUICK=1: small sizes and counts
	Timeout         time.Duration // bound on the whole run
	KeepImages      bool          // keep the Glance images the run uploaded
	Rerender        string        // a latest.json to render again instead of measuring
	Sizes           []int64       // -sizes: the misses by size instead of the plan's
	Rounds          int           // -rounds: rounds of misses by size instead of the plan's
	Cases           []string      // -cases: run only the cases these prefixes name (empty: all)
	// A second gateway whose workers read images from a Glance on RBD (deploy/bench.sh starts
	// both): the miss that clones Glance's snapshot instead of downloading. Empty: not measured.
	StoreGatewayURL string // IMAGEVOL_STORE_URL
	StoreGlanceURL  string // GLANCE_RBD_URL
	StoreGlanceLog  string // GLANCE_RBD_LOG: its access log, to tell a clone from a download

	Hit HitConfig // -only, -row, -sdk-metrics, -logs
}

func parseFlags(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("imagevol-bench", flag.ContinueOnError)
	fs.StringVar(&c.GatewayURL, "gateway", envOr("IMAGEVOL_URL", "http://127.0.0.1:8776"), "API gateway URL")
	fs.StringVar(&c.GlanceURL, "glance", envOr("GLANCE_URL", "http://127.0.0.1:9292/"), "Glance URL")
	fs.StringVar(&c.CephConf, "ceph-conf", envOr("CEPH_CONF", "/etc/ceph/ceph.conf"), "ceph.conf of the cluster the workers use")
	fs.StringVar(&c.TemporalAddress, "temporal", envOr("IMAGEVOL_TEMPORAL_ADDRESS", "127.0.0.1:7233"), "Temporal frontend")
	fs.StringVar(&c.Namespace, "namespace", envOr("IMAGEVOL_TEMPORAL_NAMESPACE", "default"), "Temporal namespace")
	fs.StringVar(&c.RunDir, "run-dir", envOr("IMAGEVOL_RUN_DIR", ".run"), "run directory holding pids/worker-<host>.pid")
	fs.StringVar(&c.WorkDir, "work", "", "directory for scratch image files (default <run-dir>/bench)")
	fs.StringVar(&c.OutDir, "out", "bench/results", "directory the results are written to")
	fs.StringVar(&c.Host, "host", "node1", "storage host measured for misses, hits and worker RSS")
	fs.StringVar(&c.Pool, "pool", "volumes", "RBD pool of -host; the floors run there too")
	hosts := fs.String("burst-hosts", "node1,node2", "comma-separated hosts the burst alternates between")
	fs.BoolVar(&c.Quick, "quick", envOr("BENCH_QUICK", "") == "1", "small sizes and counts, for development (BENCH_QUICK=1)")
	fs.DurationVar(&c.Timeout, "timeout", 40*time.Minute, "bound on the whole run")
	fs.BoolVar(&c.KeepImages, "keep-images", false, "keep the Glance images the run uploaded")
	fs.StringVar(&c.StoreGatewayURL, "store-gateway", os.Getenv("IMAGEVOL_STORE_URL"), "gateway whose workers use the Glance on RBD (empty: that miss is not measured)")
	fs.StringVar(&c.StoreGlanceURL, "store-glance", os.Getenv("GLANCE_RBD_URL"), "Glance whose store is the cluster's RBD")
	fs.StringVar(&c.StoreGlanceLog, "store-glance-log", os.Getenv("GLANCE_RBD_LOG"), "that Glance's log, with its access lines")
	fs.StringVar(&c.Rerender, "rerender", "", "render latest.md and the plots again from this latest.json, measuring nothing")
	sizes := fs.String("sizes", "", "comma-separated sizes of the misses by size, e.g. 256MiB,1GiB (default: the mode's)")
	fs.IntVar(&c.Rounds, "rounds", 0, "rounds of misses by size (default: the mode's)")
	cases := fs.String("cases", "", "comma-separated prefixes of the cases to run, e.g. \"warm-up,miss by size\" (default: all)")
	hitFlags := addHitFlags(fs, &c)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Token = os.Getenv("IMAGEVOL_TOKEN")
	if c.Token == "" && c.Rerender == "" {
		return c, errors.New("IMAGEVOL_TOKEN is not set")
	}
	c.GatewayURL = strings.TrimSuffix(c.GatewayURL, "/")
	c.GlanceURL = strings.TrimSuffix(c.GlanceURL, "/")
	c.StoreGatewayURL = strings.TrimSuffix(c.StoreGatewayURL, "/")
	c.StoreGlanceURL = strings.TrimSuffix(c.StoreGlanceURL, "/")
	if c.WorkDir == "" {
		c.WorkDir = filepath.Join(c.RunDir, "bench")
	}
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			c.BurstHosts = append(c.BurstHosts, h)
		}
	}
	if len(c.BurstHosts) == 0 {
		return c, errors.New("-burst-hosts names no host")
	}
	for _, k := range splitList(*sizes) {
		n := parseSize(k)
		if n <= 0 {
			return c, fmt.Errorf("-sizes: %q is not a size such as 256MiB or 1GiB", k)
		}
		c.Sizes = append(c.Sizes, n)
	}
	c.Cases = splitList(*cases)
	return c, hitFlags()
}

// newQuietLogger is the Temporal client's logger: warnings and errors only.
func newQuietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func envOr(k, def string) string {
	if v := strings.TrimSpace(os.Getenv(k)); v != "" {
		return v
	}
	return def
}

// run measures every figure, writes the results, and returns an error when a case failed (the
// results are written all the same, with the failure among their notes).
func run(ctx context.Context, logger *slog.Logger, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return err
	}
	if cfg.Rerender != "" {
		return rerender(logger, cfg.Rerender, cfg.OutDir)
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return err
	}
	b, err := newBench(ctx, logger, cfg, planFor(cfg.Quick).with(cfg.Sizes, cfg.Rounds))
	if err != nil {
		return err
	}
	defer b.close(context.WithoutCancel(ctx))
	if err := b.preflight(ctx); err != nil {
		return err
	}
	failed := b.runAll(ctx)
	b.res.Meta.WallSeconds = round(time.Since(start).Seconds(), 1)
	if err := b.write(logger); err != nil {
		return err
	}
	logger.Info("results written", "dir", cfg.OutDir, "wall", time.Since(start).Round(time.Second))
	if failed > 0 {
		return fmt.Errorf("%d case(s) failed; see the notes in %s", failed, filepath.Join(cfg.OutDir, "latest.md"))
	}
	return nil
}

// rerender reads a latest.json and writes latest.md and the plots from it again.
func rerender(logger *slog.Logger, path, dir string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return writeResults(logger, dir, &r)
}
