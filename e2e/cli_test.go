//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/converter"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

const cliHost = "e2e-cli"

// buildCLI builds imagevolctl into the test's temporary directory.
func buildCLI(t *testing.T) string { return buildCmd(t, "imagevolctl") }

// buildCmd builds the command cmd/<name> into the test's temporary directory.
func buildCmd(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-tags", "pacific", "-o", bin, "../cmd/"+name)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v: %s", name, err, out)
	}
	return bin
}

// cliResult is one run of the CLI.
type cliResult struct {
	stdout, stderr string
	exit           int
}

// cli runs the binary bin (imagevolctl, or imagevol-worker for replay) against the gateway api
// and the test's Temporal server.
func cli(t *testing.T, bin string, api *apiClient, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"IMAGEVOL_URL="+api.base, "IMAGEVOL_TOKEN="+testToken,
		"IMAGEVOL_TEMPORAL_ADDRESS="+stack.frontend, "IMAGEVOL_TEMPORAL_NAMESPACE="+stack.namespace)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.exit = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", filepath.Base(bin), args, err)
	}
	t.Logf("%s %s → exit %d\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), res.exit, res.stdout, res.stderr)
	return res
}

var finalLine = regexp.MustCompile(`(?m)^volume (\S+) (\S+) cache=(\S*) in `)

// finalVolume reads the volume ID and status from the final line of create/retry --wait.
func finalVolume(t *testing.T, r cliResult) (id, status string) {
	t.Helper()
	m := finalLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no final volume line in stdout %q (stderr %q)", r.stdout, r.stderr)
	}
	return m[1], m[2]
}

