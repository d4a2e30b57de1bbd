package cli

import (
	"fmt"
	"io"
	"runtime/debug"
	"slices"
)

// Version is the line a command prints for --version: its name, the module version and the
// VCS revision it was built from, as the Go toolchain recorded them in the binary, e.g.
// "imagevolctl v1.2.0 revision 0f0f565… (modified) go1.24.1". "devel" stands in for what the
// build did not record (go run, go test, a build outside a checkout).
func Version(name string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return FormatVersion(name, bi)
}

// FormatVersion is Version for the build information bi (nil: none).
func FormatVersion(name string, bi *debug.BuildInfo) string {
	version, revision, modified, goVersion := "devel", "devel", false, ""
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					revision = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	line := fmt.Sprintf("%s %s revision %s", name, version, revision)
	if modified {
		line += " (modified)"
	}
	if goVersion != "" {
		line += " " + goVersion
	}
	return line
}

// WantsVersion says whether args (a command line without the program name) ask for the
// version: --version or -version anywhere before a "--".
func WantsVersion(args []string) bool {
	end := slices.Index(args, "--")
	if end < 0 {
		end = len(args)
	}
	return slices.ContainsFunc(args[:end], func(a string) bool { return a == "--version" || a == "-version" })
}

// PrintVersion writes Version(name) to w when args ask for it, and says whether they did: a
// command calls it first thing, before it reads its configuration or connects anywhere.
func PrintVersion(w io.Writer, name string, args []string) bool {
	if !WantsVersion(args) {
		return false
	}
	fmt.Fprintln(w, Version(name))
	return true
}
