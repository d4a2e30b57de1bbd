package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// ImportImage turns the verified staging image into Target: it inspects the bytes for their real
// format, refuses unsafe or oversized images, renames raw data into place (no copy) and converts
// anything else with qemu-img straight from RBD to RBD.
func (a *Activities) ImportImage(ctx context.Context, in ImportInput) (ImportResult, error) {
	staging := StagingName(in.Target)
	_, serr := a.Storage.Stat(ctx, in.Pool, staging)
	if errors.Is(serr, storage.ErrNotFound) {
		// Crash recovery: the rename (or conversion and cleanup) of an earlier attempt finished.
		info, err := a.Storage.Stat(ctx, in.Pool, in.Target)
		if err != nil {
			return ImportResult{}, fmt.Errorf("import %s: neither staging nor target image: %w", in.Target, err)
		}
		return ImportResult{Format: "done", VirtualSize: int64(info.Size)}, nil
	} else if serr != nil {
		return ImportResult{}, serr
	}

	r, err := a.Storage.OpenReader(ctx, in.Pool, staging, "")
	if err != nil {
		return ImportResult{}, err
	}
	// The whole image is inspected through the reader (descriptors, backing file names and
	// metadata can sit anywhere in it) before qemu-img may open it.
	info, err := importer.Inspect(r, int64(r.Size()))
	r.Close()
	switch {
	case errors.Is(err, importer.ErrUnsafeImage):
		a.removeQuietly(ctx, in.Pool, staging)
		return ImportResult{}, nonRetryable(ErrTypeUnsafeImage, "%v", err)
	case errors.Is(err, importer.ErrCorruptImage):
		a.removeQuietly(ctx, in.Pool, staging)
		return ImportResult{}, nonRetryable(ErrTypeCorruptImage, "%v", err)
	case err != nil:
		// A failed read of the staging image: the next attempt inspects it again.
		return ImportResult{}, fmt.Errorf("import %s: %w", in.Target, err)
	}
	if allowed := a.Config.AcceptedFormats(); !slices.Contains(allowed, info.Format) {
		a.removeQuietly(ctx, in.Pool, staging)
		return ImportResult{}, nonRetryable(ErrTypeUnsafeImage, "the image is a %s disk, a format worker.allowed_formats (%s) does not allow", info.Format, importer.FormatList(allowed))
	}
	if in.MaxVirtualSize > 0 && info.VirtualSize > in.MaxVirtualSize {
		a.removeQuietly(ctx, in.Pool, staging)
		return ImportResult{}, nonRetryable(ErrTypeVolumeTooSmall, "the image is a %s disk of %d bytes, larger than the requested volume (%d bytes)", info.Format, info.VirtualSize, in.MaxVirtualSize)
	}
	res := ImportResult{Format: string(info.Format), VirtualSize: info.VirtualSize}

	switch info.Format {
	case importer.FormatRaw, importer.FormatISO:
		if err := a.Storage.Rename(ctx, in.Pool, staging, in.Target); err != nil {
			return ImportResult{}, err
		}
		a.Metrics.CountImported(a.Config.Host, res.VirtualSize)
		return res, nil
	}
	// A crashed conversion may have left a partial target behind: convert again from scratch.
	if _, err := a.Storage.Remove(ctx, in.Pool, in.Target); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return ImportResult{}, err
	}
	if err := a.convert(ctx, string(info.Format), in.Pool, staging, in.Target); err != nil {
		a.removeQuietly(ctx, in.Pool, in.Target)
		return ImportResult{}, err
	}
	a.removeQuietly(ctx, in.Pool, staging)
	a.Metrics.CountImported(a.Config.Host, res.VirtualSize)
	return res, nil
}

func (a *Activities) removeQuietly(ctx context.Context, pool, name string) {
	if _, err := a.Storage.Remove(context.WithoutCancel(ctx), pool, name); err != nil && !errors.Is(err, storage.ErrNotFound) {
		a.log(ctx).Error("could not remove image", "pool", pool, "image", name, "err", err)
	}
}

