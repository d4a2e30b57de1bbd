package activities

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// LookupCache reads the image's metadata and looks for a ready cache entry of its content: on
// this host first, then on any other host of the same Ceph cluster (a clone can cross pools).
// Entries of an image that is gone, deactivated or whose content changed are evicted on the way.
func (a *Activities) LookupCache(ctx context.Context, in contract.LookupInput) (contract.LookupResult, error) {
	res, entry, err := a.lookup(ctx, in)
	if err != nil || entry == nil {
		return res, err
	}
	if err := a.Store.TouchCacheEntry(ctx, entry.ID, time.Now().UTC()); err != nil {
		return contract.LookupResult{}, err
	}
	if !in.Prewarm {
		a.count(ctx, models.CacheStat{Hits: 1})
	}
	res.Hit, res.Entry = true, refOf(entry)
	return res, nil
}

// lookup is LookupCache without a hit's bookkeeping: the plan, and the ready entry to clone from
// (nil on a miss, which it counts).
func (a *Activities) lookup(ctx context.Context, in contract.LookupInput) (contract.LookupResult, *models.CacheEntry, error) {
	img, err := a.imageOf(ctx, in)
	switch {
	case errors.Is(err, imagesource.ErrNotFound):
		a.invalidateImage(ctx, in.ImageID)
		return contract.LookupResult{}, nil, nonRetryable(contract.ErrTypeImageNotFound, "image %s not found", in.ImageID)
	case err != nil:
		return contract.LookupResult{}, nil, err
	case img.Status != imagesource.StatusActive:
		a.invalidateImage(ctx, in.ImageID)
		return contract.LookupResult{}, nil, nonRetryable(contract.ErrTypeImageNotActive, "image %s is %s, not active", in.ImageID, img.Status)
	case img.ContentHash() == "":
		return contract.LookupResult{}, nil, nonRetryable(contract.ErrTypeImageNoHash, "image %s publishes no checksum to verify its data against", in.ImageID)
	case !in.Prewarm && models.ExceedsGiB(img.VirtualSize, int64(in.SizeGB)):
		return contract.LookupResult{}, nil, nonRetryable(contract.ErrTypeVolumeTooSmall, "image %s needs %d bytes, the volume has %d GiB", in.ImageID, img.VirtualSize, in.SizeGB)
	}
	if _, err := ShouldFlatten(a.Config.FlattenPolicy, 1); err != nil {
		return contract.LookupResult{}, nil, nonRetryable(contract.ErrTypeUnsupported, "%v", err)
	}
	res := contract.LookupResult{
		Image: contract.ImageRef{
			ID: img.ID, Size: img.Size, VirtualSize: img.VirtualSize, HashAlgo: img.HashAlgo, HashValue: img.HashValue,
			Checksum: img.Checksum, ContentHash: img.ContentHash(), UpdatedAt: img.UpdatedAt, DirectURL: img.DirectURL,
		},
		Cluster:       a.Config.ClusterName,
		Pool:          a.Config.Pool,
		FlattenPolicy: a.Config.FlattenPolicy,
	}
	if !a.Config.ImageVolumeCacheEnabled {
		res.Reason = contract.ReasonDisabled
		return res, nil, nil
	}
	entries, err := a.Store.ListEntriesOfImage(ctx, img.ID)
	if err != nil {
		return contract.LookupResult{}, nil, err
	}
	// A new upload under the same image id is new content: its old entries are stale.
	a.invalidate(ctx, entries, res.Image.ContentHash)
	// No Ceph round trip here: the clone finds out if the cache volume vanished, and the
	// provision then looks again.
	entry, err := a.pickReady(ctx, entries, res.Image.ContentHash, false)
	if err != nil {
		return contract.LookupResult{}, nil, err
	}
	if entry != nil {
		return res, entry, nil
	}
	if !in.Prewarm {
		a.count(ctx, models.CacheStat{Misses: 1})
	}
	if max := int64(a.Config.ImageVolumeCacheMaxSizeGB); max > 0 && models.ExceedsGiB(cacheBytes(res.Image), max) {
		res.Reason = contract.ReasonTooBig
		return res, nil, nil
	}
	res.Cacheable = true
	return res, nil, nil
}

