// Command imagevolctl is a small client of imagevol's API gateway.
//
//	imagevolctl create --image ID --size GB [--name N] [--wait]
//	imagevolctl retry VOLUME [--wait]
//	imagevolctl show VOLUME
//	imagevolctl list
//	imagevolctl delete VOLUME
//	imagevolctl cache ls | stats | warm IMAGE [HOST...] | pin ENTRY | unpin ENTRY | evict [--force] ENTRY
//	imagevolctl completion bash
//	imagevolctl help [COMMAND [SUBCOMMAND]]
//
// Every command takes -h/--help and -o/--output json|yaml|table: a table on a terminal, JSON
// otherwise (what scripts read), unless -o says. --version prints the version and VCS revision.
//
// It reads the gateway's address and token from IMAGEVOL_URL and IMAGEVOL_TOKEN, or, without
// IMAGEVOL_TOKEN, authenticates with the clouds.yaml cloud OS_CLOUD names and finds the gateway
// in Keystone's catalog (its block-storage endpoint). While --wait waits, it shows the
// provision's progress on stderr. It talks to the gateway only, and links none of the services'
// code; replaying a workflow history against the workflow code is
// imagevol-worker replay, the binary that holds that code.
//
// It imports only apiclient and cmd/internal/cli of imagevol's packages: no database driver,
// Temporal server, Prometheus or Ceph (cmd/deps_test.go checks what it links).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagevol/imagevol/apiclient"
	"github.com/imagevol/imagevol/cmd/internal/cli"
)

func main() {
	if cli.PrintVersion(os.Stdout, "imagevolctl", os.Args[1:]) {
		return
	}
	os.Exit(exitCode(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr), os.Stdout, os.Stderr))
}

// exitCode reports err and says how imagevolctl exits: 0, 1 for a failure, 2 for a command line
// it cannot run (with the usage on stderr).
func exitCode(err error, stdout, stderr io.Writer) int {
	var help *helpRequest
	var usage *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		if err := writeHelp(stdout, help.path); err != nil {
			return exitCode(err, stdout, stderr)
		}
		return 0
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "imagevolctl:", usage.msg)
		if lookup(usage.path...) == nil {
			usage.path = nil
		}
		writeHelp(stderr, usage.path)
		return 2
	}
	fmt.Fprintln(stderr, "imagevolctl:", err)
	return 1
}

type api struct {
	base, token string
	// cloud: without a token, the first call authenticates with the clouds.yaml cloud OS_CLOUD
	// names, as the openstack client does; IMAGEVOL_URL, when set, still names the gateway.
	cloud, baseSet bool
	hc             *http.Client
	stdout         io.Writer
	stderr         *os.File // progress
	tty            bool     // stdout is a terminal
	output         string   // -o, "" when not given
}

func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	if a.cloud {
		base, token, err := fromCloud(ctx)
		if err != nil {
			return err
		}
		a.cloud, a.token = false, token
		if !a.baseSet {
			a.base = base
		}
	}
	return (&apiclient.Client{Base: a.base, Token: a.token, HTTP: a.hc}).Do(ctx, method, path, body, out)
}

// print writes an answer of the gateway in the output format.
func (a *api) print(v any) error {
	format, err := outputFormat(a.output, a.tty)
	if err != nil {
		return err
	}
	return render(a.stdout, format, v)
}

// globalFlags takes -o/--output, -h/--help and --version off the front of args, before the
// command.
func globalFlags(args []string) (output string, rest []string, err error) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		arg := args[0]
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		switch name {
		case "h", "help":
			return "", nil, &helpRequest{}
		case "version":
			return "", []string{"version"}, nil
		case "o", "output":
			if !hasValue {
				if len(args) < 2 {
					return "", nil, usagef(nil, "flag needs an argument: %s", arg)
				}
				value, args = args[1], args[1:]
			}
			output = value
		default:
			return "", nil, usagef(nil, "flag provided but not defined: %s", arg)
		}
		args = args[1:]
	}
	return output, args, nil
}

