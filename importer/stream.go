// Package importer moves image bytes into block storage: a streaming copy that hashes while it
// writes, skips all-zero blocks so the target stays thin, and keeps a fixed number of buffers in
// flight; and detection of an image's real format from its bytes.
//
// It imports none of imagevol's packages.
package importer

import (
	"bytes"
	"context"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// StreamOptions tunes Stream. Zero values take the defaults.
type StreamOptions struct {
	BlockSize int // bytes per buffer; default 4 MiB (one RADOS object)
	// Buffers in flight; default 8, so memory is bounded by BlockSize×Buffers. More buffers and
	// writers buy nothing on a small host: the hash bounds the rate, and librbd's memory grows
	// with the writes in flight (16 buffers and 8 writers measured ~60 MiB more RSS, no faster).
	Buffers int
	Writers int   // concurrent WriteAt calls; default 6
	Offset  int64 // where in dst the first byte of src goes (for a resumed copy)
	// Hash, when set, is fed every byte in order (it may already hold the state of a resumed copy).
	Hash hash.Hash
	// Progress, when set, is called with the count of bytes read, hashed and written so far
	// (Offset included) — every byte below it is in dst — and Hash's marshalled state at exactly
	// that point (nil if Hash cannot be marshalled). Together they are enough to resume. Calls
	// are serialised.
	Progress func(done int64, hashState []byte)
}

// StreamResult reports what Stream did.
type StreamResult struct {
	Bytes         int64 // bytes copied by this call
	ZeroSkipped   int64 // of those, bytes not written because they were all zero
	BlocksWritten int64
}

type block struct {
	buf       []byte
	off       int64
	n         int
	refs      atomic.Int32
	hashState []byte // Hash's state after this block, set by the hasher
	// lost is set by the writer when the block is not in dst: its write failed, or it was
	// skipped because the copy had already failed. Such a block never becomes durable.
	lost bool
}

// buffers keeps the buffers of finished copies for the next one. A worker imports image after
// image; fresh buffers every time would leave the last copy's to the garbage collector, which
// lets the heap grow to twice what is live before it runs, and the worker's memory with it.
var buffers sync.Pool // of *[]byte

// getBuffer returns a buffer of size bytes, a kept one when it has that size.
func getBuffer(size int) []byte {
	if p, ok := buffers.Get().(*[]byte); ok && len(*p) == size {
		return *p
	}
	return make([]byte, size)
}

// putBuffer keeps b for a later copy.
func putBuffer(b []byte) { buffers.Put(&b) }

// zeros is what a block is compared with, a slice at a time: telling a zero block needs no
// buffer of a block's size.
var zeros [64 << 10]byte

// isZero says whether p holds only zero bytes.
func isZero(p []byte) bool {
	for len(p) > 0 {
		n := min(len(p), len(zeros))
		if !bytes.Equal(p[:n], zeros[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}

type doneBlock struct {
	n         int
	hashState []byte
}

// Stream copies src to dst from opts.Offset on until src ends. Reading, hashing and writing
// overlap: the reader fills free buffers, one goroutine hashes them in order, several write
// them (zero blocks are skipped: dst must read as zeros where never written, as a new RBD
// image does). A block's buffer returns to the pool once it is both hashed and written.
func Stream(ctx context.Context, src io.Reader, dst io.WriterAt, opts StreamOptions) (StreamResult, error) {
	if opts.BlockSize <= 0 {
		opts.BlockSize = 4 << 20
	}
	if opts.Buffers <= 0 {
		opts.Buffers = 8
	}
	if opts.Writers <= 0 {
		opts.Writers = 6
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	free := make(chan *block, opts.Buffers)
	for i := 0; i < opts.Buffers; i++ {
		free <- &block{buf: getBuffer(opts.BlockSize)}
	}
	// Every block is back in free once the goroutines are done: its buffer serves the next copy.
	defer func() {
		for len(free) > 0 {
			putBuffer((<-free).buf)
		}
	}()
	toHash := make(chan *block, opts.Buffers)
	toWrite := make(chan *block, opts.Buffers)

	var res StreamResult
	var zeroSkipped, written atomic.Int64
	// done tracks durability: blocks complete out of order, so count the contiguous prefix.
	var (
		doneMu   sync.Mutex
		finished = map[int64]doneBlock{}
		durable  = opts.Offset
	)
	// release hands a block back once both the hasher and a writer are done with it. Only a block
	// that is in dst joins the durable prefix; a lost one stops it for good, so Progress never
	// reports an offset the next attempt would resume after with a hole below it.
	release := func(b *block) {
		if b.refs.Add(-1) != 0 {
			return
		}
		doneMu.Lock()
		if !b.lost {
			finished[b.off] = doneBlock{b.n, b.hashState}
		}
		var state []byte
		advanced := false
		for {
			d, ok := finished[durable]
			if !ok {
				break
			}
			delete(finished, durable)
			durable += int64(d.n)
			state, advanced = d.hashState, true
		}
		if advanced && opts.Progress != nil {
			opts.Progress(durable, state)
		}
		doneMu.Unlock()
		free <- b
	}
	marshaler, _ := opts.Hash.(encoding.BinaryMarshaler)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // hasher: the only stage that must see bytes in order
		defer wg.Done()
		for b := range toHash {
			if opts.Hash != nil {
				opts.Hash.Write(b.buf[:b.n])
			}
			b.hashState = nil
			if marshaler != nil && opts.Progress != nil {
				b.hashState, _ = marshaler.MarshalBinary()
			}
			release(b)
		}
	}()
	for i := 0; i < opts.Writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range toWrite {
				data := b.buf[:b.n]
				b.lost = false
				switch {
				case isZero(data):
					// dst reads as zeros where never written: skipped on purpose, and durable.
					zeroSkipped.Add(int64(b.n))
				case ctx.Err() != nil:
					b.lost = true
				default:
					if _, err := dst.WriteAt(data, b.off); err != nil {
						b.lost = true
						cancel(fmt.Errorf("importer: write at %d: %w", b.off, err))
					} else {
						written.Add(1)
					}
				}
				release(b)
			}
		}()
	}

	var readErr error
	off := opts.Offset
	for readErr == nil {
		var b *block
		select {
		case b = <-free:
		case <-ctx.Done():
			readErr = context.Cause(ctx)
			continue
		}
		n, err := io.ReadFull(src, b.buf)
		if n > 0 {
			b.off, b.n = off, n
			b.refs.Store(2)
			off += int64(n)
			res.Bytes += int64(n)
			toHash <- b
			toWrite <- b
		} else {
			free <- b
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			readErr = io.EOF
		default:
			readErr = fmt.Errorf("importer: read at %d: %w", off, err)
		}
	}
	close(toHash)
	close(toWrite)
	wg.Wait()
	res.ZeroSkipped = zeroSkipped.Load()
	res.BlocksWritten = written.Load()
	if cause := context.Cause(ctx); cause != nil {
		return res, cause
	}
	if readErr != io.EOF {
		return res, readErr
	}
	return res, nil
}
