//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// authzAPI is a gateway with one token per project and role of the authorization tests.
type authzAPI struct {
	t    *testing.T
	base string
}

// do sends a request with tok as X-Auth-Token and returns the status and the body.
func (a authzAPI) do(tok, method, path, body string) (int, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// create asks for a volume of image and returns the status, and the volume's ID when accepted.
func (a authzAPI) create(tok, image string, sizeGB int) (int, string, []byte) {
	a.t.Helper()
	code, body := a.do(tok, "POST", "/v1/volumes", fmt.Sprintf(`{"image_id":%q,"size_gb":%d,"name":"authz"}`, image, sizeGB))
	var v struct{ ID string }
	if code == http.StatusAccepted {
		if err := json.Unmarshal(body, &v); err != nil || v.ID == "" {
			a.t.Fatalf("create answer %s", body)
		}
	}
	return code, v.ID, body
}

// available waits for a volume to leave "creating" and requires it available.
func (a authzAPI) available(tok, id string) starter.VolumeView {
	a.t.Helper()
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		code, body := a.do(tok, "GET", "/v1/volumes/"+id, "")
		var v starter.VolumeView
		if code != http.StatusOK || json.Unmarshal(body, &v) != nil {
			a.t.Fatalf("GET volume %s: HTTP %d %s", id, code, body)
		}
		if v.Status != models.StatusCreating {
			if v.Status != models.StatusAvailable {
				a.t.Fatalf("volume %s: %s (%s)", id, v.Status, v.Error)
			}
			return v
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("volume %s still creating after 5 minutes", id)
		}
	}
}

// errorCode reads a /v1 error body's code and message.
func errorCode(t *testing.T, body []byte) (string, string) {
	t.Helper()
	var e struct{ Error starter.APIError }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not a /v1 error body (%v): %s", err, body)
	}
	return e.Error.Code, e.Error.Message
}

