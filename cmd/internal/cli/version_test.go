package cli

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "x devel revision devel"},
		{"devel, no VCS", &debug.BuildInfo{GoVersion: "go1.24.1", Main: debug.Module{Version: "(devel)"}}, "x devel revision devel go1.24.1"},
		{"clean checkout", &debug.BuildInfo{GoVersion: "go1.24.1", Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0f0f565abc"}, {Key: "vcs.modified", Value: "false"},
		}}, "x v1.2.0 revision 0f0f565abc go1.24.1"},
		{"modified", &debug.BuildInfo{GoVersion: "go1.24.1", Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0f0f565abc"}, {Key: "vcs.modified", Value: "true"},
		}}, "x devel revision 0f0f565abc (modified) go1.24.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FormatVersion("x", tc.bi); got != tc.want {
				t.Fatalf("FormatVersion = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestVersionOfTestBinary(t *testing.T) {
	if v := Version("cli.test"); !strings.HasPrefix(v, "cli.test ") || !strings.Contains(v, " revision ") {
		t.Fatalf("Version = %q", v)
	}
}

func TestWantsVersion(t *testing.T) {
	for args, want := range map[string]bool{
		"":                          false,
		"--version":                 true,
		"-version":                  true,
		"replay --version":          true,
		"--config f.yaml --version": true,
		"list":                      false,
		"-- --version":              false,
		"--versions":                false,
	} {
		if got := WantsVersion(strings.Fields(args)); got != want {
			t.Errorf("WantsVersion(%q) = %v, want %v", args, got, want)
		}
	}
	var b bytes.Buffer
	if !PrintVersion(&b, "x", []string{"--version"}) || !strings.HasPrefix(b.String(), "x ") || !strings.HasSuffix(b.String(), "\n") {
		t.Fatalf("PrintVersion wrote %q", b.String())
	}
	b.Reset()
	if PrintVersion(&b, "x", []string{"list"}) || b.Len() != 0 {
		t.Fatalf("PrintVersion without --version wrote %q", b.String())
	}
}
