package activities

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

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
	size := int64(r.Size())
	head := make([]byte, min(int64(importer.HeaderSize), size))
	_, err = r.ReadAt(head, 0)
	r.Close()
	if err != nil {
		return ImportResult{}, fmt.Errorf("import %s: read header: %w", in.Target, err)
	}
	info, err := importer.Detect(head, size)
	if err != nil {
		a.removeQuietly(ctx, in.Pool, staging)
		if errors.Is(err, importer.ErrUnsafeImage) {
			return ImportResult{}, nonRetryable(ErrTypeUnsafeImage, "%v", err)
		}
		return ImportResult{}, nonRetryable(ErrTypeCorruptImage, "%v", err)
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
	return res, nil
}

// convert runs qemu-img from one RBD image to another, heartbeating while it works. The source
// format is passed explicitly so qemu-img never probes (and never follows) anything.
func (a *Activities) convert(ctx context.Context, format, pool, src, dst string) error {
	spec := func(name string) string {
		s := "rbd:" + pool + "/" + name
		if a.Config.CephConf != "" {
			s += ":conf=" + a.Config.CephConf
		}
		return s
	}
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-f", format, "-O", "raw", "-W", "-m", "16", spec(src), spec(dst))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu-img: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return nonRetryable(ErrTypeCorruptImage, "qemu-img convert of a %s image failed: %v: %s", format, err, strings.TrimSpace(out.String()))
			}
			return nil
		case <-tick.C:
			activity.RecordHeartbeat(ctx, "converting")
		}
	}
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
	if err := a.Store.MarkCacheEntryReady(ctx, in.EntryID, int64(used), time.Now().UTC()); err != nil {
		return 0, err
	}
	info, err := a.Storage.Stat(ctx, in.Pool, name)
	if err != nil {
		return 0, err
	}
	err = a.Store.UpdateVolume(ctx, in.CacheVolumeID, map[string]any{
		"status": models.StatusAvailable, "size_gb": models.GiBCeil(int64(info.Size)),
	})
	return int64(used), err
}

// CloneVolume makes the user's volume a copy-on-write clone of the cache snapshot. An existing
// image with the same parent is an earlier attempt's success.
func (a *Activities) CloneVolume(ctx context.Context, in CloneInput) error {
	err := a.Storage.Clone(ctx, in.Parent, in.Pool, in.Name)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		return nonRetryable(ErrTypeCacheVolumeGone, "cache snapshot %s/%s@%s is gone: %v", in.Parent.Pool, in.Parent.Image, in.Parent.Snapshot, err)
	case !errors.Is(err, storage.ErrExists):
		return err
	}
	info, serr := a.Storage.Stat(ctx, in.Pool, in.Name)
	if serr != nil {
		return serr
	}
	if info.Parent == nil || *info.Parent != in.Parent {
		return nonRetryable(ErrTypeConflictingImage, "image %s/%s exists and is not a clone of %s/%s@%s", in.Pool, in.Name, in.Parent.Pool, in.Parent.Image, in.Parent.Snapshot)
	}
	return nil
}

// ExtendVolume grows an image to the requested size; an image already that big is left alone.
func (a *Activities) ExtendVolume(ctx context.Context, in ResizeInput) error {
	info, err := a.Storage.Stat(ctx, in.Pool, in.Name)
	if err != nil {
		return err
	}
	if int64(info.Size) >= in.SizeBytes {
		return nil
	}
	return a.Storage.Resize(ctx, in.Pool, in.Name, uint64(in.SizeBytes))
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
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx, "flattening")
			}
		}
	}()
	return a.Storage.Flatten(ctx, in.Pool, in.Name)
}

// RemoveImage deletes an image and its staging image; missing ones are not errors. It is the
// compensation of every step that creates an image.
func (a *Activities) RemoveImage(ctx context.Context, in ImageName) error {
	for _, name := range []string{StagingName(in.Name), in.Name} {
		if _, err := a.Storage.Remove(ctx, in.Pool, name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	return nil
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
