package models

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Sentinel errors of the store; callers test them with errors.Is.
var (
	// ErrNotFound means the row does not exist.
	ErrNotFound = errors.New("models: not found")
	// ErrDuplicate means a row with the same unique key already exists.
	ErrDuplicate = errors.New("models: duplicate key")
	// ErrConflict means the row changed under a conditional update.
	ErrConflict = errors.New("models: conflicting change")
)

// Store is imagevol's database: volumes and cache entries.
type Store struct {
	db *gorm.DB
	// sqliteFile is the embedded database's file, beside which file locks stand in for MySQL's
	// named locks; empty on MySQL.
	sqliteFile string
	// database is the MySQL database's name, which scopes the named locks ("" on SQLite).
	database string
}

// Open connects to the database named by dsn and applies pending migrations. A dsn starting
// with "sqlite:" (or empty, meaning sqlite:defaultFile) opens an embedded SQLite file; anything
// else is a MySQL DSN (user:pass@tcp(host:port)/dbname).
func Open(ctx context.Context, dsn, defaultFile string) (*Store, error) {
	if dsn == "" {
		dsn = "sqlite:" + defaultFile
	}
	// UTC everywhere: timestamps are compared across processes and, in SQLite, as text.
	cfg := &gorm.Config{Logger: logger.Default.LogMode(logger.Silent), TranslateError: true,
		NowFunc: func() time.Time { return time.Now().UTC() }}
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		return openSQLite(ctx, path, cfg)
	}
	mc, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("models: bad MySQL DSN: %w", err)
	}
	mc.ParseTime = true
	// RowsAffected must count matched rows, not changed ones: leases and state changes
	// decide on it even when a value is rewritten unchanged.
	mc.ClientFoundRows = true
	mc.Loc = time.UTC
	if mc.Params == nil {
		mc.Params = map[string]string{}
	}
	mc.Params["charset"] = "utf8mb4"
	db, err := gorm.Open(mysql.Open(mc.FormatDSN()), cfg)
	if err != nil {
		return nil, fmt.Errorf("models: open database: %w", err)
	}
	s := &Store{db: db}
	var name sql.NullString
	if err := db.WithContext(ctx).Raw("SELECT DATABASE()").Scan(&name).Error; err != nil {
		return nil, fmt.Errorf("models: name of the database: %w", err)
	}
	s.database = name.String
	// A gateway and workers starting at once must not race on DDL, which MySQL runs outside
	// transactions: Migrate checks for a table, then creates it.
	if err := s.withNamedLock(ctx, migrateLock, func(conn *gorm.DB) error { return Migrate(conn) }); err != nil {
		return nil, err
	}
	return s, nil
}

// openSQLite opens and migrates the embedded database file. Processes starting at once on a
// fresh file (the gateway and the workers of `make run`) take turns under a file lock: switching
// a new file to WAL needs it to themselves, and Migrate's check-then-create of a table is not
// atomic across connections.
func openSQLite(ctx context.Context, path string, cfg *gorm.Config) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	var s *Store
	err := withFileLock(ctx, path+".migrate.lock", func() error {
		// WAL lets the gateway read while a worker writes; busy_timeout makes writers queue
		// instead of failing with SQLITE_BUSY when two processes share the file.
		db, err := gorm.Open(sqlite.Open(path+"?_journal_mode=WAL&_busy_timeout=10000&_synchronous=NORMAL&_foreign_keys=on"), cfg)
		if err != nil {
			return fmt.Errorf("models: open database: %w", err)
		}
		if err := Migrate(db); err != nil {
			if sqlDB, derr := db.DB(); derr == nil {
				sqlDB.Close()
			}
			return err
		}
		s = &Store{db: db, sqliteFile: path}
		return nil
	})
	return s, err
}

// Named locks of the MySQL store, scoped to its database by lockName.
const (
	migrateLock     = "imagevol_migrate"
	reservationLock = "imagevol_cache_reserve"
)

// lockReleaseTimeout bounds the release of a named lock, which runs on a context of its own.
const lockReleaseTimeout = 10 * time.Second

// lockName scopes a named lock to this store's database: MySQL's named locks are server-wide,
// and deployments (or test runs) sharing a server must not wait on each other.
func (s *Store) lockName(base string) string {
	if s.database == "" {
		return base
	}
	name := base + "." + s.database
	if len(name) > 64 { // MySQL's limit on lock names
		sum := sha256.Sum256([]byte(s.database))
		name = base + "." + hex.EncodeToString(sum[:12])
	}
	return name
}

