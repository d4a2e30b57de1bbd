package activities

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// EvictLRU makes room for an image in this host's cache, evicting the least recently used
// entries that are ready, not pinned and not leased until the size and count limits and the
// internal project's quota allow one more, then reserves the slot as a "filling" entry owned by
// the internal project. When nothing more can be evicted the result says why and the provision
// goes on without caching. When the image is already cached somewhere in the cluster (a fill
// that finished just before this one started) the result points at that entry instead.
func (a *Activities) EvictLRU(ctx context.Context, in contract.EvictInput) (res contract.EvictResult, err error) {
	err = a.Store.WithReservationLock(ctx, func() error {
		res, err = a.reserve(ctx, in)
		return err
	})
	return res, err
}

// reserve is EvictLRU under the reservation lock.
func (a *Activities) reserve(ctx context.Context, in contract.EvictInput) (contract.EvictResult, error) {
	cfg := a.Config
	if e, err := a.readyEntry(ctx, in.Image.ID, in.Image.ContentHash); err != nil {
		return contract.EvictResult{}, err
	} else if e != nil {
		return contract.EvictResult{Ready: true, Entry: refOf(e)}, nil
	}
	if e, err := a.Store.FindCacheEntry(ctx, cfg.Host, cfg.Pool, in.Image.ID, in.Image.ContentHash); err == nil {
		switch {
		case e.State == models.EntryFilling && e.FillWorkflowID == in.FillWorkflowID:
			// Crash recovery: an earlier attempt of this fill holds the reservation.
			return contract.EvictResult{Reserved: true, Entry: refOf(e), EntryID: e.ID, CacheVolumeID: e.VolumeID}, nil
		case e.State == models.EntryEvicting:
			// The key is held by an entry being evicted, which the fills of this content share
			// a workflow ID with: never take it over. An eviction that crashed half-way (stale)
			// is finished here and the slot reserved afresh; one under way may still be running,
			// so this fill does not cache.
			if _, err := a.evict(ctx, e, true); errors.Is(err, models.ErrNotFound) || errors.Is(err, models.ErrLeased) {
				a.log(ctx).Info("not caching: an eviction of this content is under way", "image_id", in.Image.ID, "entry", e.ID)
				return contract.EvictResult{Reason: contract.ReasonEvicting}, nil
			} else if err != nil {
				return contract.EvictResult{}, err
			}
		default:
			return contract.EvictResult{Reason: contract.ReasonFillInProgress}, nil
		}
	} else if !errors.Is(err, models.ErrNotFound) {
		return contract.EvictResult{}, err
	}

	maxBytes := models.GiBToBytesCapped(int64(cfg.ImageVolumeCacheMaxSizeGB))
	// The slot is reserved for what the cache volume will use, not for the download: a
	// compressed image uses up to its whole virtual size once imported.
	size := cacheBytes(in.Image)
	sizeGB := int64(models.GiBCeil(size))
	var res contract.EvictResult
	waits := 0
	for {
		u, err := a.Store.CacheUsage(ctx, cfg.Host, cfg.Pool)
		if err != nil {
			return res, err
		}
		q, err := a.Store.ProjectUsage(ctx, cfg.CinderInternalTenantProject)
		if err != nil {
			return res, err
		}
		fitsCount := cfg.ImageVolumeCacheMaxCount <= 0 || u.Count+1 <= int64(cfg.ImageVolumeCacheMaxCount)
		fitsSize := maxBytes <= 0 || u.Bytes+size <= maxBytes
		fitsQuota := (cfg.InternalQuotaVolumes <= 0 || q.Volumes+1 <= int64(cfg.InternalQuotaVolumes)) &&
			(cfg.InternalQuotaGB <= 0 || q.GB+sizeGB <= int64(cfg.InternalQuotaGB))
		if fitsCount && fitsSize && fitsQuota {
			break
		}
		evicted, leased, err := a.evictOne(ctx)
		if err != nil {
			return res, err
		}
		if evicted == 0 && leased && waits < maxLeaseWaits {
			// Only entries being cloned from could go; a clone takes milliseconds, so wait
			// for its lease to be released rather than give up on caching.
			waits++
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(leaseWait):
			}
			continue
		}
		if evicted == 0 {
			// Nothing left that may go: say which limit blocks, never cap silently.
			res.Reason = contract.ReasonFull
			if fitsCount && fitsSize {
				res.Reason = contract.ReasonQuota
			}
			a.log(ctx).Info("not caching", "image_id", in.Image.ID, "reason", res.Reason, "entries", u.Count, "bytes", u.Bytes, "quota_volumes", q.Volumes, "quota_gb", q.GB)
			return res, nil
		}
		res.Evicted = append(res.Evicted, evicted)
		activity.RecordHeartbeat(ctx, len(res.Evicted))
	}

	now := time.Now().UTC()
	cacheVol := &models.Volume{
		ID: uuid.NewString(), ProjectID: cfg.CinderInternalTenantProject, UserID: cfg.CinderInternalTenantUser,
		Name: "image-" + in.Image.ID, SizeGB: int(sizeGB), ImageID: in.Image.ID,
		Host: cfg.Host, Pool: cfg.Pool, Status: models.StatusCreating, WorkflowID: in.FillWorkflowID,
	}
	entry := &models.CacheEntry{
		Host: cfg.Host, ClusterName: cfg.ClusterName, Pool: cfg.Pool, ImageID: in.Image.ID,
		ImageUpdatedAt: in.Image.UpdatedAt, ContentHash: in.Image.ContentHash, VolumeID: cacheVol.ID,
		Size: int(sizeGB), SizeBytes: size, LastUsed: now,
		State: models.EntryFilling, FillWorkflowID: in.FillWorkflowID,
	}
	// Both rows in one transaction: no cache volume row without its entry, whatever fails.
	if err := a.Store.ReserveCacheSlot(ctx, cacheVol, entry); err != nil {
		if errors.Is(err, models.ErrDuplicate) {
			// Another fill reserved the same key a moment ago (the unique index backs up the
			// single-flight workflow ID).
			res.Reason = contract.ReasonFillInProgress
			return res, nil
		}
		return res, err
	}
	res.Reserved, res.Entry, res.EntryID, res.CacheVolumeID = true, refOf(entry), entry.ID, cacheVol.ID
	a.log(ctx).Info("cache slot reserved", "image_id", in.Image.ID, "entry", entry.ID, "evicted", len(res.Evicted))
	return res, nil
}

