//go:build standalone

package standaloneproof

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const imageMiB = 64

// poolOf is each storage host's pool, as deploy/standalone-proof.sh starts the workers.
var poolOf = map[string]string{"node1": "volumes", "node2": "volumes2"}

// proof is the stack deploy/standalone-proof.sh brought up, and what this run made in it.
type proof struct {
	api, token, dir, namespace, db string
	glance, cephConf, temporal     string
	top                            string // the repository, for bin/ and deploy/
	wait                           time.Duration
	start                          time.Time

	image     map[string]string // image name (A, B) -> Glance image ID
	sha       map[string]string // image name -> the sha512 of its bytes
	images    []string          // Glance image IDs, in upload order
	volumes   []*volume         // in creation order
	cacheVols []string          // the volume IDs of the proof's cache entries
	reported  bool              // report.txt has the checks' lines
}

// volume is one provision of the proof and what the checks found.
type volume struct {
	id, name, host, image, wantCache string
	created                          time.Time
	took                             time.Duration
	cache, workflow                  string // as the gateway reports them
	bytes, pg, replay                string // the report's columns
}

// cacheEntry is one entry of GET /v1/cache.
type cacheEntry struct {
	ID       uint   `json:"id"`
	VolumeID string `json:"volume_id"`
	Host     string `json:"host"`
	Pool     string `json:"pool"`
	ImageID  string `json:"image_id"`
	Hits     int64  `json:"hits"`
	State    string `json:"state"`
}

func TestStandaloneProof(t *testing.T) {
	p := setup(t)
	t.Cleanup(func() { p.teardown(t) })
	p.upload(t, "A")
	p.upload(t, "B")

	// Wave 1: the first volume of each image, on its own host: both misses, at once.
	p.waitWave(t, p.create(t, "a-node1-miss", "A", "node1", "miss"), p.create(t, "b-node2-miss", "B", "node2", "miss"))
	// Wave 2: hits on each host, and each image on the other host, cloned across pools.
	p.waitWave(t,
		p.create(t, "a-node1-hit", "A", "node1", "hit"),
		p.create(t, "b-node2-hit", "B", "node2", "hit"),
		p.create(t, "a-node2-cross", "A", "node2", "hit"),
		p.create(t, "b-node1-cross", "B", "node1", "hit"))

	for _, v := range p.volumes {
		p.check(t, v)
	}
	cacheReport := p.checkCache(t)
	fills, err := p.psql("psql-visibility", "SELECT workflow_type_name || ':' || count(*) FROM executions_visibility WHERE status = 2 GROUP BY workflow_type_name ORDER BY workflow_type_name")
	if err != nil {
		t.Errorf("completed workflows in the visibility store: %v", err)
	}
	p.writeReport(t, cacheReport, strings.Join(strings.Fields(fills), " "))
}

func setup(t *testing.T) *proof {
	get := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			t.Fatalf("%s is not set; run this test with `make standalone-proof`", name)
		}
		return v
	}
	p := &proof{
		api: get("PROOF_API"), token: get("PROOF_TOKEN"), dir: get("PROOF_DIR"),
		namespace: get("PROOF_NAMESPACE"), db: get("PROOF_DB"),
		glance: strings.TrimSuffix(get("GLANCE_URL"), "/"), cephConf: get("CEPH_CONF"),
		temporal: get("TEMPORAL_PG_ADDRESS"), wait: 180 * time.Second, start: time.Now(),
		image: map[string]string{}, sha: map[string]string{},
	}
	if s := os.Getenv("PROOF_WAIT"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("PROOF_WAIT=%q: %v", s, err)
		}
		p.wait = time.Duration(n) * time.Second
	}
	var err error
	if p.top, err = filepath.Abs(".."); err != nil {
		t.Fatal(err)
	}
	return p
}

// --- images -------------------------------------------------------------------------------------