// create --wait shows progress and ends available with the image's bytes; replay of the
// provision's history against the current code (imagevol-worker replay) is deterministic, from
// Temporal and from a saved file; a tampered history is caught as non-deterministic; a retry of
// an available volume is refused.
func TestCLICreateAndReplay(t *testing.T) {
	bin, replayer := buildCLI(t), buildCmd(t, "imagevol-worker")
	startHost(t, hostConfig(cliHost))
	api := newGateway(t, cliHost)
	data := imageBytes(16*mib, 131, 2)
	img := uploadImage(t, "cli", "raw", data)

	r := cli(t, bin, api, "create", "--image", img.ID, "--size", "1", "--wait")
	if r.exit != 0 {
		t.Fatalf("create --wait exited %d", r.exit)
	}
	id, status := finalVolume(t, r)
	if status != models.StatusAvailable || !strings.Contains(r.stdout, "cache="+models.CacheMiss) {
		t.Fatalf("final line %q, want available cache=miss", r.stdout)
	}
	// stderr is a pipe here: plain progress lines, no in-place rewriting.
	if !strings.Contains(r.stderr, "volume "+id+": ") || strings.Contains(r.stderr, "\r") {
		t.Fatalf("stderr %q: want plain progress lines of volume %s", r.stderr, id)
	}
	v := api.waitVolume(id)
	requireAvailable(t, v, models.CacheMiss)
	sum := sha512.Sum512(data)
	if got := volumeSHA512(t, id, int64(len(data))); got != hex.EncodeToString(sum[:]) {
		t.Fatal("the volume does not hold the image's bytes")
	}

	saved := filepath.Join(t.TempDir(), "history.json")
	r = cli(t, replayer, api, "replay", id, "--save", saved)
	if r.exit != 0 || !strings.Contains(r.stdout, "deterministic") || strings.Contains(r.stdout, "NOT") {
		t.Fatalf("replay of %s: exit %d, stdout %q, stderr %q", id, r.exit, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "CreateVolumeFromImage") {
		t.Fatalf("replay output %q does not name the workflow type", r.stdout)
	}
	r = cli(t, replayer, api, "replay", "--file", saved)
	if r.exit != 0 || !strings.Contains(r.stdout, "deterministic") {
		t.Fatalf("replay --file: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}

	// A history whose clone step was another activity than the code schedules: the code changed
	// under a recorded run, which replay must report.
	hist, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(hist, []byte(`"CloneVolume"`)) {
		t.Fatalf("saved history has no CloneVolume activity:\n%.2000s", hist)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.json")
	if err := os.WriteFile(tampered, bytes.Replace(hist, []byte(`"CloneVolume"`), []byte(`"CloneVolumeV0"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	r = cli(t, replayer, api, "replay", "--file", tampered)
	if r.exit != 1 || r.stdout != "" || !strings.Contains(r.stderr, "NOT deterministic") || !strings.Contains(r.stderr, "TMPRL1100") {
		t.Fatalf("replay of a tampered history: exit %d, stdout %q, stderr %q; want exit 1 with TMPRL1100", r.exit, r.stdout, r.stderr)
	}

	r = cli(t, bin, api, "retry", id)
	if r.exit == 0 || !strings.Contains(r.stderr, "409 volume_not_failed") {
		t.Fatalf("retry of an available volume: exit %d, stderr %q; want 409 volume_not_failed", r.exit, r.stderr)
	}
	if code := api.call("POST", "/v1/volumes/"+id+"/retry", "", nil); code != http.StatusConflict {
		t.Fatalf("POST retry of an available volume: HTTP %d, want 409", code)
	}
	if v := api.waitVolume(id); v.Status != models.StatusAvailable {
		t.Fatalf("refused retry changed the volume: %+v", v)
	}
	if code := api.call("POST", "/v1/volumes/00000000-0000-0000-0000-000000000000/retry", "", nil); code != http.StatusNotFound {
		t.Fatalf("POST retry of an unknown volume: HTTP %d, want 404", code)
	}
}

// A provision that fails (a qcow2 naming a backing file) is retried twice: each retry is a new
// run of the same workflow ID with the first run's input (the image left for the lookup to
// read again) and search attributes, and fails again for the same reason.
func TestCLIRetryFailed(t *testing.T) {
	bin, replayer := buildCLI(t), buildCmd(t, "imagevol-worker")
	startHost(t, hostConfig(cliHost))
	api := newGateway(t, cliHost)
	data := qcow2WithBackingFile(t, 132)
	img := uploadImage(t, "cli-backing", "qcow2", data)

	r := cli(t, bin, api, "create", "--image", img.ID, "--size", "1", "--wait")
	id, status := finalVolume(t, r)
	if r.exit != 1 || status != models.StatusError || !strings.Contains(r.stderr, contract.ErrTypeUnsafeImage) {
		t.Fatalf("create of an unsafe image: exit %d status %s stderr %q; want exit 1, error, %s", r.exit, status, r.stderr, contract.ErrTypeUnsafeImage)
	}
	first := api.waitVolume(id)
	requireFailed(t, cliHost, first, contract.ErrTypeUnsafeImage)
	firstRun := latestRun(t, id)

	// Right after --wait returned: the failed run may still be closing, which retry waits out.
	r = cli(t, bin, api, "retry", id)
	if r.exit != 0 {
		t.Fatalf("retry exited %d", r.exit)
	}
	started := decodeJSON(t, r.stdout)
	if started["id"] != id || started["workflow_id"] != id || started["status"] != models.StatusCreating {
		t.Fatalf("retry answer %v", started)
	}
	if started["run_id"] == "" || started["run_id"] == firstRun {
		t.Fatalf("retry run %q, first run %q: want a new run", started["run_id"], firstRun)
	}
	again := api.waitVolume(id)
	requireFailed(t, cliHost, again, contract.ErrTypeUnsafeImage)
	if again.Error != first.Error {
		t.Fatalf("retried volume failed with %q, the first run with %q", again.Error, first.Error)
	}
	if got := latestRun(t, id); got != started["run_id"] {
		t.Fatalf("latest run of %s is %s, retry said %s", id, got, started["run_id"])
	}
	requireRunFailed(t, id, started["run_id"])

	// The retried run got the first run's input, with the image left to be read again, and its
	// search attributes.
	firstIn := runInput(t, id, firstRun)
	retryIn := runInput(t, id, started["run_id"])
	if firstIn.Image == nil {
		t.Fatal("the first run had no image metadata: the gateway always sends it")
	}
	if retryIn.VolumeID != firstIn.VolumeID || retryIn.ImageID != firstIn.ImageID || retryIn.SizeGB != firstIn.SizeGB ||
		retryIn.Host != firstIn.Host || retryIn.Image != nil {
		t.Fatalf("retry input %+v, first input %+v", retryIn, firstIn)
	}
	for k, want := range map[string]string{"ImageID": img.ID, "Host": cliHost, "ProjectID": "project-e2e"} {
		if got := searchAttribute(t, id, started["run_id"], k); got != want {
			t.Fatalf("retried run's %s = %q, want %q", k, got, want)
		}
	}

	// retry --wait, flag after the volume: fails again, a third run.
	r = cli(t, bin, api, "retry", id, "--wait")
	if _, status := finalVolume(t, r); r.exit != 1 || status != models.StatusError || !strings.Contains(r.stderr, contract.ErrTypeUnsafeImage) {
		t.Fatalf("retry --wait: exit %d status %s stderr %q", r.exit, status, r.stderr)
	}
	third := latestRun(t, id)
	if third == firstRun || third == started["run_id"] {
		t.Fatalf("retry --wait did not start a new run: %s", third)
	}
	requireFailed(t, cliHost, api.waitVolume(id), contract.ErrTypeUnsafeImage)

	// The failed runs replay deterministically too (compensation included).
	r = cli(t, replayer, api, "replay", id, "--run", firstRun)
	if r.exit != 0 || !strings.Contains(r.stdout, "deterministic") || !strings.Contains(r.stdout, firstRun) {
		t.Fatalf("replay of the failed first run: exit %d, stdout %q, stderr %q", r.exit, r.stdout, r.stderr)
	}
}

func decodeJSON(t *testing.T, s string) map[string]string {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return m
}

// latestRun is the run ID of a workflow's latest run.
func latestRun(t *testing.T, workflowID string) string {
	t.Helper()
	desc, err := stack.temporal.DescribeWorkflowExecution(context.Background(), workflowID, "")
	if err != nil {
		t.Fatal(err)
	}
	return desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
}

// requireRunFailed waits for a run to close and checks it failed.
func requireRunFailed(t *testing.T, workflowID, runID string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		desc, err := stack.temporal.DescribeWorkflowExecution(context.Background(), workflowID, runID)
		if err != nil {
			t.Fatal(err)
		}
		switch st := desc.GetWorkflowExecutionInfo().GetStatus(); st {
		case enums.WORKFLOW_EXECUTION_STATUS_FAILED:
			return
		case enums.WORKFLOW_EXECUTION_STATUS_RUNNING:
			if time.Now().After(deadline) {
				t.Fatalf("run %s of %s still running", runID, workflowID)
			}
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("run %s of %s is %s, want failed", runID, workflowID, st)
		}
	}
}

// runInput decodes the input a run was started with.
func runInput(t *testing.T, workflowID, runID string) contract.CreateVolumeInput {
	t.Helper()
	it := stack.temporal.GetWorkflowHistory(context.Background(), workflowID, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	ev, err := it.Next()
	if err != nil {
		t.Fatal(err)
	}
	var in contract.CreateVolumeInput
	if err := converter.GetDefaultDataConverter().FromPayloads(ev.GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatalf("decode the input of run %s: %v", runID, err)
	}
	return in
}

// searchAttribute reads a keyword search attribute of a run.
func searchAttribute(t *testing.T, workflowID, runID, name string) string {
	t.Helper()
	desc, err := stack.temporal.DescribeWorkflowExecution(context.Background(), workflowID, runID)
	if err != nil {
		t.Fatal(err)
	}
	p := desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()[name]
	if p == nil {
		return ""
	}
	var s string
	if err := converter.GetDefaultDataConverter().FromPayload(p, &s); err != nil {
		t.Fatalf("search attribute %s: %v", name, err)
	}
	return s
}
