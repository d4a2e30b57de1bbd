//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/converter"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// newGatewayWith is newGateway with its own tokens, their roles (testToken is an admin unless
// roles says otherwise; any other token a member), and quotas.
func newGatewayWith(t *testing.T, tokens map[string]string, roles map[string]starter.Role, quotas *starter.Quotas, hosts ...string) *apiClient {
	t.Helper()
	all := maps.Clone(testRoles)
	maps.Copy(all, roles)
	gw := &starter.Gateway{
		Store: stack.store, Temporal: stack.temporal, Images: stack.glance, Tokens: tokens, TokenRoles: all, Quotas: quotas,
		Hosts: hosts, Namespace: stack.namespace, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		ProvisionTimeout: 30 * time.Minute,
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &apiClient{t: t, base: srv.URL}
}

// deactivate deactivates an image in Glance (an admin call that needs no token here).
func deactivate(t *testing.T, id string) {
	t.Helper()
	resp, err := http.Post(strings.TrimSuffix(os.Getenv("GLANCE_URL"), "/")+"/v2/images/"+id+"/actions/deactivate", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("deactivate image %s: HTTP %d", id, resp.StatusCode)
	}
	img, err := stack.glance.Get(context.Background(), id)
	if err != nil || img.Status != imagesource.StatusDeactivated {
		t.Fatalf("image %s after deactivation: %+v, %v", id, img, err)
	}
}

// projectRows maps each volume of the projects to its status.
func projectRows(t *testing.T, projects ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range projects {
		vs, err := stack.store.ListVolumes(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			out[v.ID] = v.Status
		}
	}
	return out
}

// recordVolume inserts a volume row with no workflow behind it, removed when the test ends.
func recordVolume(t *testing.T, project, status, imageID string) string {
	t.Helper()
	v := &models.Volume{ID: uuid.NewString(), ProjectID: project, Name: "badinput", SizeGB: 1, ImageID: imageID, Host: "e2e-badinput", Status: status}
	if err := stack.store.CreateVolume(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stack.store.DeleteVolume(context.Background(), v.ID) })
	return v.ID
}

