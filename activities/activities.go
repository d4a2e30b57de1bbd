package activities

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// Activities carries the dependencies of every step of one storage host.
type Activities struct {
	Store   *models.Store
	Storage storage.Storage
	Images  imagesource.Source
	Config  Config
	Logger  *slog.Logger
}

const gib = int64(1) << 30

func nonRetryable(errType, format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), errType, nil)
}

func (a *Activities) log(ctx context.Context) *slog.Logger {
	l := a.Logger
	if l == nil {
		l = slog.Default()
	}
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		l = l.With("workflow_id", info.WorkflowExecution.ID, "activity", info.ActivityType.Name, "attempt", info.Attempt)
	}
	return l.With("host", a.Config.Host)
}

// LookupCache reads the image's metadata and looks for a ready cache entry of its content on
// this host. A hit is only reported once the cache volume's snapshot is seen in Ceph: an entry
// whose volume disappeared is dropped, and the provision falls back to a download.
func (a *Activities) LookupCache(ctx context.Context, in LookupInput) (LookupResult, error) {
	img, err := a.Images.Get(ctx, in.ImageID)
	switch {
	case errors.Is(err, imagesource.ErrNotFound):
		return LookupResult{}, nonRetryable(ErrTypeImageNotFound, "image %s not found", in.ImageID)
	case err != nil:
		return LookupResult{}, err
	case img.Status != imagesource.StatusActive:
		return LookupResult{}, nonRetryable(ErrTypeImageNotActive, "image %s is %s, not active", in.ImageID, img.Status)
	case img.ContentHash() == "":
		return LookupResult{}, nonRetryable(ErrTypeImageNoHash, "image %s publishes no checksum to verify its data against", in.ImageID)
	case img.VirtualSize > int64(in.SizeGB)*gib:
		return LookupResult{}, nonRetryable(ErrTypeVolumeTooSmall, "image %s needs %d bytes, the volume has %d GiB", in.ImageID, img.VirtualSize, in.SizeGB)
	}
	if _, err := ShouldFlatten(a.Config.FlattenPolicy, 1); err != nil {
		return LookupResult{}, nonRetryable(ErrTypeUnsupported, "%v", err)
	}
	res := LookupResult{
		Image: ImageRef{
			ID: img.ID, Size: img.Size, VirtualSize: img.VirtualSize, HashAlgo: img.HashAlgo, HashValue: img.HashValue,
			Checksum: img.Checksum, ContentHash: img.ContentHash(), UpdatedAt: img.UpdatedAt,
		},
		Pool:          a.Config.Pool,
		FlattenPolicy: a.Config.FlattenPolicy,
	}
	if !a.Config.ImageVolumeCacheEnabled {
		res.Reason = ReasonDisabled
		return res, nil
	}
	entry, err := a.Store.FindCacheEntry(ctx, a.Config.Host, a.Config.Pool, img.ID, res.Image.ContentHash)
	switch {
	case errors.Is(err, models.ErrNotFound):
	case err != nil:
		return LookupResult{}, err
	case entry.State == models.EntryReady:
		parent := CacheParent(a.Config.Pool, entry.VolumeID)
		ok, err := a.Storage.SnapshotExists(ctx, parent.Pool, parent.Image, parent.Snapshot)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return LookupResult{}, err
		}
		if ok {
			if err := a.Store.TouchCacheEntry(ctx, entry.ID, time.Now().UTC()); err != nil {
				return LookupResult{}, err
			}
			res.Hit, res.Parent, res.EntryID = true, parent, entry.ID
			return res, nil
		}
		// The cache volume is gone (deleted behind our back): drop its rows so this miss can
		// fill the cache again.
		a.log(ctx).Warn("cache volume disappeared; falling back to download", "entry", entry.ID, "volume", entry.VolumeID)
		if err := a.Store.DeleteCacheEntry(ctx, entry); err != nil {
			return LookupResult{}, err
		}
	default: // filling
		res.Reason = ReasonFillInProgress
		if entry.FillWorkflowID == activity.GetInfo(ctx).WorkflowExecution.ID {
			res.Cacheable = true // our own reservation, from an earlier attempt
			res.Reason = ""
		}
		return res, nil
	}
	if max := int64(a.Config.ImageVolumeCacheMaxSizeGB) * gib; max > 0 && img.Size > max {
		res.Reason = ReasonTooBig
		return res, nil
	}
	res.Cacheable = true
	return res, nil
}

