//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/starter"
)

// cinderClient is a gophercloud block-storage client of the gateway at base, acting for project
// with token, as a Keystone catalog would give it.
func cinderClient(base, project, token string) *gophercloud.ServiceClient {
	endpoint := base + "/v3/" + project + "/"
	return &gophercloud.ServiceClient{
		ProviderClient: &gophercloud.ProviderClient{TokenID: token},
		Endpoint:       endpoint,
		ResourceBase:   endpoint,
		Type:           "volumev3",
	}
}

// cinderFault reads a Cinder error body: its single key, e.g. "itemNotFound", and the fault.
func cinderFault(t *testing.T, body []byte) (string, starter.CinderFault) {
	t.Helper()
	var m map[string]starter.CinderFault
	if err := json.Unmarshal(body, &m); err != nil || len(m) != 1 {
		t.Fatalf("not a Cinder error body (%v): %s", err, body)
	}
	for k, f := range m {
		return k, f
	}
	panic("unreachable")
}

// requireFault checks err is gophercloud's unexpected-code error with a Cinder fault of that
// name and status.
func requireFault(t *testing.T, err error, status int, name string) {
	t.Helper()
	var ue gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &ue) || ue.Actual != status {
		t.Fatalf("error %v, want HTTP %d", err, status)
	}
	if got, f := cinderFault(t, ue.Body); got != name || f.Code != status || f.Message == "" {
		t.Fatalf("fault %s %+v, want %s with code %d and a message", got, f, name, status)
	}
}

