// The histories under testdata/histories are real runs recorded by the e2e test
// TestRecordedHistoriesReplay against Ceph, Glance, MariaDB and an in-process Temporal. After a
// deliberate, versioned change of workflow code, re-record them from the repository root with
//
//	. .run/ceph/env && . .run/glance/env && . .run/mariadb/env &&
//	export CEPH_CONF GLANCE_URL IMAGEVOL_TEST_DSN GLANCE_STORE_DIR=$PWD/.run/glance/images GOFLAGS=-tags=pacific &&
//	IMAGEVOL_RECORD_HISTORIES=1 go test -tags 'pacific e2e' -count=1 -run '^TestRecordedHistoriesReplay$' ./e2e/
//
// but keep the old files too while runs recorded with the old code may still be in flight: with
// IMAGEVOL_RECORD_PREFIX=name- the new histories are written as name-<run>.json beside them. The
// files named fill-signals-* were recorded after provisions began waiting on fills by signal
// and deletions began waiting for the provision they cancel; fill-phases-* after fills began
// moving their Phase search attribute along and provisions began naming the fill in their memo;
// hit-step-* after provisions began running on their host's queue, a hit in one local step.

package workflows_test

import (
	"path/filepath"
	"testing"

	sdkworker "go.temporal.io/sdk/worker"

	"github.com/imagevol/imagevol/worker"
)

// TestReplayRecordedHistories replays every recorded history against the current workflow code:
// a change that would make a run in flight non-deterministic (TMPRL1100) fails here, before it
// is deployed.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "histories", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no recorded histories in testdata/histories; record them (see the top of this file)")
	}
	// Registered as the workers register them: a history names its workflow type.
	r := sdkworker.NewWorkflowReplayer()
	worker.RegisterWorkflows(r)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, f); err != nil {
				t.Fatalf("replay %s: %v", f, err)
			}
		})
	}
}
