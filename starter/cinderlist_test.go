package starter

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagevol/imagevol/imagesource/memsource"
	"github.com/imagevol/imagevol/models"
)

// cinderListGateway serves a store holding five volumes of project p and one of project q.
func cinderListGateway(t *testing.T) (*httptest.Server, *memsource.Source, *models.Store) {
	t.Helper()
	ctx := context.Background()
	store := sqliteStore(t)
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i, v := range []models.Volume{
		{ID: "v1", ProjectID: "p", Name: "a", SizeGB: 1, Status: models.StatusAvailable},
		{ID: "v2", ProjectID: "p", Name: "b", SizeGB: 4, Status: models.StatusCreating, Cache: models.CacheMiss},
		{ID: "v3", ProjectID: "p", Name: "a", SizeGB: 2, Status: models.StatusCreating},
		{ID: "v4", ProjectID: "p", Name: "c", SizeGB: 3, Status: models.StatusError},
		{ID: "v5", ProjectID: "p", Name: "a", SizeGB: 5, Status: models.StatusAvailable},
		{ID: "w1", ProjectID: "q", Name: "a", SizeGB: 1, Status: models.StatusAvailable},
	} {
		v.ImageID, v.CreatedAt = "img", base.Add(time.Duration(i)*time.Minute)
		if err := store.CreateVolume(ctx, &v); err != nil {
			t.Fatal(err)
		}
	}
	images := memsource.New()
	g := &Gateway{Store: store, Temporal: unreachableTemporal(t), Images: images, Hosts: []string{"h"}, Logger: quietLogger(),
		Tokens: map[string]string{"tok-p": "p", "tok-reader": "p"}, TokenRoles: map[string]Role{"tok-reader": RoleReader}}
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(srv.Close)
	return srv, images, store
}

type cinderListBody struct {
	Volumes []struct {
		ID     string       `json:"id"`
		Name   string       `json:"name"`
		Status string       `json:"status"`
		Links  []CinderLink `json:"links"`
	} `json:"volumes"`
	Links []CinderLink `json:"volumes_links"`
}

func listCinder(t *testing.T, srv *httptest.Server, pathQuery string) (int, cinderListBody, []byte) {
	t.Helper()
	resp, body := get(t, srv, pathQuery, map[string]string{"X-Auth-Token": "tok-reader"})
	var out cinderListBody
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("%s: %v: %s", pathQuery, err, body)
		}
	}
	return resp.StatusCode, out, body
}

func idsOf(b cinderListBody) []string {
	var ids []string
	for _, v := range b.Volumes {
		ids = append(ids, v.ID)
	}
	return ids
}

