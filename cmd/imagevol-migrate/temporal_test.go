package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/server/temporaltest"
)

// TestTemporalSetup runs imagevol-migrate --temporal-setup twice against an in-process server: the
// first run registers a namespace of its own and the five search attributes, the second finds
// them all.
func TestTemporalSetup(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	t.Setenv("IMAGEVOL_TEMPORAL_ADDRESS", ts.GetFrontendHostPort())
	t.Setenv("IMAGEVOL_TEMPORAL_NAMESPACE", "imagevol-setup-test")
	args := []string{"--dsn", "sqlite:" + filepath.Join(t.TempDir(), "imagevol.db"), "--temporal-setup", "--retention", "72h", "--timeout", "1m"}

	var first bytes.Buffer
	if err := run(args, &first); err != nil {
		t.Fatalf("first run: %v\n%s", err, first.String())
	}
	wants := []string{
		"namespace imagevol-setup-test: registered (retention 72h0m0s)",
		"temporal ready: 5 search attributes; 5 new, 0 already registered",
	}
	for _, name := range []string{"CacheResult", "Host", "ImageID", "Phase", "ProjectID"} {
		wants = append(wants, fmt.Sprintf("  search attribute %-12s Keyword  (new)\n", name))
	}
	for _, want := range wants {
		if !strings.Contains(first.String(), want) {
			t.Errorf("first run: no %q in\n%s", want, first.String())
		}
	}

	var second bytes.Buffer
	if err := run(args, &second); err != nil {
		t.Fatalf("second run: %v\n%s", err, second.String())
	}
	for _, want := range []string{
		"namespace imagevol-setup-test: exists (retention 72h0m0s)",
		"temporal ready: 5 search attributes; 0 new, 5 already registered",
	} {
		if !strings.Contains(second.String(), want) {
			t.Errorf("second run: no %q in\n%s", want, second.String())
		}
	}
	if strings.Contains(second.String(), "(new)") {
		t.Errorf("second run added something:\n%s", second.String())
	}
}
