package activities

import (
	"cmp"
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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/metrics"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

// Activities carries the dependencies of every step of one storage host.
type Activities struct {
	Store   *models.Store
	Storage storage.Storage
	Images  imagesource.Source
	// Temporal starts and awaits the single-flight cache fills (JoinFill).
	Temporal client.Client
	Config   Config
	Logger   *slog.Logger
	// Metrics counts cache events and imported bytes for Prometheus; nil counts nothing.
	Metrics *metrics.Registry
	// Converter runs the host's qemu-img conversions; nil: one made from Config on first use.
	Converter *Converter
	// Identity names this worker process in a download's progress (worker.HostIdentity), and
	// FenceWriter, when set, is given the writer of the progress a download resumes from before
	// it opens the staging image: a dead writer still holds the image's exclusive lock until
	// its Ceph client is fenced.
	Identity    string
	FenceWriter func(writer string)

	convOnce sync.Once
	conv     *Converter
	convErr  error
}

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
		// A provision's and a deletion's workflow IDs name their volume; other workflows
		// (fills, evictions) log the volumes they touch themselves.
		if id, ok := contract.DeletedVolume(info.WorkflowExecution.ID); ok && info.WorkflowType.Name == contract.DeleteVolumeWorkflow {
			l = l.With("volume_id", id)
		} else if info.WorkflowType.Name == "CreateVolumeFromImage" {
			l = l.With("volume_id", info.WorkflowExecution.ID)
		}
	}
	return l.With("host", a.Config.Host)
}

