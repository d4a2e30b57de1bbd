// Command imagevolctl is a small client of imagevol's API gateway.
//
//	imagevolctl create --image ID --size GB [--name N] [--wait]
//	imagevolctl retry VOLUME [--wait]
//	imagevolctl show VOLUME
//	imagevolctl list
//	imagevolctl delete VOLUME
//	imagevolctl cache ls | stats | warm IMAGE [HOST...] | pin ENTRY | unpin ENTRY | evict [--force] ENTRY
//
// It reads the gateway's address and token from IMAGEVOL_URL and IMAGEVOL_TOKEN. While --wait
// waits, it shows the provision's progress on stderr. It talks to the gateway only, and links
// none of the services' code; replaying a workflow history against the workflow code is
// imagevol-worker replay, the binary that holds that code.
//
// It imports only apiclient and cmd/internal/cli of imagevol's packages: no database driver,
// Temporal server, Prometheus or Ceph (cmd/deps_test.go checks what it links).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/imagevol/imagevol/apiclient"
	"github.com/imagevol/imagevol/cmd/internal/cli"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagevolctl:", err)
		os.Exit(1)
	}
}

type api struct {
	base, token string
	hc          *http.Client
}

func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	return (&apiclient.Client{Base: a.base, Token: a.token, HTTP: a.hc}).Do(ctx, method, path, body, out)
}

func run(ctx context.Context, args []string) error {
	a := &api{
		base:  strings.TrimSuffix(envOr("IMAGEVOL_URL", "http://127.0.0.1:8776"), "/"),
		token: os.Getenv("IMAGEVOL_TOKEN"),
		hc:    &http.Client{Timeout: 30 * time.Second},
	}
	if len(args) == 0 {
		return errors.New("usage: imagevolctl create|retry|show|list|delete|cache ...")
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("create", flag.ContinueOnError)
		image := fs.String("image", "", "image ID")
		size := fs.Int("size", 1, "size in GiB")
		name := fs.String("name", "", "volume name")
		wait := fs.Bool("wait", false, "wait until the volume is available or failed")
		timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		start := time.Now()
		var created map[string]string
		if err := a.do(ctx, "POST", "/v1/volumes", map[string]any{"image_id": *image, "size_gb": *size, "name": *name}, &created); err != nil {
			return err
		}
		accepted := time.Since(start)
		if !*wait {
			return printJSON(created)
		}
		v, err := a.wait(ctx, created["id"], *timeout, newProgress(os.Stderr))
		if err != nil {
			return err
		}
		fmt.Printf("volume %s %s cache=%s in %s (202 after %s)\n", v["id"], v["status"], str(v["cache"]),
			time.Since(start).Round(time.Millisecond), accepted.Round(time.Millisecond))
		if v["status"] != "available" {
			return fmt.Errorf("volume %s: %v", v["id"], v["error"])
		}
		return nil
	case "retry":
		return a.retry(ctx, args[1:])
	case "replay":
		return errors.New("replay is imagevol-worker replay, the binary that holds the workflow code: imagevol-worker replay [--address HOST:PORT] [--namespace NS] [--run RUN] [--save FILE] VOLUME")
	case "show":
		if len(args) != 2 {
			return errors.New("usage: imagevolctl show VOLUME")
		}
		var v map[string]any
		if err := a.do(ctx, "GET", "/v1/volumes/"+args[1], nil, &v); err != nil {
			return err
		}
		return printJSON(v)
	case "list":
		var v map[string]any
		if err := a.do(ctx, "GET", "/v1/volumes", nil, &v); err != nil {
			return err
		}
		return printJSON(v)
	case "delete":
		if len(args) != 2 {
			return errors.New("usage: imagevolctl delete VOLUME")
		}
		var v map[string]any
		if err := a.do(ctx, "DELETE", "/v1/volumes/"+args[1], nil, &v); err != nil {
			return err
		}
		return printJSON(v)
	case "cache":
		return a.cache(ctx, args[1:])
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// cache runs the cache subcommands: ls, stats, warm IMAGE [HOST...], pin|unpin|evict ENTRY.
func (a *api) cache(ctx context.Context, args []string) error {
	const usage = "usage: imagevolctl cache ls | stats | warm IMAGE [HOST...] | pin ENTRY | unpin ENTRY | evict [--force] ENTRY"
	if len(args) == 0 {
		args = []string{"ls"}
	}
	var (
		method, path string
		body         any
	)
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "ls" && len(rest) == 0:
		method, path = "GET", "/v1/cache"
	case cmd == "stats" && len(rest) == 0:
		method, path = "GET", "/v1/cache/stats"
	case cmd == "warm" && len(rest) >= 1:
		method, path, body = "POST", "/v1/cache/warm?wait=true", map[string]any{"image_id": rest[0], "hosts": rest[1:]}
	case cmd == "pin" && len(rest) == 1:
		method, path = "POST", "/v1/cache/"+rest[0]+"/pin"
	case cmd == "unpin" && len(rest) == 1:
		method, path = "DELETE", "/v1/cache/"+rest[0]+"/pin"
	case cmd == "evict" && len(rest) == 1:
		method, path = "DELETE", "/v1/cache/"+rest[0]
	case cmd == "evict" && len(rest) == 2 && rest[0] == "--force":
		method, path = "DELETE", "/v1/cache/"+rest[1]+"?force=true"
	default:
		return errors.New(usage)
	}
	var v any
	if err := a.do(ctx, method, path, body, &v); err != nil {
		return err
	}
	return printJSON(v)
}

// wait polls the volume until it leaves "creating", showing each reading on p.
func (a *api) wait(ctx context.Context, id string, timeout time.Duration, p *progress) (map[string]any, error) {
	deadline := time.Now().Add(timeout)
	delay := 20 * time.Millisecond
	defer p.done()
	for {
		var v volumeStatus
		if err := a.do(ctx, "GET", "/v1/volumes/"+id, nil, &v); err != nil {
			return nil, err
		}
		if v.fields["status"] != "creating" {
			return v.fields, nil
		}
		p.show(time.Now(), id, v.Progress)
		if time.Now().After(deadline) {
			return v.fields, fmt.Errorf("volume %s still creating after %s", id, timeout)
		}
		time.Sleep(delay)
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// retry asks the gateway to run a failed volume's provision again, and with --wait waits for it.
func (a *api) retry(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("retry", flag.ContinueOnError)
	wait := fs.Bool("wait", false, "wait until the volume is available or failed again")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
	rest, err := cli.ParseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("usage: imagevolctl retry VOLUME [--wait]")
	}
	start := time.Now()
	var started map[string]string
	if err := a.do(ctx, "POST", "/v1/volumes/"+rest[0]+"/retry", nil, &started); err != nil {
		return err
	}
	if !*wait {
		return printJSON(started)
	}
	v, err := a.wait(ctx, started["id"], *timeout, newProgress(os.Stderr))
	if err != nil {
		return err
	}
	fmt.Printf("volume %s %s cache=%s in %s (run %s)\n", v["id"], v["status"], str(v["cache"]),
		time.Since(start).Round(time.Millisecond), started["run_id"])
	if v["status"] != "available" {
		return fmt.Errorf("volume %s: %v", v["id"], v["error"])
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// str is a JSON field as text, "" when the gateway left it out.
func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
