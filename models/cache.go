package models

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ErrLeased means a cache entry cannot be evicted now: a provision is cloning from it.
var ErrLeased = errors.New("models: cache entry is leased")

// FindReadyEntries returns the ready entries of an image's content on every host of a cluster,
// most recently used first.
func (s *Store) FindReadyEntries(ctx context.Context, cluster, imageID, contentHash string) ([]CacheEntry, error) {
	var out []CacheEntry
	err := s.db.WithContext(ctx).
		Where("cluster_name = ? AND image_id = ? AND content_hash = ? AND state = ?", cluster, imageID, contentHash, EntryReady).
		Order("last_used DESC, id DESC").Find(&out).Error
	return out, wrap(err, "models: ready entries of image "+imageID)
}

// ListEntriesOfImage lists every entry of an image, in any state, on every host.
func (s *Store) ListEntriesOfImage(ctx context.Context, imageID string) ([]CacheEntry, error) {
	var out []CacheEntry
	err := s.db.WithContext(ctx).Where("image_id = ?", imageID).Order("id").Find(&out).Error
	return out, wrap(err, "models: entries of image "+imageID)
}

// LeaseCacheEntry lets holder clone from a ready entry until the lease expires or is released,
// and returns the lease's token, which ReleaseLease takes: every call makes a lease of its own,
// so an earlier attempt of the same holder, ending late, cannot release a later attempt's lease.
// The entry's row is locked first (by updating it), the same order BeginEvict takes, so a lease
// and an eviction of one entry never interleave. ErrNotFound when the entry is not ready.
func (s *Store) LeaseCacheEntry(ctx context.Context, id uint, holder string, now time.Time, ttl time.Duration) (string, error) {
	token := uuid.NewString()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&CacheEntry{}).Where("id = ? AND state = ?", id, EntryReady).Update("last_used", now)
		if res.Error != nil {
			return wrap(res.Error, fmt.Sprintf("models: lease cache entry %d", id))
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("models: cache entry %d is not ready: %w", id, ErrNotFound)
		}
		l := CacheLease{EntryID: id, Token: token, Holder: holder, ExpiresAt: now.Add(ttl)}
		return wrap(tx.Create(&l).Error, fmt.Sprintf("models: lease cache entry %d", id))
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// LeaseCacheEntryForHit is LeaseCacheEntry for a cache hit: in the same transaction it counts
// the hit on the entry and in host's cache counters, so a hit costs one write to the database
// before its clone instead of three.
func (s *Store) LeaseCacheEntryForHit(ctx context.Context, id uint, holder, host string, now time.Time, ttl time.Duration) (string, error) {
	token := uuid.NewString()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&CacheEntry{}).Where("id = ? AND state = ?", id, EntryReady).
			Updates(map[string]any{"hits": gorm.Expr("hits + 1"), "last_used": now})
		if res.Error != nil {
			return wrap(res.Error, fmt.Sprintf("models: lease cache entry %d", id))
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("models: cache entry %d is not ready: %w", id, ErrNotFound)
		}
		l := CacheLease{EntryID: id, Token: token, Holder: holder, ExpiresAt: now.Add(ttl)}
		if err := tx.Create(&l).Error; err != nil {
			return wrap(err, fmt.Sprintf("models: lease cache entry %d", id))
		}
		return addStats(tx, host, CacheStat{Hits: 1})
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// FinishHit records a cache hit's volume as done (its columns set as fields says) and ends the
// lease its clone held, in one transaction.
func (s *Store) FinishHit(ctx context.Context, volumeID string, fields map[string]any, entryID uint, token string) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&Volume{}).Where("id = ?", volumeID).Updates(fields).Error; err != nil {
			return wrap(err, "models: update volume "+volumeID)
		}
		err := tx.Where("entry_id = ? AND token = ?", entryID, token).Delete(&CacheLease{}).Error
		return wrap(err, fmt.Sprintf("models: release lease on cache entry %d", entryID))
	})
}

