package models

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// QueryVolumes filters by project, name and Cinder status, orders by the keys asked (created_at
// descending by default, id breaking ties), and pages after a marker without skipping or
// repeating a row, on every database.
func TestQueryVolumes(t *testing.T) {
	for name, s := range openStores(t) {
		t.Run(name, func(t *testing.T) { testQueryVolumes(t, s) })
	}
}

func testQueryVolumes(t *testing.T, s *Store) {
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	add := func(id, project, name string, size int, status, cache string, at time.Duration) {
		t.Helper()
		v := &Volume{ID: id, ProjectID: project, Name: name, SizeGB: size, Status: status, Cache: cache,
			CreatedAt: base.Add(at), ImageMetadata: map[string]string{"image_id": "img-" + id}}
		if err := s.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	add("v1", "p", "a", 3, StatusAvailable, CacheHit, 1*time.Second)
	add("v2", "p", "b", 1, StatusCreating, CacheMiss, 2*time.Second)
	add("v3", "p", "a", 2, StatusCreating, "", 3*time.Second)
	add("v4", "p", "c", 2, StatusError, "", 3*time.Second) // same created_at as v3: id breaks the tie
	add("v5", "p", "a", 5, StatusAvailable, CacheNotCached, 5*time.Second)
	add("w1", "other", "a", 1, StatusAvailable, "", 6*time.Second)

	ids := func(q VolumeQuery) []string {
		t.Helper()
		vs, err := s.QueryVolumes(ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		var out []string
		for _, v := range vs {
			out = append(out, v.ID)
		}
		return out
	}
	check := func(q VolumeQuery, want ...string) {
		t.Helper()
		if got := ids(q); !slices.Equal(got, want) {
			t.Errorf("%+v: got %v, want %v", q, got, want)
		}
	}
	check(VolumeQuery{ProjectID: "p"}, "v5", "v4", "v3", "v2", "v1")
	check(VolumeQuery{}, "w1", "v5", "v4", "v3", "v2", "v1")
	check(VolumeQuery{ProjectID: "p", Name: "a"}, "v5", "v3", "v1")
	check(VolumeQuery{ProjectID: "p", Status: StatusDownloading}, "v2")
	check(VolumeQuery{ProjectID: "p", Status: StatusCreating}, "v3")
	check(VolumeQuery{ProjectID: "p", Status: StatusAvailable}, "v5", "v1")
	check(VolumeQuery{ProjectID: "p", Sort: []SortKey{{Key: "size"}}}, "v2", "v3", "v4", "v1", "v5")
	check(VolumeQuery{ProjectID: "p", Sort: []SortKey{{Key: "name"}, {Key: "size", Desc: true}}}, "v5", "v1", "v3", "v2", "v4")
	check(VolumeQuery{ProjectID: "p", Sort: []SortKey{{Key: "status"}, {Key: "id", Desc: true}}}, "v5", "v1", "v3", "v2", "v4")

	// Paging through every order, two at a time, gives the whole list once.
	for _, sort := range [][]SortKey{nil, {{Key: "size"}}, {{Key: "name"}, {Key: "created_at"}}, {{Key: "status", Desc: true}}, {{Key: "id"}}} {
		all := ids(VolumeQuery{ProjectID: "p", Sort: sort})
		var paged []string
		marker := ""
		for range 10 {
			page := ids(VolumeQuery{ProjectID: "p", Sort: sort, Marker: marker, Limit: 2})
			paged = append(paged, page...)
			if len(page) < 2 {
				break
			}
			marker = page[len(page)-1]
		}
		if !slices.Equal(all, paged) {
			t.Errorf("sort %v: pages %v, list %v", sort, paged, all)
		}
	}
	check(VolumeQuery{ProjectID: "p", Name: "a", Marker: "v5", Limit: 1}, "v3")

	// A marker must be a volume the query can see.
	for _, q := range []VolumeQuery{{ProjectID: "p", Marker: "nope"}, {ProjectID: "p", Marker: "w1"}} {
		if _, err := s.QueryVolumes(ctx, q); !errors.Is(err, ErrNotFound) {
			t.Errorf("marker %s: %v, want ErrNotFound", q.Marker, err)
		}
	}
	if _, err := s.QueryVolumes(ctx, VolumeQuery{Sort: []SortKey{{Key: "host"}}}); err == nil {
		t.Error("sort by host: no error")
	}

	// The image metadata round-trips.
	v, err := s.GetVolume(ctx, "v1")
	if err != nil || fmt.Sprint(v.ImageMetadata) != "map[image_id:img-v1]" {
		t.Fatalf("v1: %+v, %v", v, err)
	}
}