// Every bad request of the /v1 and the Cinder /v3 API gets its status and error code, and none
// leaves anything behind: no volume row is added or changed, no workflow is started. A valid
// request at the end shows the checks would have seen one.
func TestBadInput(t *testing.T) {
	const (
		host       = "e2e-badinput"
		quotaToken = "e2e-quota-token"
	)
	// No worker runs here: a provision started by mistake stays visible in Temporal.
	// Projects of this run of the test alone: other tests' volumes (of project-e2e) may still
	// change, and their provisions start workflows around this test.
	project := "project-badinput-" + uuid.NewString()[:8]
	otherProject, quotaProject := project+"-other", project+"-quota"
	api := newGatewayWith(t, map[string]string{testToken: project, quotaToken: quotaProject}, nil,
		&starter.Quotas{Default: starter.QuotaLimits{Volumes: -1, Gigabytes: -1},
			Projects: map[string]starter.QuotaLimits{quotaProject: {Volumes: 1, Gigabytes: -1}}}, host)
	active := uploadImage(t, "badinput", "raw", imageBytes(4*mib, 101, 2))
	inactive := uploadImage(t, "badinput-inactive", "raw", imageBytes(mib, 102, 1))
	deactivate(t, inactive.ID)
	path := filepath.Join(t.TempDir(), "big.qcow2")
	qemuImg(t, "create", "-f", "qcow2", path, "2G")
	qcow, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	big := uploadImage(t, "badinput-2g", "qcow2", qcow)
	unknown := uuid.NewString()
	const unknownEntry = "4000000000"

	other := recordVolume(t, otherProject, models.StatusAvailable, active.ID)
	busy := recordVolume(t, project, models.StatusCreating, active.ID)
	recordVolume(t, quotaProject, models.StatusAvailable, active.ID) // the quota's one volume
	projects := []string{project, otherProject, quotaProject}
	before := projectRows(t, projects...)
	start := time.Now().UTC().Add(-time.Second)
	// A provision of project-e2e, started now, stands for the workflows other tests start in the
	// same namespace around this one: only this test's own requests may be counted below.
	bystanderImage := uploadImage(t, "badinput-bystander", "raw", imageBytes(mib, 103, 1))
	bystander := newGateway(t, host).startVolume(bystanderImage.ID, 1, host)
	t.Cleanup(func() {
		_ = stack.temporal.TerminateWorkflow(context.Background(), bystander, "", "test over")
		_ = stack.store.DeleteVolume(context.Background(), bystander)
	})

	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	xauth := func(tok string) map[string]string { return map[string]string{"X-Auth-Token": tok} }
	noAuth := map[string]string{}
	v1 := func(image, size string) string {
		return fmt.Sprintf(`{"image_id":%q,"size_gb":%s,"name":"bad"}`, image, size)
	}
	v3 := func(image, size string) string {
		return fmt.Sprintf(`{"volume":{"imageRef":%q,"size":%s,"name":"bad"}}`, image, size)
	}
	p3 := "/v3/" + project
	cases := []struct {
		name         string
		method, path string
		body         string
		headers      map[string]string // nil: the test token as a bearer token
		status       int
		code         string // /v1: error.code; /v3: the Cinder fault's name
		message      string // a part of the message, if it matters
	}{
		// POST /v1/volumes
		{"v1 unknown image", "POST", "/v1/volumes", v1(unknown, "1"), nil, 400, "image_not_found", unknown},
		{"v1 image not active", "POST", "/v1/volumes", v1(inactive.ID, "1"), nil, 409, "image_not_active", "deactivated"},
		{"v1 size smaller than the image", "POST", "/v1/volumes", v1(big.ID, "1"), nil, 400, "volume_too_small", "needs 2 GiB"},
		{"v1 size zero", "POST", "/v1/volumes", v1(active.ID, "0"), nil, 400, "invalid_size", "size_gb"},
		{"v1 size negative", "POST", "/v1/volumes", v1(active.ID, "-1"), nil, 400, "invalid_size", "size_gb"},
		{"v1 size over the largest volume", "POST", "/v1/volumes", v1(active.ID, "1001"), nil, 400, "volume_too_large", "1000 GiB"},
		{"v1 size whose bytes wrap an int64", "POST", "/v1/volumes", v1(active.ID, "17179869185"), nil, 400, "volume_too_large", "17179869185"},
		{"v1 size a string", "POST", "/v1/volumes", v1(active.ID, `"abc"`), nil, 400, "bad_request", "malformed"},
		{"v1 size a fraction", "POST", "/v1/volumes", v1(active.ID, "1.5"), nil, 400, "bad_request", "malformed"},
		{"v1 no image", "POST", "/v1/volumes", `{"size_gb":1}`, nil, 400, "bad_request", "image_id is required"},
		{"v1 malformed JSON", "POST", "/v1/volumes", `{"image_id":`, nil, 400, "bad_request", "malformed"},
		{"v1 empty body", "POST", "/v1/volumes", "", nil, 400, "bad_request", "malformed"},
		{"v1 unknown field", "POST", "/v1/volumes", `{"image_id":"x","size_gb":1,"sise":2}`, nil, 400, "bad_request", "sise"},
		{"v1 unknown host", "POST", "/v1/volumes", `{"image_id":"` + active.ID + `","size_gb":1,"host":"nohost"}`, nil, 400, "unknown_host", "nohost"},
		{"v1 over quota", "POST", "/v1/volumes", v1(active.ID, "1"), bearer(quotaToken), 413, "quota_exceeded", "quota is 1"},
		{"v1 no token", "POST", "/v1/volumes", v1(active.ID, "1"), noAuth, 401, "unauthorized", ""},
		{"v1 wrong bearer token", "POST", "/v1/volumes", v1(active.ID, "1"), bearer("wrong"), 401, "unauthorized", ""},
		{"v1 wrong X-Auth-Token", "GET", "/v1/volumes", "", xauth("wrong"), 401, "unauthorized", ""},
		// Volumes by ID
		{"v1 another project's volume", "GET", "/v1/volumes/" + other, "", nil, 404, "volume_not_found", other},
		{"v1 delete another project's volume", "DELETE", "/v1/volumes/" + other, "", nil, 404, "volume_not_found", other},
		{"v1 unknown volume", "GET", "/v1/volumes/" + unknown, "", nil, 404, "volume_not_found", unknown},
		{"v1 delete unknown volume", "DELETE", "/v1/volumes/" + unknown, "", nil, 404, "volume_not_found", unknown},
		{"v1 get without token", "GET", "/v1/volumes/" + busy, "", noAuth, 401, "unauthorized", ""},
		// Routes
		{"v1 unknown route", "GET", "/v1/snapshots", "", nil, 404, "not_found", "/v1/snapshots"},
		{"v1 unknown route without token", "GET", "/v1/snapshots", "", noAuth, 401, "unauthorized", ""},
		{"v1 wrong method", "PUT", "/v1/volumes/" + busy, "{}", nil, 405, "method_not_allowed", "GET"},
		// Cache
		{"v1 cache entry not a number", "POST", "/v1/cache/abc/pin", "", nil, 400, "bad_request", "abc"},
		{"v1 unknown cache entry", "DELETE", "/v1/cache/" + unknownEntry + "/pin", "", nil, 404, "cache_entry_not_found", unknownEntry},
		{"v1 evict unknown cache entry", "DELETE", "/v1/cache/" + unknownEntry, "", nil, 404, "cache_entry_not_found", ""},
		{"v1 warm without image", "POST", "/v1/cache/warm", `{}`, nil, 400, "bad_request", "image_id"},
		{"v1 warm malformed JSON", "POST", "/v1/cache/warm", `{"image_id"`, nil, 400, "bad_request", "malformed"},
		{"v1 warm unknown host", "POST", "/v1/cache/warm", `{"image_id":"` + active.ID + `","hosts":["nohost"]}`, nil, 400, "unknown_host", "nohost"},
		{"v1 warm unknown image", "POST", "/v1/cache/warm", `{"image_id":"` + unknown + `"}`, nil, 400, "image_not_found", unknown},
		{"v1 warm image not active", "POST", "/v1/cache/warm", `{"image_id":"` + inactive.ID + `"}`, nil, 409, "image_not_active", ""},
		{"v1 cache without token", "GET", "/v1/cache/stats", "", noAuth, 401, "unauthorized", ""},

		// POST /v3/{project_id}/volumes
		{"v3 unknown image", "POST", p3 + "/volumes", v3(unknown, "1"), nil, 400, "badRequest", unknown},
		{"v3 image not active", "POST", p3 + "/volumes", v3(inactive.ID, "1"), nil, 409, "conflictingRequest", "deactivated"},
		{"v3 size smaller than the image", "POST", p3 + "/volumes", v3(big.ID, "1"), nil, 400, "badRequest", "needs 2 GiB"},
		{"v3 size zero", "POST", p3 + "/volumes", v3(active.ID, "0"), nil, 400, "badRequest", "size"},
		{"v3 size negative", "POST", p3 + "/volumes", v3(active.ID, "-1"), nil, 400, "badRequest", "size"},
		{"v3 size not a number", "POST", p3 + "/volumes", v3(active.ID, `"abc"`), nil, 400, "badRequest", "size"},
		{"v3 size a fraction", "POST", p3 + "/volumes", v3(active.ID, "1.5"), nil, 400, "badRequest", "size"},
		{"v3 size over the largest volume", "POST", p3 + "/volumes", v3(active.ID, "1001"), nil, 400, "badRequest", "1000 GiB"},
		{"v3 size whose bytes wrap an int64", "POST", p3 + "/volumes", v3(active.ID, "17179869185"), nil, 400, "badRequest", "17179869185"},
		{"v3 size missing", "POST", p3 + "/volumes", `{"volume":{"imageRef":"` + active.ID + `"}}`, nil, 400, "badRequest", "size is required"},
		{"v3 no imageRef", "POST", p3 + "/volumes", `{"volume":{"size":1}}`, nil, 400, "badRequest", "imageRef"},
		{"v3 no volume object", "POST", p3 + "/volumes", `{"size":1}`, nil, 400, "badRequest", "volume"},
		{"v3 malformed JSON", "POST", p3 + "/volumes", `{"volume":`, nil, 400, "badRequest", "malformed"},
		{"v3 unsupported source", "POST", p3 + "/volumes", `{"volume":{"imageRef":"` + active.ID + `","size":1,"snapshot_id":"s"}}`, nil, 400, "badRequest", "snapshot_id"},
		{"v3 unknown availability zone", "POST", p3 + "/volumes", `{"volume":{"imageRef":"` + active.ID + `","size":1,"availability_zone":"az9"}}`, nil, 400, "badRequest", "az9"},
		{"v3 over quota", "POST", "/v3/" + quotaProject + "/volumes", v3(active.ID, "1"), xauth(quotaToken), 413, "overLimit", "quota is 1"},
		{"v3 no token", "POST", p3 + "/volumes", v3(active.ID, "1"), noAuth, 401, "unauthorized", ""},
		{"v3 wrong X-Auth-Token", "GET", p3 + "/volumes/detail", "", xauth("wrong"), 401, "unauthorized", ""},
		{"v3 another project in the path", "POST", "/v3/" + otherProject + "/volumes", v3(active.ID, "1"), nil, 404, "itemNotFound", otherProject},
		{"v3 list another project", "GET", "/v3/" + otherProject + "/volumes/detail", "", xauth(testToken), 404, "itemNotFound", ""},
		// Volumes by ID
		{"v3 another project's volume", "GET", p3 + "/volumes/" + other, "", nil, 404, "itemNotFound", other},
		{"v3 another project's volume in its path", "GET", "/v3/" + otherProject + "/volumes/" + other, "", nil, 404, "itemNotFound", ""},
		{"v3 delete another project's volume", "DELETE", p3 + "/volumes/" + other, "", nil, 404, "itemNotFound", other},
		{"v3 unknown volume", "GET", p3 + "/volumes/" + unknown, "", nil, 404, "itemNotFound", unknown},
		{"v3 delete unknown volume", "DELETE", p3 + "/volumes/" + unknown, "", nil, 404, "itemNotFound", unknown},
		{"v3 delete while creating", "DELETE", p3 + "/volumes/" + busy, "", xauth(testToken), 409, "conflictingRequest", busy},
		// Routes
		{"v3 unknown route", "GET", p3 + "/snapshots", "", nil, 404, "itemNotFound", "snapshots"},
		{"v3 unknown route without token", "GET", p3 + "/snapshots", "", noAuth, 401, "unauthorized", ""},
		{"v3 wrong method", "PUT", p3 + "/volumes/" + busy, `{"volume":{"name":"x"}}`, nil, 405, "badMethod", "DELETE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, api.base+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			headers := tc.headers
			if headers == nil {
				headers = bearer(testToken)
			}
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var code, message string
			if strings.HasPrefix(tc.path, "/v3/") {
				name, f := cinderFault(t, body)
				if f.Code != tc.status {
					t.Fatalf("fault code %d, want %d: %s", f.Code, tc.status, body)
				}
				code, message = name, f.Message
			} else {
				var e struct{ Error starter.APIError }
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("not a /v1 error body (%v): %s", err, body)
				}
				code, message = e.Error.Code, e.Error.Message
			}
			if code != tc.code || message == "" || !strings.Contains(message, tc.message) {
				t.Fatalf("error %s %q, want %s mentioning %q", code, message, tc.code, tc.message)
			}
		})
	}

	// Nothing left behind: the rows are those there were, unchanged; no deletion started.
	if after := projectRows(t, projects...); !maps.Equal(after, before) {
		t.Fatalf("volume rows changed by bad requests:\nbefore %v\nafter  %v", before, after)
	}
	ctx := context.Background()
	for id := range before {
		_, err := stack.temporal.DescribeWorkflowExecution(ctx, contract.DeleteWorkflowID(id), "")
		if _, notFound := err.(*serviceerror.NotFound); !notFound {
			t.Fatalf("deletion workflow of volume %s: %v, want not found", id, err)
		}
	}
	// No workflow started: a valid request now must be the only one since the test began, once
	// visibility shows it (Cinder accepts a size given as a string of digits).
	var created struct{ Volume starter.CinderVolume }
	req, _ := http.NewRequest("POST", api.base+p3+"/volumes", strings.NewReader(v3(active.ID, `"1"`)))
	req.Header.Set("X-Auth-Token", testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || err != nil || created.Volume.Status != "creating" || created.Volume.Size != 1 {
		t.Fatalf("valid create: HTTP %d, %+v, %v", resp.StatusCode, created.Volume, err)
	}
	control := created.Volume.ID
	t.Cleanup(func() {
		_ = stack.temporal.TerminateWorkflow(context.Background(), control, "", "test over")
		_ = stack.store.DeleteVolume(context.Background(), control)
	})
	if after := projectRows(t, projects...); len(after) != len(before)+1 || after[control] != models.StatusCreating {
		t.Fatalf("rows after one valid create: %v (before %v)", after, before)
	}
	// Workflows of every kind started since the test began, kept when they concern this test's
	// images or volumes: other tests' workflows in the namespace are not this test's business.
	mine := map[string]bool{active.ID: true, inactive.ID: true, big.ID: true, unknown: true, unknownEntry: true, control: true}
	for id := range before {
		mine[id] = true
	}
	query := fmt.Sprintf("WorkflowType IN ('CreateVolumeFromImage','DeleteVolume','WarmCache','EvictCacheEntry') AND StartTime >= '%s'", start.Format(time.RFC3339Nano))
	var ids []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := stack.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		if err != nil {
			t.Fatalf("query %s: %v", query, err)
		}
		ids = ids[:0]
		for _, e := range resp.GetExecutions() {
			if concerns(t, e.GetType().GetName(), e.GetExecution(), mine) {
				ids = append(ids, e.GetExecution().GetWorkflowId())
			}
		}
		if slices.Contains(ids, control) || time.Now().After(deadline) {
			break
		}
	}
	if len(ids) != 1 || ids[0] != control {
		t.Fatalf("workflows started during the test: %v, want only the valid request's %s", ids, control)
	}
}