// ReleaseLease ends the lease with that token on an entry; a missing lease is not an error.
func (s *Store) ReleaseLease(ctx context.Context, id uint, token string) error {
	err := s.db.WithContext(ctx).Where("entry_id = ? AND token = ?", id, token).Delete(&CacheLease{}).Error
	return wrap(err, fmt.Sprintf("models: release lease on cache entry %d", id))
}

// EvictionStale is how long an entry may stay "evicting" before another eviction may take it
// over: only a crashed eviction leaves one that long, and two at once would race in Ceph.
const EvictionStale = 10 * time.Minute

// BeginEvict marks a ready entry "evicting" so that nothing can lease it any more, unless it is
// leased now (ErrLeased) or pinned and force is false (ErrNotFound, as for an entry that is not
// ready). An entry "evicting" for longer than EvictionStale — an eviction that crashed half-way —
// may be taken over; one evicting now may not (ErrNotFound), so one entry is never removed twice
// at once.
func (s *Store) BeginEvict(ctx context.Context, id uint, now time.Time, force bool) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := tx.Model(&CacheEntry{}).Where("id = ? AND (state = ? OR (state = ? AND updated_at < ?))",
			id, EntryReady, EntryEvicting, now.Add(-EvictionStale))
		if !force {
			q = q.Where("pinned = ?", false)
		}
		res := q.Update("state", EntryEvicting)
		if res.Error != nil {
			return wrap(res.Error, fmt.Sprintf("models: evict cache entry %d", id))
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("models: cache entry %d cannot be evicted: %w", id, ErrNotFound)
		}
		var leases int64
		if err := tx.Model(&CacheLease{}).Where("entry_id = ? AND expires_at > ?", id, now).Count(&leases).Error; err != nil {
			return wrap(err, fmt.Sprintf("models: leases of cache entry %d", id))
		}
		if leases > 0 {
			// Rolls the state back to what it was.
			return fmt.Errorf("models: cache entry %d has %d leases: %w", id, leases, ErrLeased)
		}
		return nil
	})
}

// FinishEvict removes an evicted entry's rows: the entry, its cache volume and its leases. When
// its cache volume went to the trash (clones still depend on it) a TrashedCacheVolume row keeps
// it accounted for until it is purged.
func (s *Store) FinishEvict(ctx context.Context, e *CacheEntry, trashed bool, now time.Time) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The entry's row first, as LeaseCacheEntry locks it before the leases: no deadlock.
		if err := tx.Where("id = ?", e.ID).Delete(&CacheEntry{}).Error; err != nil {
			return wrap(err, fmt.Sprintf("models: delete cache entry %d", e.ID))
		}
		if err := tx.Where("entry_id = ?", e.ID).Delete(&CacheLease{}).Error; err != nil {
			return wrap(err, fmt.Sprintf("models: leases of cache entry %d", e.ID))
		}
		if err := tx.Where("id = ?", e.VolumeID).Delete(&Volume{}).Error; err != nil {
			return wrap(err, "models: delete cache volume "+e.VolumeID)
		}
		if !trashed {
			return nil
		}
		t := TrashedCacheVolume{Host: e.Host, Pool: e.Pool, VolumeID: e.VolumeID, ImageID: e.ImageID, SizeBytes: e.SizeBytes, TrashedAt: now}
		return wrap(tx.Create(&t).Error, "models: record trashed cache volume "+e.VolumeID)
	})
}

// ListTrashed lists the trashed cache volumes of a host ("" for all).
func (s *Store) ListTrashed(ctx context.Context, host string) ([]TrashedCacheVolume, error) {
	q := s.db.WithContext(ctx).Order("id")
	if host != "" {
		q = q.Where("host = ?", host)
	}
	var out []TrashedCacheVolume
	return out, wrap(q.Find(&out).Error, "models: list trashed cache volumes")
}

// FindTrashed returns the trashed cache volume of that pool and volume id.
func (s *Store) FindTrashed(ctx context.Context, pool, volumeID string) (*TrashedCacheVolume, error) {
	var t TrashedCacheVolume
	if err := s.db.WithContext(ctx).Where("pool = ? AND volume_id = ?", pool, volumeID).Take(&t).Error; err != nil {
		return nil, wrap(err, "models: trashed cache volume "+volumeID)
	}
	return &t, nil
}