// cacheBytes bounds what an image's cache volume will use: its virtual size as the image service
// reports it, or its download size when that is larger (raw data, or a virtual size the service
// does not know). The import finds the real virtual size, and CloneToCache checks the limits
// again with the bytes really used.
func cacheBytes(img contract.ImageRef) int64 { return max(img.Size, img.VirtualSize) }

// fitUsed makes the cache hold a filled entry at the bytes and GiB its cache volume really uses,
// once they are known: when they exceed what was reserved, other entries are evicted, least
// recently used first, until the size limit and the internal project's quota allow them, and the
// entry is given up (contract.ErrTypeCacheFull) when nothing more may go. It runs under the reservation
// lock and records the sizes, so no concurrent reservation counts on the old ones.
func (a *Activities) fitUsed(ctx context.Context, entryID uint, used int64, gb int) error {
	return a.Store.WithReservationLock(ctx, func() error {
		cfg := a.Config
		e, err := a.Store.GetCacheEntry(ctx, entryID)
		if errors.Is(err, models.ErrNotFound) {
			return nonRetryable(contract.ErrTypeCacheVolumeGone, "cache entry %d is gone", entryID)
		} else if err != nil {
			return err
		}
		vol, err := a.Store.GetVolume(ctx, e.VolumeID)
		if err != nil {
			return err
		}
		maxBytes := models.GiBToBytesCapped(int64(cfg.ImageVolumeCacheMaxSizeGB))
		for waits := 0; ; {
			u, err := a.Store.CacheUsage(ctx, e.Host, e.Pool)
			if err != nil {
				return err
			}
			q, err := a.Store.ProjectUsage(ctx, cfg.CinderInternalTenantProject)
			if err != nil {
				return err
			}
			fitsSize := maxBytes <= 0 || used <= e.SizeBytes || u.Bytes-e.SizeBytes+used <= maxBytes
			fitsQuota := cfg.InternalQuotaGB <= 0 || gb <= vol.SizeGB || q.GB-int64(vol.SizeGB)+int64(gb) <= int64(cfg.InternalQuotaGB)
			if fitsSize && fitsQuota {
				if err := a.Store.UpdateVolume(ctx, vol.ID, map[string]any{"size_gb": gb}); err != nil {
					return err
				}
				if err := a.Store.ResizeCacheEntry(ctx, e.ID, used); errors.Is(err, models.ErrNotFound) {
					return nonRetryable(contract.ErrTypeCacheVolumeGone, "cache entry %d is no longer filling: %v", e.ID, err)
				} else if err != nil {
					return err
				}
				return nil
			}
			evicted, leased, err := a.evictOne(ctx)
			if err != nil {
				return err
			}
			if evicted == 0 && leased && waits < maxLeaseWaits {
				waits++
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(leaseWait):
				}
				continue
			}
			if evicted == 0 {
				a.log(ctx).Info("imported image does not fit the cache; giving the entry up", "entry", e.ID, "image_id", e.ImageID,
					"used", used, "reserved", e.SizeBytes, "cache_bytes", u.Bytes, "max_bytes", maxBytes, "quota_gb", q.GB)
				return nonRetryable(contract.ErrTypeCacheFull, "the imported image uses %d bytes (%d GiB), more than the cache's limits leave room for", used, gb)
			}
		}
	})
}

// How long EvictLRU waits for leases on the only evictable entries to be released.
const (
	leaseWait     = 100 * time.Millisecond
	maxLeaseWaits = 50
)