// imageMaxAge is how long image metadata read by the gateway is trusted without a new read.
const imageMaxAge = time.Minute

// imageOf returns the image's metadata: the gateway's copy while it is fresh, else a new read.
func (a *Activities) imageOf(ctx context.Context, in contract.LookupInput) (imagesource.Image, error) {
	if in.Image != nil && in.Image.ID == in.ImageID && time.Since(in.ImageRead) < imageMaxAge {
		return *in.Image, nil
	}
	return a.Images.Get(ctx, in.ImageID)
}

// readyEntry is the ready entry of an image's content to clone from, this host's first, or nil.
func (a *Activities) readyEntry(ctx context.Context, imageID, contentHash string) (*models.CacheEntry, error) {
	entries, err := a.Store.FindReadyEntries(ctx, a.Config.ClusterName, imageID, contentHash)
	if err != nil {
		return nil, err
	}
	return a.pickReady(ctx, entries, contentHash, true)
}

// pickReady chooses among an image's entries the ready one of this content in this cluster to
// clone from, this host's first. With verify, an entry is taken only once its snapshot is seen in
// Ceph, and entries whose cache volume vanished (deleted behind the engine's back) are dropped.
func (a *Activities) pickReady(ctx context.Context, entries []models.CacheEntry, contentHash string, verify bool) (*models.CacheEntry, error) {
	entries = slices.DeleteFunc(slices.Clone(entries), func(e models.CacheEntry) bool {
		return e.State != models.EntryReady || e.ContentHash != contentHash || e.ClusterName != a.Config.ClusterName
	})
	slices.SortStableFunc(entries, func(x, y models.CacheEntry) int {
		return cmp.Compare(b2i(x.Host != a.Config.Host), b2i(y.Host != a.Config.Host))
	})
	if !verify && len(entries) > 0 {
		return &entries[0], nil
	}
	for i := range entries {
		e := &entries[i]
		parent := contract.CacheParent(e.Pool, e.VolumeID)
		ok, err := a.Storage.SnapshotExists(ctx, parent.Pool, parent.Image, parent.Snapshot)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if ok {
			return e, nil
		}
		a.log(ctx).Warn("cache volume disappeared; dropping its entry", "entry", e.ID, "volume", e.VolumeID, "entry_host", e.Host)
		if err := a.Store.DeleteCacheEntry(ctx, e); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// invalidateImage evicts this host's entries of an image that is gone or not active.
func (a *Activities) invalidateImage(ctx context.Context, imageID string) {
	entries, err := a.Store.ListEntriesOfImage(ctx, imageID)
	if err != nil {
		a.log(ctx).Error("invalidate: list entries", "image_id", imageID, "err", err)
		return
	}
	a.invalidate(ctx, entries, "")
}

// invalidate evicts this host's entries among those whose content hash is not keepHash (all of
// them when keepHash is empty). It is best effort: a failure is logged, and the reconcile
// workflow catches what is left.
func (a *Activities) invalidate(ctx context.Context, entries []models.CacheEntry, keepHash string) {
	for i := range entries {
		e := &entries[i]
		if e.Host != a.Config.Host || e.ContentHash == keepHash || e.State == models.EntryFilling {
			continue
		}
		if _, err := a.evict(ctx, e, true); err != nil && !errors.Is(err, models.ErrLeased) && !errors.Is(err, models.ErrNotFound) {
			a.log(ctx).Error("invalidate: evict", "entry", e.ID, "err", err)
		}
	}
}

func refOf(e *models.CacheEntry) contract.EntryRef {
	return contract.EntryRef{EntryID: e.ID, Host: e.Host, Pool: e.Pool, VolumeID: e.VolumeID, Depth: e.CloneDepth}
}
