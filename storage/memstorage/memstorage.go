// Package memstorage implements storage.Storage in memory, for tests that run without Ceph. It
// keeps RBD's semantics where imagevol depends on them: thin images, snapshots, format-2 clones
// that read through to their parent's snapshot, Flatten, a trash that holds a removed image whose
// snapshots still have clones, and UsedBytes counting allocated blocks. Errors wrap the sentinel
// errors of package storage. A Storage is safe for concurrent use, and FailNext and Hook inject
// faults into the next calls of a method.
//
// Of imagevol's packages it imports only storage.
package memstorage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/imagevol/imagevol/storage"
)

// BlockSize is the allocation unit: a write allocates the blocks it touches, and UsedBytes counts
// them.
const BlockSize = 4096

// Method names, as FailNext, Hook and Calls take them.
const (
	MethodCreate         = "Create"
	MethodOpenWriter     = "OpenWriter"
	MethodOpenReader     = "OpenReader"
	MethodStat           = "Stat"
	MethodGrow           = "Grow"
	MethodRename         = "Rename"
	MethodCreateSnapshot = "CreateSnapshot"
	MethodSnapshotExists = "SnapshotExists"
	MethodClone          = "Clone"
	MethodFlatten        = "Flatten"
	MethodRemove         = "Remove"
	MethodPurgeTrashed   = "PurgeTrashed"
	MethodList           = "List"
	MethodUsedBytes      = "UsedBytes"
	// MethodWriteAt is a write through an open WriterAt, with the image's pool and name.
	MethodWriteAt = "WriteAt"
)

// Call describes one call of a Storage method, as a Hook sees it. Name is the image (the source
// image of a Rename, the new clone of a Clone) and Snap the snapshot, where the method has them.
type Call struct {
	Method string
	Pool   string
	Name   string
	Snap   string
	Parent storage.Parent // Clone only
}

// blocks maps a block index to its BlockSize bytes. A block slice is never written in place
// once stored: writes store a new slice, so snapshots can share the map's slices.
type blocks map[uint64][]byte

// snapshot is a frozen view of an image: its blocks, size and parent at the time it was taken.
type snapshot struct {
	name   string
	owner  *image
	size   uint64
	data   blocks
	parent *snapshot // the owner's parent when the snapshot was taken
	// children counts the clones that depend on this snapshot.
	children int
	// removed marks a snapshot removed while clones depend on it (RBD's trash namespace): it
	// keeps serving their reads but no longer exists by name.
	removed bool
}

type image struct {
	pool, name string
	size       uint64
	data       blocks
	parent     *snapshot
	snaps      map[string]*snapshot
	created    time.Time
	open       int // handles not closed
}

// Storage is an in-memory storage.Storage.
type Storage struct {
	mu     sync.Mutex
	pools  map[string]bool // nil: any pool exists
	images map[string]map[string]*image
	trash  map[string][]*image
	calls  map[string]int
	fail   map[string][]error
	hook   func(Call) error
	now    func() time.Time
}

var _ storage.Storage = (*Storage)(nil)

// New returns an empty Storage. With pools, only those pools exist (a call on another fails with
// storage.ErrNotFound, as a missing Ceph pool does); without, any pool name is accepted.
func New(pools ...string) *Storage {
	s := &Storage{
		images: map[string]map[string]*image{},
		trash:  map[string][]*image{},
		calls:  map[string]int{},
		fail:   map[string][]error{},
		now:    func() time.Time { return time.Now().UTC() },
	}
	if len(pools) > 0 {
		s.pools = map[string]bool{}
		for _, p := range pools {
			s.pools[p] = true
		}
	}
	return s
}

// SetClock replaces the clock that stamps images' creation times.
func (s *Storage) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// FailNext makes the next call of method fail with err, without doing anything; calls queue up,
// one error per call.
func (s *Storage) FailNext(method string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[method] = append(s.fail[method], err)
}

