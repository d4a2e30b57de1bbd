// Package librbd implements storage.Storage on Ceph RBD through go-ceph (build with -tags pacific
// against Ceph 16). One rados connection serves every pool; I/O contexts are opened once per pool.
//
// It is the only package that links librados and librbd (cgo): code that merely describes a
// Ceph client uses package storage/rbd, which this package equips with librados' reading of
// ceph.conf when it is linked, so binaries that never talk to Ceph (the gateway) stay free of it.
//
// Of imagevol's packages it imports only storage and storage/rbd.
package librbd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	cephrbd "github.com/ceph/go-ceph/rbd"

	"github.com/imagevol/imagevol/storage"
)

// Cluster is a connection to one Ceph cluster.
type Cluster struct {
	conn *rados.Conn

	mu     sync.Mutex
	ioctxs map[string]*rados.IOContext
}

var _ storage.Storage = (*Cluster)(nil)

// Connect reads confPath (a ceph.conf whose [client] section names the keyring) and connects.
func Connect(confPath string) (*Cluster, error) {
	return ConnectAs(confPath, "", "")
}

// ConnectAs connects as the Ceph client user (its id, "imagevol" for client.imagevol; empty
// for the configuration's default, client.admin) with the key in keyring (empty: the keyring
// ceph.conf names). A worker needs only the rbd profile on its pools.
func ConnectAs(confPath, user, keyring string) (*Cluster, error) {
	conn, err := rados.NewConn()
	if user != "" {
		conn, err = rados.NewConnWithUser(user)
	}
	if err != nil {
		return nil, fmt.Errorf("rbd: new connection: %w", err)
	}
	if confPath != "" {
		err = conn.ReadConfigFile(confPath)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		return nil, fmt.Errorf("rbd: read ceph config %q: %w", confPath, err)
	}
	if keyring != "" {
		if err := conn.SetConfigOption("keyring", keyring); err != nil {
			return nil, fmt.Errorf("rbd: set keyring: %w", err)
		}
	}
	// Fail fast instead of hanging forever when the monitors are down.
	// No librbd writeback cache: imports write whole 4 MiB objects from parallel writers, which
	// the cache would only copy once more and hold in the worker's memory.
	for k, v := range map[string]string{"client_mount_timeout": "30", "rados_mon_op_timeout": "30", "rados_osd_op_timeout": "60",
		"rbd_cache": "false"} {
		if err := conn.SetConfigOption(k, v); err != nil {
			return nil, fmt.Errorf("rbd: set %s: %w", k, err)
		}
	}
	if err := conn.Connect(); err != nil {
		return nil, fmt.Errorf("rbd: connect to ceph: %w", err)
	}
	return &Cluster{conn: conn, ioctxs: map[string]*rados.IOContext{}}, nil
}

// Close releases the pools' contexts and the connection.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, io := range c.ioctxs {
		io.Destroy()
	}
	c.ioctxs = map[string]*rados.IOContext{}
	c.conn.Shutdown()
}

// FSID is the cluster's unique id; two hosts on the same cluster report the same one.
func (c *Cluster) FSID() (string, error) { return c.conn.GetFSID() }

func (c *Cluster) ioctx(pool string) (*rados.IOContext, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if io, ok := c.ioctxs[pool]; ok {
		return io, nil
	}
	io, err := c.conn.OpenIOContext(pool)
	if err != nil {
		return nil, fmt.Errorf("rbd: open pool %q: %w", pool, translate(err))
	}
	c.ioctxs[pool] = io
	return io, nil
}

// translate maps librbd/librados errnos onto storage's sentinel errors, keeping the original.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var errno interface{ ErrorCode() int }
	code := 0
	if errors.As(err, &errno) {
		code = -errno.ErrorCode()
		if code < 0 {
			code = -code
		}
	}
	switch {
	case errors.Is(err, cephrbd.ErrNotFound), code == int(syscall.ENOENT):
		return fmt.Errorf("%w: %v", storage.ErrNotFound, err)
	case code == int(syscall.EEXIST):
		return fmt.Errorf("%w: %v", storage.ErrExists, err)
	case code == int(syscall.EBUSY), code == int(syscall.ENOTEMPTY):
		return fmt.Errorf("%w: %v", storage.ErrInUse, err)
	case code == int(syscall.EPERM), code == int(syscall.EACCES):
		return fmt.Errorf("%w: %v", storage.ErrPermission, err)
	}
	return err
}

