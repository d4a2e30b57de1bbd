package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/imagevol/imagevol/cmd/internal/cli"
)

// command is one command or subcommand of imagevolctl: how it is called, what it does, and its
// flags (every command also takes -o/--output).
type command struct {
	name    string
	args    string // positional arguments and flags, as the usage line shows them
	summary string // one line
	flags   func(fs *flag.FlagSet)
	subs    []*command
}

func waitFlags(what string) func(fs *flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.Bool("wait", false, "wait until the volume is available or failed"+what+", showing progress on stderr")
		fs.Duration("timeout", 30*time.Minute, "how long --wait waits")
	}
}

// commands are imagevolctl's commands, in the order help lists them.
var commands = []*command{
	{name: "create", args: "--image ID --size GB [--name NAME] [--wait [--timeout D]]", summary: "create a volume from an image",
		flags: func(fs *flag.FlagSet) {
			fs.String("image", "", "image ID (required)")
			fs.Int("size", 1, "size in GiB")
			fs.String("name", "", "volume name")
			waitFlags("")(fs)
		}},
	{name: "retry", args: "VOLUME [--wait [--timeout D]]", summary: "run a failed volume's provision again", flags: waitFlags(" again")},
	{name: "show", args: "VOLUME", summary: "show a volume"},
	{name: "list", summary: "list the project's volumes"},
	{name: "delete", args: "VOLUME", summary: "delete a volume"},
	{name: "cache", args: "SUBCOMMAND", summary: "see and manage the image-volume cache (operators)", subs: []*command{
		{name: "ls", summary: "list cache entries (the default)"},
		{name: "stats", summary: "show cache counters and totals, per host"},
		{name: "warm", args: "IMAGE [HOST...]", summary: "fill the cache with an image on the given hosts (all when none) and wait"},
		{name: "pin", args: "ENTRY", summary: "keep a cache entry from eviction"},
		{name: "unpin", args: "ENTRY", summary: "let a cache entry be evicted again"},
		{name: "evict", args: "[--force] ENTRY", summary: "evict a cache entry",
			flags: func(fs *flag.FlagSet) { fs.Bool("force", false, "evict even if volumes still depend on it") }},
	}},
	{name: "completion", args: "bash", summary: "print a bash completion script (source <(imagevolctl completion bash))"},
	{name: "help", args: "[COMMAND [SUBCOMMAND]]", summary: "show help for imagevolctl or a command"},
	{name: "version", summary: "print imagevolctl's version (as --version does)"},
}

// lookup finds the command a path of names names ("cache", "evict"), nil if none.
func lookup(path ...string) *command {
	cmds, cur := commands, (*command)(nil)
	for _, name := range path {
		var found *command
		for _, c := range cmds {
			if c.name == name {
				found = c
			}
		}
		if found == nil {
			return nil
		}
		cur, cmds = found, found.subs
	}
	return cur
}

// usageError is a command line imagevolctl cannot run: it exits 2, with the usage on stderr.
type usageError struct {
	msg  string
	path []string // the command whose usage is shown; none: the top-level usage
}

func (e *usageError) Error() string { return e.msg }

func usagef(path []string, format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...), path: path}
}

// flagSet is the flag set of the command at path, with -o/--output and the command's own flags.
// Its errors and help are reported by the caller, not printed by the flag package.
func flagSet(path []string, out *string) *flag.FlagSet {
	fs := flag.NewFlagSet("imagevolctl "+strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(out, "o", *out, "output format: json, yaml or table (default: table on a terminal, json otherwise)")
	fs.StringVar(out, "output", *out, "same as -o")
	if c := lookup(path...); c != nil && c.flags != nil {
		c.flags(fs)
	}
	return fs
}

// parse parses the flags of the command at path wherever they stand among args and returns
// the positional arguments; errHelp when they ask for help (the caller prints it).
func parse(fs *flag.FlagSet, path []string, args []string) ([]string, error) {
	rest, err := cli.ParseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, &helpRequest{path: path}
	}
	if err != nil {
		return nil, usagef(path, "%v", err)
	}
	return rest, nil
}

// helpRequest is -h/--help/help: the help of the command at path, on stdout, exit 0.
type helpRequest struct{ path []string }

func (h *helpRequest) Error() string { return "help requested" }

// writeHelp writes the help of the command at path (the top level when empty) to w.
func writeHelp(w io.Writer, path []string) error {
	if len(path) == 0 {
		fmt.Fprintln(w, "usage: imagevolctl [-o json|yaml|table] COMMAND [ARGS]")
		fmt.Fprintln(w, "\nimagevolctl talks to imagevol's API gateway (IMAGEVOL_URL, default http://127.0.0.1:8776)")
		fmt.Fprintln(w, "with the token in IMAGEVOL_TOKEN; without one, OS_CLOUD names a clouds.yaml cloud to")
		fmt.Fprintln(w, "authenticate with, and the gateway is the block-storage endpoint of Keystone's catalog.")
		fmt.Fprintln(w, "\ncommands:")
		writeCommands(w, commands)
		fmt.Fprintln(w, "\nflags:")
		fmt.Fprintln(w, "  -o, --output FORMAT   json, yaml or table (default: table on a terminal, json otherwise)")
		fmt.Fprintln(w, "  -h, --help            show help (also: imagevolctl COMMAND --help, imagevolctl help COMMAND)")
		fmt.Fprintln(w, "      --version         print the version and VCS revision")
		return nil
	}
	c := lookup(path...)
	if c == nil {
		return usagef(nil, "unknown command %q", strings.Join(path, " "))
	}
	line := "imagevolctl " + strings.Join(path, " ")
	if c.args != "" {
		line += " " + c.args
	}
	fmt.Fprintf(w, "usage: %s\n\n%s\n", line, c.summary)
	if len(c.subs) > 0 {
		fmt.Fprintln(w, "\nsubcommands:")
		writeCommands(w, c.subs)
	}
	fmt.Fprintln(w, "\nflags:")
	var out string
	fs := flagSet(path, &out)
	type row struct{ flag, usage string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "o" || f.Name == "output" {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		s := "  --" + f.Name
		if name != "" {
			s += " " + strings.ToUpper(name)
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			usage += " (default " + f.DefValue + ")"
		}
		rows = append(rows, row{s, usage})
		width = max(width, len(s))
	})
	rows = append(rows, row{"  -o, --output FORMAT", "json, yaml or table (default: table on a terminal, json otherwise)"},
		row{"  -h, --help", "show this help"})
	for _, r := range rows {
		width = max(width, len(r.flag))
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s   %s\n", width, r.flag, r.usage)
	}
	return nil
}

func writeCommands(w io.Writer, cmds []*command) {
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.name))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s   %s\n", width, c.name, c.summary)
	}
}

// flagNames are the flags of the command at path, as --name, sorted: for completion.
func flagNames(path []string) []string {
	var out string
	fs := flagSet(path, &out)
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) == 1 {
			names = append(names, "-"+f.Name)
		} else {
			names = append(names, "--"+f.Name)
		}
	})
	names = append(names, "--help")
	sort.Strings(names)
	return names
}
