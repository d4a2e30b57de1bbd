package activities

import (
	"context"
	"errors"
	"time"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// ProvisionFromCache makes a volume from the cache in one step on its storage host: look the
// cache up; on a hit, lease the entry (counting the hit in the same transaction), clone, grow,
// and record the volume available while releasing the lease (one more transaction). The
// separate steps cost three activities, a local one and five database writes per hit. On a miss
// it only looks up (counting the miss) and returns the plan; the workflow then takes the miss's
// separate, durable steps.
//
// The provision runs it as a local activity of its workflow task, on the host's own queue. It
// may run again after a crash at any point: an earlier attempt's clone of this content is kept,
// growing is idempotent, and the row is written again.
func (a *Activities) ProvisionFromCache(ctx context.Context, in contract.HitInput) (contract.HitResult, error) {
	for look := 1; ; look++ {
		plan, entry, err := a.lookup(ctx, in.Lookup)
		if err != nil || entry == nil {
			return contract.HitResult{Plan: plan}, err
		}
		plan.Hit, plan.Entry = true, refOf(entry)
		res, err := a.hit(ctx, in, plan, entry)
		if !errors.Is(err, errEntryGone) {
			return res, err
		}
		if look >= max(in.MaxLookups, 1) {
			// The cache keeps losing this image to eviction: the volume is made without it.
			plan.Hit, plan.Entry = false, contract.EntryRef{}
			return contract.HitResult{Plan: plan, Evicted: true}, nil
		}
	}
}

// errEntryGone: the entry chosen was evicted, or its cache volume vanished, before the clone;
// the cache is looked up again.
var errEntryGone = errors.New("cache entry gone before the clone")

// hit clones the volume from entry under a lease, grows it and records it available.
func (a *Activities) hit(ctx context.Context, in contract.HitInput, plan contract.LookupResult, entry *models.CacheEntry) (contract.HitResult, error) {
	pool := plan.Pool
	token, err := a.Store.LeaseCacheEntryForHit(ctx, entry.ID, pool+"/"+in.Name, a.Config.Host, time.Now().UTC(), leaseTTL)
	switch {
	case errors.Is(err, models.ErrNotFound):
		// Evicted since the lookup read it. Crash recovery: an earlier attempt may have cloned
		// from an entry of this content before it went; its clone is kept.
		from, rerr := a.hitCloneOf(ctx, plan, pool, in.Name)
		if rerr != nil {
			return contract.HitResult{}, rerr
		} else if from == nil {
			return contract.HitResult{}, errEntryGone
		}
		return a.finishHit(ctx, in, plan, from, 0, "")
	case err != nil:
		return contract.HitResult{}, err
	}
	a.Metrics.CountCache(a.Config.Host, models.CacheStat{Hits: 1})
	release := func() {
		if err := a.Store.ReleaseLease(context.WithoutCancel(ctx), entry.ID, token); err != nil {
			a.log(ctx).Warn("lease not released; it expires by itself", "entry", entry.ID, "err", err)
		}
	}
	from := entry
	switch err := a.Storage.Clone(ctx, plan.Entry.Parent(), pool, in.Name); {
	case errors.Is(err, storage.ErrNotFound):
		// The cache volume was deleted behind the engine's back: forget it, so that the next
		// lookup misses and fills the cache again.
		release()
		a.log(ctx).Warn("cache volume disappeared; dropping its entry", "entry", entry.ID, "volume", entry.VolumeID)
		if derr := a.Store.DeleteCacheEntry(ctx, entry); derr != nil {
			return contract.HitResult{}, derr
		}
		return contract.HitResult{}, errEntryGone
	case errors.Is(err, storage.ErrExists):
		// Crash recovery: an earlier attempt's clone, from this entry or (its lookup having
		// chosen another) from another entry of this content. Any other image of the volume's
		// name is a conflict no retry can fix.
		if from, err = a.hitCloneOf(ctx, plan, pool, in.Name); err == nil && from == nil {
			err = nonRetryable(contract.ErrTypeConflictingImage, "image %s/%s exists and is not a clone of a cache entry of image %s", pool, in.Name, plan.Image.ID)
		}
		if err != nil {
			release()
			return contract.HitResult{}, err
		}
	case err != nil:
		release()
		return contract.HitResult{}, err
	}
	res, err := a.finishHit(ctx, in, plan, from, entry.ID, token)
	if err != nil {
		release()
	}
	return res, err
}

// finishHit grows the clone of entry from and records the volume available, releasing the lease
// with token (if any) on entry leased in the same transaction.
func (a *Activities) finishHit(ctx context.Context, in contract.HitInput, plan contract.LookupResult, from *models.CacheEntry, leased uint, token string) (contract.HitResult, error) {
	pool, volumeID := plan.Pool, in.Lookup.VolumeID
	if err := a.ExtendVolume(ctx, contract.ResizeInput{Pool: pool, Name: in.Name, SizeBytes: in.SizeBytes}); err != nil {
		return contract.HitResult{}, err
	}
	plan.Hit, plan.Entry = true, refOf(from)
	depth := 1 + from.CloneDepth
	fields := map[string]any{"status": models.StatusAvailable, "cache": models.CacheHit, "host": a.Config.Host, "pool": pool}
	if flatten, _ := ShouldFlatten(plan.FlattenPolicy, depth); flatten {
		fields["flatten"] = models.FlattenPending
	}
	var err error
	if token != "" {
		err = a.Store.FinishHit(ctx, volumeID, fields, leased, token)
	} else {
		err = a.Store.UpdateVolume(ctx, volumeID, fields)
	}
	if err != nil {
		return contract.HitResult{}, err
	}
	return contract.HitResult{Plan: plan, Done: true, Depth: depth}, nil
}

// hitCloneOf returns the entry of plan's image content that pool/name is a clone of, or nil when
// there is no such image or it is not a clone of this content's cache.
func (a *Activities) hitCloneOf(ctx context.Context, plan contract.LookupResult, pool, name string) (*models.CacheEntry, error) {
	info, err := a.Storage.Stat(ctx, pool, name)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	} else if err != nil || info.Parent == nil {
		return nil, err
	}
	entries, err := a.Store.ListEntriesOfImage(ctx, plan.Image.ID)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if e.ContentHash == plan.Image.ContentHash && contract.CacheParent(e.Pool, e.VolumeID) == *info.Parent {
			return &entries[i], nil
		}
	}
	return nil, nil
}