func (c *Cluster) open(pool, name, snap string, readOnly bool) (*cephrbd.Image, error) {
	io, err := c.ioctx(pool)
	if err != nil {
		return nil, err
	}
	var img *cephrbd.Image
	if readOnly {
		img, err = cephrbd.OpenImageReadOnly(io, name, snap)
	} else {
		img, err = cephrbd.OpenImage(io, name, snap)
	}
	if err != nil {
		return nil, fmt.Errorf("rbd: open %s/%s: %w", pool, name, translate(err))
	}
	return img, nil
}

// Create makes a thin image with the pool's default features.
func (c *Cluster) Create(_ context.Context, pool, name string, size uint64) error {
	io, err := c.ioctx(pool)
	if err != nil {
		return err
	}
	opts := cephrbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := cephrbd.CreateImage(io, name, size, opts); err != nil {
		return fmt.Errorf("rbd: create %s/%s: %w", pool, name, translate(err))
	}
	return nil
}

type image struct{ *cephrbd.Image }

func (i image) Size() uint64 {
	s, err := i.GetSize()
	if err != nil {
		return 0
	}
	return s
}

func (i image) Close() error {
	return i.Image.Close()
}

// OpenWriter opens an image for concurrent WriteAt.
func (c *Cluster) OpenWriter(_ context.Context, pool, name string) (storage.WriterAt, error) {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, false)
	if err != nil {
		return nil, err
	}
	return image{img}, nil
}

// OpenReader opens an image or snapshot read-only.
func (c *Cluster) OpenReader(_ context.Context, pool, name, snap string) (storage.ReaderAt, error) {
	img, err := c.open(pool, name, snap, true)
	if err != nil {
		return nil, err
	}
	return image{img}, nil
}

// Stat describes an image and its parent.
func (c *Cluster) Stat(_ context.Context, pool, name string) (storage.ImageInfo, error) {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, true)
	if err != nil {
		return storage.ImageInfo{}, err
	}
	defer img.Close()
	size, err := img.GetSize()
	if err != nil {
		return storage.ImageInfo{}, fmt.Errorf("rbd: size of %s/%s: %w", pool, name, translate(err))
	}
	info := storage.ImageInfo{Pool: pool, Name: name, Size: size}
	if ts, err := img.GetCreateTimestamp(); err == nil {
		info.Created = time.Unix(int64(ts.Sec), int64(ts.Nsec)).UTC()
	}
	p, err := img.GetParent()
	switch {
	case err == nil:
		snap, err := c.originalSnapName(p)
		if err != nil {
			return storage.ImageInfo{}, fmt.Errorf("rbd: parent snapshot of %s/%s: %w", pool, name, err)
		}
		info.Parent = &storage.Parent{Pool: p.Image.PoolName, Image: p.Image.ImageName, Snapshot: snap}
	case errors.Is(translate(err), storage.ErrNotFound):
		// not a clone
	default:
		return storage.ImageInfo{}, fmt.Errorf("rbd: parent of %s/%s: %w", pool, name, translate(err))
	}
	return info, nil
}

