package importer

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDisk is an in-memory io.WriterAt that records which offsets were written.
type memDisk struct {
	mu     sync.Mutex
	data   []byte
	writes map[int64]int
	failAt int64
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if m.failAt >= 0 && off == m.failAt {
		return 0, errors.New("disk full")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	m.writes[off] = len(p)
	return len(p), nil
}

func pattern(size int, block int) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	for off := 0; off < size; off += 2 * block { // data, zeros, data, zeros, ...
		_, _ = r.Read(b[off:min(off+block, size)])
	}
	return b
}

func TestStream(t *testing.T) {
	const block = 64 << 10
	for _, tc := range []struct {
		name   string
		size   int
		offset int64
	}{
		{"aligned", 16 * block, 0},
		{"short tail block", 16*block + 123, 0},
		{"smaller than one block", 1000, 0},
		{"empty", 0, 0},
		{"resumed at an offset", 8 * block, 4 * block},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := pattern(tc.size, block)
			disk := &memDisk{data: make([]byte, int64(tc.size)+tc.offset), writes: map[int64]int{}, failAt: -1}
			h := sha512.New()
			var last int64
			res, err := Stream(context.Background(), bytes.NewReader(src), disk, StreamOptions{
				BlockSize: block, Buffers: 4, Writers: 3, Offset: tc.offset, Hash: h,
				Progress: func(done int64, _ []byte) {
					if done < last {
						t.Errorf("progress went back from %d to %d", last, done)
					}
					last = done
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Bytes != int64(tc.size) {
				t.Fatalf("copied %d bytes, want %d", res.Bytes, tc.size)
			}
			if !bytes.Equal(disk.data[tc.offset:], src) {
				t.Fatal("written bytes differ from the source")
			}
			want := sha512.Sum512(src)
			if !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatal("hash differs from the source's")
			}
			if tc.size > 0 && last != tc.offset+int64(tc.size) {
				t.Fatalf("final progress %d, want %d", last, tc.offset+int64(tc.size))
			}
			// Every other block is zeros and must not have been written.
			var zeroBlocks int64
			for off := 0; off < tc.size; off += block {
				end := min(off+block, tc.size)
				isZero := bytes.Equal(src[off:end], make([]byte, end-off))
				_, written := disk.writes[tc.offset+int64(off)]
				if isZero == written {
					t.Fatalf("block at %d: zero=%v written=%v", off, isZero, written)
				}
				if isZero {
					zeroBlocks += int64(end - off)
				}
			}
			if res.ZeroSkipped != zeroBlocks {
				t.Fatalf("ZeroSkipped %d, want %d", res.ZeroSkipped, zeroBlocks)
			}
		})
	}
}

func TestStreamWriteError(t *testing.T) {
	const block = 4096
	src := bytes.Repeat([]byte{1}, 64*block)
	disk := &memDisk{data: make([]byte, len(src)), writes: map[int64]int{}, failAt: 10 * block}
	_, err := Stream(context.Background(), bytes.NewReader(src), disk, StreamOptions{BlockSize: block, Buffers: 2, Writers: 2})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Fatalf("err = %v, want the write error", err)
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrClosedPipe
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

func TestStreamReadError(t *testing.T) {
	disk := &memDisk{data: make([]byte, 1<<20), writes: map[int64]int{}, failAt: -1}
	_, err := Stream(context.Background(), &failingReader{n: 10000}, disk, StreamOptions{BlockSize: 4096})
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("err = %v, want the read error", err)
	}
}

func TestStreamCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	disk := &memDisk{data: make([]byte, 1<<20), writes: map[int64]int{}, failAt: -1}
	_, err := Stream(ctx, bytes.NewReader(make([]byte, 1<<20)), disk, StreamOptions{BlockSize: 4096})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// A copy cut short resumes from the last reported point with the reported hash state and ends
