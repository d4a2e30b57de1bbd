package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/storage"
)

// CloneFromImageStore makes Target a copy-on-write clone of the snapshot in which the image
// service's RBD store keeps the image (Glance's rbd driver, show_image_direct_url), instead of
// downloading it: no bytes cross the network and nothing is hashed, as the snapshot is the data
// Glance verified and published, and nobody but Glance's Ceph user can write that pool.
//
// What a tenant controls is the bytes and, where Glance lets users set locations, the location.
// So the location must be in this worker's cluster (fsid), in one of worker.image_store.pools
// (never a volume pool), and name the image's own RBD image (Glance names it by the image ID);
// the snapshot's size must be the image's, and its bytes must inspect as raw (or ISO) and be an
// allowed format. Whatever fails these checks, or cannot be read with the worker's Ceph user, is
// not cloned: the result gives the reason, and the caller downloads, verifies and imports as for
// any image. ForCache with worker.image_store.flatten_cache flattens the clone, so that the cache
// entry made of it does not keep the image service from deleting the image.
func (a *Activities) CloneFromImageStore(ctx context.Context, in contract.StoreCloneInput) (contract.StoreCloneResult, error) {
	no := func(reason string, detail error) (contract.StoreCloneResult, error) {
		a.log(ctx).Info("image not cloned from the image store; downloading", "image_id", in.Image.ID, "reason", reason, "detail", detail)
		return contract.StoreCloneResult{Reason: reason}, nil
	}
	loc, ok := imagesource.ParseRBDLocation(in.Image.DirectURL)
	switch {
	case !ok || loc.Image != in.Image.ID:
		return no(contract.ReasonStoreLocation, fmt.Errorf("location %q", in.Image.DirectURL))
	case a.FSID == "" || loc.FSID != a.FSID:
		return no(contract.ReasonStoreOtherCluster, fmt.Errorf("location fsid %s, this cluster %s", loc.FSID, a.FSID))
	case !slices.Contains(a.Config.ImageStorePools, loc.Pool):
		return no(contract.ReasonStorePoolNotAllowed, fmt.Errorf("pool %s, allowed %v", loc.Pool, a.Config.ImageStorePools))
	}
	parent := storage.Parent{Pool: loc.Pool, Image: loc.Image, Snapshot: loc.Snapshot}
	flatten := in.ForCache && a.Config.ImageStoreFlattenCache

	// Crash recovery: an earlier attempt may have cloned (and flattened) Target already.
	info, err := a.Storage.Stat(ctx, in.Pool, in.Target)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		res, reason, err := a.inspectStoreSnapshot(ctx, in, parent)
		if err != nil || reason != "" {
			if errors.Is(err, storage.ErrPermission) {
				return no(contract.ReasonStoreNoAccess, err)
			}
			if reason != "" {
				return no(reason, err)
			}
			return contract.StoreCloneResult{}, err
		}
		err = a.Storage.Clone(ctx, parent, in.Pool, in.Target)
		switch {
		case errors.Is(err, storage.ErrPermission):
			// Reading was allowed but attaching a child to the store's image was not.
			return no(contract.ReasonStoreNoAccess, err)
		case errors.Is(err, storage.ErrExists):
			// Made since the Stat above (an attempt thought lost): the next attempt judges it.
			return contract.StoreCloneResult{}, fmt.Errorf("clone %s/%s: %w", in.Pool, in.Target, err)
		case err != nil:
			return contract.StoreCloneResult{}, err
		}
		res.Depth = 1
		if !flatten {
			return res, nil
		}
		res.Depth = 0
		return res, a.flattenStoreClone(ctx, in)
	case err != nil:
		return contract.StoreCloneResult{}, err
	case info.Parent != nil && *info.Parent == parent:
		// Cloned by an earlier attempt; its flatten (if any) did not finish.
		res := contract.StoreCloneResult{Cloned: true, Format: string(importer.FormatRaw), VirtualSize: int64(info.Size), Depth: 1}
		if !flatten {
			return res, nil
		}
		res.Depth = 0
		return res, a.flattenStoreClone(ctx, in)
	case info.Parent == nil && flatten:
		// Cloned and flattened by an earlier attempt.
		return contract.StoreCloneResult{Cloned: true, Format: string(importer.FormatRaw), VirtualSize: int64(info.Size)}, nil
	}
	return contract.StoreCloneResult{}, nonRetryable(contract.ErrTypeConflictingImage, "image %s/%s exists and is not a clone of %s/%s@%s", in.Pool, in.Target, parent.Pool, parent.Image, parent.Snapshot)
}

// inspectStoreSnapshot reads the store's snapshot as the import would read a download: its size
// must be the image's and its bytes a raw (or ISO) disk of an allowed format that fits the volume.
// A reason means "download instead"; an error without one is worth a retry.
func (a *Activities) inspectStoreSnapshot(ctx context.Context, in contract.StoreCloneInput, parent storage.Parent) (contract.StoreCloneResult, string, error) {
	r, err := a.Storage.OpenReader(ctx, parent.Pool, parent.Image, parent.Snapshot)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return contract.StoreCloneResult{}, contract.ReasonStoreMissing, err
	case err != nil:
		return contract.StoreCloneResult{}, "", err
	}
	defer r.Close()
	if int64(r.Size()) != in.Image.Size {
		return contract.StoreCloneResult{}, contract.ReasonStoreSizeMismatch,
			fmt.Errorf("snapshot of %d bytes, image of %d", r.Size(), in.Image.Size)
	}
	info, err := importer.Inspect(r, int64(r.Size()))
	switch {
	case errors.Is(err, importer.ErrUnsafeImage), errors.Is(err, importer.ErrCorruptImage):
		// The download's import refuses it with the same finding, as a typed error.
		return contract.StoreCloneResult{}, contract.ReasonStoreNotRaw, err
	case err != nil:
		return contract.StoreCloneResult{}, "", err
	case info.Format != importer.FormatRaw && info.Format != importer.FormatISO:
		return contract.StoreCloneResult{}, contract.ReasonStoreNotRaw, fmt.Errorf("the bytes are a %s disk", info.Format)
	case !slices.Contains(a.Config.AcceptedFormats(), info.Format):
		return contract.StoreCloneResult{}, "", nonRetryable(contract.ErrTypeUnsafeImage, "the image is a %s disk, a format worker.allowed_formats (%s) does not allow", info.Format, importer.FormatList(a.Config.AcceptedFormats()))
	case in.MaxVirtualSize > 0 && info.VirtualSize > in.MaxVirtualSize:
		return contract.StoreCloneResult{}, "", nonRetryable(contract.ErrTypeVolumeTooSmall, "the image is a %s disk of %d bytes, larger than the requested volume (%d bytes)", info.Format, info.VirtualSize, in.MaxVirtualSize)
	}
	return contract.StoreCloneResult{Cloned: true, Format: string(info.Format), VirtualSize: info.VirtualSize}, "", nil
}

// flattenStoreClone copies the store's data into the cache volume and detaches it, heartbeating.
func (a *Activities) flattenStoreClone(ctx context.Context, in contract.StoreCloneInput) error {
	defer heartbeatEvery(ctx, heartbeatInterval, "flattening "+in.Target)()
	return a.Storage.Flatten(ctx, in.Pool, in.Target)
}