// originalSnapName is the name a clone's parent snapshot was created with. A snapshot removed
// while clones depend on it moves to the trash namespace under a generated name; the clone still
// names it by that one, so the original is read from the parent (which may itself be in the trash,
// hence opened by id).
func (c *Cluster) originalSnapName(p *cephrbd.ParentInfo) (string, error) {
	io, err := c.ioctx(p.Image.PoolName)
	if err != nil {
		return "", err
	}
	img, err := cephrbd.OpenImageByIdReadOnly(io, p.Image.ImageID, cephrbd.NoSnapshot)
	if err != nil {
		return "", translate(err)
	}
	defer img.Close()
	ns, err := img.GetSnapNamespaceType(p.Snap.ID)
	if err != nil {
		return "", translate(err)
	}
	if ns != cephrbd.SnapNamespaceTypeTrash {
		return p.Snap.SnapName, nil
	}
	orig, err := img.GetSnapTrashNamespace(p.Snap.ID)
	return orig, translate(err)
}

// Grow resizes the image to size when it is smaller and returns its size before.
func (c *Cluster) Grow(_ context.Context, pool, name string, size uint64) (uint64, error) {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, false)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	before, err := img.GetSize()
	if err != nil {
		return 0, fmt.Errorf("rbd: size of %s/%s: %w", pool, name, translate(err))
	}
	if before >= size {
		return before, nil
	}
	if err := img.Resize(size); err != nil {
		return before, fmt.Errorf("rbd: resize %s/%s: %w", pool, name, translate(err))
	}
	return before, nil
}

// Rename renames an image within its pool.
func (c *Cluster) Rename(_ context.Context, pool, from, to string) error {
	io, err := c.ioctx(pool)
	if err != nil {
		return err
	}
	if err := cephrbd.GetImage(io, from).Rename(to); err != nil {
		return fmt.Errorf("rbd: rename %s/%s to %s: %w", pool, from, to, translate(err))
	}
	return nil
}

// CreateSnapshot snapshots an image.
func (c *Cluster) CreateSnapshot(_ context.Context, pool, name, snap string) error {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, false)
	if err != nil {
		return err
	}
	defer img.Close()
	if _, err := img.CreateSnapshot(snap); err != nil {
		return fmt.Errorf("rbd: snapshot %s/%s@%s: %w", pool, name, snap, translate(err))
	}
	return nil
}

// SnapshotExists reports whether the named snapshot exists.
func (c *Cluster) SnapshotExists(_ context.Context, pool, name, snap string) (bool, error) {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, true)
	if err != nil {
		return false, err
	}
	defer img.Close()
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		return false, fmt.Errorf("rbd: snapshots of %s/%s: %w", pool, name, translate(err))
	}
	for _, s := range snaps {
		if s.Name == snap {
			return true, nil
		}
	}
	return false, nil
}

// Clone makes a format-2 clone, which needs no protected snapshot and lets the parent's
// snapshot be removed (to the trash namespace) while children exist.
func (c *Cluster) Clone(_ context.Context, parent storage.Parent, pool, name string) error {
	pio, err := c.ioctx(parent.Pool)
	if err != nil {
		return err
	}
	dio, err := c.ioctx(pool)
	if err != nil {
		return err
	}
	opts := cephrbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(cephrbd.ImageOptionCloneFormat, 2); err != nil {
		return fmt.Errorf("rbd: clone format option: %w", err)
	}
	if err := cephrbd.CloneImage(pio, parent.Image, parent.Snapshot, dio, name, opts); err != nil {
		return fmt.Errorf("rbd: clone %s/%s@%s to %s/%s: %w", parent.Pool, parent.Image, parent.Snapshot, pool, name, translate(err))
	}
	return nil
}

// Flatten detaches a clone from its parent.
func (c *Cluster) Flatten(_ context.Context, pool, name string) error {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, false)
	if err != nil {
		return err
	}
	defer img.Close()
	if err := img.Flatten(); err != nil {
		return fmt.Errorf("rbd: flatten %s/%s: %w", pool, name, translate(err))
	}
	return nil
}