// CloneToCache makes the imported cache volume a clone source: it snapshots it, records the
// bytes it really uses, and marks its entry ready and its volume available.
func (a *Activities) CloneToCache(ctx context.Context, in CacheInput) (int64, error) {
	name := models.RBDName(in.CacheVolumeID)
	err := a.Storage.CreateSnapshot(ctx, in.Pool, name, models.CacheSnapshot)
	if err != nil && !errors.Is(err, storage.ErrExists) {
		return 0, err
	}
	used, err := a.Storage.UsedBytes(ctx, in.Pool, name)
	if err != nil {
		return 0, err
	}
	info, err := a.Storage.Stat(ctx, in.Pool, name)
	if err != nil {
		return 0, err
	}
	// The reservation was sized before the import; the limits hold on what is really used.
	if err := a.fitUsed(ctx, in.EntryID, int64(used), models.GiBCeil(int64(info.Size))); err != nil {
		return 0, err
	}
	if err := a.Store.MarkCacheEntryReady(ctx, in.EntryID, int64(used), time.Now().UTC()); errors.Is(err, models.ErrNotFound) {
		// Evicted or dropped while filling: nothing to clone from; the waiting provisions
		// download on their own.
		return 0, nonRetryable(ErrTypeCacheVolumeGone, "cache entry %d is no longer filling: %v", in.EntryID, err)
	} else if err != nil {
		return 0, err
	}
	err = a.Store.UpdateVolume(ctx, in.CacheVolumeID, map[string]any{
		"status": models.StatusAvailable, "size_gb": models.GiBCeil(int64(info.Size)),
	})
	return int64(used), err
}

// leaseTTL bounds how long a crashed clone can keep its entry from being evicted.
const leaseTTL = 10 * time.Minute

// CloneVolume makes the user's volume a copy-on-write clone of a cache entry's snapshot, which
// may sit in another host's pool of the same cluster. It holds a lease on the entry while it
// clones, so the entry cannot be evicted under it. An entry already evicted, or whose cache
// volume vanished from Ceph (its rows are then dropped), is reported as CacheVolumeGone and the
// provision looks the cache up again. An existing image with the same parent is an earlier
// attempt's success, even when the entry was evicted since and its cache volume is in the trash.
func (a *Activities) CloneVolume(ctx context.Context, in CloneInput) error {
	parent := in.Entry.Parent()
	holder := in.Pool + "/" + in.Name
	lease, err := a.Store.LeaseCacheEntry(ctx, in.Entry.EntryID, holder, time.Now().UTC(), leaseTTL)
	if errors.Is(err, models.ErrNotFound) {
		// Crash recovery: an earlier attempt may have cloned before the entry went (its result
		// lost), and the eviction then sent the cache volume to the trash under the clone.
		if done, cerr := a.clonedFrom(ctx, in.Pool, in.Name, parent); done || cerr != nil {
			return cerr
		}
		return nonRetryable(ErrTypeCacheVolumeGone, "cache entry %d was evicted before the clone", in.Entry.EntryID)
	} else if err != nil {
		return err
	}
	defer func() {
		if err := a.Store.ReleaseLease(context.WithoutCancel(ctx), in.Entry.EntryID, lease); err != nil {
			a.log(ctx).Warn("lease not released; it expires by itself", "entry", in.Entry.EntryID, "err", err)
		}
	}()
	err = a.Storage.Clone(ctx, parent, in.Pool, in.Name)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		// The cache volume was deleted behind the engine's back: forget it, so that the next
		// lookup misses and fills the cache again.
		a.log(ctx).Warn("cache volume disappeared; dropping its entry", "entry", in.Entry.EntryID, "volume", in.Entry.VolumeID)
		if e, gerr := a.Store.GetCacheEntry(ctx, in.Entry.EntryID); gerr == nil {
			if derr := a.Store.DeleteCacheEntry(ctx, e); derr != nil {
				return derr
			}
		}
		return nonRetryable(ErrTypeCacheVolumeGone, "cache snapshot %s/%s@%s is gone: %v", parent.Pool, parent.Image, parent.Snapshot, err)
	case errors.Is(err, storage.ErrExists):
		_, err = a.clonedFrom(ctx, in.Pool, in.Name, parent)
	}
	return err
}

// clonedFrom reports whether pool/name exists as a clone of parent, compared by pool, image and
// snapshot as they were named at the clone (storage reports a parent moved to the trash by those
// names); an image of that name with another parent is a conflict no retry can fix.
func (a *Activities) clonedFrom(ctx context.Context, pool, name string, parent storage.Parent) (bool, error) {
	info, err := a.Storage.Stat(ctx, pool, name)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if info.Parent == nil || *info.Parent != parent {
		return false, nonRetryable(ErrTypeConflictingImage, "image %s/%s exists and is not a clone of %s/%s@%s", pool, name, parent.Pool, parent.Image, parent.Snapshot)
	}
	return true, nil
}

// ExtendVolume grows an image to the requested size; an image already that big is left alone,
// and one bigger than requested (a cached disk image larger than the volume) is refused.
func (a *Activities) ExtendVolume(ctx context.Context, in ResizeInput) error {
	before, err := a.Storage.Grow(ctx, in.Pool, in.Name, uint64(in.SizeBytes))
	if err != nil {
		return err
	}
	if int64(before) > in.SizeBytes {
		return nonRetryable(ErrTypeVolumeTooSmall, "the image's disk is %d bytes, larger than the requested volume (%d bytes)", before, in.SizeBytes)
	}
	return nil
}