// EvictLRU makes room for an image in this host's cache, evicting the least recently used
// entries that are ready and not pinned until both the size and count limits allow one more,
// then reserves the slot as a "filling" entry owned by the internal project. When nothing more
// can be evicted the result says so and the provision goes on without caching.
func (a *Activities) EvictLRU(ctx context.Context, in EvictInput) (EvictResult, error) {
	cfg := a.Config
	// Crash recovery: an earlier attempt of this workflow may already hold the reservation.
	if e, err := a.Store.FindCacheEntry(ctx, cfg.Host, cfg.Pool, in.Image.ID, in.Image.ContentHash); err == nil {
		if e.FillWorkflowID == in.FillWorkflowID {
			return EvictResult{Reserved: true, EntryID: e.ID, CacheVolumeID: e.VolumeID}, nil
		}
		return EvictResult{Reason: ReasonFillInProgress}, nil
	} else if !errors.Is(err, models.ErrNotFound) {
		return EvictResult{}, err
	}

	maxBytes := int64(cfg.ImageVolumeCacheMaxSizeGB) * gib
	var res EvictResult
	for {
		u, err := a.Store.CacheUsage(ctx, cfg.Host, cfg.Pool)
		if err != nil {
			return res, err
		}
		fitsCount := cfg.ImageVolumeCacheMaxCount <= 0 || u.Count+1 <= int64(cfg.ImageVolumeCacheMaxCount)
		fitsSize := maxBytes <= 0 || u.Bytes+in.Image.Size <= maxBytes
		if fitsCount && fitsSize {
			break
		}
		victim, err := a.lruVictim(ctx)
		if err != nil {
			return res, err
		}
		if victim == nil {
			res.Reason = ReasonFull
			return res, nil
		}
		if err := a.evict(ctx, victim); err != nil {
			return res, err
		}
		res.Evicted = append(res.Evicted, victim.ID)
		activity.RecordHeartbeat(ctx, len(res.Evicted))
	}

	now := time.Now().UTC()
	cacheVol := &models.Volume{
		ID: uuid.NewString(), ProjectID: cfg.CinderInternalTenantProject, UserID: cfg.CinderInternalTenantUser,
		Name: "image-" + in.Image.ID, SizeGB: models.GiBCeil(in.Image.Size), ImageID: in.Image.ID,
		Host: cfg.Host, Pool: cfg.Pool, Status: models.StatusCreating, WorkflowID: in.FillWorkflowID,
	}
	if err := a.Store.CreateVolume(ctx, cacheVol); err != nil {
		return res, err
	}
	entry := &models.CacheEntry{
		Host: cfg.Host, ClusterName: cfg.ClusterName, Pool: cfg.Pool, ImageID: in.Image.ID,
		ImageUpdatedAt: in.Image.UpdatedAt, ContentHash: in.Image.ContentHash, VolumeID: cacheVol.ID,
		Size: models.GiBCeil(in.Image.Size), SizeBytes: in.Image.Size, LastUsed: now,
		State: models.EntryFilling, FillWorkflowID: in.FillWorkflowID,
	}
	if err := a.Store.InsertCacheEntry(ctx, entry); err != nil {
		_ = a.Store.DeleteVolume(ctx, cacheVol.ID)
		if errors.Is(err, models.ErrDuplicate) {
			// Another provision reserved the same image a moment ago.
			res.Reason = ReasonFillInProgress
			return res, nil
		}
		return res, err
	}
	res.Reserved, res.EntryID, res.CacheVolumeID = true, entry.ID, cacheVol.ID
	a.log(ctx).Info("cache slot reserved", "image_id", in.Image.ID, "entry", entry.ID, "evicted", len(res.Evicted))
	return res, nil
}

// lruVictim is the least recently used entry that may be evicted, or nil.
func (a *Activities) lruVictim(ctx context.Context) (*models.CacheEntry, error) {
	entries, err := a.Store.ListCacheEntries(ctx, a.Config.Host)
	if err != nil {
		return nil, err
	}
	for i := range entries {
		e := &entries[i]
		if e.Pool == a.Config.Pool && e.State == models.EntryReady && !e.Pinned {
			return e, nil
		}
	}
	return nil, nil
}

// evict removes a cache volume and then its rows. Clones made from it keep working: with
// format-2 clones the parent goes to the trash until its last child is gone.
func (a *Activities) evict(ctx context.Context, e *models.CacheEntry) error {
	name := models.RBDName(e.VolumeID)
	trashed, err := a.Storage.Remove(ctx, a.Config.Pool, name)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("evict cache entry %d: %w", e.ID, err)
	}
	if err := a.Store.DeleteCacheEntry(ctx, e); err != nil {
		return err
	}
	a.log(ctx).Info("evicted cache entry", "entry", e.ID, "image_id", e.ImageID, "volume", e.VolumeID, "trashed", trashed)
	return nil
}

// newHash returns the digest Glance published for the image and its expected hex value.
func newHash(img ImageRef) (hash.Hash, string, error) {
	switch {
	case img.HashAlgo == "sha512" && img.HashValue != "":
		return sha512.New(), img.HashValue, nil
	case img.HashAlgo == "sha256" && img.HashValue != "":
		return sha256.New(), img.HashValue, nil
	case img.Checksum != "":
		return md5.New(), img.Checksum, nil
	}
	return nil, "", nonRetryable(ErrTypeImageNoHash, "image %s: no supported hash published (os_hash_algo %q)", img.ID, img.HashAlgo)
}

// StagingName is where an image's bytes land before import.
func StagingName(target string) string { return target + ".part" }

