//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// fault is one part of the stack taken away mid-provision and given back.
type fault struct {
	name string
	// stop and start are verbs of deploy/faults.sh; start may be empty (stop gives it back).
	stop, start string
	// down is how long the part stays away between stop and start.
	down time.Duration
	// peer: a second worker serves the host's queue, the process running the download is
	// killed (whichever of the two it is) and not started again until the volume settles.
	peer bool
}

// The faults, each hitting a provision once a fifth of its 1 GiB download is durably in Ceph.
var faultCases = []fault{
	{name: "worker-kill9", stop: "kill-worker", start: "start-worker"},
	{name: "temporal-restart", stop: "stop-temporal", start: "start-temporal"},
	{name: "mariadb-down-10s", stop: "stop-mariadb", start: "start-mariadb", down: 10 * time.Second},
	{name: "osd-restart", stop: "restart-osd"},
	{name: "glance-down-10s", stop: "stop-glance", start: "start-glance", down: 10 * time.Second},
	{name: "kill9-peer-serves", peer: true},
}

// outcome is one case's line in the summary.
type outcome struct {
	name        string
	injectAt    time.Duration // after the request
	injectBytes int64         // durable download offset when the fault hit
	faultFor    time.Duration // stop, hold and start
	// recovery is from the part's return (for a peer case, from the kill) until the download
	// makes progress again; -1 when the volume settled before any progress was seen.
	recovery             time.Duration
	total                time.Duration // request to settled
	status, cache, error string
	failure              string // the first failure of the case, when it failed
	resumedFrom, fetched int64
	checks               []string
}

func TestFaults(t *testing.T) {
	var (
		images  []imagesource.Image
		volumes []string
		results []*outcome
	)
	defer func() {
		t.Run("cleanup", func(t *testing.T) { cleanup(t, volumes, images) })
		var b strings.Builder
		fmt.Fprintf(&b, "\n%-18s %-22s %-10s %-9s %-8s %-10s %-22s %s\n", "case", "fault at", "fault for", "recovery", "total", "status", "download", "checks")
		for _, r := range results {
			if r.status == "" && r.injectAt == 0 {
				continue // not run (filtered out by -run)
			}
			recovery := "-"
			if r.recovery >= 0 {
				recovery = fmt.Sprintf("%.1fs", r.recovery.Seconds())
			}
			fmt.Fprintf(&b, "%-18s %5.1fs @ %4d MiB     %6.1fs %9s %7.1fs  %-10s resumed %4d, got %4d  %s\n",
				r.name, r.injectAt.Seconds(), r.injectBytes>>20, r.faultFor.Seconds(), recovery, r.total.Seconds(),
				r.status, r.resumedFrom>>20, r.fetched>>20, strings.Join(r.checks, ", "))
			if r.error != "" {
				fmt.Fprintf(&b, "%-18s error: %s\n", "", r.error)
			}
			if r.failure != "" {
				fmt.Fprintf(&b, "%-18s failed: %s\n", "", r.failure)
			}
		}
		t.Log(b.String())
	}()

	for i, f := range faultCases {
		r := &outcome{name: f.name}
		results = append(results, r)
		ok := t.Run(f.name, func(tt *testing.T) {
			t := caseT{TB: tt, failure: &r.failure}
			img := uploadImage(t, "faults-"+f.name, uint64(i+1))
			images = append(images, img)
			if f.peer {
				ctl(t, "start-worker2")
				t.Cleanup(func() {
					// Back to one worker, whichever of the two was killed.
					ctl(t, "start-worker")
					ctl(t, "stop-worker2")
				})
			}
			t0 := time.Now()
			id := startVolume(t, img.ID)
			volumes = append(volumes, id)
			t.Logf("image %s, volume %s", img.ID, id)

			r.injectBytes = waitDownload(t, id, img.Size, 0.2)
			r.injectAt = time.Since(t0)
			restored := false
			t.Cleanup(func() {
				// a failed case must not leave the part down for the next ones
				if !restored && f.start != "" {
					ctl(t, f.start)
				}
			})
			var backAt time.Time
			if f.peer {
				pid := downloadWorkerPid(t)
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatalf("kill the worker running the download (pid %d): %v", pid, err)
				}
				t.Logf("killed worker pid %d, which ran the download", pid)
				backAt = time.Now()
			} else {
				ctl(t, f.stop)
			}
			// The download's last heartbeat before the fault: progress past it is new bytes.
			mark := r.injectBytes
			if v, ok := getVolume(id); ok && v.Progress != nil && v.Progress.BytesDone > mark {
				mark = v.Progress.BytesDone
			}
			if !f.peer {
				time.Sleep(f.down)
				if f.start != "" {
					ctl(t, f.start)
				}
				backAt = time.Now()
			}
			restored = true
			r.faultFor = time.Since(t0) - r.injectAt
			r.recovery = waitProgressPast(t, id, mark, 5*time.Minute, backAt)

			v := waitSettled(t, id, 5*time.Minute)
			r.total, r.status, r.cache, r.error = time.Since(t0), v.Status, v.Cache, v.Error
			if v.Status != models.StatusAvailable {
				t.Fatalf("volume %s is %s: %s", id, v.Status, v.Error)
			}
			r.checks = append(r.checks, "available ("+v.Cache+")")
			var res contract.CreateVolumeResult
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := stack.tc.GetWorkflow(ctx, id, "").Get(ctx, &res); err != nil {
				t.Fatalf("provision result: %v", err)
			}
			r.resumedFrom, r.fetched = res.ResumedFrom, res.Bytes

			if got := volumeSHA512(t, id, img.Size); got != img.HashValue {
				t.Fatalf("volume %s: sha512 %s…, image %s…", id, got[:16], img.HashValue[:16])
			}
			r.checks = append(r.checks, "sha512")
			es := cacheEntriesOf(t, img.ID)
			if len(es) != 1 || es[0].State != models.EntryReady {
				t.Fatalf("cache entries of image %s: %+v; want exactly one, ready", img.ID, es)
			}
			r.checks = append(r.checks, "1 cache entry")
			n := checkNoOrphans(t)
			if !t.Failed() {
				r.checks = append(r.checks, fmt.Sprintf("no orphans (%d images of the run)", n))
			}
		})
		if !ok && r.status == "" {
			r.status = "failed"
		}
		// Each case holds a 1 GiB image in Glance's store and its volume and cache volume in
		// Ceph: freed before the next case, so the run needs room for one case, not six.
		t.Run(f.name+"-cleanup", func(t *testing.T) { cleanup(t, volumes, images) })
		volumes, images = nil, nil
	}
}