// FlattenVolume copies a clone's parent data into it, detaching it from the cache volume.
func (a *Activities) FlattenVolume(ctx context.Context, in ImageName) error {
	info, err := a.Storage.Stat(ctx, in.Pool, in.Name)
	if err != nil {
		return err
	}
	if info.Parent == nil {
		return nil
	}
	defer heartbeatEvery(ctx, heartbeatInterval, "flattening")()
	return a.Storage.Flatten(ctx, in.Pool, in.Name)
}

// RemoveImage deletes an image and its staging image; missing ones are not errors. It is the
// compensation of every step that creates an image. A busy image (open by a client, or with
// clones) goes to the RBD trash instead and is recorded, so that reconcile purges it once free.
func (a *Activities) RemoveImage(ctx context.Context, in ImageName) error {
	for _, name := range []string{StagingName(in.Name), in.Name} {
		if err := a.removeOrTrash(ctx, in.Pool, name); err != nil {
			return err
		}
	}
	return nil
}

// removeOrTrash deletes one image, or records it when it went to the trash. A missing image may
// be one an earlier attempt trashed before it could record it: the trash is asked, and a busy
// image found there is recorded, a free one purged.
func (a *Activities) removeOrTrash(ctx context.Context, pool, name string) error {
	trashed, err := a.Storage.Remove(ctx, pool, name)
	if errors.Is(err, storage.ErrNotFound) {
		perr := a.Storage.PurgeTrashed(ctx, pool, name)
		switch {
		case perr == nil, errors.Is(perr, storage.ErrNotFound):
			return nil
		case !errors.Is(perr, storage.ErrInUse):
			return perr
		}
		trashed = true
	} else if err != nil {
		return err
	}
	if !trashed {
		return nil
	}
	a.log(ctx).Warn("image busy: moved to the trash until reconcile can purge it", "pool", pool, "image", name)
	return a.Store.RecordTrashedImage(ctx, a.Config.Host, pool, name, time.Now().UTC())
}

