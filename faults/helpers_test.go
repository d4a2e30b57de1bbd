//go:build faults

package faults

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/proto"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage/librbd"
)

const (
	mib       = int64(1) << 20
	gib       = int64(1) << 30
	blockSize = 4 * mib
)

// stack is the environment deploy/faults.sh brought up, and connections to its parts.
var stack struct {
	api, token, dsn, pool, ctl, temporal string
	store                                *models.Store
	ceph                                 *librbd.Cluster
	glance                               *glance.Client
	tc                                   client.Client
}

func TestMain(m *testing.M) {
	get := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			fmt.Fprintf(os.Stderr, "faults: %s is not set; run these tests with `make test-faults`\n", name)
			os.Exit(2)
		}
		return v
	}
	stack.api, stack.token, stack.dsn = get("FAULTS_API"), get("FAULTS_TOKEN"), get("FAULTS_DSN")
	stack.pool, stack.ctl, stack.temporal = get("FAULTS_POOL"), get("FAULTS_CTL"), get("IMAGEVOL_TEMPORAL_ADDRESS")
	ctx := context.Background()
	var err error
	if stack.store, err = models.Open(ctx, stack.dsn, ""); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	if stack.ceph, err = librbd.Connect(get("CEPH_CONF")); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	if stack.glance, err = glance.New(get("GLANCE_URL"), ""); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	// Lazy: the client reconnects after the Temporal case restarts the server.
	if stack.tc, err = client.NewLazyClient(client.Options{HostPort: stack.temporal}); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	code := m.Run()
	stack.tc.Close()
	stack.ceph.Close()
	_ = stack.store.Close()
	os.Exit(code)
}

// ctl runs one verb of deploy/faults.sh: the faults are injected the way an operator would.
func ctl(t testing.TB, verb string, args ...string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, stack.ctl, append([]string{verb}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("faults.sh %s: %v\n%s", verb, err, out)
	}
	t.Logf("faults.sh %s: %.1fs: %s", verb, time.Since(start).Seconds(), strings.TrimSpace(string(out)))
	return time.Since(start)
}

// patternReader yields size bytes in 4 MiB blocks, alternately seeded random data and zeros,
// without holding the image in memory.
type patternReader struct {
	size, off int64
	rng       *rand.ChaCha8
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-r.off, blockSize-r.off%blockSize)
	if (r.off/blockSize)%2 == 0 {
		_, _ = r.rng.Read(p[:n])
	} else {
		clear(p[:n])
	}
	r.off += n
	return int(n), nil
}

// uploadImage puts a fresh 1 GiB image into Glance; seed makes its content (and so its cache
// key) its own.
func uploadImage(t testing.TB, name string, seed uint64) imagesource.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var key [32]byte
	binaryPut(key[:], seed^uint64(time.Now().UnixNano()))
	r := &patternReader{size: gib, rng: rand.NewChaCha8(key)}
	img, err := stack.glance.Create(ctx, glance.CreateOpts{Name: name, DiskFormat: "raw", Visibility: imagesource.VisibilityCommunity}, r)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	if img.Status != imagesource.StatusActive || img.HashAlgo != "sha512" || img.Size != gib {
		t.Fatalf("image %s: status %s, hash algo %q, size %d", img.ID, img.Status, img.HashAlgo, img.Size)
	}
	return img
}

func binaryPut(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

// call makes one API request; err is a transport error (the gateway may be unreachable or
// failing while a part is down, which callers that poll tolerate).
func call(method, path, body string, out any) (int, error) {
	req, err := http.NewRequest(method, stack.api+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+stack.token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w: %s", method, path, err, data)
		}
	}
	return resp.StatusCode, nil
}

// startVolume asks the gateway for a 1 GiB volume from img.
func startVolume(t testing.TB, imageID string) string {
	t.Helper()
	var created map[string]string
	code, err := call("POST", "/v1/volumes", fmt.Sprintf(`{"image_id":%q,"size_gb":1,"name":"faults"}`, imageID), &created)
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("create volume from %s: HTTP %d, %v", imageID, code, err)
	}
	return created["id"]
}

// getVolume reads a volume through the API; ok is false while the gateway cannot answer.
func getVolume(id string) (v volumeView, ok bool) {
	code, err := call("GET", "/v1/volumes/"+id, "", &v)
	return v, err == nil && code == http.StatusOK
}

