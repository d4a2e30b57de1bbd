package activities

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// leaseTTL bounds how long a crashed clone can keep its entry from being evicted.
const leaseTTL = 10 * time.Minute

// CloneVolume makes the user's volume a copy-on-write clone of a cache entry's snapshot, which
// may sit in another host's pool of the same cluster. It holds a lease on the entry while it
// clones, so the entry cannot be evicted under it. An entry already evicted, or whose cache
// volume vanished from Ceph (its rows are then dropped), is reported as CacheVolumeGone and the
// provision looks the cache up again. An existing image with the same parent is an earlier
// attempt's success, even when the entry was evicted since and its cache volume is in the trash.
func (a *Activities) CloneVolume(ctx context.Context, in contract.CloneInput) error {
	parent := in.Entry.Parent()
	holder := in.Pool + "/" + in.Name
	lease, err := a.Store.LeaseCacheEntry(ctx, in.Entry.EntryID, holder, time.Now().UTC(), leaseTTL)
	if errors.Is(err, models.ErrNotFound) {
		// Crash recovery: an earlier attempt may have cloned before the entry went (its result
		// lost), and the eviction then sent the cache volume to the trash under the clone.
		if done, cerr := a.clonedFrom(ctx, in.Pool, in.Name, parent); done || cerr != nil {
			return cerr
		}
		return nonRetryable(contract.ErrTypeCacheVolumeGone, "cache entry %d was evicted before the clone", in.Entry.EntryID)
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
		return nonRetryable(contract.ErrTypeCacheVolumeGone, "cache snapshot %s/%s@%s is gone: %v", parent.Pool, parent.Image, parent.Snapshot, err)
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
		return false, nonRetryable(contract.ErrTypeConflictingImage, "image %s/%s exists and is not a clone of %s/%s@%s", pool, name, parent.Pool, parent.Image, parent.Snapshot)
	}
	return true, nil
}

// ExtendVolume grows an image to the requested size; an image already that big is left alone,
// and one bigger than requested (a cached disk image larger than the volume) is refused.
func (a *Activities) ExtendVolume(ctx context.Context, in contract.ResizeInput) error {
	before, err := a.Storage.Grow(ctx, in.Pool, in.Name, uint64(in.SizeBytes))
	if err != nil {
		return err
	}
	if int64(before) > in.SizeBytes {
		return nonRetryable(contract.ErrTypeVolumeTooSmall, "the image's disk is %d bytes, larger than the requested volume (%d bytes)", before, in.SizeBytes)
	}
	return nil
}

// FlattenVolume copies a clone's parent data into it, detaching it from the cache volume.
func (a *Activities) FlattenVolume(ctx context.Context, in contract.ImageName) error {
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
// An empty pool is this host's own.
func (a *Activities) RemoveImage(ctx context.Context, in contract.ImageName) error {
	if in.Pool == "" {
		in.Pool = a.Config.Pool
	}
	for _, name := range []string{contract.StagingName(in.Name), in.Name} {
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

// SetVolumeState records a provision's progress on its volume row. It runs as a local activity
// of the workflow worker: it needs no storage host.
func (a *Activities) SetVolumeState(ctx context.Context, in contract.VolumeUpdate) error {
	fields := map[string]any{}
	for col, v := range map[string]string{
		"status": in.Status, "cache": in.Cache, "cache_reason": in.CacheReason, "error": in.Error,
		"host": in.Host, "pool": in.Pool, "flatten": in.Flatten,
	} {
		if v != "" {
			fields[col] = v
		}
	}
	if in.SizeGB > 0 {
		fields["size_gb"] = in.SizeGB
	}
	if len(fields) == 0 {
		return nil
	}
	return a.Store.UpdateVolume(ctx, in.VolumeID, fields)
}

// RemoveVolume deletes a user volume's image (and any staging image). When its parent is an
// evicted cache volume waiting in the trash and this was its last clone, the parent is purged
// too. An empty pool is this host's own.
func (a *Activities) RemoveVolume(ctx context.Context, in contract.ImageName) (contract.RemoveVolumeResult, error) {
	var res contract.RemoveVolumeResult
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

// DeleteVolumeRow forgets a deleted volume. It runs as a local activity of the workflow worker.
func (a *Activities) DeleteVolumeRow(ctx context.Context, volumeID string) error {
	return a.Store.DeleteVolume(ctx, volumeID)
}

// ShouldFlatten applies a flatten policy to a volume that is depth clone levels deep. A user
// volume cloned from a cache volume is 1 level deep (the cache volume is the root parent).
func ShouldFlatten(policy string, depth int) (bool, error) {
	switch policy {
	case "", contract.FlattenNever:
		return false, nil
	case contract.FlattenAlways:
		return depth > 0, nil
	}
	if n, ok := strings.CutPrefix(policy, "depth>"); ok {
		limit, err := strconv.Atoi(n)
		if err == nil && limit >= 0 {
			return depth > limit, nil
		}
	}
	return false, fmt.Errorf("flatten policy %q: want never, always or depth>N", policy)
}