// Remove deletes an image: its snapshots first (a snapshot with format-2 children moves to the
// trash namespace), then the image; an image that still has such snapshots goes to the trash.
func (c *Cluster) Remove(_ context.Context, pool, name string) (bool, error) {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, false)
	if err != nil {
		return false, err
	}
	snaps, err := img.GetSnapshotNames()
	if err != nil {
		img.Close()
		return false, fmt.Errorf("rbd: snapshots of %s/%s: %w", pool, name, translate(err))
	}
	for _, s := range snaps {
		snap := img.GetSnapshot(s.Name)
		if prot, _ := snap.IsProtected(); prot {
			// Protected snapshots come from format-1 style clones; with children, unprotect fails
			// (EBUSY) and so will the removal below, which then sends the image to the trash.
			_ = snap.Unprotect()
		}
		if err := snap.Remove(); err != nil && !errors.Is(translate(err), storage.ErrNotFound) && !errors.Is(translate(err), storage.ErrInUse) {
			img.Close()
			return false, fmt.Errorf("rbd: remove snapshot %s/%s@%s: %w", pool, name, s.Name, translate(err))
		}
	}
	if err := img.Close(); err != nil {
		return false, fmt.Errorf("rbd: close %s/%s: %w", pool, name, translate(err))
	}
	io, err := c.ioctx(pool)
	if err != nil {
		return false, err
	}
	err = cephrbd.RemoveImage(io, name)
	if err == nil {
		return false, nil
	}
	terr := translate(err)
	if !errors.Is(terr, storage.ErrInUse) {
		return false, fmt.Errorf("rbd: remove %s/%s: %w", pool, name, terr)
	}
	// Children still depend on one of its snapshots: park it in the trash, where it is out
	// of the way of names and listings until the last child is gone.
	img, err = c.open(pool, name, cephrbd.NoSnapshot, false)
	if err != nil {
		return false, err
	}
	defer img.Close()
	if err := img.Trash(0); err != nil {
		return false, fmt.Errorf("rbd: remove %s/%s: %v; trash: %w", pool, name, terr, translate(err))
	}
	return true, nil
}

// PurgeTrashed removes a trashed image by name. Without force, librbd refuses (EBUSY or
// ENOTEMPTY) while a clone still depends on one of its snapshots.
func (c *Cluster) PurgeTrashed(_ context.Context, pool, name string) error {
	io, err := c.ioctx(pool)
	if err != nil {
		return err
	}
	trash, err := cephrbd.GetTrashList(io)
	if err != nil {
		return fmt.Errorf("rbd: trash of %s: %w", pool, translate(err))
	}
	found := false
	for _, t := range trash {
		if t.Name != name {
			continue
		}
		found = true
		if err := cephrbd.TrashRemove(io, t.Id, false); err != nil {
			return fmt.Errorf("rbd: purge %s/%s from the trash: %w", pool, name, translate(err))
		}
	}
	if !found {
		return fmt.Errorf("rbd: %s/%s is not in the trash: %w", pool, name, storage.ErrNotFound)
	}
	return nil
}

// List names the images of a pool.
func (c *Cluster) List(_ context.Context, pool string) ([]string, error) {
	io, err := c.ioctx(pool)
	if err != nil {
		return nil, err
	}
	names, err := cephrbd.GetImageNames(io)
	if err != nil {
		return nil, fmt.Errorf("rbd: list %s: %w", pool, translate(err))
	}
	return names, nil
}

// UsedBytes sums the allocated extents of an image's head (its parent excluded).
func (c *Cluster) UsedBytes(_ context.Context, pool, name string) (uint64, error) {
	img, err := c.open(pool, name, cephrbd.NoSnapshot, true)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	size, err := img.GetSize()
	if err != nil {
		return 0, fmt.Errorf("rbd: size of %s/%s: %w", pool, name, translate(err))
	}
	var used uint64
	err = img.DiffIterate(cephrbd.DiffIterateConfig{
		Offset: 0, Length: size, IncludeParent: cephrbd.ExcludeParent, WholeObject: cephrbd.EnableWholeObject,
		Callback: func(_, length uint64, exists int, _ interface{}) int {
			if exists != 0 {
				used += length
			}
			return 0
		},
	})
	if err != nil {
		return 0, fmt.Errorf("rbd: usage of %s/%s: %w", pool, name, translate(err))
	}
	return used, nil
}
