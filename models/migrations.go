package models

import (
	"fmt"
	"time"

	"gorm.io/gorm"
)

// migration is one versioned schema change. Applied versions are recorded in schema_migrations;
// a migration runs once, in its own transaction where the database allows DDL in one.
type migration struct {
	version int
	name    string
	up      func(tx *gorm.DB) error
}

// schemaMigration records one applied migration.
type schemaMigration struct {
	Version   int `gorm:"primaryKey;autoIncrement:false"`
	Name      string
	AppliedAt time.Time
}

func (schemaMigration) TableName() string { return "schema_migrations" }

// migrations is append-only: never edit an entry once it has shipped, add a new one. The types a
// migration creates are frozen copies of the models as they were at that version.
var migrations = []migration{
	{1, "create volumes and image_volume_cache_entries", func(tx *gorm.DB) error {
		type volume struct {
			ID          string `gorm:"primaryKey;size:36"`
			ProjectID   string `gorm:"size:255;index"`
			UserID      string `gorm:"size:255"`
			Name        string `gorm:"size:255"`
			SizeGB      int
			ImageID     string `gorm:"size:36;index"`
			Host        string `gorm:"size:255"`
			Pool        string `gorm:"size:64"`
			Status      string `gorm:"size:32"`
			Cache       string `gorm:"size:16"`
			CacheReason string `gorm:"size:64"`
			Error       string `gorm:"type:text"`
			WorkflowID  string `gorm:"size:255"`
			CreatedAt   time.Time
			UpdatedAt   time.Time
		}
		type imageVolumeCacheEntry struct {
			ID             uint      `gorm:"primaryKey"`
			Host           string    `gorm:"size:255;not null;index;uniqueIndex:ux_cache_key,priority:1"`
			ClusterName    string    `gorm:"size:255"`
			Pool           string    `gorm:"size:64;not null;uniqueIndex:ux_cache_key,priority:2"`
			ImageID        string    `gorm:"size:36;not null;index;uniqueIndex:ux_cache_key,priority:3"`
			ImageUpdatedAt time.Time `gorm:"not null"`
			ContentHash    string    `gorm:"size:160;not null;uniqueIndex:ux_cache_key,priority:4"`
			VolumeID       string    `gorm:"size:36;not null"`
			Size           int       `gorm:"not null"`
			SizeBytes      int64     `gorm:"not null"`
			Hits           int64     `gorm:"not null;default:0"`
			LastUsed       time.Time `gorm:"not null;index"`
			Pinned         bool      `gorm:"not null;default:false"`
			State          string    `gorm:"size:16;not null"`
			FillWorkflowID string    `gorm:"size:255"`
			CreatedAt      time.Time
			UpdatedAt      time.Time
		}
		return tx.Migrator().CreateTable(&volume{}, &imageVolumeCacheEntry{})
	}},
	{2, "volumes.flatten", func(tx *gorm.DB) error {
		type volume struct {
			Flatten string `gorm:"size:16"`
		}
		return tx.Migrator().AddColumn(&volume{}, "Flatten")
	}},
	{3, "cache leases, trash and stats", func(tx *gorm.DB) error {
		type cacheLease struct {
			EntryID   uint   `gorm:"primaryKey;autoIncrement:false"`
			Holder    string `gorm:"primaryKey;size:255"`
			ExpiresAt time.Time
		}
		type trashedCacheVolume struct {
			ID        uint   `gorm:"primaryKey"`
			Host      string `gorm:"size:255;not null;index"`
			Pool      string `gorm:"size:64;not null"`
			VolumeID  string `gorm:"size:36;not null"`
			ImageID   string `gorm:"size:36;not null"`
			SizeBytes int64  `gorm:"not null"`
			TrashedAt time.Time
		}
		type cacheStat struct {
			Host            string `gorm:"primaryKey;size:255"`
			Hits            int64  `gorm:"not null;default:0"`
			Misses          int64  `gorm:"not null;default:0"`
			Evictions       int64  `gorm:"not null;default:0"`
			Downloads       int64  `gorm:"not null;default:0"`
			BytesDownloaded int64  `gorm:"not null;default:0"`
		}
		return tx.Migrator().CreateTable(&cacheLease{}, &trashedCacheVolume{}, &cacheStat{})
	}},
	{4, "cache leases keyed by a token of their own", func(tx *gorm.DB) error {
		type cacheLease struct {
			EntryID   uint   `gorm:"primaryKey;autoIncrement:false"`
			Token     string `gorm:"primaryKey;size:255"`
			Holder    string `gorm:"size:255;not null"`
			ExpiresAt time.Time
		}
		m := tx.Migrator()
		if err := m.RenameTable("cache_leases", "cache_leases_v3"); err != nil {
			return err
		}
		if err := m.CreateTable(&cacheLease{}); err != nil {
			return err
		}
		// Leases held during the upgrade keep protecting their entries; their holder, unique
		// per entry until now, serves as their token.
		if err := tx.Exec("INSERT INTO cache_leases (entry_id, token, holder, expires_at) " +
			"SELECT entry_id, holder, holder, expires_at FROM cache_leases_v3").Error; err != nil {
			return err
		}
		return m.DropTable("cache_leases_v3")
	}},
	{5, "trashed images", func(tx *gorm.DB) error {
		type trashedImage struct {
			ID        uint   `gorm:"primaryKey"`
			Host      string `gorm:"size:255;not null;index"`
			Pool      string `gorm:"size:64;not null;uniqueIndex:ux_trashed_image,priority:1"`
			Name      string `gorm:"size:255;not null;uniqueIndex:ux_trashed_image,priority:2"`
			TrashedAt time.Time
		}
		return tx.Migrator().CreateTable(&trashedImage{})
	}},
	{6, "volumes.image_metadata", func(tx *gorm.DB) error {
		type volume struct {
			ImageMetadata string `gorm:"type:text"`
		}
		return tx.Migrator().AddColumn(&volume{}, "ImageMetadata")
	}},
	{7, "image_volume_cache_entries.clone_depth", func(tx *gorm.DB) error {
		type imageVolumeCacheEntry struct {
			CloneDepth int `gorm:"not null;default:0"`
		}
		// A database rolled back to an older version by hand may still have the column.
		if tx.Migrator().HasColumn(&imageVolumeCacheEntry{}, "CloneDepth") {
			return nil
		}
		return tx.Migrator().AddColumn(&imageVolumeCacheEntry{}, "CloneDepth")
	}},
}

// Migrate applies every migration not yet recorded, in version order.
func Migrate(db *gorm.DB) error {
	// A new session: chained calls below must not inherit each other's model or conditions.
	db = db.Session(&gorm.Session{NewDB: true})
	if err := db.AutoMigrate(&schemaMigration{}); err != nil {
		return fmt.Errorf("models: schema_migrations: %w", err)
	}
	for _, m := range migrations {
		var n int64
		if err := db.Model(&schemaMigration{}).Where("version = ?", m.version).Count(&n).Error; err != nil {
			return fmt.Errorf("models: read schema version: %w", err)
		}
		if n > 0 {
			continue
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := m.up(tx); err != nil {
				return err
			}
			return tx.Create(&schemaMigration{Version: m.version, Name: m.name, AppliedAt: time.Now().UTC()}).Error
		})
		if err != nil {
			return fmt.Errorf("models: migration %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}
