package models

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// FailCreatingVolume marks a volume "error" with msg only if it is still "creating", and reports
// whether it was: a provision that finished since the caller last read the volume keeps its
// status.
func (s *Store) FailCreatingVolume(ctx context.Context, id, msg string) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Volume{}).Where("id = ? AND status = ?", id, StatusCreating).
		Updates(map[string]any{"status": StatusError, "error": msg})
	if res.Error != nil {
		return false, wrap(res.Error, "models: fail volume "+id)
	}
	return res.RowsAffected > 0, nil
}

// BeginAbandonFill marks an entry still "filling" as "evicting": its fill no longer runs, and
// from here no fill adopts it and an eviction left half-done finishes removing it. ErrNotFound
// when the entry is gone or no longer filling.
func (s *Store) BeginAbandonFill(ctx context.Context, id uint) error {
	res := s.db.WithContext(ctx).Model(&CacheEntry{}).Where("id = ? AND state = ?", id, EntryFilling).Update("state", EntryEvicting)
	if res.Error != nil {
		return wrap(res.Error, fmt.Sprintf("models: abandon fill of cache entry %d", id))
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("models: cache entry %d is not filling: %w", id, ErrNotFound)
	}
	return nil
}

// RecordTrashedImage remembers a busy image moved to the RBD trash; recording one twice is not
// an error.
func (s *Store) RecordTrashedImage(ctx context.Context, host, pool, name string, now time.Time) error {
	t := TrashedImage{Host: host, Pool: pool, Name: name, TrashedAt: now}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&t).Error
	return wrap(err, "models: record trashed image "+pool+"/"+name)
}

// ListTrashedImages lists the busy images a host moved to the trash.
func (s *Store) ListTrashedImages(ctx context.Context, host string) ([]TrashedImage, error) {
	var out []TrashedImage
	err := s.db.WithContext(ctx).Where("host = ?", host).Order("id").Find(&out).Error
	return out, wrap(err, "models: list trashed images")
}

// DeleteTrashedImage forgets a trashed image once it has been purged.
func (s *Store) DeleteTrashedImage(ctx context.Context, id uint) error {
	err := s.db.WithContext(ctx).Where("id = ?", id).Delete(&TrashedImage{}).Error
	return wrap(err, fmt.Sprintf("models: delete trashed image %d", id))
}