// evictOne evicts this host's least recently used entry that may go — ready, not pinned, not
// leased — and returns its id, or 0 when there is none; leased says whether some entry would
// have gone but for a lease.
func (a *Activities) evictOne(ctx context.Context) (id uint, leased bool, err error) {
	entries, err := a.Store.ListCacheEntries(ctx, a.Config.Host)
	if err != nil {
		return 0, false, err
	}
	// An entry left "evicting" by a crashed eviction is finished first.
	slices.SortStableFunc(entries, func(x, y models.CacheEntry) int {
		return cmp.Compare(b2i(x.State != models.EntryEvicting), b2i(y.State != models.EntryEvicting))
	})
	for i := range entries {
		e := &entries[i]
		if e.Pool != a.Config.Pool || e.State == models.EntryFilling || e.Pinned {
			continue
		}
		_, err := a.evict(ctx, e, false)
		switch {
		case err == nil:
			return e.ID, false, nil
		case errors.Is(err, models.ErrLeased):
			leased = true // being cloned from: try the next one
		case errors.Is(err, models.ErrNotFound):
			// changed since listed: try the next one
		default:
			return 0, false, err
		}
	}
	return 0, leased, nil
}

// evict removes a cache entry safely: it first marks the entry "evicting", which fails while a
// provision holds a lease on it (models.ErrLeased); then removes the cache volume and its rows.
// Clones made from it keep working: with format-2 clones the volume goes to the trash, and is
// purged once its last clone is gone. It reports whether the volume went to the trash.
func (a *Activities) evict(ctx context.Context, e *models.CacheEntry, force bool) (bool, error) {
	now := time.Now().UTC()
	if err := a.Store.BeginEvict(ctx, e.ID, now, force); err != nil {
		return false, err
	}
	// From here the entry can no longer be leased; a crash leaves it "evicting", and the next
	// eviction or reconcile pass on this host finishes the job.
	trashed, err := a.Storage.Remove(ctx, e.Pool, contract.RBDName(e.VolumeID))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return false, fmt.Errorf("evict cache entry %d: %w", e.ID, err)
	}
	if err := a.Store.FinishEvict(ctx, e, trashed, now); err != nil {
		return false, err
	}
	a.count(ctx, models.CacheStat{Evictions: 1})
	a.log(ctx).Info("evicted cache entry", "entry", e.ID, "image_id", e.ImageID, "volume", e.VolumeID, "trashed", trashed)
	return trashed, nil
}

// count adds to this host's cache counters; the counters are statistics, so a failure is logged
// rather than failing the step.
func (a *Activities) count(ctx context.Context, d models.CacheStat) {
	a.Metrics.CountCache(a.Config.Host, d)
	if err := a.Store.AddStats(ctx, a.Config.Host, d); err != nil {
		a.log(ctx).Warn("cache stats not recorded", "err", err)
	}
}

// EvictEntry evicts one cache entry at an operator's request. A pinned entry is refused unless
// Force is set; an entry being cloned from is retried (by Temporal) until its lease ends.
func (a *Activities) EvictEntry(ctx context.Context, in contract.EvictEntryInput) (contract.EvictEntryResult, error) {
	e, err := a.Store.GetCacheEntry(ctx, in.EntryID)
	if errors.Is(err, models.ErrNotFound) {
		return contract.EvictEntryResult{}, nil
	} else if err != nil {
		return contract.EvictEntryResult{}, err
	}
	if e.Pinned && !in.Force {
		return contract.EvictEntryResult{}, nonRetryable(contract.ErrTypeEntryPinned, "cache entry %d is pinned; unpin it first", e.ID)
	}
	if e.State == models.EntryFilling {
		return contract.EvictEntryResult{}, fmt.Errorf("cache entry %d is still filling", e.ID)
	}
	trashed, err := a.evict(ctx, e, in.Force)
	if errors.Is(err, models.ErrLeased) {
		return contract.EvictEntryResult{}, fmt.Errorf("cache entry %d: a clone is in progress: %w", e.ID, err)
	}
	return contract.EvictEntryResult{Evicted: err == nil, Trashed: trashed}, err
}

// PurgeTrash deletes for good this host's trashed cache volumes that no clone depends on any
// more, and forgets them, which frees their bytes in the cache's size accounting.
func (a *Activities) PurgeTrash(ctx context.Context) (int, error) {
	ts, err := a.Store.ListTrashed(ctx, a.Config.Host)
	if err != nil {
		return 0, err
	}
	purged := 0
	for i := range ts {
		heartbeat(ctx, "purging the trash")
		ok, err := a.purge(ctx, &ts[i])
		if err != nil {
			return purged, err
		}
		if ok {
			purged++
		}
	}
	return purged, nil
}

// purge deletes one trashed cache volume if it has no clone left; false while it has.
func (a *Activities) purge(ctx context.Context, t *models.TrashedCacheVolume) (bool, error) {
	err := a.Storage.PurgeTrashed(ctx, t.Pool, contract.RBDName(t.VolumeID))
	switch {
	case errors.Is(err, storage.ErrInUse):
		return false, nil
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return false, err
	}
	if err := a.Store.DeleteTrashed(ctx, t.ID); err != nil {
		return false, err
	}
	a.log(ctx).Info("purged trashed cache volume", "volume", t.VolumeID, "image_id", t.ImageID)
	return true, nil
}
