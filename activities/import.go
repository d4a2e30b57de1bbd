package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/storage"
)

// ImportImage turns the verified staging image into Target: it inspects the bytes for their real
// format, refuses unsafe or oversized images, renames raw data into place (no copy) and converts
// anything else with qemu-img straight from RBD to RBD.
func (a *Activities) ImportImage(ctx context.Context, in contract.ImportInput) (contract.ImportResult, error) {
	staging := contract.StagingName(in.Target)
	_, serr := a.Storage.Stat(ctx, in.Pool, staging)
	if errors.Is(serr, storage.ErrNotFound) {
		// Crash recovery: the rename (or conversion and cleanup) of an earlier attempt finished.
		info, err := a.Storage.Stat(ctx, in.Pool, in.Target)
		if err != nil {
			return contract.ImportResult{}, fmt.Errorf("import %s: neither staging nor target image: %w", in.Target, err)
		}
		return contract.ImportResult{Format: "done", VirtualSize: int64(info.Size)}, nil
	} else if serr != nil {
		return contract.ImportResult{}, serr
	}

	r, err := a.Storage.OpenReader(ctx, in.Pool, staging, "")
	if err != nil {
		return contract.ImportResult{}, err
	}
	// The whole image is inspected through the reader (descriptors, backing file names and
	// metadata can sit anywhere in it) before qemu-img may open it.
	info, err := importer.Inspect(r, int64(r.Size()))
	r.Close()
	switch {
	case errors.Is(err, importer.ErrUnsafeImage):
		a.removeQuietly(ctx, in.Pool, staging)
		return contract.ImportResult{}, nonRetryable(contract.ErrTypeUnsafeImage, "%v", err)
	case errors.Is(err, importer.ErrCorruptImage):
		a.removeQuietly(ctx, in.Pool, staging)
		return contract.ImportResult{}, nonRetryable(contract.ErrTypeCorruptImage, "%v", err)
	case err != nil:
		// A failed read of the staging image: the next attempt inspects it again.
		return contract.ImportResult{}, fmt.Errorf("import %s: %w", in.Target, err)
	}
	if allowed := a.Config.AcceptedFormats(); !slices.Contains(allowed, info.Format) {
		a.removeQuietly(ctx, in.Pool, staging)
		return contract.ImportResult{}, nonRetryable(contract.ErrTypeUnsafeImage, "the image is a %s disk, a format worker.allowed_formats (%s) does not allow", info.Format, importer.FormatList(allowed))
	}
	if in.MaxVirtualSize > 0 && info.VirtualSize > in.MaxVirtualSize {
		a.removeQuietly(ctx, in.Pool, staging)
		return contract.ImportResult{}, nonRetryable(contract.ErrTypeVolumeTooSmall, "the image is a %s disk of %d bytes, larger than the requested volume (%d bytes)", info.Format, info.VirtualSize, in.MaxVirtualSize)
	}
	res := contract.ImportResult{Format: string(info.Format), VirtualSize: info.VirtualSize}

	switch info.Format {
	case importer.FormatRaw, importer.FormatISO:
		if err := a.Storage.Rename(ctx, in.Pool, staging, in.Target); err != nil {
			return contract.ImportResult{}, err
		}
		a.Metrics.CountImported(a.Config.Host, res.VirtualSize)
		return res, nil
	}
	// A crashed conversion may have left a partial target behind: convert again from scratch.
	if _, err := a.Storage.Remove(ctx, in.Pool, in.Target); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return contract.ImportResult{}, err
	}
	if err := a.convert(ctx, string(info.Format), in.Pool, staging, in.Target); err != nil {
		a.removeQuietly(ctx, in.Pool, in.Target)
		return contract.ImportResult{}, err
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