// Hook sets a function called before every call (nil removes it): an error it returns fails the
// call without doing anything. It runs without the Storage's lock held, so it may call the
// Storage itself, e.g. to remove an image under a clone.
func (s *Storage) Hook(h func(Call) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

// Calls counts the calls of method so far, failed ones included.
func (s *Storage) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// enter counts a call and returns the fault to inject, if any.
func (s *Storage) enter(ctx context.Context, c Call) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.calls[c.Method]++
	hook := s.hook
	var err error
	if q := s.fail[c.Method]; len(q) > 0 {
		err, s.fail[c.Method] = q[0], q[1:]
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if hook != nil {
		return hook(c)
	}
	return nil
}

func notFound(format string, args ...any) error {
	return fmt.Errorf("memstorage: "+format+": %w", append(args, storage.ErrNotFound)...)
}

// pool returns a pool's images; mu must be held.
func (s *Storage) pool(name string) (map[string]*image, error) {
	if s.pools != nil && !s.pools[name] {
		return nil, notFound("pool %s", name)
	}
	p := s.images[name]
	if p == nil {
		p = map[string]*image{}
		s.images[name] = p
	}
	return p, nil
}

// get returns an image that is not in the trash; mu must be held.
func (s *Storage) get(pool, name string) (*image, error) {
	p, err := s.pool(pool)
	if err != nil {
		return nil, err
	}
	img := p[name]
	if img == nil {
		return nil, notFound("image %s/%s", pool, name)
	}
	return img, nil
}

// Create makes an empty thin image.
func (s *Storage) Create(ctx context.Context, pool, name string, size uint64) error {
	if err := s.enter(ctx, Call{Method: MethodCreate, Pool: pool, Name: name}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.pool(pool)
	if err != nil {
		return err
	}
	if p[name] != nil {
		return fmt.Errorf("memstorage: create %s/%s: %w", pool, name, storage.ErrExists)
	}
	p[name] = &image{pool: pool, name: name, size: size, data: blocks{}, snaps: map[string]*snapshot{}, created: s.now()}
	return nil
}

// readBlock returns block i of an image's head or snapshot view (nil: all zeros).
func readBlock(data blocks, parent *snapshot, size uint64, i uint64) []byte {
	for {
		if i*BlockSize >= size {
			return nil
		}
		if b, ok := data[i]; ok {
			return b
		}
		if parent == nil {
			return nil
		}
		// The parent's view is bounded by its own size (the clone's overlap).
		data, size, parent = parent.data, min(size, parent.size), parent.parent
	}
}

func readAt(data blocks, parent *snapshot, size uint64, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("memstorage: negative offset %d", off)
	}
	if uint64(off) >= size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := size - uint64(off); uint64(n) > rest {
		n = int(rest)
	}
	for done := 0; done < n; {
		pos := uint64(off) + uint64(done)
		i, in := pos/BlockSize, int(pos%BlockSize)
		chunk := min(BlockSize-in, n-done)
		if b := readBlock(data, parent, size, i); b != nil {
			copy(p[done:done+chunk], b[in:in+chunk])
		} else {
			clear(p[done : done+chunk])
		}
		done += chunk
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// handle is an open image: it keeps the image busy until closed, as an open RBD image is.
type handle struct {
	s      *Storage
	img    *image
	closed bool
}

// Close releases the image; closing twice is harmless.
func (h *handle) Close() error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if !h.closed {
		h.closed = true
		h.img.open--
	}
	return nil
}

type writer struct {
	handle
}

func (w *writer) WriteAt(p []byte, off int64) (int, error) {
	if err := w.s.enter(context.Background(), Call{Method: MethodWriteAt, Pool: w.img.pool, Name: w.img.name}); err != nil {
		return 0, err
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.closed {
		return 0, errors.New("memstorage: write to a closed image")
	}
	if off < 0 || uint64(off)+uint64(len(p)) > w.img.size {
		return 0, fmt.Errorf("memstorage: write of %d bytes at %d past the end of %s/%s (%d bytes)", len(p), off, w.img.pool, w.img.name, w.img.size)
	}
	for done := 0; done < len(p); {
		pos := uint64(off) + uint64(done)
		i, in := pos/BlockSize, int(pos%BlockSize)
		chunk := min(BlockSize-in, len(p)-done)
		// Copy on write: the old block may be shared with a snapshot.
		nb := make([]byte, BlockSize)
		if old := readBlock(w.img.data, w.img.parent, w.img.size, i); old != nil {
			copy(nb, old)
		}
		copy(nb[in:in+chunk], p[done:done+chunk])
		w.img.data[i] = nb
		done += chunk
	}
	return len(p), nil
}

// OpenWriter opens an image for writing.
func (s *Storage) OpenWriter(ctx context.Context, pool, name string) (storage.WriterAt, error) {
	if err := s.enter(ctx, Call{Method: MethodOpenWriter, Pool: pool, Name: name}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return nil, err
	}
	img.open++
	return &writer{handle{s: s, img: img}}, nil
}

type reader struct {
	handle
	snap *snapshot // nil: the head
}

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return 0, errors.New("memstorage: read from a closed image")
	}
	if r.snap != nil {
		return readAt(r.snap.data, r.snap.parent, r.snap.size, p, off)
	}
	return readAt(r.img.data, r.img.parent, r.img.size, p, off)
}

func (r *reader) Size() uint64 {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.snap != nil {
		return r.snap.size
	}
	return r.img.size
}

// OpenReader opens an image, or one of its snapshots, read-only.
func (s *Storage) OpenReader(ctx context.Context, pool, name, snap string) (storage.ReaderAt, error) {
	if err := s.enter(ctx, Call{Method: MethodOpenReader, Pool: pool, Name: name, Snap: snap}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return nil, err
	}
	r := &reader{handle: handle{s: s, img: img}}
	if snap != "" {
		if r.snap = img.snaps[snap]; r.snap == nil || r.snap.removed {
			return nil, notFound("snapshot %s/%s@%s", pool, name, snap)
		}
	}
	img.open++
	return r, nil
}

func parentOf(sn *snapshot) *storage.Parent {
	if sn == nil {
		return nil
	}
	return &storage.Parent{Pool: sn.owner.pool, Image: sn.owner.name, Snapshot: sn.name}
}

// Stat describes an image. A clone's parent is named as it was at the clone, even when the
// parent went to the trash since.
func (s *Storage) Stat(ctx context.Context, pool, name string) (storage.ImageInfo, error) {
	if err := s.enter(ctx, Call{Method: MethodStat, Pool: pool, Name: name}); err != nil {
		return storage.ImageInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return storage.ImageInfo{}, err
	}
	return storage.ImageInfo{Pool: pool, Name: name, Size: img.size, Parent: parentOf(img.parent), Created: img.created}, nil
}

// Grow resizes an image to size if it is smaller and returns the size it had.
func (s *Storage) Grow(ctx context.Context, pool, name string, size uint64) (uint64, error) {
	if err := s.enter(ctx, Call{Method: MethodGrow, Pool: pool, Name: name}); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return 0, err
	}
	before := img.size
	img.size = max(img.size, size)
	return before, nil
}

