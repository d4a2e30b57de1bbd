package importer

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
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
