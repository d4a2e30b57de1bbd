package starter

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
)

// describer answers DescribeWorkflowExecution from a table; any other call panics.
type describer struct {
	client.Client
	t     *testing.T
	descs map[string]*workflowservice.DescribeWorkflowExecutionResponse
	asked []string
}

func (d *describer) DescribeWorkflowExecution(_ context.Context, id, _ string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	d.asked = append(d.asked, id)
	if desc, ok := d.descs[id]; ok {
		return desc, nil
	}
	return nil, serviceerror.NewNotFound("workflow " + id + " not found")
}

// describeWithMemo is a workflow's description with that memo and those pending steps.
func describeWithMemo(t *testing.T, memo map[string]string, pending ...string) *workflowservice.DescribeWorkflowExecutionResponse {
	t.Helper()
	fields := map[string]*commonpb.Payload{}
	for k, v := range memo {
		p, err := converter.GetDefaultDataConverter().ToPayload(v)
		if err != nil {
			t.Fatal(err)
		}
		fields[k] = p
	}
	desc := &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Memo: &commonpb.Memo{Fields: fields}, Status: enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING,
	}}
	for _, name := range pending {
		desc.PendingActivities = append(desc.PendingActivities, &workflowpb.PendingActivityInfo{ActivityType: &commonpb.ActivityType{Name: name}})
	}
	return desc
}

// A volume names the fill it waits on while creating, and after a miss the fill it was cloned
// from, with the fill's Temporal UI page; a hit names none and asks Temporal nothing.
func TestVolumeNamesItsFill(t *testing.T) {
	const fill = "imagevol-fill-img-0123456789abcdef@ceph"
	store := sqliteStore(t)
	temporal := &describer{t: t, descs: map[string]*workflowservice.DescribeWorkflowExecutionResponse{
		"vol-waiting": describeWithMemo(t, map[string]string{contract.MemoFill: fill}),
		fill:          describeWithMemo(t, nil, "DownloadImage"),
		"vol-missed":  describeWithMemo(t, map[string]string{contract.MemoFill: "", contract.MemoFilledBy: fill}),
	}}
	g := &Gateway{Store: store, Temporal: temporal, Logger: quietLogger(), UIURL: "http://ui.example:8233/"}
	ctx := context.Background()
	for _, v := range []models.Volume{
		{ID: "vol-waiting", Status: models.StatusCreating, Cache: models.CacheMiss},
		{ID: "vol-missed", Status: models.StatusAvailable, Cache: models.CacheMiss},
		{ID: "vol-hit", Status: models.StatusAvailable, Cache: models.CacheHit},
		{ID: "vol-old", Status: models.StatusAvailable, Cache: models.CacheMiss}, // a run that predates filled_by
	} {
		v.ProjectID, v.ImageID, v.SizeGB, v.WorkflowID = "p1", "img", 1, v.ID
		if err := store.CreateVolume(ctx, &v); err != nil {
			t.Fatal(err)
		}
	}
	wantURL := "http://ui.example:8233/namespaces/default/workflows/" + url.PathEscape(fill)
	for _, c := range []struct {
		id, fill, url string
		role          Role
	}{
		{"vol-waiting", fill, wantURL, RoleAdmin},
		{"vol-missed", fill, wantURL, RoleAdmin},
		{"vol-hit", "", "", RoleAdmin},
		{"vol-old", "", "", RoleAdmin},
		// The fill's ID names the cluster: a member of the project does not see it.
		{"vol-waiting", "", "", RoleMember},
		{"vol-missed", "", "", RoleMember},
	} {
		temporal.asked = nil
		r := httptest.NewRequest(http.MethodGet, "/v1/volumes/"+c.id, nil)
		r.SetPathValue("id", c.id)
		r = r.WithContext(withIdentity(r.Context(), Identity{Project: "p1", Role: c.role}))
		w := httptest.NewRecorder()
		g.getVolume(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", c.id, w.Code, w.Body)
		}
		var view VolumeView
		if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil {
			t.Fatal(err)
		}
		if view.FillWorkflowID != c.fill || view.FillURL != c.url {
			t.Errorf("%s as %v: fill_workflow_id %q, fill_url %q; want %q, %q", c.id, c.role, view.FillWorkflowID, view.FillURL, c.fill, c.url)
		}
		if c.id == "vol-waiting" && (view.Progress == nil || view.Progress.Phase != "DownloadImage") {
			t.Errorf("%s: progress %+v, want the fill's DownloadImage", c.id, view.Progress)
		}
		if c.id == "vol-hit" && len(temporal.asked) != 0 {
			t.Errorf("%s: asked Temporal about %v", c.id, temporal.asked)
		}
	}
}