func run(ctx context.Context, args []string, stdout io.Writer, stderr *os.File) error {
	output, args, err := globalFlags(args)
	if err != nil {
		return err
	}
	a := &api{
		base:    strings.TrimSuffix(envOr("IMAGEVOL_URL", "http://127.0.0.1:8776"), "/"),
		token:   os.Getenv("IMAGEVOL_TOKEN"),
		cloud:   os.Getenv("IMAGEVOL_TOKEN") == "" && os.Getenv("OS_CLOUD") != "",
		baseSet: os.Getenv("IMAGEVOL_URL") != "",
		hc:      &http.Client{Timeout: 30 * time.Second},
		stdout:  stdout,
		stderr:  stderr,
		output:  output,
	}
	if f, ok := stdout.(*os.File); ok {
		a.tty = isTerminal(f)
	}
	if len(args) == 0 {
		return usagef(nil, "no command")
	}
	if _, err := outputFormat(output, false); err != nil {
		return usagef(nil, "%v", err)
	}
	cmd := args[0]
	if cmd == "replay" {
		return errors.New("replay is imagevol-worker replay, the binary that holds the workflow code: imagevol-worker replay [--address HOST:PORT] [--namespace NS] [--run RUN] [--save FILE] VOLUME")
	}
	if cmd == "cache" {
		return a.cache(ctx, args[1:])
	}
	if lookup(cmd) == nil {
		return usagef(nil, "unknown command %q", cmd)
	}
	path := []string{cmd}
	fs := flagSet(path, &a.output)
	rest, err := parse(fs, path, args[1:])
	if err != nil {
		return err
	}
	if _, err := outputFormat(a.output, false); err != nil {
		return usagef(path, "%v", err)
	}
	nargs := func(n int) error {
		if len(rest) != n {
			return usagef(path, "%s takes %d argument(s), got %d", cmd, n, len(rest))
		}
		return nil
	}
	switch cmd {
	case "help":
		if len(rest) == 0 {
			return &helpRequest{}
		}
		if lookup(rest...) == nil {
			return usagef(nil, "unknown command %q", strings.Join(rest, " "))
		}
		return &helpRequest{path: rest}
	case "version":
		fmt.Fprintln(stdout, cli.Version("imagevolctl"))
		return nil
	case "completion":
		if len(rest) != 1 || rest[0] != "bash" {
			return usagef(path, "completion takes one argument: bash")
		}
		return writeBashCompletion(stdout)
	case "create":
		if err := nargs(0); err != nil {
			return err
		}
		if flagString(fs, "image") == "" {
			return usagef(path, "create needs --image")
		}
		size, _ := strconv.Atoi(flagString(fs, "size"))
		return a.create(ctx, map[string]any{"image_id": flagString(fs, "image"), "size_gb": size, "name": flagString(fs, "name")},
			flagString(fs, "wait") == "true", flagDuration(fs, "timeout"))
	case "retry":
		if err := nargs(1); err != nil {
			return err
		}
		return a.retry(ctx, rest[0], flagString(fs, "wait") == "true", flagDuration(fs, "timeout"))
	case "show":
		if err := nargs(1); err != nil {
			return err
		}
		return a.call(ctx, "GET", "/v1/volumes/"+rest[0], nil)
	case "list":
		if err := nargs(0); err != nil {
			return err
		}
		return a.call(ctx, "GET", "/v1/volumes", nil)
	case "delete":
		if err := nargs(1); err != nil {
			return err
		}
		return a.call(ctx, "DELETE", "/v1/volumes/"+rest[0], nil)
	}
	return usagef(nil, "unknown command %q", cmd)
}

func flagString(fs *flag.FlagSet, name string) string { return fs.Lookup(name).Value.String() }

func flagDuration(fs *flag.FlagSet, name string) time.Duration {
	return fs.Lookup(name).Value.(flag.Getter).Get().(time.Duration)
}

// call sends one request and prints the answer.
func (a *api) call(ctx context.Context, method, path string, body any) error {
	var v any
	if err := a.do(ctx, method, path, body, &v); err != nil {
		return err
	}
	return a.print(v)
}

