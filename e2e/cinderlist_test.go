//go:build e2e

package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/starter"
)

// gophercloud lists a project's volumes a page at a time, following volumes_links, sorted and
// filtered by name and status as Cinder does; a volume made from an image with a custom property
// shows it, and the image's checksum, in volume_image_metadata.
func TestCinderListPagingAndImageMetadata(t *testing.T) {
	host := "e2e-cinderlist"
	startHost(t, hostConfig(host))
	project := "project-list-" + uuid.NewString()[:8]
	api := newGatewayWith(t, map[string]string{testToken: project}, nil, nil, host)
	img := uploadImageAs(t, glance.CreateOpts{Name: "cinderlist", DiskFormat: "raw", Visibility: imagesource.VisibilityCommunity,
		Properties: map[string]string{"hw_disk_bus": "scsi"}}, imageBytes(8*mib, 93, 2))
	if img.Properties["hw_disk_bus"] != "scsi" {
		t.Fatalf("Glance image properties %v", img.Properties)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sc := cinderClient(api.base, project, testToken)

	var ids []string
	for _, name := range []string{"list-a", "list-b", "list-a"} {
		v, err := volumes.Create(ctx, sc, volumes.CreateOpts{Size: 1, ImageID: img.ID, Name: name}, nil).Extract()
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		ids = append(ids, v.ID)
		time.Sleep(10 * time.Millisecond) // distinct created_at
	}
	for _, id := range ids {
		for deadline := time.Now().Add(4 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			v, err := volumes.Get(ctx, sc, id).Extract()
			if err != nil {
				t.Fatalf("get %s: %v", id, err)
			}
			if v.Status == "available" {
				break
			}
			if v.Status != "creating" && v.Status != starter.CinderStatusDownloading || time.Now().After(deadline) {
				t.Fatalf("volume %s is %s", id, v.Status)
			}
		}
		t.Cleanup(func() { _ = volumes.Delete(context.Background(), sc, id, nil).ExtractErr() })
	}

	// Pages of two, newest first, following volumes_links.
	var pageSizes []int
	var listed []string
	err := volumes.List(sc, volumes.ListOpts{Limit: 2}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(p)
		pageSizes = append(pageSizes, len(vs))
		for _, v := range vs {
			listed = append(listed, v.ID)
		}
		return true, err
	})
	newestFirst := []string{ids[2], ids[1], ids[0]}
	if err != nil || !slices.Equal(listed, newestFirst) || len(pageSizes) < 2 || pageSizes[0] != 2 {
		t.Fatalf("paged list: %v pages %v, %v; want %v", listed, pageSizes, err, newestFirst)
	}
	// AllPages follows the links too; a marker starts after it, in the order asked.
	pages, err := volumes.List(sc, volumes.ListOpts{Limit: 1, Sort: "created_at:asc"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := volumes.ExtractVolumes(pages)
	if err != nil || len(all) != 3 || all[0].ID != ids[0] || all[2].ID != ids[2] {
		t.Fatalf("all pages ascending: %+v, %v", all, err)
	}
	pages, err = volumes.List(sc, volumes.ListOpts{Marker: ids[0], Sort: "created_at:asc", Limit: 5}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after, err := volumes.ExtractVolumes(pages); err != nil || len(after) != 2 || after[0].ID != ids[1] {
		t.Fatalf("after the marker: %+v, %v", after, err)
	}

	// Filters.
	pages, err = volumes.List(sc, volumes.ListOpts{Name: "list-a", Status: "available"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	named, err := volumes.ExtractVolumes(pages)
	if err != nil || len(named) != 2 || named[0].ID != ids[2] || named[1].ID != ids[0] {
		t.Fatalf("name=list-a: %+v, %v", named, err)
	}
	pages, err = volumes.List(sc, volumes.ListOpts{Status: "error"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if none, _ := volumes.ExtractVolumes(pages); len(none) != 0 {
		t.Fatalf("status=error: %+v", none)
	}

	// The image's metadata, as Nova reads it to boot from the volume.
	md := named[0].VolumeImageMetadata
	if md["hw_disk_bus"] != "scsi" || md["checksum"] != img.Checksum || md["image_id"] != img.ID ||
		md["image_name"] != "cinderlist" || md["disk_format"] != "raw" || md["container_format"] != "bare" || named[0].Bootable != "true" {
		t.Fatalf("volume_image_metadata %v (bootable %s)", md, named[0].Bootable)
	}

	// An unknown marker is refused as Cinder refuses it.
	_, err = volumes.List(sc, volumes.ListOpts{Marker: uuid.NewString()}).AllPages(ctx)
	requireFault(t, err, 400, "badRequest")
}