// gophercloud's Cinder v3 volumes package, unmodified, creates a volume from an image, waits for
// it, finds it in the detailed list and deletes it; the volume it made holds the image's bytes.
func TestCinderVolumesWithGophercloud(t *testing.T) {
	host := "e2e-cinder"
	startHost(t, hostConfig(host))
	api := newGateway(t, host)
	img := uploadImage(t, "cinder", "raw", imageBytes(16*mib, 91, 2))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sc := cinderClient(api.base, "project-e2e", testToken)
	start := time.Now().UTC().Add(-time.Second)

	created, err := volumes.Create(ctx, sc, volumes.CreateOpts{Size: 1, ImageID: img.ID, Name: "cinder-e2e"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if created.ID == "" || created.Status != "creating" || created.Size != 1 || created.Name != "cinder-e2e" ||
		created.VolumeImageMetadata["image_id"] != img.ID || created.TenantID != "project-e2e" ||
		created.Bootable != "true" || created.AvailabilityZone != "nova" || created.CreatedAt.Before(start) {
		t.Fatalf("create answered %+v", created)
	}

	// Poll as a Cinder client does, until the volume leaves creating/downloading.
	seen := map[string]bool{}
	var v *volumes.Volume
	for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if v, err = volumes.Get(ctx, sc, created.ID).Extract(); err != nil {
			t.Fatalf("get: %v", err)
		}
		seen[v.Status] = true
		if v.Status != "creating" && v.Status != starter.CinderStatusDownloading {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s still %s", v.ID, v.Status)
		}
	}
	t.Logf("statuses seen while provisioning: %v", seen)
	for s := range seen {
		if !slices.Contains([]string{"creating", starter.CinderStatusDownloading, "available"}, s) {
			t.Fatalf("status %q seen while creating; statuses seen %v", s, seen)
		}
	}
	if v.Status != "available" || v.Size != 1 || v.VolumeImageMetadata["image_id"] != img.ID ||
		v.Host != host+"@rbd#"+stack.pool || v.UpdatedAt.Before(v.CreatedAt) || v.CreatedAt.Sub(created.CreatedAt).Abs() > time.Second {
		t.Fatalf("available volume %+v (created %v)", v, created.CreatedAt)
	}
	// The same volume through /v1, and its bytes in Ceph.
	var view starter.VolumeView
	if code := api.call("GET", "/v1/volumes/"+v.ID, "", &view); code != http.StatusOK {
		t.Fatalf("GET /v1/volumes/%s: HTTP %d", v.ID, code)
	}
	requireAvailable(t, view, models.CacheMiss)
	if got := volumeSHA512(t, v.ID, img.Size); got != img.HashValue {
		t.Fatal("the volume's bytes differ from the image")
	}

	pages, err := volumes.List(sc, volumes.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	all, err := volumes.ExtractVolumes(pages)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(all, func(x volumes.Volume) bool { return x.ID == v.ID })
	if i < 0 {
		t.Fatalf("volume %s not in the list of %d volumes", v.ID, len(all))
	}
	if got := all[i]; got.Status != "available" || got.Size != 1 || got.Name != "cinder-e2e" || got.VolumeImageMetadata["image_id"] != img.ID || got.Host != v.Host {
		t.Fatalf("listed volume %+v", got)
	}
	for _, x := range all {
		if x.TenantID != "project-e2e" {
			t.Fatalf("list shows volume %s of project %s", x.ID, x.TenantID)
		}
	}

	testCinderStatuses(ctx, t, sc, img.ID, host)

	if err := volumes.Delete(ctx, sc, v.ID, nil).ExtractErr(); err != nil {
		t.Fatalf("delete: %v", err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		got, err := volumes.Get(ctx, sc, v.ID).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			requireFault(t, err, http.StatusNotFound, "itemNotFound")
			break
		}
		if err != nil {
			t.Fatalf("get while deleting: %v", err)
		}
		if got.Status != models.StatusDeleting {
			t.Fatalf("after delete the volume is %s, want deleting", got.Status)
		}
		if time.Now().After(deadline) {
			t.Fatal("volume still there 2 minutes after delete")
		}
	}
	if _, err := stack.ceph.Stat(ctx, stack.pool, contract.RBDName(v.ID)); !isNotFound(err) {
		t.Fatalf("the deleted volume's RBD image: %v, want not found", err)
	}
}

// testCinderStatuses checks the status Cinder clients see for each state of a provision, and
// the list filters on it, with rows recorded straight into the store (no workflow runs them):
// a provision that downloads shows "downloading"; deleting one still creating is refused.
func testCinderStatuses(ctx context.Context, t *testing.T, sc *gophercloud.ServiceClient, imageID, host string) {
	t.Helper()
	want := map[string]string{}
	for _, row := range []struct{ status, cache, cinder string }{
		{models.StatusCreating, "", "creating"},
		{models.StatusCreating, models.CacheHit, "creating"},
		{models.StatusCreating, models.CacheMiss, starter.CinderStatusDownloading},
		{models.StatusCreating, models.CacheNotCached, starter.CinderStatusDownloading},
		{models.StatusError, models.CacheMiss, "error"},
	} {
		v := &models.Volume{
			ID: uuid.NewString(), ProjectID: "project-e2e", Name: "cinder-states", SizeGB: 1, ImageID: imageID,
			Host: host, Status: row.status, Cache: row.cache,
		}
		if err := stack.store.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stack.store.DeleteVolume(context.Background(), v.ID) })
		want[v.ID] = row.cinder
	}
	for id, status := range want {
		got, err := volumes.Get(ctx, sc, id).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != status {
			t.Fatalf("volume %s: Cinder status %q, want %q", id, got.Status, status)
		}
		if status == "creating" {
			requireFault(t, volumes.Delete(ctx, sc, id, nil).ExtractErr(), http.StatusConflict, "conflictingRequest")
			if row, err := stack.store.GetVolume(ctx, id); err != nil || row.Status != models.StatusCreating {
				t.Fatalf("after a refused delete: %+v, %v", row, err)
			}
		}
	}
	pages, err := volumes.List(sc, volumes.ListOpts{Name: "cinder-states", Status: starter.CinderStatusDownloading}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := volumes.ExtractVolumes(pages)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range listed {
		ids = append(ids, x.ID)
	}
	for id, status := range want {
		if slices.Contains(ids, id) != (status == starter.CinderStatusDownloading) {
			t.Fatalf("list ?name=cinder-states&status=downloading gave %v; volume %s is %s", ids, id, status)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("filtered list %v, want the 2 downloading volumes", ids)
	}
}

// gophercloud's volumes.ExtendSize (Cinder's os-extend action) grows a volume made from an
// image: 202, the volume extending, then available with the new size and a larger RBD image
// holding the same bytes. A smaller size, a reader's token, another project's token, and a size
// past the project's gigabytes quota are refused in Cinder's shape.
func TestCinderExtendWithGophercloud(t *testing.T) {
	const host = "e2e-cinder-extend"
	startHost(t, hostConfig(host))
	suffix := uuid.NewString()[:8]
	owner, other := "extend-owner-"+suffix, "extend-other-"+suffix
	ownerTok, readerTok, otherTok := "tok-extend-owner-"+suffix, "tok-extend-reader-"+suffix, "tok-extend-other-"+suffix
	tokens := map[string]string{ownerTok: owner, readerTok: owner, otherTok: other}
	roles := map[string]starter.Role{readerTok: starter.RoleReader}
	quotas := &starter.Quotas{Default: starter.QuotaLimits{Volumes: -1, Gigabytes: 3}}
	api := newGatewayWith(t, tokens, roles, quotas, host)
	img := uploadImage(t, "cinder-extend", "raw", imageBytes(8*mib, 93, 2))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sc := cinderClient(api.base, owner, ownerTok)

	created, err := volumes.Create(ctx, sc, volumes.CreateOpts{Size: 1, ImageID: img.ID, Name: "cinder-extend"}, nil).Extract()
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = volumes.Delete(context.Background(), sc, created.ID, nil).ExtractErr() })
	waitCinder := func(id string, busy ...string) *volumes.Volume {
		t.Helper()
		for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			v, err := volumes.Get(ctx, sc, id).Extract()
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !slices.Contains(busy, v.Status) {
				return v
			}
			if time.Now().After(deadline) {
				t.Fatalf("volume %s still %s", id, v.Status)
			}
		}
	}
	v := waitCinder(created.ID, "creating", starter.CinderStatusDownloading)
	if v.Status != "available" || v.Size != 1 {
		t.Fatalf("volume before the extension: %s, %d GiB", v.Status, v.Size)
	}

	// Refused: not larger, a reader, another project, past the quota (3 GiB).
	requireFault(t, volumes.ExtendSize(ctx, sc, v.ID, volumes.ExtendSizeOpts{NewSize: 1}).ExtractErr(), http.StatusBadRequest, "badRequest")
	requireFault(t, volumes.ExtendSize(ctx, cinderClient(api.base, owner, readerTok), v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(), http.StatusForbidden, "forbidden")
	requireFault(t, volumes.ExtendSize(ctx, cinderClient(api.base, owner, otherTok), v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(), http.StatusNotFound, "itemNotFound")
	requireFault(t, volumes.ExtendSize(ctx, cinderClient(api.base, other, otherTok), v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(), http.StatusNotFound, "itemNotFound")
	requireFault(t, volumes.ExtendSize(ctx, sc, v.ID, volumes.ExtendSizeOpts{NewSize: 4}).ExtractErr(), http.StatusRequestEntityTooLarge, "overLimit")
	if got := waitCinder(v.ID); got.Status != "available" || got.Size != 1 {
		t.Fatalf("a refused extension changed the volume: %s, %d GiB", got.Status, got.Size)
	}

	if err := volumes.ExtendSize(ctx, sc, v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(); err != nil {
		t.Fatalf("extend: %v", err)
	}
	v = waitCinder(v.ID, models.StatusExtending)
	if v.Status != "available" || v.Size != 2 {
		t.Fatalf("volume after the extension: %s, %d GiB", v.Status, v.Size)
	}
	if info := stat(t, contract.RBDName(v.ID)); info.Size != 2<<30 {
		t.Fatalf("the RBD image is %d bytes, want 2 GiB", info.Size)
	}
	if got := volumeSHA512(t, v.ID, img.Size); got != img.HashValue {
		t.Fatal("the extended volume's bytes differ from the image")
	}
	// The same size again is no longer larger.
	requireFault(t, volumes.ExtendSize(ctx, sc, v.ID, volumes.ExtendSizeOpts{NewSize: 2}).ExtractErr(), http.StatusBadRequest, "badRequest")
}
