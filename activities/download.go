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
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/imagevol/imagevol/contract"
	"github.com/imagevol/imagevol/imagesource"
	"github.com/imagevol/imagevol/importer"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/storage"
)

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