// DeleteTrashed forgets a trashed cache volume once it has been purged.
func (s *Store) DeleteTrashed(ctx context.Context, id uint) error {
	return wrap(s.db.WithContext(ctx).Where("id = ?", id).Delete(&TrashedCacheVolume{}).Error, fmt.Sprintf("models: delete trashed cache volume %d", id))
}

// SetPinned pins an entry (it is then never evicted for room) or unpins it.
func (s *Store) SetPinned(ctx context.Context, id uint, pinned bool) error {
	res := s.db.WithContext(ctx).Model(&CacheEntry{}).Where("id = ?", id).Update("pinned", pinned)
	if res.Error == nil && res.RowsAffected == 0 {
		return fmt.Errorf("models: cache entry %d: %w", id, ErrNotFound)
	}
	return wrap(res.Error, fmt.Sprintf("models: pin cache entry %d", id))
}

// ProjectUsage is what a project's volumes hold: their number and their GiB.
type ProjectUsage struct {
	Volumes int64
	GB      int64
}

// ProjectUsage sums the volumes of a project on every host.
func (s *Store) ProjectUsage(ctx context.Context, projectID string) (ProjectUsage, error) {
	var u ProjectUsage
	err := s.db.WithContext(ctx).Model(&Volume{}).
		Select("COUNT(*) AS volumes, COALESCE(SUM(size_gb), 0) AS gb").
		Where("project_id = ?", projectID).Scan(&u).Error
	return u, wrap(err, "models: usage of project "+projectID)
}

// AddStats adds d's counters to a host's.
func (s *Store) AddStats(ctx context.Context, host string, d CacheStat) error {
	return addStats(s.db.WithContext(ctx), host, d)
}

func addStats(db *gorm.DB, host string, d CacheStat) error {
	d.Host = host
	err := db.Clauses(clause.OnConflict{
		Columns: []clause.Column{{Name: "host"}},
		DoUpdates: clause.Assignments(map[string]any{
			"hits":             gorm.Expr("hits + ?", d.Hits),
			"misses":           gorm.Expr("misses + ?", d.Misses),
			"evictions":        gorm.Expr("evictions + ?", d.Evictions),
			"downloads":        gorm.Expr("downloads + ?", d.Downloads),
			"bytes_downloaded": gorm.Expr("bytes_downloaded + ?", d.BytesDownloaded),
		}),
	}).Create(&d).Error
	return wrap(err, "models: cache stats of "+host)
}

// Stats returns every host's counters.
func (s *Store) Stats(ctx context.Context) ([]CacheStat, error) {
	var out []CacheStat
	return out, wrap(s.db.WithContext(ctx).Order("host").Find(&out).Error, "models: cache stats")
}

// ListVolumesOn lists the volumes placed on a host in one of the given statuses.
func (s *Store) ListVolumesOn(ctx context.Context, host string, statuses ...string) ([]Volume, error) {
	var out []Volume
	err := s.db.WithContext(ctx).Where("host = ? AND status IN ?", host, statuses).Order("created_at").Find(&out).Error
	return out, wrap(err, "models: volumes on "+host)
}

// KnownVolumeIDs is the set of every volume id the database knows: volume rows and trashed
// cache volumes.
func (s *Store) KnownVolumeIDs(ctx context.Context) (map[string]bool, error) {
	var ids, trashed []string
	if err := s.db.WithContext(ctx).Model(&Volume{}).Pluck("id", &ids).Error; err != nil {
		return nil, wrap(err, "models: volume ids")
	}
	if err := s.db.WithContext(ctx).Model(&TrashedCacheVolume{}).Pluck("volume_id", &trashed).Error; err != nil {
		return nil, wrap(err, "models: trashed volume ids")
	}
	out := make(map[string]bool, len(ids)+len(trashed))
	for _, id := range append(ids, trashed...) {
		out[id] = true
	}
	return out, nil
}