// withNamedLock runs fn holding a MySQL named lock (GET_LOCK) on a connection of its own; the
// server releases it if this process dies. The release runs on that same connection but not on
// ctx: once ctx has expired the driver would not send it, and the pooled session would keep the
// lock until the connection closed. A release that fails closes the connection instead.
func (s *Store) withNamedLock(ctx context.Context, name string, fn func(conn *gorm.DB) error) error {
	name = s.lockName(name)
	return s.db.WithContext(ctx).Connection(func(conn *gorm.DB) error {
		var got sql.NullInt64
		if err := conn.Raw("SELECT GET_LOCK(?, 60)", name).Scan(&got).Error; err != nil || got.Int64 != 1 {
			return fmt.Errorf("models: could not take the lock %s (got %v): %v", name, got, err)
		}
		defer s.releaseNamedLock(ctx, conn, name)
		return fn(conn)
	})
}

// releaseNamedLock releases a named lock held by conn's session; if it cannot be released, it
// discards the connection, which ends the session and with it the lock.
func (s *Store) releaseNamedLock(ctx context.Context, conn *gorm.DB, name string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockReleaseTimeout)
	defer cancel()
	var released sql.NullInt64
	err := conn.WithContext(rctx).Raw("SELECT RELEASE_LOCK(?)", name).Scan(&released).Error
	if err == nil && released.Int64 == 1 {
		return
	}
	slog.Warn("named lock not released; closing its connection", "lock", name, "released", released, "err", err)
	if c, ok := conn.Statement.ConnPool.(*sql.Conn); ok {
		// database/sql drops a connection whose driver reports it bad, closing it.
		_ = c.Raw(func(any) error { return driver.ErrBadConn })
	}
}

// WithReservationLock runs fn while no other cache reservation runs, on any host: checking the
// limits and the internal project's quota, evicting and inserting the reservation then happen as
// one step, so concurrent fills cannot together overshoot a limit.
func (s *Store) WithReservationLock(ctx context.Context, fn func() error) error {
	if s.sqliteFile != "" {
		// Two hosts of one machine's embedded default are two processes on one file.
		return withFileLock(ctx, s.sqliteFile+".reserve.lock", fn)
	}
	return s.withNamedLock(ctx, reservationLock, func(*gorm.DB) error { return fn() })
}

// Close releases the connection pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}

// Dialect names the database in use: "mysql" or "sqlite".
func (s *Store) Dialect() string { return s.db.Dialector.Name() }

func wrap(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrRecordNotFound):
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return fmt.Errorf("%s: %w", what, ErrDuplicate)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// CreateVolume inserts a volume row.
func (s *Store) CreateVolume(ctx context.Context, v *Volume) error {
	return wrap(s.db.WithContext(ctx).Create(v).Error, "models: create volume "+v.ID)
}

// CreateVolumeWithin inserts a volume row unless check refuses the usage its project has
// before it (check's error is returned as it is). The count and the insert run under a lock of
// the project (a MySQL named lock, held server-wide; on SQLite, the embedded single-machine
// default, the reservation lock of WithReservationLock, shared with the cache's
// reservations), so concurrent creates cannot together overshoot a quota. Every row of the
// project counts, whatever its status: a deleted volume has no row.
func (s *Store) CreateVolumeWithin(ctx context.Context, v *Volume, check func(ProjectUsage) error) error {
	insert := func() error {
		u, err := s.ProjectUsage(ctx, v.ProjectID)
		if err != nil {
			return err
		}
		if err := check(u); err != nil {
			return err
		}
		return s.CreateVolume(ctx, v)
	}
	return s.withQuotaLock(ctx, v.ProjectID, insert)
}

// withQuotaLock runs fn under the lock of a project's quota (see CreateVolumeWithin).
func (s *Store) withQuotaLock(ctx context.Context, projectID string, fn func() error) error {
	if s.db.Dialector.Name() != "mysql" {
		return s.WithReservationLock(ctx, fn)
	}
	// MySQL lock names are at most 64 characters; project IDs are not bounded here.
	sum := sha256.Sum256([]byte(projectID))
	name := "imagevol_quota_" + hex.EncodeToString(sum[:16])
	return s.withNamedLock(ctx, name, func(*gorm.DB) error { return fn() })
}