// upload puts imageMiB of random bytes into Glance as image name and checks that Glance made it
// active with their sha512 as its os_hash_value.
func (p *proof) upload(t *testing.T, name string) {
	data := make([]byte, imageMiB<<20)
	_, _ = rand.Read(data)
	sum := sha512.Sum512(data)
	p.sha[name] = hex.EncodeToString(sum[:])

	meta, _ := json.Marshal(map[string]string{"name": "imagevol-proof-" + name, "disk_format": "raw", "container_format": "bare", "visibility": "community"})
	code, body, err := glanceCall("POST", p.glance+"/v2/images", "application/json", meta, 30*time.Second)
	var img struct{ ID string }
	if err == nil && code < 400 {
		_ = json.Unmarshal(body, &img)
	}
	if img.ID == "" {
		t.Fatalf("Glance did not create an image: %d %v %s", code, err, body)
	}
	p.images = append(p.images, img.ID)
	if code, body, err := glanceCall("PUT", p.glance+"/v2/images/"+img.ID+"/file", "application/octet-stream", data, 120*time.Second); err != nil || code >= 400 {
		t.Fatalf("upload of image %s: %d %v %s", name, code, err, body)
	}

	var got struct {
		Status      string `json:"status"`
		OSHashAlgo  string `json:"os_hash_algo"`
		OSHashValue string `json:"os_hash_value"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, body, err := glanceCall("GET", p.glance+"/v2/images/"+img.ID, "", nil, 10*time.Second); err == nil && code < 400 {
			_ = json.Unmarshal(body, &got)
		}
		if got.Status == "active" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got.Status != "active" {
		t.Fatalf("image %s is %s, not active, 30 s after upload", name, got.Status)
	}
	if got.OSHashAlgo != "sha512" || got.OSHashValue != p.sha[name] {
		t.Fatalf("Glance's %s %s for image %s is not the file's sha512 %s", got.OSHashAlgo, got.OSHashValue, name, p.sha[name])
	}
	p.image[name] = img.ID
	t.Logf("image %s: %s, %d MiB raw, sha512 %s… (Glance os_hash_value matches)", name, img.ID, imageMiB, p.sha[name][:16])
}

func glanceCall(method, url, contentType string, body []byte, limit time.Duration) (int, []byte, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return do(req, limit)
}

// --- provisions ---------------------------------------------------------------------------------

// create asks for a 1 GB volume of image (A or B) pinned to host; wantCache is the cache result it
// must report.
func (p *proof) create(t *testing.T, name, image, host, wantCache string) *volume {
	code, body, err := p.call("POST", "/v1/volumes", map[string]any{
		"image_id": p.image[image], "size_gb": 1, "name": "proof-" + name, "host": host,
	})
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("create %s: %d %v %s", name, code, err, body)
	}
	var made struct{ ID string }
	if err := json.Unmarshal(body, &made); err != nil || made.ID == "" {
		t.Fatalf("create %s: no volume ID in %s", name, body)
	}
	v := &volume{id: made.ID, name: name, host: host, image: image, wantCache: wantCache, created: time.Now()}
	p.volumes = append(p.volumes, v)
	return v
}

// waitWave waits until every one of vs is available; it fails on an error status and after the
// proof's wait.
func (p *proof) waitWave(t *testing.T, vs ...*volume) {
	deadline := time.Now().Add(p.wait)
	for pending := vs; len(pending) > 0; {
		var next []*volume
		for _, v := range pending {
			code, body, err := p.call("GET", "/v1/volumes/"+v.id, nil)
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET volume %s: %d %v %s", v.name, code, err, body)
			}
			var got struct {
				Status   string `json:"status"`
				Cache    string `json:"cache"`
				Workflow string `json:"workflow_id"`
				Error    string `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("GET volume %s: %v: %s", v.name, err, body)
			}
			v.cache, v.workflow = got.Cache, got.Workflow
			switch got.Status {
			case "available":
				v.took = time.Since(v.created)
			case "error":
				t.Fatalf("volume %s (%s) failed: %s", v.name, v.id, got.Error)
			default:
				next = append(next, v)
			}
		}
		if pending = next; len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			ids := make([]string, len(pending))
			for i, v := range pending {
				ids[i] = v.id
			}
			t.Fatalf("not available after %s: %s", p.wait, strings.Join(ids, " "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// --- checks -------------------------------------------------------------------------------------

// check: the volume's bytes read back from RBD hash to its image's sha512, its cache result is the
// expected one, its workflow (named by its ID) is completed in PostgreSQL's visibility store with
// its execution row in the store, and its history, fetched from the standalone frontend, replays
// against the workflow code.
func (p *proof) check(t *testing.T, v *volume) {
	got, stderr := p.volumeSHA512(v)
	if got == p.sha[v.image] {
		v.bytes = "ok"
	} else {
		v.bytes = "MISMATCH"
		t.Errorf("volume %s: RBD bytes hash to %.16s…, not the image's sha512; rbd export: %s", v.name, got, stderr)
	}
	if v.cache != v.wantCache {
		t.Errorf("volume %s: cache %s, want %s", v.name, v.cache, v.wantCache)
	}
	if v.workflow != v.id {
		t.Errorf("volume %s: the gateway gives workflow ID '%s'", v.name, v.workflow)
	}

	wf := strings.ReplaceAll(v.workflow, "'", "''")
	vis, err1 := p.psql("psql-visibility", "SELECT workflow_type_name || ' ' || status || ' ' || (SELECT count(*) FROM jsonb_object_keys(search_attributes)) FROM executions_visibility WHERE workflow_id = '"+wf+"'")
	rows, err2 := p.psql("psql", "SELECT count(*) FROM executions WHERE workflow_id = '"+wf+"'")
	vis, rows = strings.TrimSpace(vis), strings.TrimSpace(rows)
	first, _, _ := strings.Cut(vis, "\n")
	f := strings.Fields(first)
	nrows, _ := strconv.Atoi(rows)
	if err1 == nil && err2 == nil && len(f) >= 2 && f[0] == "CreateVolumeFromImage" && f[1] == "2" && nrows >= 1 {
		v.pg = fmt.Sprintf("completed, %s search attrs, %s execution row", strings.Join(f[2:], " "), rows)
	} else {
		v.pg = fmt.Sprintf("visibility '%s', executions %s", vis, rows)
		t.Errorf("volume %s: workflow %s in PostgreSQL: visibility '%s', execution rows %s%s", v.name, v.workflow, vis, rows, errText(err1, err2))
	}

	out, err := run(time.Minute, filepath.Join(p.top, "bin/imagevol-worker"), "replay", "--address", p.temporal, "--namespace", p.namespace, v.workflow)
	_ = os.WriteFile(filepath.Join(p.dir, "replay-"+v.id+".txt"), []byte(out), 0o644)
	if err == nil {
		v.replay = "ok"
	} else {
		v.replay = "FAILED"
		t.Errorf("volume %s: imagevol-worker replay failed: %v: %s", v.name, err, lastLines(out, 3))
	}
}

// volumeSHA512 hashes the first imageMiB of the volume's RBD image as `rbd export` streams it,
// and returns the hash with the export's last complaints (if any).
func (p *proof) volumeSHA512(v *volume) (sum, stderr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rbd", "-c", p.cephConf, "export", "--no-progress", poolOf[v.host]+"/volume-"+v.id, "-")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err.Error()
	}
	if err := cmd.Start(); err != nil {
		return "", err.Error()
	}
	h := sha512.New()
	_, _ = io.CopyN(h, out, imageMiB<<20)
	// The rest of the volume is not needed: rbd stops on the closed pipe.
	_ = out.Close()
	_ = cmd.Wait()
	var kept []string
	for l := range strings.Lines(errb.String()) {
		if !strings.Contains(l, "error writing to destination") {
			kept = append(kept, l)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), lastLines(strings.Join(kept, ""), 2)
}

// checkCache: one cache entry per image, on the host that missed it, each hit twice (once on its
// own host, once from the other), ready. It returns the report's lines of the entries.
func (p *proof) checkCache(t *testing.T) []string {
	entries, err := p.cacheEntries()
	if err != nil {
		t.Fatalf("could not list the cache entries: %v", err)
	}
	var lines, got []string
	for _, e := range entries {
		p.noteCacheVol(e.VolumeID)
		name := "?"
		for n, id := range p.image {
			if id == e.ImageID {
				name = n
			}
		}
		lines = append(lines, fmt.Sprintf("entry %d: image %s on %s/%s, cache volume %s, %d hits, %s", e.ID, name, e.Host, e.Pool, e.VolumeID, e.Hits, e.State))
		got = append(got, fmt.Sprintf("%s %s %s %d %s", e.Host, e.Pool, e.ImageID, e.Hits, e.State))
	}
	slices.Sort(got)
	want := []string{"node1 volumes " + p.image["A"] + " 2 ready", "node2 volumes2 " + p.image["B"] + " 2 ready"}
	if !slices.Equal(got, want) {
		t.Errorf("cache entries are not A on node1/volumes and B on node2/volumes2, 2 hits each, ready: %+v", entries)
	}
	return lines
}

func (p *proof) noteCacheVol(id string) {
	if id != "" && !slices.Contains(p.cacheVols, id) {
		p.cacheVols = append(p.cacheVols, id)
	}
}

// cacheEntries lists the cache entries of the proof's images.
func (p *proof) cacheEntries() ([]cacheEntry, error) {
	code, body, err := p.call("GET", "/v1/cache", nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/cache: %d %s", code, body)
	}
	var all struct {
		Entries []cacheEntry `json:"entries"`
	}
	if err := json.Unmarshal(body, &all); err != nil {
		return nil, fmt.Errorf("GET /v1/cache: %w: %s", err, body)
	}
	var out []cacheEntry
	for _, e := range all.Entries {
		if slices.Contains(p.images, e.ImageID) {
			out = append(out, e)
		}
	}
	return out, nil
}

// --- report -------------------------------------------------------------------------------------

const row = "%-14s %-36s %-6s %-8s %-5s %8s  %-5s %-42s %s"

func (p *proof) writeReport(t *testing.T, cacheReport []string, fills string) {
	server, _ := run(time.Minute, filepath.Join(p.top, "bin/temporal-server"), "--version")
	pg, _ := p.psql("psql", "SHOW server_version")
	mysql := "mariadb"
	if _, err := exec.LookPath(mysql); err != nil {
		mysql = "mysql"
	}
	db, _ := run(time.Minute, mysql, "-h", "127.0.0.1", "-u", "root", "-Nse", "SELECT version()")
	user := os.Getenv("IMAGEVOL_CEPH_USER")
	if user == "" {
		user = "admin"
	}
	r := []string{
		"imagevol standalone proof, " + time.Now().UTC().Format("2006-01-02T15:04:05Z"),
		fmt.Sprintf("Temporal: %s at %s, namespace %s; store and visibility on PostgreSQL %s (postgres12 plugin)",
			firstLine(server), p.temporal, p.namespace, firstField(pg)),
		fmt.Sprintf("cache rows: %s database %s; workers: node1 on pool volumes, node2 on pool volumes2, as Ceph client.%s; images A %s, B %s (%d MiB raw, random)",
			strings.TrimSpace(db), p.db, user, p.image["A"], p.image["B"], imageMiB),
		fmt.Sprintf(row, "volume", "id", "host", "pool", "cache", "seconds", "bytes", "workflow in PostgreSQL", "replay"),
	}
	for _, v := range p.volumes {
		ms := v.took.Milliseconds()
		r = append(r, fmt.Sprintf(row, v.name, v.id, v.host, poolOf[v.host], v.cache, fmt.Sprintf("%d.%03d", ms/1000, ms%1000), v.bytes, v.pg, v.replay))
	}
	r = append(r, cacheReport...)
	r = append(r, "completed workflows in the visibility store: "+fills,
		fmt.Sprintf("checks: %s %d s after the start", verdict(t, "passed", "FAILED"), int(time.Since(p.start).Seconds())))
	p.reported = true
	p.saveReport(t, r...)
}

// saveReport logs lines and adds them to report.txt.
func (p *proof) saveReport(t *testing.T, lines ...string) {
	f, err := os.OpenFile(filepath.Join(p.dir, "report.txt"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	for _, l := range lines {
		t.Log(l)
		fmt.Fprintln(f, l)
	}
}

// --- teardown -----------------------------------------------------------------------------------

// teardown removes what the proof made: the volumes and cache entries through the API, then
// whatever is left of them in the pools or their trash directly (a failure), then the Glance
// images.
func (p *proof) teardown(t *testing.T) {
	for _, v := range p.volumes {
		code, body, err := p.call("DELETE", "/v1/volumes/"+v.id, nil)
		if err != nil || (code != http.StatusAccepted && code != http.StatusNoContent && code != http.StatusNotFound) {
			t.Errorf("delete volume %s: %d %v %s", v.id, code, err, body)
		}
	}
	left := 0
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		left = 0
		for _, v := range p.volumes {
			if code, _, err := p.call("GET", "/v1/volumes/"+v.id, nil); err != nil || code != http.StatusNotFound {
				left++
			}
		}
		if left == 0 || time.Now().After(deadline) {
			break
		}
	}
	if left > 0 {
		t.Errorf("%d volumes still there 60 s after DELETE", left)
	}

	// The cache entries of the proof's images: evicted now (their clones are gone).
	evicted := 0
	entries, err := p.cacheEntries()
	if err != nil {
		t.Errorf("could not list the cache entries: %v", err)
	}
	for _, e := range entries {
		p.noteCacheVol(e.VolumeID)
		// 202: the eviction outlived the request; waited on below.
		code, body, err := p.call("DELETE", fmt.Sprintf("/v1/cache/%d?force=true", e.ID), nil)
		if err == nil && (code == http.StatusOK || code == http.StatusAccepted) {
			evicted++
		} else {
			t.Errorf("evict cache entry %d: %d %v %s", e.ID, code, err, body)
		}
	}
	for deadline := time.Now().Add(time.Minute); evicted > 0; time.Sleep(200 * time.Millisecond) {
		es, err := p.cacheEntries()
		if err == nil && len(es) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("cache entries of the proof's images still listed 60 s after eviction: %+v %v", es, err)
			break
		}
	}

	// Nothing of the proof may be left in the shared pools or their trash: remove what is, and fail.
	ids := slices.Clone(p.cacheVols)
	for _, v := range p.volumes {
		ids = append(ids, v.id)
	}
	leftovers := p.removeLeftovers(ids)
	if len(leftovers) > 0 {
		t.Errorf("left in RBD after deleting through the API (now removed): %s", strings.Join(leftovers, " "))
	}
	for _, id := range p.images {
		if _, _, err := glanceCall("DELETE", p.glance+"/v2/images/"+id, "", nil, 30*time.Second); err != nil {
			t.Errorf("delete Glance image %s: %v", id, err)
		}
	}

	if !p.reported {
		return
	}
	state := "no image of theirs left in volumes, volumes2 or their trash"
	if len(leftovers) > 0 {
		state = "LEFTOVERS: " + strings.Join(leftovers, " ")
	}
	p.saveReport(t,
		fmt.Sprintf("teardown: %d volumes deleted and %d cache entries evicted through the API; %s", len(p.volumes), evicted, state),
		fmt.Sprintf("result: %s, wall time %d s", verdict(t, "PASS", "FAIL"), int(time.Since(p.start).Seconds())))
}

// removeLeftovers removes every RBD image and trash entry of the pools whose name holds one of
// ids, and names what it found.
func (p *proof) removeLeftovers(ids []string) []string {
	var found []string
	ours := func(s string) bool {
		return slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(s, id) })
	}
	if len(ids) == 0 {
		return nil
	}
	for _, pool := range []string{"volumes", "volumes2"} {
		out, _ := p.rbd("ls", pool)
		for _, name := range strings.Fields(out) {
			if ours(name) {
				found = append(found, pool+"/"+name)
				_, _ = p.rbd("snap", "purge", pool+"/"+name)
				_, _ = p.rbd("rm", pool+"/"+name)
			}
		}
		// "TRASH-ID NAME" lines
		out, _ = p.rbd("trash", "ls", pool)
		for l := range strings.Lines(out) {
			tid, name, _ := strings.Cut(strings.TrimSpace(l), " ")
			if ours(l) {
				found = append(found, pool+" trash "+name)
				_, _ = p.rbd("trash", "rm", "--force", pool+"/"+tid)
			}
		}
	}
	return found
}

// --- helpers ------------------------------------------------------------------------------------

// call makes one API request with the proof's token (an operator's of project proof).
func (p *proof) call(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.api+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return do(req, 30*time.Second)
}

// do sends req, bounded by limit, and reads the whole answer.
func do(req *http.Request, limit time.Duration) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(req.Context(), limit)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// psql runs query through deploy/temporal-pg.sh's psql verb (psql: the store; psql-visibility:
// the visibility database), in its unaligned, tuples-only output.
func (p *proof) psql(verb, query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(p.top, "deploy/temporal-pg.sh"), verb, "-Atc", query).Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return string(out), err
}

// rbd runs the rbd CLI on the proof's cluster, bounded as a stuck cluster must not hang teardown.
func (p *proof) rbd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rbd", append([]string{"-c", p.cephConf}, args...)...).Output()
	return string(out), err
}

// run runs a command, bounded by limit, and returns its combined output.
func run(limit time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// verdict is pass, or fail once the test has failed.
func verdict(t *testing.T, pass, fail string) string {
	if t.Failed() {
		return fail
	}
	return pass
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

func errText(errs ...error) string {
	if err := errors.Join(errs...); err != nil {
		return ": " + err.Error()
	}
	return ""
}
