package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// runCLI runs imagevolctl's command line as main does, without a gateway (IMAGEVOL_URL points
// nowhere), and returns its stdout, stderr and exit code.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("IMAGEVOL_URL", "http://127.0.0.1:1")
	errFile, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	var out, errBuf bytes.Buffer
	code = exitCode(run(context.Background(), args, &out, errFile), &out, &errBuf)
	progress, _ := os.ReadFile(errFile.Name())
	return out.String(), string(progress) + errBuf.String(), code
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		out, errOut, code := runCLI(t, args...)
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage: imagevolctl ") {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		for _, c := range commands {
			if !strings.Contains(out, "\n  "+c.name+" ") || !strings.Contains(out, c.summary) {
				t.Errorf("%v: help does not list %s: %q", args, c.name, out)
			}
		}
	}
	// Each command's help, three ways: help COMMAND, COMMAND --help, COMMAND -h.
	check := func(path []string, wantFlags ...string) {
		t.Helper()
		c := lookup(path...)
		for _, args := range [][]string{
			append([]string{"help"}, path...),
			append(append([]string{}, path...), "--help"),
			append(append([]string{}, path...), "-h"),
		} {
			out, errOut, code := runCLI(t, args...)
			if code != 0 || errOut != "" {
				t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
			}
			if !strings.HasPrefix(out, "usage: imagevolctl "+strings.Join(path, " ")) || !strings.Contains(out, "\n"+c.summary+"\n") {
				t.Errorf("%v: help %q lacks the usage line or the summary", args, out)
			}
			for _, f := range append(wantFlags, "-o, --output FORMAT", "-h, --help") {
				if !strings.Contains(out, f) {
					t.Errorf("%v: help %q does not show %s", args, out, f)
				}
			}
		}
	}
	check([]string{"create"}, "--image STRING", "--size INT", "--name STRING", "--wait", "--timeout DURATION")
	check([]string{"retry"}, "--wait", "--timeout DURATION")
	check([]string{"show"})
	check([]string{"list"})
	check([]string{"delete"})
	check([]string{"cache"})
	check([]string{"completion"})
	for _, c := range lookup("cache").subs {
		check([]string{"cache", c.name})
	}
	check([]string{"cache", "evict"}, "--force")
	if out, _, _ := runCLI(t, "help", "cache"); !strings.Contains(out, "\n  evict ") {
		t.Errorf("help cache does not list its subcommands: %q", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"bogus"}, {"--bogus"}, {"help", "bogus"}, {"cache", "bogus"}, {"show"}, {"show", "a", "b"},
		{"list", "x"}, {"create", "--size", "1"}, {"create", "--image", "i", "--size", "x"}, {"list", "-o", "xml"},
		{"-o"}, {"completion", "zsh"}, {"cache", "evict"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "imagevolctl: ") || !strings.Contains(errOut, "\nusage: imagevolctl") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr", args, code, out, errOut)
		}
	}
	// An unknown command gets the top-level usage, with the list of commands.
	if _, errOut, _ := runCLI(t, "bogus"); !strings.Contains(errOut, `unknown command "bogus"`) || !strings.Contains(errOut, "commands:") {
		t.Errorf("unknown command: stderr %q", errOut)
	}
	// A failure that is not a usage error exits 1 without the usage.
	if _, errOut, code := runCLI(t, "list", "-o", "json"); code != 1 || strings.Contains(errOut, "usage:") {
		t.Errorf("list against no gateway: exit %d, stderr %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, code := runCLI(t, args...)
		if code != 0 || !strings.HasPrefix(out, "imagevolctl ") || !strings.Contains(out, " revision ") {
			t.Errorf("%v: exit %d, stdout %q", args, code, out)
		}
	}
}

func TestOutputFormat(t *testing.T) {
	for _, tc := range []struct {
		flag string
		tty  bool
		want string
	}{
		{"", true, "table"}, {"", false, "json"}, {"json", true, "json"}, {"yaml", false, "yaml"},
		{"table", false, "table"}, {"YAML", false, "yaml"},
	} {
		if got, err := outputFormat(tc.flag, tc.tty); err != nil || got != tc.want {
			t.Errorf("outputFormat(%q, %v) = %q, %v; want %q", tc.flag, tc.tty, got, err, tc.want)
		}
	}
	if _, err := outputFormat("xml", false); err == nil {
		t.Error("outputFormat(xml) accepted")
	}
	for _, tc := range []struct {
		args []string
		out  string
		rest []string
	}{
		{[]string{"list"}, "", []string{"list"}},
		{[]string{"-o", "yaml", "list"}, "yaml", []string{"list"}},
		{[]string{"--output=table", "show", "x"}, "table", []string{"show", "x"}},
		{[]string{"-o=json", "list"}, "json", []string{"list"}},
	} {
		out, rest, err := globalFlags(tc.args)
		if err != nil || out != tc.out || strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
			t.Errorf("globalFlags(%q) = %q, %q, %v", tc.args, out, rest, err)
		}
	}
	// -o on the command, before or after its arguments.
	var out string
	for _, args := range [][]string{{"-o", "yaml", "x"}, {"x", "--output", "yaml"}} {
		out = ""
		rest, err := parse(flagSet([]string{"show"}, &out), []string{"show"}, args)
		if err != nil || out != "yaml" || len(rest) != 1 || rest[0] != "x" {
			t.Errorf("show %q: output %q, rest %q, %v", args, out, rest, err)
		}
	}
}

