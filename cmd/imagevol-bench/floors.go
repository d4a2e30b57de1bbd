package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// Ceph is the benchmark's own connection to the workers' cluster, for the floors measured
// directly on it.
type Ceph struct {
	Conf string // ceph.conf path, also passed to rbd and qemu-img
	conn *rados.Conn
}

// connectCeph connects with the ceph.conf at conf (its [client] section names the keyring).
func connectCeph(conf string) (*Ceph, error) {
	conn, err := rados.NewConn()
	if err != nil {
		return nil, err
	}
	if err := conn.ReadConfigFile(conf); err != nil {
		return nil, fmt.Errorf("ceph: read %s: %w", conf, err)
	}
	if err := conn.SetConfigOption("rados_mon_op_timeout", "30"); err != nil {
		return nil, err
	}
	if err := conn.Connect(); err != nil {
		return nil, fmt.Errorf("ceph: connect with %s: %w", conf, err)
	}
	return &Ceph{Conf: conf, conn: conn}, nil
}

// Close disconnects.
func (c *Ceph) Close() { c.conn.Shutdown() }

// Space returns the cluster's available and total bytes.
func (c *Ceph) Space() (avail, total int64, err error) {
	st, err := c.conn.GetClusterStats()
	if err != nil {
		return 0, 0, err
	}
	return int64(st.Kb_avail) << 10, int64(st.Kb) << 10, nil
}

// Remove deletes an RBD image the benchmark made; one that does not exist is not an error.
func (c *Ceph) Remove(pool, name string) error {
	io, err := c.conn.OpenIOContext(pool)
	if err != nil {
		return err
	}
	defer io.Destroy()
	if err := rbd.RemoveImage(io, name); err != nil && !errors.Is(err, rbd.ErrNotFound) {
		return fmt.Errorf("ceph: remove %s/%s: %w", pool, name, err)
	}
	return nil
}

// CloneFloor does a cache hit's storage work n times directly: a clone of the cache snapshot
// parentPool/parentImage@snap into pool (format 2, as the engine makes it), then a resize to
// size. It returns each iteration's milliseconds and removes the clones before returning.
func (c *Ceph) CloneFloor(ctx context.Context, parentPool, parentImage, snap, pool, prefix string, n int, size uint64) ([]float64, error) {
	pio, err := c.conn.OpenIOContext(parentPool)
	if err != nil {
		return nil, err
	}
	defer pio.Destroy()
	dio, err := c.conn.OpenIOContext(pool)
	if err != nil {
		return nil, err
	}
	defer dio.Destroy()
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(rbd.ImageOptionCloneFormat, 2); err != nil {
		// No clone-format option in this librbd: the plain clone (the cluster's default format).
		opts.Destroy()
		opts = rbd.NewRbdImageOptions()
	}
	var made []string
	defer func() {
		for _, name := range made {
			_ = rbd.RemoveImage(dio, name)
		}
	}()
	ms := make([]float64, 0, n)
	for i := range n {
		if err := ctx.Err(); err != nil {
			return ms, err
		}
		name := fmt.Sprintf("%s-%03d", prefix, i)
		t0 := time.Now()
		if err := rbd.CloneImage(pio, parentImage, snap, dio, name, opts); err != nil {
			return ms, fmt.Errorf("clone %s/%s@%s to %s/%s: %w", parentPool, parentImage, snap, pool, name, err)
		}
		made = append(made, name)
		img, err := rbd.OpenImage(dio, name, rbd.NoSnapshot)
		if err != nil {
			return ms, fmt.Errorf("open %s/%s: %w", pool, name, err)
		}
		err = img.Resize(size)
		if cerr := img.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return ms, fmt.Errorf("resize %s/%s: %w", pool, name, err)
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
	}
	return ms, nil
}

// RBDImport runs `rbd import` of a local file into a new format-2 image, then removes it.
func (c *Ceph) RBDImport(ctx context.Context, file, pool, name string) error {
	defer func() { _ = c.Remove(pool, name) }()
	return runCmd(ctx, "rbd", "-c", c.Conf, "import", "--no-progress", "--image-format", "2", file, pool+"/"+name)
}

// QemuImg runs qemu-img's conversion of a local qcow2 file into a new RBD image (written out of
// order, -W, as fast as qemu-img goes), then removes it.
func (c *Ceph) QemuImg(ctx context.Context, qcow2, pool, name string) error {
	if err := c.Remove(pool, name); err != nil {
		return err
	}
	defer func() { _ = c.Remove(pool, name) }()
	return runCmd(ctx, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-W", qcow2,
		fmt.Sprintf("rbd:%s/%s:conf=%s", pool, name, c.Conf))
}