// cleanup deletes the run's volumes, evicts its cache entries, checks that no RBD image of the
// run is left in the shared pool, and deletes the images from Glance.
func cleanup(t testing.TB, volumes []string, images []imagesource.Image) {
	for _, id := range volumes {
		deleteVolume(t, id)
	}
	for _, img := range images {
		for _, e := range cacheEntriesOf(t, img.ID) {
			var res struct {
				Evicted bool `json:"evicted"`
				Trashed bool `json:"trashed"`
			}
			code, err := call("DELETE", fmt.Sprintf("/v1/cache/%d?force=true", e.ID), "", &res)
			if err != nil || code != http.StatusOK || !res.Evicted || res.Trashed {
				t.Errorf("evict cache entry %d: HTTP %d, %v, %+v", e.ID, code, err, res)
			}
		}
	}
	if n := checkNoOrphans(t); n != 0 {
		t.Errorf("%d RBD images of the run left in pool %s after deleting everything", n, stack.pool)
	}
	for _, img := range images {
		if err := stack.glance.Delete(context.Background(), img.ID); err != nil {
			t.Errorf("delete image %s: %v", img.ID, err)
		}
	}
	t.Logf("deleted %d volumes, their cache entries and %d images", len(volumes), len(images))
}

// pastDeadline is a part taken away for longer than the provision's deadline.
type pastDeadline struct {
	name, stop, start string
	// want are words the volume's error must hold: the deadline and the part that was down.
	want []string
}

var pastDeadlineCases = []pastDeadline{
	{name: "glance-down", stop: "stop-glance", start: "start-glance",
		want: []string{"ProvisionDeadlineExceeded", "DownloadImage", "ImageServiceUnavailable", "glance"}},
	{name: "worker-down", stop: "kill-worker", start: "start-worker",
		want: []string{"ProvisionDeadlineExceeded", "DownloadImage", "worker"}},
}

// TestPastDeadline keeps a part down past the provision's deadline: the volume must end in
// error with a message naming the part, its RBD image removed, no cache entry and no staging
// image left once the fill it waited on has given up too.
func TestPastDeadline(t *testing.T) {
	const timeout = time.Minute
	ctl(t, "restart-gateway", timeout.String())
	t.Cleanup(func() { ctl(t, "restart-gateway") })
	var summary strings.Builder
	for i, c := range pastDeadlineCases {
		t.Run(c.name, func(t *testing.T) {
			img := uploadImage(t, "faults-deadline-"+c.name, uint64(100+i))
			t.Cleanup(func() {
				if err := stack.glance.Delete(context.Background(), img.ID); err != nil {
					t.Errorf("delete image %s: %v", img.ID, err)
				}
			})
			t0 := time.Now()
			id := startVolume(t, img.ID)
			at := waitDownload(t, id, img.Size, 0.2)
			downAt := time.Since(t0)
			restored := false
			t.Cleanup(func() {
				if !restored {
					ctl(t, c.start)
				}
			})
			ctl(t, c.stop)
			// Down until well past the deadline: every retry of the step fails meanwhile.
			time.Sleep(time.Until(t0.Add(timeout + 15*time.Second)))
			ctl(t, c.start)
			restored = true
			v := waitSettled(t, id, 3*time.Minute)
			total := time.Since(t0)
			if v.Status != models.StatusError {
				t.Fatalf("volume %s is %s, want error; cache %s", id, v.Status, v.Cache)
			}
			for _, w := range c.want {
				if !strings.Contains(v.Error, w) {
					t.Errorf("volume error %q does not name %q", v.Error, w)
				}
			}
			checks := []string{"error naming the part"}
			// The volume's image is gone, and the fill it joined gives up and cleans up too.
			if _, err := stack.ceph.Stat(context.Background(), stack.pool, contract.RBDName(id)); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("volume image of %s: %v, want not found", id, err)
			}
			waitNoOpenFill(t, 3*time.Minute)
			if es := cacheEntriesOf(t, img.ID); len(es) != 0 {
				t.Errorf("cache entries of image %s: %+v, want none", img.ID, es)
			}
			checks = append(checks, "image removed", "fill closed", "0 cache entries")
			n := checkNoOrphans(t)
			deleteVolume(t, id)
			if !t.Failed() {
				checks = append(checks, fmt.Sprintf("no orphans (%d images of the run)", n), "deleted")
			}
			fmt.Fprintf(&summary, "%-12s down at %4d MiB after %.1fs, error after %.1fs (deadline %s): %s\n%-12s error: %s\n",
				c.name, at>>20, downAt.Seconds(), total.Seconds(), timeout,
				strings.Join(checks, ", "), "", v.Error)
		})
	}
	t.Log("\n" + summary.String())
}