// DownloadProgress is the durable progress a download heartbeats: every byte below Offset is in
// the staging image, and HashState is the digest's state at exactly that point.
type DownloadProgress struct {
	Offset    int64
	Total     int64
	HashState []byte
}

// DownloadImage streams the image from the image service into a staging RBD image, verifying
// its hash and size as the bytes pass. It heartbeats its durable progress; a retried attempt
// (after a worker crash, say) resumes from there with a ranged request instead of from zero. On a
// mismatch the staging image is removed and the error is final.
func (a *Activities) DownloadImage(ctx context.Context, in DownloadInput) (DownloadResult, error) {
	staging := StagingName(in.Target)
	// Already imported by an earlier attempt: nothing to do.
	if _, err := a.Storage.Stat(ctx, in.Pool, in.Target); err == nil {
		if _, err := a.Storage.Stat(ctx, in.Pool, staging); errors.Is(err, storage.ErrNotFound) {
			return DownloadResult{}, nil
		}
	}
	h, want, err := newHash(in.Image)
	if err != nil {
		return DownloadResult{}, err
	}
	offset := a.resumePoint(ctx, in, staging, h)
	if offset == 0 {
		// Whatever an earlier attempt left cannot be trusted: start again.
		if _, err := a.Storage.Remove(ctx, in.Pool, staging); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return DownloadResult{}, err
		}
		if err := a.Storage.Create(ctx, in.Pool, staging, uint64(in.Image.Size)); err != nil {
			return DownloadResult{}, err
		}
	}
	fail := func(err error) (DownloadResult, error) {
		a.removeQuietly(ctx, in.Pool, staging)
		return DownloadResult{}, err
	}
	w, err := a.Storage.OpenWriter(ctx, in.Pool, staging)
	if err != nil {
		return fail(err)
	}
	body, err := a.Images.Open(ctx, in.Image.ID, offset)
	if err != nil {
		w.Close()
		if errors.Is(err, imagesource.ErrNotFound) {
			return fail(nonRetryable(ErrTypeImageNotFound, "image %s not found", in.Image.ID))
		}
		return DownloadResult{}, err // transient: keep the staging image for the next attempt
	}
	// The image service may send more than it declared; never write past the staging image.
	src := &limitCheck{r: body, limit: in.Image.Size - offset}
	res, err := importer.Stream(ctx, src, w, importer.StreamOptions{
		Offset: offset,
		Hash:   h,
		Progress: func(done int64, state []byte) {
			activity.RecordHeartbeat(ctx, DownloadProgress{Offset: done, Total: in.Image.Size, HashState: state})
		},
	})
	body.Close()
	if cerr := w.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, errTooLong) {
			return fail(nonRetryable(ErrTypeSizeMismatch, "image %s: more data than its declared size %d", in.Image.ID, in.Image.Size))
		}
		return DownloadResult{}, err // the heartbeated progress lets the next attempt resume
	}
	if got := offset + res.Bytes; got != in.Image.Size {
		// A short body is a broken transfer as often as a lying image: let Temporal retry it.
		return DownloadResult{}, fmt.Errorf("image %s: received %d bytes, expected %d", in.Image.ID, got, in.Image.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fail(nonRetryable(ErrTypeHashMismatch, "image %s: data does not match its published hash: expected %s, got %s", in.Image.ID, want, got))
	}
	a.log(ctx).Info("downloaded", "image_id", in.Image.ID, "bytes", res.Bytes, "resumed_from", offset, "zero_skipped", res.ZeroSkipped)
	return DownloadResult{Bytes: res.Bytes, ResumedFrom: offset, ZeroSkipped: res.ZeroSkipped}, nil
}

// resumePoint returns where an interrupted download can continue — the offset of its last
// heartbeat, with h restored to the digest state there — or 0 to start over.
func (a *Activities) resumePoint(ctx context.Context, in DownloadInput, staging string, h hash.Hash) int64 {
	if !activity.HasHeartbeatDetails(ctx) {
		return 0
	}
	var p DownloadProgress
	if err := activity.GetHeartbeatDetails(ctx, &p); err != nil || p.Offset <= 0 || p.Offset > in.Image.Size {
		return 0
	}
	// The staging image must be the one that attempt wrote into.
	info, err := a.Storage.Stat(ctx, in.Pool, staging)
	if err != nil || int64(info.Size) != in.Image.Size {
		return 0
	}
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok || u.UnmarshalBinary(p.HashState) != nil {
		h.Reset()
		return 0
	}
	a.log(ctx).Info("resuming download", "image_id", in.Image.ID, "offset", p.Offset)
	return p.Offset
}

var errTooLong = errors.New("more data than declared")

// limitCheck passes at most limit bytes and fails if the source has more.
type limitCheck struct {
	r     io.Reader
	limit int64
	n     int64
}

func (l *limitCheck) Read(p []byte) (int, error) {
	if l.n >= l.limit {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errTooLong
		}
		return 0, io.EOF
	}
	if rest := l.limit - l.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	return n, err
}