// create creates a volume and, with wait, waits for it.
func (a *api) create(ctx context.Context, body map[string]any, wait bool, timeout time.Duration) error {
	start := time.Now()
	var created map[string]any
	if err := a.do(ctx, "POST", "/v1/volumes", body, &created); err != nil {
		return err
	}
	accepted := time.Since(start)
	if !wait {
		return a.print(created)
	}
	v, err := a.wait(ctx, str(created["id"]), timeout, newProgress(a.stderr))
	if err != nil {
		return err
	}
	return a.finish(v, fmt.Sprintf("volume %s %s cache=%s in %s (202 after %s)\n", v["id"], v["status"], str(v["cache"]),
		time.Since(start).Round(time.Millisecond), accepted.Round(time.Millisecond)))
}

// finish prints a waited-for volume: the one-line summary scripts read, unless -o asked for
// json or yaml (then the volume); an error unless it ended available.
func (a *api) finish(v map[string]any, line string) error {
	if a.output == formatJSON || a.output == formatYAML {
		if err := a.print(v); err != nil {
			return err
		}
	} else {
		fmt.Fprint(a.stdout, line)
	}
	if v["status"] != "available" {
		return fmt.Errorf("volume %s: %v", v["id"], v["error"])
	}
	return nil
}

// cache runs the cache subcommands: ls, stats, warm IMAGE [HOST...], pin|unpin|evict ENTRY.
func (a *api) cache(ctx context.Context, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if slices.ContainsFunc(args, func(s string) bool { return s == "-h" || s == "--help" || s == "-help" }) {
			return &helpRequest{path: []string{"cache"}}
		}
		args = append([]string{"ls"}, args...)
	}
	sub := args[0]
	if sub == "help" {
		return &helpRequest{path: []string{"cache"}}
	}
	path := []string{"cache", sub}
	if lookup(path...) == nil {
		return usagef([]string{"cache"}, "unknown cache subcommand %q", sub)
	}
	fs := flagSet(path, &a.output)
	rest, err := parse(fs, path, args[1:])
	if err != nil {
		return err
	}
	if _, err := outputFormat(a.output, false); err != nil {
		return usagef(path, "%v", err)
	}
	var (
		method, url string
		body        any
	)
	switch {
	case sub == "ls" && len(rest) == 0:
		method, url = "GET", "/v1/cache"
	case sub == "stats" && len(rest) == 0:
		method, url = "GET", "/v1/cache/stats"
	case sub == "warm" && len(rest) >= 1:
		method, url, body = "POST", "/v1/cache/warm?wait=true", map[string]any{"image_id": rest[0], "hosts": rest[1:]}
	case sub == "pin" && len(rest) == 1:
		method, url = "POST", "/v1/cache/"+rest[0]+"/pin"
	case sub == "unpin" && len(rest) == 1:
		method, url = "DELETE", "/v1/cache/"+rest[0]+"/pin"
	case sub == "evict" && len(rest) == 1:
		method, url = "DELETE", "/v1/cache/"+rest[0]
		if flagString(fs, "force") == "true" {
			url += "?force=true"
		}
	default:
		return usagef(path, "wrong arguments for cache %s: %q", sub, rest)
	}
	return a.call(ctx, method, url, body)
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

// retry asks the gateway to run a failed volume's provision again, and with wait waits for it.
func (a *api) retry(ctx context.Context, id string, wait bool, timeout time.Duration) error {
	start := time.Now()
	var started map[string]any
	if err := a.do(ctx, "POST", "/v1/volumes/"+id+"/retry", nil, &started); err != nil {
		return err
	}
	if !wait {
		return a.print(started)
	}
	v, err := a.wait(ctx, str(started["id"]), timeout, newProgress(a.stderr))
	if err != nil {
		return err
	}
	return a.finish(v, fmt.Sprintf("volume %s %s cache=%s in %s (run %s)\n", v["id"], v["status"], str(v["cache"]),
		time.Since(start).Round(time.Millisecond), str(started["run_id"])))
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