// AbandonCacheFill undoes a reservation whose fill failed: the cache volume's images and rows.
func (a *Activities) AbandonCacheFill(ctx context.Context, entryID uint) error {
	e, err := a.Store.GetCacheEntry(ctx, entryID)
	if errors.Is(err, models.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if e.State == models.EntryReady {
		return nil // filled after all: keep it
	}
	if err := a.RemoveImage(ctx, ImageName{Pool: e.Pool, Name: models.RBDName(e.VolumeID)}); err != nil {
		return err
	}
	return a.Store.DeleteCacheEntry(ctx, e)
}

// SetVolumeState records a provision's progress on its volume row. It runs as a local activity
// of the workflow worker: it needs no storage host.
func (a *Activities) SetVolumeState(ctx context.Context, in VolumeUpdate) error {
	fields := map[string]any{}
	for col, v := range map[string]string{
		"status": in.Status, "cache": in.Cache, "cache_reason": in.CacheReason, "error": in.Error,
		"host": in.Host, "pool": in.Pool, "flatten": in.Flatten,
	} {
		if v != "" {
			fields[col] = v
		}
	}
	if len(fields) == 0 {
		return nil
	}
	return a.Store.UpdateVolume(ctx, in.VolumeID, fields)
}

// CacheParent is the snapshot user volumes are cloned from, of the cache volume with that id.
func CacheParent(pool, cacheVolumeID string) storage.Parent {
	return storage.Parent{Pool: pool, Image: models.RBDName(cacheVolumeID), Snapshot: models.CacheSnapshot}
}

// EvictEntry evicts one cache entry at an operator's request. A pinned entry is refused unless
// Force is set; an entry being cloned from is retried (by Temporal) until its lease ends.
func (a *Activities) EvictEntry(ctx context.Context, in EvictEntryInput) (EvictEntryResult, error) {
	e, err := a.Store.GetCacheEntry(ctx, in.EntryID)
	if errors.Is(err, models.ErrNotFound) {
		return EvictEntryResult{}, nil
	} else if err != nil {
		return EvictEntryResult{}, err
	}
	if e.Pinned && !in.Force {
		return EvictEntryResult{}, nonRetryable(ErrTypeEntryPinned, "cache entry %d is pinned; unpin it first", e.ID)
	}
	if e.State == models.EntryFilling {
		return EvictEntryResult{}, fmt.Errorf("cache entry %d is still filling", e.ID)
	}
	trashed, err := a.evict(ctx, e, in.Force)
	if errors.Is(err, models.ErrLeased) {
		return EvictEntryResult{}, fmt.Errorf("cache entry %d: a clone is in progress: %w", e.ID, err)
	}
	return EvictEntryResult{Evicted: err == nil, Trashed: trashed}, err
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
	err := a.Storage.PurgeTrashed(ctx, t.Pool, models.RBDName(t.VolumeID))
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

// RemoveVolume deletes a user volume's image (and any staging image). When its parent is an
// evicted cache volume waiting in the trash and this was its last clone, the parent is purged
// too. An empty pool is this host's own.
func (a *Activities) RemoveVolume(ctx context.Context, in ImageName) (RemoveVolumeResult, error) {
	var res RemoveVolumeResult
	if in.Pool == "" {
		// A volume whose row has no pool yet: its provision makes it in this host's pool.
		in.Pool = a.Config.Pool
	}
	// Removing a large image walks its objects: stay alive under the step's heartbeat timeout.
	defer heartbeatEvery(ctx, heartbeatInterval, "removing "+in.Name)()
	info, err := a.Storage.Stat(ctx, in.Pool, in.Name)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return res, err
	default:
		res.Removed = true
	}
	if err := a.RemoveImage(ctx, in); err != nil {
		return res, err
	}
	if info.Parent == nil {
		return res, nil
	}
	volumeID, ok := strings.CutPrefix(info.Parent.Image, "volume-")
	if !ok {
		return res, nil
	}
	t, err := a.Store.FindTrashed(ctx, info.Parent.Pool, volumeID)
	if errors.Is(err, models.ErrNotFound) {
		return res, nil
	} else if err != nil {
		return res, err
	}
	res.ParentPurged, err = a.purge(ctx, t)
	return res, err
}

// ReconcileHost checks this host's cache and volumes against the image service, Temporal and
// Ceph: entries of images deleted, deactivated or re-uploaded with other content are evicted,
// evictions a crash left half-done are finished, entries left "filling" by a fill no longer
// running are removed with their images, volumes left "creating" by a provision no longer
// running are marked error, images no row accounts for are reported, and trashed cache volumes
// without clones and busy images trashed since they were deleted are purged. An entry being
// cloned from is left for the next pass. It heartbeats for every entry, volume and image it
// looks at, so a large host does not outlive its heartbeat timeout.
func (a *Activities) ReconcileHost(ctx context.Context) (ReconcileReport, error) {
	rep := ReconcileReport{Host: a.Config.Host}
	entries, err := a.Store.ListCacheEntries(ctx, a.Config.Host)
	if err != nil {
		return rep, err
	}
	for i := range entries {
		e := &entries[i]
		heartbeat(ctx, fmt.Sprintf("cache entry %d", e.ID))
		if e.State == models.EntryFilling {
			a.reconcileFill(ctx, e, &rep)
			continue
		}
		rep.Checked++
		why := ""
		if e.State == models.EntryEvicting {
			if time.Since(e.UpdatedAt) < models.EvictionStale {
				continue // an eviction in progress
			}
			why = "eviction left half-done"
			// An abandoned fill interrupted half-way may have left its staging image too.
			if err := a.removeOrTrash(ctx, e.Pool, StagingName(models.RBDName(e.VolumeID))); err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (%s): %v", e.ID, why, err))
				continue
			}
		} else {
			img, err := a.Images.Get(ctx, e.ImageID)
			switch {
			case errors.Is(err, imagesource.ErrNotFound):
				why = "image deleted"
			case err != nil:
				rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d: image service: %v", e.ID, err))
				continue
			case img.Status != imagesource.StatusActive:
				why = "image " + img.Status
			case img.ContentHash() != e.ContentHash:
				why = "image content changed"
			}
		}
		if why == "" {
			continue
		}
		if _, err := a.evict(ctx, e, true); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("entry %d (%s): %v", e.ID, why, err))
			continue
		}
		rep.Invalidated = append(rep.Invalidated, fmt.Sprintf("entry %d, image %s: %s", e.ID, e.ImageID, why))
	}
	if err := a.reconcileVolumes(ctx, &rep); err != nil {
		return rep, err
	}
	if err := a.findOrphans(ctx, &rep); err != nil {
		return rep, err
	}
	if err := a.purgeTrashedImages(ctx, &rep); err != nil {
		return rep, err
	}
	rep.Purged, err = a.PurgeTrash(ctx)
	return rep, err
}

// DeleteVolumeRow forgets a deleted volume. It runs as a local activity of the workflow worker.
func (a *Activities) DeleteVolumeRow(ctx context.Context, volumeID string) error {
	return a.Store.DeleteVolume(ctx, volumeID)
}
