// Package cmd_test checks what each command links: a binary carries only the dependencies of
// what it does, so the API client has no database drivers, the gateway no Ceph, and no service
// the Temporal server's packages (only the dev server embeds them).
package cmd_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// forbidden maps each command under cmd/ to the import-path prefixes it must not link.
var forbidden = map[string][]string{
	"imagevolctl": {
		"gorm.io/", "github.com/go-sql-driver/mysql", "github.com/mattn/go-sqlite3", "modernc.org/sqlite",
		"github.com/glebarez/", "github.com/prometheus/", "go.temporal.io/server", "github.com/ceph/go-ceph",
	},
	"imagevol-migrate": {"go.temporal.io/server", "github.com/ceph/go-ceph"},
	"imagevol-gateway": {"go.temporal.io/server", "github.com/ceph/go-ceph"},
	"imagevol-worker":  {"go.temporal.io/server"},
}

// TestLinkedPackages lists each command's dependencies with go list, as the build (with the
// pacific tag that go-ceph needs) would link them, and fails on a forbidden one.
func TestLinkedPackages(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH (%v): cannot list what the commands link", err)
	}
	for cmd, prefixes := range forbidden {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			list := exec.Command(gobin, "list", "-deps", "-tags", "pacific", "./"+cmd)
			var stderr bytes.Buffer
			list.Stderr = &stderr
			out, err := list.Output()
			if err != nil {
				t.Fatalf("go list -deps ./%s: %v\n%s", cmd, err, stderr.String())
			}
			deps := strings.Fields(string(out))
			if len(deps) == 0 {
				t.Fatalf("go list -deps ./%s listed nothing", cmd)
			}
			for _, dep := range deps {
				for _, p := range prefixes {
					if strings.HasPrefix(dep, p) {
						t.Errorf("%s links %s (forbidden: %s*)", cmd, dep, p)
					}
				}
			}
			t.Logf("%s links %d packages", cmd, len(deps))
		})
	}
}
