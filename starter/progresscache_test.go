package starter

import (
	"fmt"
	"testing"
	"time"
)

// A read answers for progressMaxAge, then not; expired reads are dropped as others come in.
func TestProgressCache(t *testing.T) {
	var c progressCache
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.put("wf", progressRead{progress: &Progress{Phase: "DownloadImage"}, fill: "f", at: t0})
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {progressMaxAge / 2, true}, {progressMaxAge, false}, {-time.Millisecond, false}} {
		r, ok := c.get("wf", t0.Add(tc.at))
		if ok != tc.want || ok && (r.progress.Phase != "DownloadImage" || r.fill != "f") {
			t.Errorf("get at %v: %+v, %v; want found %v", tc.at, r, ok, tc.want)
		}
	}
	if _, ok := c.get("other", t0); ok {
		t.Error("a workflow never read was found")
	}
	later := t0.Add(2 * progressMaxAge)
	for i := range 300 {
		c.put(fmt.Sprintf("wf-%d", i), progressRead{at: later})
	}
	if _, kept := c.reads["wf"]; kept || len(c.reads) != 300 {
		t.Errorf("%d reads kept (the expired one: %v), want the 300 fresh ones", len(c.reads), kept)
	}
}