// concerns says whether a workflow was started for one of the given images, volumes or cache
// entries (the entry numbers in decimal), from the input it was started with.
func concerns(t *testing.T, workflowType string, run *commonpb.WorkflowExecution, mine map[string]bool) bool {
	t.Helper()
	it := stack.temporal.GetWorkflowHistory(context.Background(), run.GetWorkflowId(), run.GetRunId(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	ev, err := it.Next()
	if err != nil {
		t.Fatalf("history of %s: %v", run.GetWorkflowId(), err)
	}
	input := ev.GetWorkflowExecutionStartedEventAttributes().GetInput()
	decode := func(v any) {
		if err := converter.GetDefaultDataConverter().FromPayloads(input, v); err != nil {
			t.Fatalf("decode the input of %s %s: %v", workflowType, run.GetWorkflowId(), err)
		}
	}
	switch workflowType {
	case contract.CreateVolumeWorkflow:
		var in contract.CreateVolumeInput
		decode(&in)
		return mine[in.ImageID] || mine[in.VolumeID]
	case contract.DeleteVolumeWorkflow:
		var in contract.DeleteVolumeInput
		decode(&in)
		return mine[in.VolumeID]
	case contract.WarmCacheWorkflow:
		var in contract.WarmInput
		decode(&in)
		return mine[in.ImageID]
	case contract.EvictEntryWorkflow:
		var in contract.EvictCacheEntryInput
		decode(&in)
		return mine[strconv.FormatUint(uint64(in.EntryID), 10)]
	}
	return true // a kind this check does not know: count it
}