// Rename renames an image within its pool.
func (s *Storage) Rename(ctx context.Context, pool, from, to string) error {
	if err := s.enter(ctx, Call{Method: MethodRename, Pool: pool, Name: from}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, from)
	if err != nil {
		return err
	}
	p := s.images[pool]
	if p[to] != nil {
		return fmt.Errorf("memstorage: rename %s/%s to %s: %w", pool, from, to, storage.ErrExists)
	}
	delete(p, from)
	img.name = to
	p[to] = img
	return nil
}

// CreateSnapshot snapshots an image.
func (s *Storage) CreateSnapshot(ctx context.Context, pool, name, snap string) error {
	if err := s.enter(ctx, Call{Method: MethodCreateSnapshot, Pool: pool, Name: name, Snap: snap}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return err
	}
	if sn := img.snaps[snap]; sn != nil && !sn.removed {
		return fmt.Errorf("memstorage: snapshot %s/%s@%s: %w", pool, name, snap, storage.ErrExists)
	}
	img.snaps[snap] = &snapshot{name: snap, owner: img, size: img.size, data: maps.Clone(img.data), parent: img.parent}
	return nil
}

// SnapshotExists reports whether the image has the named snapshot.
func (s *Storage) SnapshotExists(ctx context.Context, pool, name, snap string) (bool, error) {
	if err := s.enter(ctx, Call{Method: MethodSnapshotExists, Pool: pool, Name: name, Snap: snap}); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return false, err
	}
	sn := img.snaps[snap]
	return sn != nil && !sn.removed, nil
}

