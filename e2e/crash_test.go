//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// workerProcess runs cmd/imagevol-worker as a real process for host, against this run's
// Temporal, database, Glance and Ceph.
func workerProcess(t *testing.T, bin, host string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "--host", host, "--pool", stack.pool)
	cmd.Env = append(os.Environ(),
		"IMAGEVOL_TEMPORAL_ADDRESS="+stack.frontend, "IMAGEVOL_TEMPORAL_NAMESPACE="+stack.namespace,
		"IMAGEVOL_DB_DSN="+stack.dsn, "CINDER_INTERNAL_TENANT_PROJECT_ID=internal-project",
		"CINDER_INTERNAL_TENANT_USER_ID=internal-user")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// kill -9 of the worker in the middle of a download: the retried attempt, on a new worker
// process, resumes from the last heartbeated offset with a ranged request, fetches only the
// rest, and the volume holds exactly the image.
func TestWorkerKilledMidDownloadResumes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "imagevol-worker")
	if out, err := exec.Command("go", "build", "-tags", "pacific", "-o", bin, "../cmd/imagevol-worker").CombinedOutput(); err != nil {
		t.Fatalf("build worker: %v: %s", err, out)
	}
	host := "e2e-crash"
	api := newGateway(t, host)
	img := uploadImage(t, "crash", "raw", imageBytes(gib, 71, 1))

	first := workerProcess(t, bin, host)
	var created map[string]string
	if code := api.call("POST", "/v1/volumes", `{"image_id":"`+img.ID+`","size_gb":1}`, &created); code != 202 {
		t.Fatalf("create: HTTP %d", code)
	}
	id := created["id"]
	// Kill the worker once a fifth of the image is durably in Ceph.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var v struct {
			Status   string
			Progress *struct {
				Phase      string
				BytesDone  int64 `json:"bytes_done"`
				BytesTotal int64 `json:"bytes_total"`
			}
		}
		api.call("GET", "/v1/volumes/"+id, "", &v)
		if v.Status != models.StatusCreating {
			t.Fatalf("volume became %s before the worker could be killed mid-download", v.Status)
		}
		if p := v.Progress; p != nil && p.Phase == "DownloadImage" && p.BytesDone >= img.Size/5 {
			if p.BytesDone >= img.Size {
				t.Fatal("download finished before the kill")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no download progress seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	workerProcess(t, bin, host)

	v := api.waitVolume(id)
	requireAvailable(t, v, models.CacheMiss)
	var res contract.CreateVolumeResult
	if err := stack.temporal.GetWorkflow(context.Background(), id, "").Get(context.Background(), &res); err != nil {
		t.Fatal(err)
	}
	if res.ResumedFrom < img.Size/5 || res.Bytes != img.Size-res.ResumedFrom {
		t.Fatalf("resumed from %d and fetched %d bytes of %d; want a resume past a fifth fetching only the rest", res.ResumedFrom, res.Bytes, img.Size)
	}
	t.Logf("killed mid-download; the retried attempt resumed at %d MiB and fetched %d MiB", res.ResumedFrom>>20, res.Bytes>>20)
	if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
		t.Fatal("the resumed volume's bytes differ from the image")
	}
}