// waitDownload polls until the provision's download has durably written at least frac of
// total bytes, and returns that heartbeated offset. It fails if the download finished first:
// the fault must hit mid-way.
func waitDownload(t testing.TB, id string, total int64, frac float64) int64 {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		v, ok := getVolume(id)
		if ok && v.Status != models.StatusCreating {
			t.Fatalf("volume %s became %s (%s) before the fault", id, v.Status, v.Error)
		}
		if p := v.Progress; ok && p != nil && p.Phase == "DownloadImage" && p.BytesDone >= int64(frac*float64(total)) {
			if p.BytesDone >= total {
				t.Fatalf("download finished before the fault")
			}
			return p.BytesDone
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no download progress on %s in 3 minutes", id)
	return 0
}

// waitSettled polls until the volume is no longer creating, tolerating a gateway that cannot
// answer while a part is down.
func waitSettled(t testing.TB, id string, limit time.Duration) volumeView {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if v, ok := getVolume(id); ok && v.Status != models.StatusCreating {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("volume %s still creating after %s", id, limit)
	return volumeView{}
}

// volumeSHA512 hashes the first n bytes of a volume's RBD image, read from the pool its row
// names, in 4 MiB reads (one RADOS object each).
func volumeSHA512(t testing.TB, id string, n int64) string {
	t.Helper()
	ctx := context.Background()
	row, err := stack.store.GetVolume(ctx, id)
	if err != nil {
		t.Fatalf("volume row %s: %v", id, err)
	}
	r, err := stack.ceph.OpenReader(ctx, row.Pool, contract.RBDName(id), "")
	if err != nil {
		t.Fatalf("open %s/%s: %v", row.Pool, contract.RBDName(id), err)
	}
	defer r.Close()
	h := sha512.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(r, 0, n), make([]byte, blockSize)); err != nil {
		t.Fatalf("read volume %s: %v", id, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// cacheEntriesOf lists the cache entries of one image through the API.
func cacheEntriesOf(t testing.TB, imageID string) []cacheEntry {
	t.Helper()
	var all struct {
		Entries []cacheEntry `json:"entries"`
	}
	if code, err := call("GET", "/v1/cache", "", &all); err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/cache: HTTP %d, %v", code, err)
	}
	var out []cacheEntry
	for _, e := range all.Entries {
		if e.ImageID == imageID {
			out = append(out, e)
		}
	}
	return out
}

// volumeView is the part of GET /v1/volumes/{id} the tests read (the API as a client sees it).
type volumeView struct {
	ID       string    `json:"id"`
	Status   string    `json:"status"`
	Cache    string    `json:"cache"`
	Error    string    `json:"error"`
	Progress *progress `json:"progress"`
}

// progress is a provision's pending step and its heartbeated download offset.
type progress struct {
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// cacheEntry is one entry of GET /v1/cache.
type cacheEntry struct {
	ID       uint   `json:"id"`
	ImageID  string `json:"image_id"`
	VolumeID string `json:"volume_id"`
	State    string `json:"state"`
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// runIDs are the IDs this run made: every volume row of its private database, and every UUID in
// the histories of its private Temporal server (a cache volume's ID appears in the result of
// the step that reserved it even if its row is gone). The pool is shared with other tests, so
// the orphan check looks only at these.
func runIDs(t testing.TB) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ids := map[string]bool{}
	vols, err := stack.store.ListVolumes(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		ids[v.ID] = true
	}
	var token []byte
	for {
		resp, err := stack.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{NextPageToken: token})
		if err != nil {
			t.Fatalf("list workflows: %v", err)
		}
		for _, ex := range resp.GetExecutions() {
			it := stack.tc.GetWorkflowHistory(ctx, ex.GetExecution().GetWorkflowId(), ex.GetExecution().GetRunId(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					t.Fatalf("history of %s: %v", ex.GetExecution().GetWorkflowId(), err)
				}
				b, _ := proto.Marshal(ev)
				for _, m := range uuidRE.FindAll(b, -1) {
					ids[string(m)] = true
				}
			}
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	return ids
}

var rbdNameRE = regexp.MustCompile(`^volume-([0-9a-f-]{36})(\.part)?$`)

// checkNoOrphans asserts that every RBD image of this run's IDs in the pool belongs to a volume
// row (and a staging ".part" image only to a volume still creating), and that every available
// volume row has its image. It returns how many images of the run the pool holds.
func checkNoOrphans(t testing.TB) int {
	t.Helper()
	ctx := context.Background()
	ids := runIDs(t)
	vols, err := stack.store.ListVolumes(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]models.Volume{}
	for _, v := range vols {
		rows[v.ID] = v
	}
	names, err := stack.ceph.List(ctx, stack.pool)
	if err != nil {
		t.Fatal(err)
	}
	ours := 0
	for _, name := range names {
		m := rbdNameRE.FindStringSubmatch(name)
		if m == nil || !ids[m[1]] {
			continue
		}
		ours++
		row, ok := rows[m[1]]
		switch {
		case !ok:
			t.Errorf("orphan: RBD image %s/%s has no volume row", stack.pool, name)
		case m[2] != "" && row.Status != models.StatusCreating:
			t.Errorf("leftover: staging image %s/%s of a volume that is %s", stack.pool, name, row.Status)
		}
	}
	for _, v := range vols {
		if v.Status != models.StatusAvailable {
			continue
		}
		if _, err := stack.ceph.Stat(ctx, v.Pool, contract.RBDName(v.ID)); err != nil {
			t.Errorf("volume %s is available but its image %s/%s: %v", v.ID, v.Pool, contract.RBDName(v.ID), err)
		}
	}
	return ours
}

// deleteVolume deletes a volume through the API and waits until it is gone.
func deleteVolume(t testing.TB, id string) {
	t.Helper()
	code, err := call("DELETE", "/v1/volumes/"+id, "", nil)
	if err != nil || (code != http.StatusAccepted && code != http.StatusNotFound) {
		t.Errorf("delete volume %s: HTTP %d, %v", id, code, err)
		return
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if code, err := call("GET", "/v1/volumes/"+id, "", nil); err == nil && code == http.StatusNotFound {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("volume %s not gone 2 minutes after DELETE", id)
}

// waitNoOpenFill waits until no cache fill workflow of the run's Temporal server is running.
func waitNoOpenFill(t testing.TB, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := stack.tc.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{
			Query: fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running'", contract.FillWorkflow),
		})
		cancel()
		if err == nil && resp.GetCount() == 0 {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("a cache fill was still running after %s", limit)
}

// waitProgressPast polls until the volume's download has durably written more than mark bytes,
// and returns the time since from; -1 when the volume settled first (the download had already
// finished, so no progress could be seen).
func waitProgressPast(t testing.TB, id string, mark int64, limit time.Duration, from time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if v, ok := getVolume(id); ok {
			if v.Status != models.StatusCreating {
				return -1
			}
			if p := v.Progress; p != nil && p.Phase == "DownloadImage" && p.BytesDone > mark {
				return time.Since(from)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no download progress past %d bytes on %s in %s", mark, id, limit)
	return 0
}

// downloadWorkerPid finds the worker process running the fill's DownloadImage step, from the
// identity the worker gave Temporal (worker.HostIdentity).
func downloadWorkerPid(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := stack.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: "WorkflowType = 'FillCache' AND ExecutionStatus = 'Running'",
	})
	if err != nil {
		t.Fatalf("list running fills: %v", err)
	}
	for _, ex := range resp.Executions {
		desc, err := stack.tc.DescribeWorkflowExecution(ctx, ex.GetExecution().GetWorkflowId(), ex.GetExecution().GetRunId())
		if err != nil {
			t.Fatalf("describe fill: %v", err)
		}
		for _, pa := range desc.GetPendingActivities() {
			if pa.GetActivityType().GetName() != "DownloadImage" {
				continue
			}
			id := pa.GetLastWorkerIdentity()
			// imagevol-worker:<host>@<machine>:<pid>[#<ceph address>]
			if id, _, _ := strings.Cut(id, "#"); strings.HasPrefix(id, "imagevol-worker:") {
				i := strings.LastIndex(id, ":")
				if pid, err := strconv.Atoi(id[i+1:]); err == nil {
					return pid
				}
			}
			t.Fatalf("DownloadImage runs on worker %q: not a worker process identity", id)
		}
	}
	t.Fatalf("no running fill with a DownloadImage step")
	return 0
}

// caseT is a case's test that also keeps its first failure's message, so that the summary table
// (all a CI log may show) says why a case failed.
type caseT struct {
	testing.TB
	failure *string
}

func (c caseT) note(msg string) {
	if *c.failure == "" {
		*c.failure = msg
	}
}

// Fatalf records the message, then fails the case.
func (c caseT) Fatalf(format string, args ...any) {
	c.TB.Helper()
	c.note(fmt.Sprintf(format, args...))
	c.TB.Fatalf(format, args...)
}

// Fatal records the message, then fails the case.
func (c caseT) Fatal(args ...any) {
	c.TB.Helper()
	c.note(fmt.Sprint(args...))
	c.TB.Fatal(args...)
}

// Errorf records the message, then marks the case failed.
func (c caseT) Errorf(format string, args ...any) {
	c.TB.Helper()
	c.note(fmt.Sprintf(format, args...))
	c.TB.Errorf(format, args...)
}
