//go:build e2e

package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// readiness reads GET /readyz, which needs no token; with an operator's token when token is
// not empty.
func (c *apiClient) readiness(token string) (int, starter.Readiness) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+"/readyz", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var rd starter.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&rd); err != nil {
		c.t.Fatalf("readyz: %v", err)
	}
	return resp.StatusCode, rd
}

// A storage host without a worker: readiness says so (503; the host named to operators only), a
// volume placed there is accepted and says it waits for a worker; once a worker starts, the
// volume is made and readiness turns 200.
func TestReadinessNamesHostsWithoutWorker(t *testing.T) {
	live, idle := "e2e-ready-live", "e2e-ready-idle"
	startHost(t, hostConfig(live))
	api := newGateway(t, live, idle)

	// The live host's worker shows in Temporal once its first poll has arrived: until then both
	// hosts are unserved.
	code, rd := api.readiness("")
	for deadline := time.Now().Add(2 * time.Minute); rd.HostsWithoutWorker == 2 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		code, rd = api.readiness("")
	}
	if code != http.StatusServiceUnavailable || rd.Ready || rd.Hosts != 2 || rd.HostsWithoutWorker != 1 {
		t.Fatalf("anonymous readyz with %s unserved: HTTP %d %+v; want 503, 1 of 2 hosts unserved", idle, code, rd)
	}
	if rd.Workers != nil || rd.UnservedHosts != nil {
		t.Fatalf("anonymous readyz names hosts: %+v", rd)
	}
	code, rd = api.readiness(adminToken)
	if code != http.StatusServiceUnavailable || !slices.Equal(rd.UnservedHosts, []string{idle}) {
		t.Fatalf("operator's readyz with %s unserved: HTTP %d %+v; want 503 naming only %s", idle, code, rd, idle)
	}
	if rd.Database != "ok" || rd.Temporal != "ok" || rd.Workers[live] < 1 {
		t.Fatalf("readyz: %+v; want database and Temporal ok and a worker on %s", rd, live)
	}

	img := uploadImage(t, "readiness", "raw", imageBytes(4*mib, 77, 1))
	id := api.startVolume(img.ID, 1, idle)
	var v starter.VolumeView
	if c := api.call("GET", "/v1/volumes/"+id, "", &v); c != http.StatusOK {
		t.Fatalf("GET volume: HTTP %d", c)
	}
	if v.Status != models.StatusCreating || v.WaitingFor == "" {
		t.Fatalf("volume on a host without a worker: status %s, waiting_for %q; want creating and a reason", v.Status, v.WaitingFor)
	}

	startHost(t, hostConfig(idle))
	requireAvailable(t, api.waitVolume(id), models.CacheMiss)
	// The readiness reading is cached for a few seconds: wait for it to see the new worker.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, rd = api.readiness(adminToken)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz still %d %+v two minutes after %s got a worker", code, rd, idle)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !rd.Ready || rd.HostsWithoutWorker != 0 || len(rd.UnservedHosts) != 0 || rd.Workers[idle] < 1 {
		t.Fatalf("readyz: %+v", rd)
	}
}