// with the same bytes and the same digest as an uninterrupted one.
func TestStreamResume(t *testing.T) {
	const block = 4096
	src := pattern(40*block+77, block)
	disk := &memDisk{data: make([]byte, len(src)), writes: map[int64]int{}, failAt: -1}
	var done int64
	var state []byte
	h := sha512.New()
	_, err := Stream(context.Background(), io.MultiReader(bytes.NewReader(src[:17*block+5]), &failingReader{}), disk,
		StreamOptions{BlockSize: block, Buffers: 3, Writers: 2, Hash: h, Progress: func(d int64, s []byte) { done, state = d, s }})
	if err == nil {
		t.Fatal("the cut-short copy did not fail")
	}
	if done == 0 || done > 17*block+5 || state == nil {
		t.Fatalf("progress %d (state %d bytes)", done, len(state))
	}
	h2 := sha512.New()
	if err := h2.(interface{ UnmarshalBinary([]byte) error }).UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	res, err := Stream(context.Background(), bytes.NewReader(src[done:]), disk, StreamOptions{BlockSize: block, Offset: done, Hash: h2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(src))-done {
		t.Fatalf("resumed copy moved %d bytes, want the remaining %d", res.Bytes, int64(len(src))-done)
	}
	want := sha512.Sum512(src)
	if !bytes.Equal(h2.Sum(nil), want[:]) || !bytes.Equal(disk.data, src) {
		t.Fatal("resumed copy differs from the source")
	}
}

// faultyDisk is an in-memory io.WriterAt whose write at failAt fails, as a write to a storage
// cluster can (an OSD timing out, say). With holdFor set, that write first waits until the write
// at holdFor has landed, so a later block is durable before the earlier one fails.
type faultyDisk struct {
	mu      sync.Mutex
	data    []byte
	failAt  int64
	holdFor int64
	landed  chan struct{} // closed once the write at holdFor has landed
}

func (d *faultyDisk) WriteAt(p []byte, off int64) (int, error) {
	if off == d.failAt {
		if d.holdFor >= 0 {
			select {
			case <-d.landed:
			case <-time.After(time.Minute):
				return 0, errors.New("the later block was never written")
			}
		}
		return 0, errors.New("osd timed out")
	}
	d.mu.Lock()
	copy(d.data[off:], p)
	d.mu.Unlock()
	if off == d.holdFor {
		close(d.landed)
	}
	return len(p), nil
}

// A block counts as durable only once its write succeeded or it was an all-zero block skipped
// on purpose: a failed write, and blocks skipped because the copy was already failing, never
// advance the reported progress. Resuming from the last report, with its hash state, over a
// working disk then ends with the source's bytes and digest.
func TestStreamFailedWriteIsNotDurable(t *testing.T) {
	const (
		block = 4096
		k     = 9 // the block whose write fails
	)
	src := pattern(24*block+100, block) // blocks 1, 3, 5, 7 ... are zeros
	for i := k - 1; i < k+6; i++ {      // data around k, so the blocks after it are written
		src[i*block] = 0xAA
	}
	for _, tc := range []struct {
		name    string
		writers int
		buffers int
		hold    bool // a block after k lands before k fails
	}{
		{"one writer", 1, 2, false},
		{"two writers", 2, 4, false},
		{"a later block lands first", 2, 4, true},
		{"many writers", 6, 8, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := &faultyDisk{data: make([]byte, len(src)), failAt: k * block, holdFor: -1}
			if tc.hold {
				disk.holdFor, disk.landed = (k+1)*block, make(chan struct{})
			}
			var done int64
			var state []byte
			_, err := Stream(context.Background(), bytes.NewReader(src), disk, StreamOptions{
				BlockSize: block, Buffers: tc.buffers, Writers: tc.writers, Hash: sha512.New(),
				Progress: func(d int64, s []byte) {
					if d > k*block {
						t.Errorf("progress reported %d, beyond the failed block at %d", d, k*block)
					}
					done, state = d, s
				},
			})
			if err == nil || !strings.Contains(err.Error(), "osd timed out") {
				t.Fatalf("err = %v, want the write error", err)
			}
			if (tc.writers == 1 || tc.hold) && done != k*block {
				// Every block before k was written before k failed: by the one writer, or, while
				// k's write waited for k+1's, by the writer that then took k+1.
				t.Fatalf("last progress %d, want %d", done, k*block)
			}
			h := sha512.New()
			if done > 0 {
				if err := h.(interface{ UnmarshalBinary([]byte) error }).UnmarshalBinary(state); err != nil {
					t.Fatal(err)
				}
			}
			disk.failAt, disk.holdFor = -1, -1
			if _, err := Stream(context.Background(), bytes.NewReader(src[done:]), disk, StreamOptions{BlockSize: block, Offset: done, Hash: h}); err != nil {
				t.Fatal(err)
			}
			want := sha512.Sum512(src)
			if !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatal("the resumed copy's digest differs from the source's")
			}
			if !bytes.Equal(disk.data, src) {
				for off := 0; off < len(src); off += block {
					if !bytes.Equal(disk.data[off:min(off+block, len(src))], src[off:min(off+block, len(src))]) {
						t.Fatalf("the resumed copy differs from the source at block %d (resumed from %d)", off/block, done)
					}
				}
			}
		})
	}
}

// A copy cancelled from outside reports no block it skipped because of the cancellation.
func TestStreamCancelledMidwayIsNotDurable(t *testing.T) {
	const block = 4096
	src := bytes.Repeat([]byte{7}, 32*block)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	disk := &cancellingDisk{data: make([]byte, len(src)), cancelAt: 5 * block, cancel: cancel}
	var done int64
	_, err := Stream(ctx, bytes.NewReader(src), disk, StreamOptions{BlockSize: block, Buffers: 4, Writers: 2,
		Progress: func(d int64, _ []byte) { done = d }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	for off := int64(0); off < done; off += block {
		if !bytes.Equal(disk.data[off:off+block], src[off:off+block]) {
			t.Fatalf("progress %d covers block %d, which was never written", done, off/block)
		}
	}
}

// cancellingDisk cancels the copy's context while writing the block at cancelAt (written).
type cancellingDisk struct {
	mu       sync.Mutex
	data     []byte
	cancelAt int64
	cancel   context.CancelFunc
}

func (d *cancellingDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.data[off:], p)
	if off == d.cancelAt {
		d.cancel()
	}
	return len(p), nil
}

func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, len(zeros) - 1, len(zeros), len(zeros) + 1, 4<<20 + 3} {
		p := make([]byte, n)
		if !isZero(p) {
			t.Errorf("%d zero bytes: not zero", n)
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if n == 0 {
				break
			}
			p[i] = 1
			if isZero(p) {
				t.Errorf("%d bytes with byte %d set: zero", n, i)
			}
			p[i] = 0
		}
	}
}