// Clone makes a copy-on-write clone of parent's snapshot.
func (s *Storage) Clone(ctx context.Context, parent storage.Parent, pool, name string) error {
	if err := s.enter(ctx, Call{Method: MethodClone, Pool: pool, Name: name, Parent: parent}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pimg, err := s.get(parent.Pool, parent.Image)
	if err != nil {
		return fmt.Errorf("memstorage: clone parent: %w", err)
	}
	sn := pimg.snaps[parent.Snapshot]
	if sn == nil || sn.removed {
		return notFound("clone parent snapshot %s/%s@%s", parent.Pool, parent.Image, parent.Snapshot)
	}
	p, err := s.pool(pool)
	if err != nil {
		return err
	}
	if p[name] != nil {
		return fmt.Errorf("memstorage: clone to %s/%s: %w", pool, name, storage.ErrExists)
	}
	sn.children++
	p[name] = &image{pool: pool, name: name, size: sn.size, data: blocks{}, parent: sn, snaps: map[string]*snapshot{}, created: s.now()}
	return nil
}

// Flatten copies the parent's data into a clone and detaches it.
func (s *Storage) Flatten(ctx context.Context, pool, name string) error {
	if err := s.enter(ctx, Call{Method: MethodFlatten, Pool: pool, Name: name}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return err
	}
	if img.parent == nil {
		return nil
	}
	// Every block the parent chain holds within the image becomes the image's own.
	for sn, size := img.parent, img.size; sn != nil; sn = sn.parent {
		size = min(size, sn.size)
		for i := range sn.data {
			if _, own := img.data[i]; !own && i*BlockSize < size {
				if b := readBlock(img.data, img.parent, img.size, i); b != nil {
					img.data[i] = b
				}
			}
		}
	}
	s.detach(img)
	return nil
}

// detach unlinks an image from its parent's snapshot, which is dropped when it was removed and
// this was its last clone; mu must be held.
func (s *Storage) detach(img *image) {
	sn := img.parent
	if sn == nil {
		return
	}
	img.parent = nil
	sn.children--
	if sn.removed && sn.children == 0 && sn.owner.snaps[sn.name] == sn {
		delete(sn.owner.snaps, sn.name)
	}
}

func hasChildren(img *image) bool {
	for _, sn := range img.snaps {
		if sn.children > 0 {
			return true
		}
	}
	return false
}

// busy reports whether an image cannot be deleted for good: it is open, or clones depend on one
// of its snapshots; mu must be held.
func busy(img *image) bool { return img.open > 0 || hasChildren(img) }

// Remove deletes an image and its snapshots. A busy image — open, or with clones depending on
// one of its snapshots — is moved to the trash instead, as package rbd does when librbd refuses
// the removal (EBUSY or ENOTEMPTY).
func (s *Storage) Remove(ctx context.Context, pool, name string) (bool, error) {
	if err := s.enter(ctx, Call{Method: MethodRemove, Pool: pool, Name: name}); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return false, err
	}
	for n, sn := range img.snaps {
		if sn.children == 0 {
			delete(img.snaps, n)
		} else {
			sn.removed = true
		}
	}
	delete(s.images[pool], name)
	if busy(img) {
		s.trash[pool] = append(s.trash[pool], img)
		return true, nil
	}
	s.detach(img)
	return false, nil
}