// BeginExtend marks an available volume "extending", unless check refuses it: check sees the
// volume and its project's usage as they are under the lock of the project's quota (the lock of
// CreateVolumeWithin), so an extension and concurrent creates cannot together overshoot a quota.
// check's error is returned as it is; the volume is returned as check saw it.
func (s *Store) BeginExtend(ctx context.Context, volumeID, projectID string, check func(*Volume, ProjectUsage) error) (*Volume, error) {
	var v *Volume
	err := s.withQuotaLock(ctx, projectID, func() error {
		var err error
		if v, err = s.GetVolume(ctx, volumeID); err != nil {
			return err
		}
		u, err := s.ProjectUsage(ctx, projectID)
		if err != nil {
			return err
		}
		if err := check(v, u); err != nil {
			return err
		}
		// Only from the status check saw: a deletion started meanwhile wins.
		res := s.db.WithContext(ctx).Model(&Volume{}).Where("id = ? AND status = ?", volumeID, v.Status).
			Update("status", StatusExtending)
		if res.Error != nil {
			return wrap(res.Error, "models: extend volume "+volumeID)
		}
		if res.RowsAffected == 0 {
			return fmt.Errorf("models: volume %s changed status: %w", volumeID, ErrConflict)
		}
		return nil
	})
	return v, err
}

// GetVolume reads one volume.
func (s *Store) GetVolume(ctx context.Context, id string) (*Volume, error) {
	var v Volume
	err := s.db.WithContext(ctx).Where("id = ?", id).Take(&v).Error
	if err != nil {
		return nil, wrap(err, "models: volume "+id)
	}
	return &v, nil
}

// UpdateVolume sets the given columns of one volume.
func (s *Store) UpdateVolume(ctx context.Context, id string, fields map[string]any) error {
	res := s.db.WithContext(ctx).Model(&Volume{}).Where("id = ?", id).Updates(fields)
	if res.Error != nil {
		return wrap(res.Error, "models: update volume "+id)
	}
	return nil
}

// SetVolumeStatusFrom moves a volume from status from to status to, and reports whether it did:
// false when the volume is no longer in from (another request moved it first).
func (s *Store) SetVolumeStatusFrom(ctx context.Context, id, from, to string) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Volume{}).Where("id = ? AND status = ?", id, from).Update("status", to)
	if res.Error != nil {
		return false, wrap(res.Error, "models: update volume "+id)
	}
	return res.RowsAffected == 1, nil
}

// DeleteVolume removes one volume row; a missing row is not an error.
func (s *Store) DeleteVolume(ctx context.Context, id string) error {
	return wrap(s.db.WithContext(ctx).Where("id = ?", id).Delete(&Volume{}).Error, "models: delete volume "+id)
}

// ListVolumes lists the volumes of a project ("" for all), newest first.
func (s *Store) ListVolumes(ctx context.Context, projectID string) ([]Volume, error) {
	q := s.db.WithContext(ctx).Order("created_at DESC")
	if projectID != "" {
		q = q.Where("project_id = ?", projectID)
	}
	var out []Volume
	return out, wrap(q.Find(&out).Error, "models: list volumes")
}

// FindCacheEntry returns the entry for (host, pool, image, content hash), in any state.
func (s *Store) FindCacheEntry(ctx context.Context, host, pool, imageID, contentHash string) (*CacheEntry, error) {
	var e CacheEntry
	err := s.db.WithContext(ctx).
		Where("host = ? AND pool = ? AND image_id = ? AND content_hash = ?", host, pool, imageID, contentHash).
		Take(&e).Error
	if err != nil {
		return nil, wrap(err, "models: cache entry for image "+imageID)
	}
	return &e, nil
}

// GetCacheEntry reads one entry by id.
func (s *Store) GetCacheEntry(ctx context.Context, id uint) (*CacheEntry, error) {
	var e CacheEntry
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&e).Error; err != nil {
		return nil, wrap(err, fmt.Sprintf("models: cache entry %d", id))
	}
	return &e, nil
}

// ListCacheEntries lists entries, of one host when host is not empty, least recently used first.
func (s *Store) ListCacheEntries(ctx context.Context, host string) ([]CacheEntry, error) {
	q := s.db.WithContext(ctx).Order("last_used ASC, id ASC")
	if host != "" {
		q = q.Where("host = ?", host)
	}
	var out []CacheEntry
	return out, wrap(q.Find(&out).Error, "models: list cache entries")
}