// LookupCache reads the image's metadata and looks for a ready cache entry of its content: on
// this host first, then on any other host of the same Ceph cluster (a clone can cross pools).
// Entries of an image that is gone, deactivated or whose content changed are evicted on the way.
func (a *Activities) LookupCache(ctx context.Context, in contract.LookupInput) (contract.LookupResult, error) {
	img, err := a.imageOf(ctx, in)
	switch {
	case errors.Is(err, imagesource.ErrNotFound):
		a.invalidateImage(ctx, in.ImageID)
		return contract.LookupResult{}, nonRetryable(contract.ErrTypeImageNotFound, "image %s not found", in.ImageID)
	case err != nil:
		return contract.LookupResult{}, err
	case img.Status != imagesource.StatusActive:
		a.invalidateImage(ctx, in.ImageID)
		return contract.LookupResult{}, nonRetryable(contract.ErrTypeImageNotActive, "image %s is %s, not active", in.ImageID, img.Status)
	case img.ContentHash() == "":
		return contract.LookupResult{}, nonRetryable(contract.ErrTypeImageNoHash, "image %s publishes no checksum to verify its data against", in.ImageID)
	case !in.Prewarm && models.ExceedsGiB(img.VirtualSize, int64(in.SizeGB)):
		return contract.LookupResult{}, nonRetryable(contract.ErrTypeVolumeTooSmall, "image %s needs %d bytes, the volume has %d GiB", in.ImageID, img.VirtualSize, in.SizeGB)
	}
	if _, err := ShouldFlatten(a.Config.FlattenPolicy, 1); err != nil {
		return contract.LookupResult{}, nonRetryable(contract.ErrTypeUnsupported, "%v", err)
	}
	res := contract.LookupResult{
		Image: contract.ImageRef{
			ID: img.ID, Size: img.Size, VirtualSize: img.VirtualSize, HashAlgo: img.HashAlgo, HashValue: img.HashValue,
			Checksum: img.Checksum, ContentHash: img.ContentHash(), UpdatedAt: img.UpdatedAt,
		},
		Cluster:       a.Config.ClusterName,
		Pool:          a.Config.Pool,
		FlattenPolicy: a.Config.FlattenPolicy,
	}
	if !a.Config.ImageVolumeCacheEnabled {
		res.Reason = contract.ReasonDisabled
		return res, nil
	}
	entries, err := a.Store.ListEntriesOfImage(ctx, img.ID)
	if err != nil {
		return contract.LookupResult{}, err
	}
	// A new upload under the same image id is new content: its old entries are stale.
	a.invalidate(ctx, entries, res.Image.ContentHash)
	// No Ceph round trip here: the clone finds out if the cache volume vanished, and the
	// provision then looks again.
	entry, err := a.pickReady(ctx, entries, res.Image.ContentHash, false)
	if err != nil {
		return contract.LookupResult{}, err
	}
	if entry != nil {
		if err := a.Store.TouchCacheEntry(ctx, entry.ID, time.Now().UTC()); err != nil {
			return contract.LookupResult{}, err
		}
		if !in.Prewarm {
			a.count(ctx, models.CacheStat{Hits: 1})
		}
		res.Hit, res.Entry = true, refOf(entry)
		return res, nil
	}
	if !in.Prewarm {
		a.count(ctx, models.CacheStat{Misses: 1})
	}
	if max := int64(a.Config.ImageVolumeCacheMaxSizeGB); max > 0 && models.ExceedsGiB(cacheBytes(res.Image), max) {
		res.Reason = contract.ReasonTooBig
		return res, nil
	}
	res.Cacheable = true
	return res, nil
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

// JoinFill starts the fill of an image into the cluster's cache, or joins the one already under
// way, and waits for its result, heartbeating. Every concurrent miss of the same content in the
// cluster waits on the same run, so the image is downloaded once. A failed fill is returned as
// a result (FailureType), not an error, so the provision can decide to download on its own.
//
// Waiting here holds one of the host's step slots for the whole fill, which the fill's own steps
// need too; provisions now register with the fill through RegisterFillWaiter instead. JoinFill
// stays for the runs that were already waiting in it.
func (a *Activities) JoinFill(ctx context.Context, in contract.FillInput) (contract.FillResult, error) {
	id := contract.FillWorkflowID(in.Cluster, in.Image.ID, in.Image.ContentHash)
	var run client.WorkflowRun
	if !in.Deadline.IsZero() && !time.Now().Before(in.Deadline) {
		// Past the provision's deadline (this is a retry, after a worker was gone): start no
		// new fill, take the outcome of the last one, whose failure names what went wrong.
		run = a.Temporal.GetWorkflow(ctx, id, "")
	} else {
		var err error
		if run, err = a.Temporal.ExecuteWorkflow(ctx, contract.FillOptions(id), contract.FillWorkflow, in); err != nil {
			return contract.FillResult{}, fmt.Errorf("start cache fill %s: %w", id, err)
		}
	}
	// The details name the fill, so a status query can follow the provision into it.
	activity.RecordHeartbeat(ctx, id)
	stop := heartbeatEvery(ctx, heartbeatInterval, id)
	defer stop()
	return fillOutcome(ctx, run)
}

// fillOutcome waits for a fill's run to close and returns its outcome; a failed fill is a result
// (FailureType), not an error. Only ctx ending is an error.
func fillOutcome(ctx context.Context, run client.WorkflowRun) (contract.FillResult, error) {
	var res contract.FillResult
	err := run.Get(ctx, &res)
	if err == nil {
		return res, nil
	}
	if ctx.Err() != nil {
		return contract.FillResult{}, err
	}
	return contract.FillFailure(err), nil
}

// closedFillWait bounds how long RegisterFillWaiter waits for the result of a fill it found
// closed: the latest run under the fill's ID may be a new one, still running.
const closedFillWait = 5 * time.Second

// RegisterFillWaiter starts the fill of an image into the cluster's cache, or joins the run under
// way, with the waiter's registration as the signal of a SignalWithStart; the fill signals the
// waiter its result when it ends (contract.FillDoneSignal). It returns at once, so waiting on a fill holds
// no worker slot. Every concurrent miss of the same content in the cluster registers with the
// same run, so the image is downloaded once. With Rejoin, or past the provision's deadline, no
// fill is started: a run under way gets the registration again (a fill counts a waiter once), and
// a fill that has closed is answered from its outcome.
func (a *Activities) RegisterFillWaiter(ctx context.Context, in contract.FillWaitInput) (contract.FillWaitResult, error) {
	id := contract.FillWorkflowID(in.Fill.Cluster, in.Fill.Image.ID, in.Fill.Image.ContentHash)
	res := contract.FillWaitResult{FillWorkflowID: id}
	late := !in.Fill.Deadline.IsZero() && !time.Now().Before(in.Fill.Deadline)
	if !in.Rejoin && !late {
		if _, err := a.Temporal.SignalWithStartWorkflow(ctx, id, contract.FillJoinSignal, in.Waiter, contract.FillOptions(id), contract.FillWorkflow, in.Fill); err != nil {
			return res, fmt.Errorf("start or join cache fill %s: %w", id, err)
		}
		return res, nil
	}
	err := a.Temporal.SignalWorkflow(ctx, id, "", contract.FillJoinSignal, in.Waiter)
	var notFound *serviceerror.NotFound
	switch {
	case err == nil:
		return res, nil
	case !errors.As(err, &notFound):
		return res, fmt.Errorf("join cache fill %s: %w", id, err)
	}
	// Closed, or never started: its outcome, unless a new run has started meanwhile (then the
	// waiter asks again later and registers with that one).
	wctx, cancel := context.WithTimeout(ctx, closedFillWait)
	defer cancel()
	out, err := fillOutcome(wctx, a.Temporal.GetWorkflow(wctx, id, ""))
	if err != nil {
		if ctx.Err() != nil {
			return res, err
		}
		return res, nil
	}
	res.Closed, res.Result = true, out
	return res, nil
}

// heartbeatInterval is how often a long step heartbeats: well inside the data steps' heartbeat
// timeout (workflows' dataStep), which is kept short so that a step of a worker that died is
// retried elsewhere within seconds. The SDK sends at most one heartbeat a second anyway.
const heartbeatInterval = time.Second

// heartbeatEvery records a heartbeat with details every interval until the returned func runs.
func heartbeatEvery(ctx context.Context, interval time.Duration, details any) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				heartbeat(ctx, details)
			}
		}
	}()
	return func() { close(done) }
}

