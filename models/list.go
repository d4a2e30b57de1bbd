package models

import (
	"context"
	"fmt"
	"strings"
)

// StatusDownloading is Cinder's status of a volume still creating whose provision downloads
// the image: a creating volume that recorded a cache miss or not_cached.
const StatusDownloading = "downloading"

// VolumeSortKeys are the columns a volume list may be ordered by.
var VolumeSortKeys = []string{"created_at", "id", "name", "size", "status"}

// SortKey is one key of a list's order.
type SortKey struct {
	Key  string // one of VolumeSortKeys
	Desc bool
}

// VolumeQuery selects a page of volumes.
type VolumeQuery struct {
	ProjectID string // "" for every project
	Name      string // exact name; "" for any
	// Status is a status as Cinder shows it: "downloading" is a creating volume that downloads
	// its image (a cache miss or not_cached), "creating" the rest of the creating ones; "" for
	// any.
	Status string
	Sort   []SortKey // default: created_at descending; id always breaks ties
	// Marker is the ID of the last volume of the previous page: the page starts after it in the
	// order. It must be a volume the query can see (ErrNotFound otherwise).
	Marker string
	Limit  int // at most this many; 0 for no limit
}

// sortColumn maps a sort key onto its column.
var sortColumn = map[string]string{
	"created_at": "created_at", "id": "id", "name": "name", "size": "size_gb", "status": "status",
}

// QueryVolumes returns the volumes q selects, in its order, from after its marker, at most its
// limit. The marker is looked up within the project, so another project's volume is not a
// valid marker.
func (s *Store) QueryVolumes(ctx context.Context, q VolumeQuery) ([]Volume, error) {
	db := s.db.WithContext(ctx).Model(&Volume{})
	if q.ProjectID != "" {
		db = db.Where("project_id = ?", q.ProjectID)
	}
	if q.Name != "" {
		db = db.Where("name = ?", q.Name)
	}
	downloading := []string{CacheMiss, CacheNotCached}
	switch q.Status {
	case "":
	case StatusDownloading:
		db = db.Where("status = ? AND cache IN ?", StatusCreating, downloading)
	case StatusCreating:
		db = db.Where("status = ? AND (cache IS NULL OR cache NOT IN ?)", StatusCreating, downloading)
	default:
		db = db.Where("status = ?", q.Status)
	}
	keys := q.Sort
	if len(keys) == 0 {
		keys = []SortKey{{Key: "created_at", Desc: true}}
	}
	hasID := false
	for _, k := range keys {
		if _, ok := sortColumn[k.Key]; !ok {
			return nil, fmt.Errorf("models: cannot sort volumes by %q", k.Key)
		}
		hasID = hasID || k.Key == "id"
	}
	if !hasID {
		keys = append(keys[:len(keys):len(keys)], SortKey{Key: "id", Desc: keys[len(keys)-1].Desc})
	}
	if q.Marker != "" {
		var n int64
		m := s.db.WithContext(ctx).Model(&Volume{}).Where("id = ?", q.Marker)
		if q.ProjectID != "" {
			m = m.Where("project_id = ?", q.ProjectID)
		}
		if err := m.Count(&n).Error; err != nil {
			return nil, wrap(err, "models: list volumes")
		}
		if n == 0 {
			return nil, fmt.Errorf("models: marker volume %s: %w", q.Marker, ErrNotFound)
		}
		// Keyset paging: rows after the marker's in the order, the marker's values read in the
		// database so that they compare as stored.
		var ors []string
		var args []any
		for i, k := range keys {
			var ands []string
			for _, prev := range keys[:i] {
				c := sortColumn[prev.Key]
				ands = append(ands, c+" = (SELECT "+c+" FROM volumes WHERE id = ?)")
				args = append(args, q.Marker)
			}
			op := ">"
			if k.Desc {
				op = "<"
			}
			c := sortColumn[k.Key]
			ands = append(ands, c+" "+op+" (SELECT "+c+" FROM volumes WHERE id = ?)")
			args = append(args, q.Marker)
			ors = append(ors, "("+strings.Join(ands, " AND ")+")")
		}
		db = db.Where("("+strings.Join(ors, " OR ")+")", args...)
	}
	for _, k := range keys {
		dir := " ASC"
		if k.Desc {
			dir = " DESC"
		}
		db = db.Order(sortColumn[k.Key] + dir)
	}
	if q.Limit > 0 {
		db = db.Limit(q.Limit)
	}
	var out []Volume
	return out, wrap(db.Find(&out).Error, "models: list volumes")
}