// Both lists page with limit and marker, link a full page to the next one with the same query,
// sort by sort or sort_key/sort_dir, filter by name and Cinder's status, and show only the
// project's volumes; bad parameters are 400 badRequest.
func TestCinderListPagingSortFilters(t *testing.T) {
	srv, _, _ := cinderListGateway(t)
	for _, path := range []string{"/v3/p/volumes", "/v3/p/volumes/detail"} {
		code, all, body := listCinder(t, srv, path)
		if code != http.StatusOK || !slices.Equal(idsOf(all), []string{"v5", "v4", "v3", "v2", "v1"}) || all.Links != nil {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if path == "/v3/p/volumes" && (len(all.Volumes[0].Links) != 2 || strings.Contains(string(body), `"status"`)) {
			t.Fatalf("plain list: %s", body)
		}
		// Follow next links two at a time.
		var paged []string
		next := path + "?limit=2&name=a&sort=size:asc"
		for hops := 0; next != ""; hops++ {
			if hops > 5 {
				t.Fatal("too many pages")
			}
			code, page, body := listCinder(t, srv, next)
			if code != http.StatusOK {
				t.Fatalf("%s: %d %s", next, code, body)
			}
			paged = append(paged, idsOf(page)...)
			next = ""
			if len(page.Links) == 1 && page.Links[0].Rel == "next" {
				u, err := url.Parse(page.Links[0].Href)
				if err != nil || u.Path != path || u.Query().Get("name") != "a" || u.Query().Get("sort") != "size:asc" ||
					u.Query().Get("marker") != page.Volumes[len(page.Volumes)-1].ID {
					t.Fatalf("next link %s", page.Links[0].Href)
				}
				next = u.RequestURI()
			}
		}
		if !slices.Equal(paged, []string{"v1", "v3", "v5"}) {
			t.Fatalf("%s: pages gave %v", path, paged)
		}
	}
	for q, want := range map[string][]string{
		"sort_key=name&sort_dir=asc": {"v1", "v3", "v5", "v2", "v4"},
		"sort=status:asc,id:asc":     {"v1", "v5", "v2", "v3", "v4"},
		"status=downloading":         {"v2"},
		"status=creating":            {"v3"},
		"status=available&limit=5":   {"v5", "v1"},
		"marker=v3":                  {"v2", "v1"},
		"sort=id&marker=v4":          {"v3", "v2", "v1"},
		"name=nothing":               nil,
	} {
		code, got, body := listCinder(t, srv, "/v3/p/volumes/detail?"+q)
		if code != http.StatusOK || !slices.Equal(idsOf(got), want) {
			t.Errorf("%s: %d %v, want %v: %s", q, code, idsOf(got), want, body)
		}
	}
	if _, got, _ := listCinder(t, srv, "/v3/p/volumes/detail?status=downloading"); got.Volumes[0].Status != "downloading" {
		t.Errorf("status filter and shown status differ: %+v", got)
	}
	for _, q := range []string{"marker=w1", "marker=nope", "limit=-1", "limit=x", "sort=host", "sort=name:up", "sort=name&sort_key=id"} {
		code, _, body := listCinder(t, srv, "/v3/p/volumes?"+q)
		if code != http.StatusBadRequest || !strings.Contains(string(body), `"badRequest"`) {
			t.Errorf("%s: %d %s, want 400 badRequest", q, code, body)
		}
	}
}

// A volume made from an image records the image's metadata, custom properties included, and
// Cinder's views show it as volume_image_metadata.
func TestCinderVolumeImageMetadata(t *testing.T) {
	srv, images, store := cinderListGateway(t)
	img := memsource.Describe("8c1a0000-0000-4000-8000-000000000001", make([]byte, 1<<20))
	img.Name, img.MinDisk, img.MinRAM = "debian", 1, 512
	img.Properties = map[string]string{"hw_disk_bus": "scsi", "os_distro": "debian"}
	images.Put(img, make([]byte, 1<<20))

	// Temporal is down: the volume is recorded, then fails to start; its row keeps the metadata.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v3/p/volumes",
		strings.NewReader(`{"volume":{"size":1,"imageRef":"`+img.ID+`","name":"boot"}}`))
	req.Header.Set("X-Auth-Token", "tok-p")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, list, body := listCinder(t, srv, "/v3/p/volumes?name=boot")
	if code != http.StatusOK || len(list.Volumes) != 1 {
		t.Fatalf("list: %d %s (create answered %d)", code, body, resp.StatusCode)
	}
	resp, body = get(t, srv, "/v3/p/volumes/"+list.Volumes[0].ID, map[string]string{"X-Auth-Token": "tok-p"})
	var shown struct {
		Volume CinderVolume `json:"volume"`
	}
	if err := json.Unmarshal(body, &shown); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("show: %d %s", resp.StatusCode, body)
	}
	want := map[string]string{"image_id": img.ID, "image_name": "debian", "checksum": img.Checksum, "size": "1048576",
		"disk_format": "raw", "container_format": "bare", "min_disk": "1", "min_ram": "512",
		"hw_disk_bus": "scsi", "os_distro": "debian"}
	md := shown.Volume.VolumeImageMetadata
	for k, v := range want {
		if md[k] != v {
			t.Errorf("volume_image_metadata[%s] = %q, want %q (all: %v)", k, md[k], v, md)
		}
	}
	if shown.Volume.Bootable != "true" {
		t.Errorf("bootable %q", shown.Volume.Bootable)
	}
	// A volume recorded before the metadata was: its image ID only.
	_, body = get(t, srv, "/v3/p/volumes/v1", map[string]string{"X-Auth-Token": "tok-p"})
	shown.Volume = CinderVolume{}
	if err := json.Unmarshal(body, &shown); err != nil || len(shown.Volume.VolumeImageMetadata) != 1 ||
		shown.Volume.VolumeImageMetadata["image_id"] != "img" {
		t.Errorf("old volume: %s", body)
	}
	// The row holds the metadata itself.
	v, err := store.GetVolume(context.Background(), list.Volumes[0].ID)
	if err != nil || v.ImageMetadata["hw_disk_bus"] != "scsi" {
		t.Errorf("row: %+v, %v", v, err)
	}
}
