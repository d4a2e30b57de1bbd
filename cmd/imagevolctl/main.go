// Command imagevolctl is a small client of imagevol's API gateway.
//
//	imagevolctl create --image ID --size GB [--name N] [--wait]
//	imagevolctl show VOLUME
//	imagevolctl list
//	imagevolctl delete VOLUME
//	imagevolctl cache ls | stats | warm IMAGE [HOST...] | pin ENTRY | unpin ENTRY | evict [--force] ENTRY
//
// It reads the gateway's address and token from IMAGEVOL_URL and IMAGEVOL_TOKEN.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
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
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

func run(ctx context.Context, args []string) error {
	a := &api{
		base:  strings.TrimSuffix(envOr("IMAGEVOL_URL", "http://127.0.0.1:8776"), "/"),
		token: os.Getenv("IMAGEVOL_TOKEN"),
		hc:    &http.Client{Timeout: 30 * time.Second},
	}
	if len(args) == 0 {
		return errors.New("usage: imagevolctl create|show|list|delete|cache ...")
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
		v, err := a.wait(ctx, created["id"], *timeout)
		if err != nil {
			return err
		}
		fmt.Printf("volume %s %s cache=%s in %s (202 after %s)\n", v["id"], v["status"], v["cache"],
			time.Since(start).Round(time.Millisecond), accepted.Round(time.Millisecond))
		if v["status"] != "available" {
			return fmt.Errorf("volume %s: %v", v["id"], v["error"])
		}
		return nil
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

// wait polls the volume until it leaves "creating".
func (a *api) wait(ctx context.Context, id string, timeout time.Duration) (map[string]any, error) {
	deadline := time.Now().Add(timeout)
	delay := 20 * time.Millisecond
	for {
		var v map[string]any
		if err := a.do(ctx, "GET", "/v1/volumes/"+id, nil, &v); err != nil {
			return nil, err
		}
		if v["status"] != "creating" {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("volume %s still creating after %s", id, timeout)
		}
		time.Sleep(delay)
		delay = min(delay*2, 250*time.Millisecond)
	}
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
