//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// Provisions carry search attributes, so the Temporal UI can filter them: by image, by cache
// result, by phase; the fill of the image shows beside them, with its own phase. A volume links
// to its workflow's page in the UI, and a miss to the page of the fill it was cloned from.
func TestSearchAttributesAndWorkflowLink(t *testing.T) {
	host := "e2e-search"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "search", "raw", imageBytes(8*mib, 81, 2))
	miss := api.createVolume(img.ID, 1)
	requireAvailable(t, miss, models.CacheMiss)
	requireAvailable(t, api.createVolume(img.ID, 1), models.CacheHit)

	var v starter.VolumeView
	if code := api.call("GET", "/v1/volumes/"+miss.ID, "", &v); code != http.StatusOK {
		t.Fatalf("GET volume: HTTP %d", code)
	}
	if want := "/namespaces/" + stack.namespace + "/workflows/" + miss.WorkflowID; !strings.HasSuffix(v.WorkflowURL, want) {
		t.Fatalf("workflow_url %q, want it to end in %q", v.WorkflowURL, want)
	}
	if !strings.HasPrefix(v.FillWorkflowID, "imagevol-fill-"+img.ID+"-") {
		t.Fatalf("fill_workflow_id %q, want the fill of image %s", v.FillWorkflowID, img.ID)
	}
	if want := "/namespaces/" + stack.namespace + "/workflows/" + url.PathEscape(v.FillWorkflowID); !strings.HasSuffix(v.FillURL, want) {
		t.Fatalf("fill_url %q, want it to end in %q", v.FillURL, want)
	}
	for query, want := range map[string]int{
		fmt.Sprintf("ImageID = %q", img.ID): 3, // two provisions, one fill
		fmt.Sprintf("ImageID = %q AND WorkflowType = 'FillCache' AND Host = %q AND Phase = 'available'", img.ID, host): 1,
		fmt.Sprintf("ImageID = %q AND CacheResult = 'miss' AND Phase = 'available'", img.ID):                           1,
		fmt.Sprintf("ImageID = %q AND Host = %q AND ProjectID = 'project-e2e'", img.ID, host):                          2,
	} {
		got := 0
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			resp, err := stack.temporal.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
			if err != nil {
				t.Fatalf("query %s: %v", query, err)
			}
			if got = len(resp.GetExecutions()); got == want || time.Now().After(deadline) {
				break
			}
		}
		if got != want {
			t.Fatalf("query %s found %d workflows, want %d", query, got, want)
		}
	}
}