// newHash returns the digest Glance published for the image and its expected hex value.
func newHash(img contract.ImageRef) (hash.Hash, string, error) {
	switch {
	case img.HashAlgo == "sha512" && img.HashValue != "":
		return sha512.New(), img.HashValue, nil
	case img.HashAlgo == "sha256" && img.HashValue != "":
		return sha256.New(), img.HashValue, nil
	case img.Checksum != "":
		return md5.New(), img.Checksum, nil
	}
	return nil, "", nonRetryable(contract.ErrTypeImageNoHash, "image %s: no supported hash published (os_hash_algo %q)", img.ID, img.HashAlgo)
}

// DownloadImage streams the image from the image service into a staging RBD image, verifying
// its hash and size as the bytes pass. It heartbeats its durable progress; a retried attempt
// (after a worker crash, say) resumes from there with a ranged request instead of from zero. On a
// mismatch the staging image is removed and the error is final.
func (a *Activities) DownloadImage(ctx context.Context, in contract.DownloadInput) (contract.DownloadResult, error) {
	staging := contract.StagingName(in.Target)
	// Already imported by an earlier attempt: nothing to do.
	if _, err := a.Storage.Stat(ctx, in.Pool, in.Target); err == nil {
		if _, err := a.Storage.Stat(ctx, in.Pool, staging); errors.Is(err, storage.ErrNotFound) {
			return contract.DownloadResult{}, nil
		}
	}
	h, want, err := newHash(in.Image)
	if err != nil {
		return contract.DownloadResult{}, err
	}
	offset := a.resumePoint(ctx, in, staging, h)
	if offset == 0 {
		// Whatever an earlier attempt left cannot be trusted: start again.
		if _, err := a.Storage.Remove(ctx, in.Pool, staging); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return contract.DownloadResult{}, err
		}
		if err := a.Storage.Create(ctx, in.Pool, staging, uint64(in.Image.Size)); err != nil {
			return contract.DownloadResult{}, err
		}
	}
	fail := func(err error) (contract.DownloadResult, error) {
		a.removeQuietly(ctx, in.Pool, staging)
		return contract.DownloadResult{}, err
	}
	w, err := a.Storage.OpenWriter(ctx, in.Pool, staging)
	if err != nil {
		return fail(err)
	}
	body, err := a.Images.Open(ctx, in.Image.ID, offset)
	if err != nil {
		w.Close()
		if errors.Is(err, imagesource.ErrNotFound) {
			return fail(nonRetryable(contract.ErrTypeImageNotFound, "image %s not found", in.Image.ID))
		}
		return contract.DownloadResult{}, err // transient: keep the staging image for the next attempt
	}
	// The image service may send more than it declared; never write past the staging image.
	src := &limitCheck{r: body, limit: in.Image.Size - offset}
	// Between blocks (the image service slow to answer, say) the last durable progress is sent
	// again, so the step stays alive under its short heartbeat timeout and a crash still
	// resumes from there.
	start := contract.DownloadProgress{Offset: offset, Total: in.Image.Size, Writer: a.Identity}
	if m, ok := h.(encoding.BinaryMarshaler); ok {
		start.HashState, _ = m.MarshalBinary()
	}
	var last atomic.Pointer[contract.DownloadProgress]
	last.Store(&start)
	keepAlive := make(chan struct{})
	go func() {
		t := time.NewTicker(heartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-keepAlive:
				return
			case <-t.C:
				heartbeat(ctx, *last.Load())
			}
		}
	}()
	res, err := importer.Stream(ctx, src, w, importer.StreamOptions{
		Offset: offset,
		Hash:   h,
		Progress: func(done int64, state []byte) {
			p := contract.DownloadProgress{Offset: done, Total: in.Image.Size, HashState: state, Writer: a.Identity}
			last.Store(&p)
			activity.RecordHeartbeat(ctx, p)
		},
	})
	close(keepAlive)
	body.Close()
	if cerr := w.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, errTooLong) {
			return fail(nonRetryable(contract.ErrTypeSizeMismatch, "image %s: more data than its declared size %d", in.Image.ID, in.Image.Size))
		}
		return contract.DownloadResult{}, err // the heartbeated progress lets the next attempt resume
	}
	if got := offset + res.Bytes; got != in.Image.Size {
		// A short body is a broken transfer as often as a lying image: let Temporal retry it.
		return contract.DownloadResult{}, fmt.Errorf("image %s: received %d bytes, expected %d", in.Image.ID, got, in.Image.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fail(nonRetryable(contract.ErrTypeHashMismatch, "image %s: data does not match its published hash: expected %s, got %s", in.Image.ID, want, got))
	}
	a.count(ctx, models.CacheStat{Downloads: 1, BytesDownloaded: res.Bytes})
	a.log(ctx).Info("downloaded", "image_id", in.Image.ID, "bytes", res.Bytes, "resumed_from", offset, "zero_skipped", res.ZeroSkipped)
	return contract.DownloadResult{Bytes: res.Bytes, ResumedFrom: offset, ZeroSkipped: res.ZeroSkipped}, nil
}

// resumePoint returns where an interrupted download can continue — the offset of its last
// heartbeat, with h restored to the digest state there — or 0 to start over.
func (a *Activities) resumePoint(ctx context.Context, in contract.DownloadInput, staging string, h hash.Hash) int64 {
	if !activity.HasHeartbeatDetails(ctx) {
		return 0
	}
	var p contract.DownloadProgress
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
	if p.Writer != "" && p.Writer != a.Identity && a.FenceWriter != nil {
		// Crash recovery: the attempt that wrote this progress may have died with the staging
		// image open; its exclusive lock would stall the writes below for half a minute.
		a.FenceWriter(p.Writer)
	}
	a.log(ctx).Info("resuming download", "image_id", in.Image.ID, "offset", p.Offset, "previous_writer", p.Writer)
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