// CacheUsage is what one host's cache holds: entries and bytes, filling ones included.
type CacheUsage struct {
	Count int64
	Bytes int64
}

// CacheUsage sums the entries of one host and pool, filling ones included. Evicted cache
// volumes still in the trash are not entries: the limits bound what the cache keeps for future
// clones, while a trashed volume lives as long as its clones do (its bytes are reported apart,
// see ListTrashed).
func (s *Store) CacheUsage(ctx context.Context, host, pool string) (CacheUsage, error) {
	var u CacheUsage
	err := s.db.WithContext(ctx).Model(&CacheEntry{}).
		Select("COUNT(*) AS count, COALESCE(SUM(size_bytes), 0) AS bytes").
		Where("host = ? AND pool = ?", host, pool).Scan(&u).Error
	return u, wrap(err, "models: cache usage")
}

// InsertCacheEntry reserves a cache slot; ErrDuplicate when the key is already taken.
func (s *Store) InsertCacheEntry(ctx context.Context, e *CacheEntry) error {
	return wrap(s.db.WithContext(ctx).Create(e).Error, "models: insert cache entry for image "+e.ImageID)
}

// ReserveCacheSlot inserts a reservation: the cache volume's row and its "filling" entry, in one
// transaction, so that a failure (or a context ending) between the two leaves neither.
// ErrDuplicate when the entry's key is already taken.
func (s *Store) ReserveCacheSlot(ctx context.Context, v *Volume, e *CacheEntry) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(v).Error; err != nil {
			return wrap(err, "models: create cache volume "+v.ID)
		}
		return wrap(tx.Create(e).Error, "models: insert cache entry for image "+e.ImageID)
	})
}

// MarkCacheEntryReady records a filled entry as ready to clone from. Only an entry still
// "filling" becomes ready (one already ready is an earlier attempt's success): one that is being
// evicted, or is gone, is reported as ErrNotFound.
func (s *Store) MarkCacheEntryReady(ctx context.Context, id uint, sizeBytes int64, cloneDepth int, now time.Time) error {
	res := s.db.WithContext(ctx).Model(&CacheEntry{}).Where("id = ? AND state IN ?", id, []string{EntryFilling, EntryReady}).Updates(map[string]any{
		"state": EntryReady, "size_bytes": sizeBytes, "size": GiBCeil(sizeBytes), "last_used": now, "clone_depth": cloneDepth,
	})
	if res.Error == nil && res.RowsAffected == 0 {
		return fmt.Errorf("models: cache entry %d is not filling: %w", id, ErrNotFound)
	}
	return wrap(res.Error, fmt.Sprintf("models: mark cache entry %d ready", id))
}

// ResizeCacheEntry records the bytes a filling (or ready) entry's cache volume uses.
func (s *Store) ResizeCacheEntry(ctx context.Context, id uint, sizeBytes int64) error {
	res := s.db.WithContext(ctx).Model(&CacheEntry{}).Where("id = ? AND state IN ?", id, []string{EntryFilling, EntryReady}).
		Updates(map[string]any{"size_bytes": sizeBytes, "size": GiBCeil(sizeBytes)})
	if res.Error == nil && res.RowsAffected == 0 {
		return fmt.Errorf("models: cache entry %d is not filling: %w", id, ErrNotFound)
	}
	return wrap(res.Error, fmt.Sprintf("models: resize cache entry %d", id))
}

// TouchCacheEntry counts a hit and moves the entry to the most-recently-used end.
func (s *Store) TouchCacheEntry(ctx context.Context, id uint, now time.Time) error {
	err := s.db.WithContext(ctx).Model(&CacheEntry{}).Where("id = ?", id).
		Updates(map[string]any{"hits": gorm.Expr("hits + 1"), "last_used": now}).Error
	return wrap(err, fmt.Sprintf("models: touch cache entry %d", id))
}

// DeleteCacheEntry removes an entry row and its cache volume row; missing rows are not errors.
func (s *Store) DeleteCacheEntry(ctx context.Context, e *CacheEntry) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("id = ?", e.ID).Delete(&CacheEntry{}).Error; err != nil {
			return wrap(err, fmt.Sprintf("models: delete cache entry %d", e.ID))
		}
		return wrap(tx.Where("id = ?", e.VolumeID).Delete(&Volume{}).Error, "models: delete cache volume "+e.VolumeID)
	})
}