// TestAuthorization runs the gateway's authorization against Glance, Temporal, the database and
// Ceph: image visibility (private, shared with accepted and pending members, community,
// public) on a cache miss and on a hit, each role on each route, the host attribute, size
// bounds, and quotas in volumes and gigabytes, with concurrent creates.
func TestAuthorization(t *testing.T) {
	const host = "e2e-authz"
	startHost(t, hostConfig(host))
	suffix := uuid.NewString()[:8]
	project := func(name string) string { return "authz-" + name + "-" + suffix }
	owner, other, accepted, pending, admin := project("owner"), project("other"), project("accepted"), project("pending"), project("admin")
	quotaVol, quotaGB, unlisted := project("quota-volumes"), project("quota-gigabytes"), project("unlisted")
	tok := func(name string) string { return "tok-" + name + "-" + suffix }
	tokens := map[string]string{
		tok("owner"): owner, tok("reader"): owner, tok("other"): other, tok("accepted"): accepted, tok("pending"): pending,
		tok("admin"): admin, tok("quota-volumes"): quotaVol, tok("quota-gigabytes"): quotaGB, tok("unlisted"): unlisted,
		tok("none"): owner,
	}
	roles := map[string]starter.Role{tok("reader"): starter.RoleReader, tok("admin"): starter.RoleAdmin, tok("none"): starter.RoleNone}
	free := starter.QuotaLimits{Volumes: -1, Gigabytes: -1}
	quotas := &starter.Quotas{
		Default: starter.QuotaLimits{Volumes: 2, Gigabytes: 3},
		Projects: map[string]starter.QuotaLimits{
			owner: free, other: free, accepted: free, pending: free, admin: free,
			quotaVol: {Volumes: 3, Gigabytes: -1}, quotaGB: {Volumes: -1, Gigabytes: 5},
		},
	}
	c := newGatewayWith(t, tokens, roles, quotas, host)
	api := authzAPI{t: t, base: c.base}
	ctx := context.Background()

	data := imageBytes(4*mib, 171, 2)
	private := uploadImageAs(t, glance.CreateOpts{Name: "authz-private", DiskFormat: "raw", Owner: owner, Visibility: imagesource.VisibilityPrivate}, data)
	shared := uploadImageAs(t, glance.CreateOpts{Name: "authz-shared", DiskFormat: "raw", Owner: owner, Visibility: imagesource.VisibilityShared}, imageBytes(4*mib, 172, 2))
	community := uploadImageAs(t, glance.CreateOpts{Name: "authz-community", DiskFormat: "raw", Owner: owner, Visibility: imagesource.VisibilityCommunity}, imageBytes(4*mib, 173, 2))
	// public: any project's image; a community one, as a public one cannot be made here (below)
	public := uploadImage(t, "authz-public", "raw", imageBytes(4*mib, 174, 2))
	for _, img := range []imagesource.Image{private, shared, community} {
		if img.Owner != owner {
			t.Fatalf("image %s: owner %q, want %s", img.ID, img.Owner, owner)
		}
	}
	// Glance without Keystone runs every request as an admin: it lets this test add members
	// and set their status, as the member project itself would.
	for _, m := range []string{accepted, pending} {
		if err := stack.glance.AddMember(ctx, shared.ID, m); err != nil {
			t.Fatalf("share %s with %s: %v", shared.ID, m, err)
		}
	}
	if err := stack.glance.SetMemberStatus(ctx, shared.ID, accepted, imagesource.MemberAccepted); err != nil {
		t.Fatal(err)
	}
	for m, want := range map[string]string{accepted: imagesource.MemberAccepted, pending: imagesource.MemberPending} {
		if s, err := stack.glance.MemberStatus(ctx, shared.ID, m); err != nil || s != want {
			t.Fatalf("member %s of %s: %q, %v; want %s", m, shared.ID, s, err, want)
		}
	}

	// refusedAsUnknown checks that tok's create of image gets, in /v1 and in Cinder's /v3, the
	// very answer a create of an image that does not exist gets, and leaves no row behind.
	refusedAsUnknown := func(t *testing.T, tokName, proj, image string) {
		t.Helper()
		unknown := uuid.NewString()
		rows := len(projectRows(t, proj))
		for _, path := range []string{"/v1/volumes", "/v3/" + proj + "/volumes"} {
			body := func(id string) string {
				if strings.HasPrefix(path, "/v3/") {
					return fmt.Sprintf(`{"volume":{"imageRef":%q,"size":1}}`, id)
				}
				return fmt.Sprintf(`{"image_id":%q,"size_gb":1}`, id)
			}
			code, got := api.do(tok(tokName), "POST", path, body(image))
			wantCode, want := api.do(tok(tokName), "POST", path, body(unknown))
			if wantCode != http.StatusBadRequest || code != wantCode ||
				strings.ReplaceAll(string(got), image, "ID") != strings.ReplaceAll(string(want), unknown, "ID") {
				t.Fatalf("%s as %s: HTTP %d %s\nan unknown image: HTTP %d %s", path, proj, code, got, wantCode, want)
			}
		}
		if n := len(projectRows(t, proj)); n != rows {
			t.Fatalf("project %s: %d volume rows after refused creates, %d before", proj, n, rows)
		}
	}

	t.Run("another project's private image is refused on a miss and on a hit", func(t *testing.T) {
		refusedAsUnknown(t, "other", other, private.ID) // nothing cached yet: a miss
		code, id, body := api.create(tok("owner"), private.ID, 1)
		if code != http.StatusAccepted {
			t.Fatalf("owner's create: HTTP %d %s", code, body)
		}
		if v := api.available(tok("owner"), id); v.Cache != models.CacheMiss {
			t.Fatalf("owner's volume: cache %q", v.Cache)
		}
		ready := false
		for _, e := range entriesOf(t, host) {
			ready = ready || (e.ImageID == private.ID && e.State == models.EntryReady)
		}
		if !ready {
			t.Fatalf("no ready cache entry of %s", private.ID)
		}
		refusedAsUnknown(t, "other", other, private.ID) // cached now: a hit
		// An admin of another project neither: not even to warm the cache with it.
		refusedAsUnknown(t, "admin", admin, private.ID)
		code, body = api.do(tok("admin"), "POST", "/v1/cache/warm", fmt.Sprintf(`{"image_id":%q}`, private.ID))
		if c, _ := errorCode(t, body); code != http.StatusBadRequest || c != "image_not_found" {
			t.Fatalf("admin warms another project's private image: HTTP %d %s", code, body)
		}
		// Nor a retry: a failed volume of the image in another project (made before the image
		// was private, say) is not provisioned again.
		failed := recordVolume(t, other, models.StatusError, private.ID)
		code, body = api.do(tok("other"), "POST", "/v1/volumes/"+failed+"/retry", "")
		if c, _ := errorCode(t, body); code != http.StatusBadRequest || c != "image_not_found" {
			t.Fatalf("retry of another project's failed volume of a private image: HTTP %d %s", code, body)
		}
		// The owner's second volume is a hit; the only provisions of the image are the owner's.
		code, id2, body := api.create(tok("owner"), private.ID, 1)
		if code != http.StatusAccepted {
			t.Fatalf("owner's second create: HTTP %d %s", code, body)
		}
		if v := api.available(tok("owner"), id2); v.Cache != models.CacheHit {
			t.Fatalf("owner's second volume: cache %q", v.Cache)
		}
		query := fmt.Sprintf("WorkflowType = 'CreateVolumeFromImage' AND ImageID = '%s'", private.ID)
		var got []string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			resp, err := stack.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
			if err != nil {
				t.Fatal(err)
			}
			got = got[:0]
			for _, e := range resp.GetExecutions() {
				got = append(got, e.GetExecution().GetWorkflowId())
			}
			if len(got) >= 2 || time.Now().After(deadline) {
				break
			}
		}
		if len(got) != 2 || !(got[0] == id && got[1] == id2 || got[0] == id2 && got[1] == id) {
			t.Fatalf("provisions of %s: %v, want only the owner's %s and %s", private.ID, got, id, id2)
		}
	})

	t.Run("a shared image is usable by accepted members only", func(t *testing.T) {
		code, id, body := api.create(tok("accepted"), shared.ID, 1)
		if code != http.StatusAccepted {
			t.Fatalf("accepted member's create: HTTP %d %s", code, body)
		}
		api.available(tok("accepted"), id)
		refusedAsUnknown(t, "pending", pending, shared.ID)
		refusedAsUnknown(t, "other", other, shared.ID)
		// Memberships are read on every create: once accepted, the share counts.
		if err := stack.glance.SetMemberStatus(ctx, shared.ID, pending, imagesource.MemberAccepted); err != nil {
			t.Fatal(err)
		}
		code, id, body = api.create(tok("pending"), shared.ID, 1)
		if code != http.StatusAccepted {
			t.Fatalf("create once the membership is accepted: HTTP %d %s", code, body)
		}
		api.available(tok("pending"), id)
		if err := stack.glance.SetMemberStatus(ctx, shared.ID, pending, imagesource.MemberRejected); err != nil {
			t.Fatal(err)
		}
		refusedAsUnknown(t, "pending", pending, shared.ID)
	})

	t.Run("public and community images are everyone's", func(t *testing.T) {
		images := []imagesource.Image{community}
		// Glance without Keystone runs as an admin with no roles, and its policy (publicize_image:
		// role:admin) refuses to make an image public then. When it does make one, it is tested
		// here; the rule's public branch is the community one's (TestImageVisibility has both).
		pub, err := stack.glance.Create(ctx, glance.CreateOpts{Name: "authz-really-public", DiskFormat: "raw", Owner: owner,
			Visibility: imagesource.VisibilityPublic}, strings.NewReader(string(imageBytes(mib, 175, 1))))
		switch {
		case err == nil:
			t.Cleanup(func() { _ = stack.glance.Delete(context.Background(), pub.ID) })
			images = append(images, pub)
		case strings.Contains(err.Error(), "publicize_image"):
			t.Logf("this Glance makes no public images (%v): public images are not tried here", err)
		default:
			t.Fatal(err)
		}
		for _, img := range images {
			code, id, body := api.create(tok("other"), img.ID, 1)
			if code != http.StatusAccepted {
				t.Fatalf("%s image: HTTP %d %s", img.Visibility, code, body)
			}
			api.available(tok("other"), id)
		}
	})

	t.Run("each role on each route", func(t *testing.T) {
		// The owner's volumes, seen by a reader of the project, a member and an admin of another.
		vols := projectRows(t, owner)
		if len(vols) < 2 {
			t.Fatalf("owner's volumes: %v", vols)
		}
		var volume string
		for id := range vols {
			volume = id
		}
		for _, who := range []string{"reader", "owner"} {
			for _, path := range []string{"/v1/volumes/" + volume, "/v1/volumes", "/v3/" + owner + "/volumes/" + volume, "/v3/" + owner + "/volumes/detail"} {
				code, body := api.do(tok(who), "GET", path, "")
				if code != http.StatusOK || !strings.Contains(string(body), volume) ||
					strings.Contains(string(body), `"host"`) || strings.Contains(string(body), "os-vol-host-attr") || strings.Contains(string(body), host) {
					t.Fatalf("%s GET %s: HTTP %d %s; want the volume, without its host", who, path, code, body)
				}
			}
		}
		// An admin sees the host of its project's volumes.
		code, id, body := api.create(tok("admin"), public.ID, 1)
		if code != http.StatusAccepted {
			t.Fatalf("admin's create: HTTP %d %s", code, body)
		}
		if v := api.available(tok("admin"), id); v.Host != host {
			t.Fatalf("admin's view of its volume: host %q, want %s", v.Host, host)
		}
		if code, body := api.do(tok("admin"), "GET", "/v3/"+admin+"/volumes/"+id, ""); code != http.StatusOK ||
			!strings.Contains(string(body), `"os-vol-host-attr:host": "`+host+"@rbd#") {
			t.Fatalf("admin's Cinder view: HTTP %d %s", code, body)
		}

		// Every route, every role: refused with 403 below the route's role (in the API's shape),
		// past authorization at or above it. Path values name nothing, so an allowed request
		// changes nothing.
		routes := []struct {
			method, path, body string
			min                starter.Role
		}{
			{"POST", "/v1/volumes", `{}`, starter.RoleMember},
			{"GET", "/v1/volumes", "", starter.RoleReader},
			{"GET", "/v1/volumes/none", "", starter.RoleReader},
			{"DELETE", "/v1/volumes/none", "", starter.RoleMember},
			{"POST", "/v1/volumes/none/retry", "", starter.RoleMember},
			{"POST", "/v1/volumes/none/extend", `{"size_gb":2}`, starter.RoleMember},
			{"GET", "/v1/cache", "", starter.RoleAdmin},
			{"GET", "/v1/cache/stats", "", starter.RoleAdmin},
			{"POST", "/v1/cache/warm", `{}`, starter.RoleAdmin},
			{"POST", "/v1/cache/4000000000/pin", "", starter.RoleAdmin},
			{"DELETE", "/v1/cache/4000000000/pin", "", starter.RoleAdmin},
			{"DELETE", "/v1/cache/4000000000", "", starter.RoleAdmin},
			{"GET", "/v1/reconcile/last", "", starter.RoleAdmin},
			{"POST", "/v3/{p}/volumes", `{}`, starter.RoleMember},
			{"GET", "/v3/{p}/volumes", "", starter.RoleReader},
			{"GET", "/v3/{p}/volumes/detail", "", starter.RoleReader},
			{"GET", "/v3/{p}/volumes/none", "", starter.RoleReader},
			{"DELETE", "/v3/{p}/volumes/none", "", starter.RoleMember},
			{"POST", "/v3/{p}/volumes/none/action", `{"os-extend":{"new_size":2}}`, starter.RoleMember},
		}
		who := map[starter.Role]string{starter.RoleNone: "none", starter.RoleReader: "reader", starter.RoleMember: "owner", starter.RoleAdmin: "admin"}
		for _, r := range routes {
			for role, name := range who {
				path := strings.ReplaceAll(r.path, "{p}", tokens[tok(name)])
				code, body := api.do(tok(name), r.method, path, r.body)
				if role < r.min {
					ok := code == http.StatusForbidden
					if strings.HasPrefix(path, "/v3/") {
						name, f := cinderFault(t, body)
						ok = ok && name == "forbidden" && f.Code == http.StatusForbidden
					} else {
						c, msg := errorCode(t, body)
						ok = ok && c == starter.CodeForbidden && strings.Contains(msg, role.String())
					}
					if !ok {
						t.Errorf("%s %s as %s: HTTP %d %s; want 403 forbidden", r.method, path, role, code, body)
					}
				} else if code == http.StatusForbidden || code == http.StatusUnauthorized {
					t.Errorf("%s %s as %s: HTTP %d %s; want past authorization", r.method, path, role, code, body)
				}
			}
		}

		// With real volumes and entries: a reader cannot delete, a member cannot evict, a member
		// deletes its own, an admin pins.
		if code, body := api.do(tok("reader"), "DELETE", "/v1/volumes/"+volume, ""); code != http.StatusForbidden {
			t.Fatalf("reader deletes: HTTP %d %s", code, body)
		}
		var entry models.CacheEntry
		for _, e := range entriesOf(t, host) {
			if e.ImageID == private.ID {
				entry = e
			}
		}
		if code, body := api.do(tok("owner"), "DELETE", fmt.Sprintf("/v1/cache/%d?force=true", entry.ID), ""); code != http.StatusForbidden {
			t.Fatalf("member evicts: HTTP %d %s", code, body)
		}
		if code, body := api.do(tok("admin"), "POST", fmt.Sprintf("/v1/cache/%d/pin", entry.ID), ""); code != http.StatusOK {
			t.Fatalf("admin pins: HTTP %d %s", code, body)
		}
		if code, body := api.do(tok("admin"), "DELETE", fmt.Sprintf("/v1/cache/%d/pin", entry.ID), ""); code != http.StatusOK {
			t.Fatalf("admin unpins: HTTP %d %s", code, body)
		}
		if code, body := api.do(tok("owner"), "DELETE", "/v1/volumes/"+volume, ""); code != http.StatusAccepted {
			t.Fatalf("member deletes its volume: HTTP %d %s", code, body)
		}
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			if _, err := stack.store.GetVolume(ctx, volume); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("volume %s not deleted", volume)
			}
		}
	})

	t.Run("sizes out of bounds are refused", func(t *testing.T) {
		for _, size := range []string{"0", "-1", "1001", "17179869185"} {
			code, body := api.do(tok("other"), "POST", "/v1/volumes", fmt.Sprintf(`{"image_id":%q,"size_gb":%s}`, public.ID, size))
			c, _ := errorCode(t, body)
			want := starter.CodeVolumeTooLarge
			if strings.HasPrefix(size, "-") || size == "0" {
				want = starter.CodeInvalidSize
			}
			if code != http.StatusBadRequest || c != want {
				t.Errorf("size_gb %s: HTTP %d %s; want 400 %s", size, code, body, want)
			}
			code, body = api.do(tok("other"), "POST", "/v3/"+other+"/volumes", fmt.Sprintf(`{"volume":{"imageRef":%q,"size":%s}}`, public.ID, size))
			if name, _ := cinderFault(t, body); code != http.StatusBadRequest || name != "badRequest" {
				t.Errorf("Cinder size %s: HTTP %d %s", size, code, body)
			}
		}
	})

	t.Run("quotas in volumes and gigabytes, the default, concurrent creates", func(t *testing.T) {
		overQuota := func(code int, body []byte, quota string) bool {
			c, msg := errorCode(t, body)
			return code == http.StatusRequestEntityTooLarge && c == starter.CodeQuotaExceeded && strings.Contains(msg, quota)
		}
		// 8 creates at once against a quota of 3 volumes: 3 accepted, 5 refused, 3 rows.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var ids []string
		refused := 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, id, body := api.create(tok("quota-volumes"), public.ID, 1)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case code == http.StatusAccepted:
					ids = append(ids, id)
				case overQuota(code, body, "volumes"):
					refused++
				default:
					t.Errorf("concurrent create: HTTP %d %s", code, body)
				}
			}()
		}
		wg.Wait()
		if len(ids) != 3 || refused != 5 || len(projectRows(t, quotaVol)) != 3 {
			t.Fatalf("8 concurrent creates, quota 3 volumes: %d accepted, %d refused, rows %v", len(ids), refused, projectRows(t, quotaVol))
		}
		for _, id := range ids {
			api.available(tok("quota-volumes"), id)
		}
		// 5 GiB: 3 + 2 fit, 1 more does not, in either API.
		code, id, body := api.create(tok("quota-gigabytes"), public.ID, 3)
		if code != http.StatusAccepted {
			t.Fatalf("3 GiB of 5: HTTP %d %s", code, body)
		}
		api.available(tok("quota-gigabytes"), id)
		if code, _, body := api.create(tok("quota-gigabytes"), public.ID, 3); !overQuota(code, body, "gigabytes") {
			t.Fatalf("3 more GiB: HTTP %d %s; want 413 naming gigabytes", code, body)
		}
		code, body = api.do(tok("quota-gigabytes"), "POST", "/v3/"+quotaGB+"/volumes", fmt.Sprintf(`{"volume":{"imageRef":%q,"size":3}}`, public.ID))
		if name, f := cinderFault(t, body); code != http.StatusRequestEntityTooLarge || name != "overLimit" || !strings.Contains(f.Message, "gigabytes") {
			t.Fatalf("Cinder, 3 more GiB: HTTP %d %s", code, body)
		}
		code, id, body = api.create(tok("quota-gigabytes"), public.ID, 2)
		if code != http.StatusAccepted {
			t.Fatalf("2 more GiB: HTTP %d %s", code, body)
		}
		api.available(tok("quota-gigabytes"), id)

		// A project with no quotas of its own has the default: 2 volumes, 3 GiB. A volume being
		// deleted counts until its row is gone: here one of 1 GiB.
		recordVolume(t, unlisted, models.StatusDeleting, public.ID)
		if code, _, body := api.create(tok("unlisted"), public.ID, 3); !overQuota(code, body, "gigabytes") {
			t.Fatalf("unlisted project, 1 GiB deleting + 3 GiB: HTTP %d %s", code, body)
		}
		code, id, body = api.create(tok("unlisted"), public.ID, 2)
		if code != http.StatusAccepted {
			t.Fatalf("unlisted project, 1 GiB deleting + 2 GiB: HTTP %d %s", code, body)
		}
		api.available(tok("unlisted"), id)
		if code, _, body := api.create(tok("unlisted"), public.ID, 1); !overQuota(code, body, "volumes") {
			t.Fatalf("unlisted project, a third volume: HTTP %d %s", code, body)
		}
	})
}