// PurgeTrashed deletes trashed images of that name once they are closed and no clone depends
// on them.
func (s *Storage) PurgeTrashed(ctx context.Context, pool, name string) error {
	if err := s.enter(ctx, Call{Method: MethodPurgeTrashed, Pool: pool, Name: name}); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.pool(pool); err != nil {
		return err
	}
	found := false
	for _, img := range s.trash[pool] {
		if img.name != name {
			continue
		}
		found = true
		if busy(img) {
			return fmt.Errorf("memstorage: purge %s/%s: open, or clones depend on it: %w", pool, name, storage.ErrInUse)
		}
	}
	if !found {
		return notFound("%s/%s is not in the trash", pool, name)
	}
	s.trash[pool] = slices.DeleteFunc(s.trash[pool], func(img *image) bool {
		if img.name != name {
			return false
		}
		s.detach(img)
		return true
	})
	return nil
}

// List names the images of a pool (not those in its trash), sorted.
func (s *Storage) List(ctx context.Context, pool string) ([]string, error) {
	if err := s.enter(ctx, Call{Method: MethodList, Pool: pool}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.pool(pool)
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(p)), nil
}

// UsedBytes is the space an image's blocks occupy, its snapshots' included (its parent's not).
func (s *Storage) UsedBytes(ctx context.Context, pool, name string) (uint64, error) {
	if err := s.enter(ctx, Call{Method: MethodUsedBytes, Pool: pool, Name: name}); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return 0, err
	}
	used := maps.Clone(img.data)
	for _, sn := range img.snaps {
		maps.Copy(used, sn.data)
	}
	return uint64(len(used)) * BlockSize, nil
}

// The helpers below let tests look at the state directly; they inject no faults and count no
// calls.

// Exists reports whether pool holds an image of that name (not counting the trash).
func (s *Storage) Exists(pool, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.images[pool][name]
	return ok
}

// Images names the images of a pool, sorted (not counting the trash).
func (s *Storage) Images(pool string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.images[pool]))
}

// Trashed names the images in a pool's trash, sorted.
func (s *Storage) Trashed(pool string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, img := range s.trash[pool] {
		out = append(out, img.name)
	}
	slices.Sort(out)
	return out
}

// Snapshots names an image's snapshots, sorted (not those removed while clones still use them).
func (s *Storage) Snapshots(pool, name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	img := s.images[pool][name]
	if img == nil {
		return nil
	}
	var out []string
	for n, sn := range img.snaps {
		if !sn.removed {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// ReadAll returns the whole content of an image (snap "") or of one of its snapshots.
func (s *Storage) ReadAll(pool, name, snap string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img := s.images[pool][name]
	if img == nil {
		return nil, notFound("image %s/%s", pool, name)
	}
	data, parent, size := img.data, img.parent, img.size
	if snap != "" {
		sn := img.snaps[snap]
		if sn == nil || sn.removed {
			return nil, notFound("snapshot %s/%s@%s", pool, name, snap)
		}
		data, parent, size = sn.data, sn.parent, sn.size
	}
	b := make([]byte, size)
	if _, err := readAt(data, parent, size, b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// OpenHandles counts an image's readers and writers not closed: a test can check that a step
// closed what it opened.
func (s *Storage) OpenHandles(pool, name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if img := s.images[pool][name]; img != nil {
		return img.open
	}
	return 0
}

// Open opens an image as another client would, holding it busy until the returned func runs:
// a removal meanwhile sends it to the trash.
func (s *Storage) Open(pool, name string) (closeFn func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.get(pool, name)
	if err != nil {
		return nil, err
	}
	img.open++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			img.open--
		})
	}, nil
}