func decoded(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRender(t *testing.T) {
	list := decoded(t, `{"volumes":[
		{"id":"v1","name":"a","status":"available","image_id":"img","size_gb":1,"cache":"miss","workflow_id":"v1","created_at":"2026-01-01T00:00:00Z","progress":null},
		{"id":"v2","name":"","status":"creating","image_id":"img","size_gb":20,"workflow_id":"v2","created_at":"2026-01-02T00:00:00Z"}]}`)
	var b bytes.Buffer
	if err := render(&b, formatTable, list); err != nil {
		t.Fatal(err)
	}
	want := "ID  NAME  STATUS     IMAGE_ID  SIZE_GB  CACHE  CREATED_AT\n" +
		"v1  a     available  img       1        miss   2026-01-01T00:00:00Z\n" +
		"v2        creating   img       20              2026-01-02T00:00:00Z\n"
	if b.String() != want {
		t.Errorf("volumes table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	entries := decoded(t, `{"entries":[{"id":"e1","host":"node1","pinned":true,"bytes":1073741824,"volumes":["x"]}]}`)
	if err := render(&b, formatTable, entries); err != nil {
		t.Fatal(err)
	}
	if want := "ID  HOST   PINNED  BYTES\ne1  node1  true    1073741824\n"; b.String() != want {
		t.Errorf("entries table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := render(&b, formatTable, decoded(t, `{"volumes":[]}`)); err != nil || b.String() != "(none)\n" {
		t.Errorf("empty list: %q, %v", b.String(), err)
	}

	b.Reset()
	one := decoded(t, `{"status":"creating","id":"v1","progress":{"phase":"download"},"hosts":{"node1":{"hits":2}}}`)
	if err := render(&b, formatTable, one); err != nil {
		t.Fatal(err)
	}
	want = "FIELD     VALUE\nid        v1\nstatus    creating\nhosts     {\"node1\":{\"hits\":2}}\nprogress  {\"phase\":\"download\"}\n"
	if b.String() != want {
		t.Errorf("object table:\n%s\nwant:\n%s", b.String(), want)
	}

	// JSON is what scripts read: indented, keys sorted, as before.
	b.Reset()
	if err := render(&b, formatJSON, map[string]any{"status": "creating", "id": "v1"}); err != nil ||
		b.String() != "{\n  \"id\": \"v1\",\n  \"status\": \"creating\"\n}\n" {
		t.Errorf("json: %q, %v", b.String(), err)
	}
	b.Reset()
	if err := render(&b, formatYAML, one); err != nil || !strings.Contains(b.String(), "id: v1\n") || !strings.Contains(b.String(), "progress:\n  phase: download\n") {
		t.Errorf("yaml: %q, %v", b.String(), err)
	}
}

func TestBashCompletion(t *testing.T) {
	out, errOut, code := runCLI(t, "completion", "bash")
	if code != 0 || errOut != "" {
		t.Fatalf("completion bash: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"complete -F _imagevolctl imagevolctl", `"create retry show list delete cache completion help version"`,
		`"cache evict")`, "--force", "--image", "json yaml table"} {
		if !strings.Contains(out, want) {
			t.Errorf("completion script lacks %q", want)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to check the script with")
	}
	// The script parses, and completes commands, cache subcommands, flags and formats.
	script := out + `
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _imagevolctl; echo "${COMPREPLY[*]}"; }
complete_words imagevolctl cr
complete_words imagevolctl cache e
complete_words imagevolctl cache evict --f
complete_words imagevolctl list -o y
complete_words imagevolctl create --ti
`
	got, err := exec.Command(bash, "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v: %s", err, got)
	}
	if want := "create\nevict\n--force\nyaml\n--timeout\n"; string(got) != want {
		t.Errorf("completions %q, want %q", got, want)
	}
}
