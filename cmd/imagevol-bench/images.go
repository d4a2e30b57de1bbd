package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
)

// blockSize is the unit of the image pattern: blocks alternate random data and zeros.
const blockSize = 4 << 20

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// writePattern writes a raw disk image of size bytes: 4 MiB blocks alternating seeded random
// data and zeros, starting with data. Zero blocks are left as holes, so the file takes half its
// size on disk. Different seeds give different content, so every case's image is a cache miss.
func writePattern(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "imagevol-bench")
	src := rand.NewChaCha8(key)
	buf := make([]byte, blockSize)
	for off, i := int64(0), 0; off < size; off, i = off+blockSize, i+1 {
		n := min(int64(blockSize), size-off)
		if i%2 == 1 {
			continue
		}
		_, _ = src.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// toQcow2 converts a raw file to qcow2 with qemu-img.
func toQcow2(ctx context.Context, raw, qcow2 string) error {
	return runCmd(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
}

// runCmd runs a command and returns its output in the error when it fails.
func runCmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sizeKey names a size the way the figures do: "256MiB", "1GiB", "4GiB".
func sizeKey(n int64) string {
	if n%gib == 0 {
		return fmt.Sprintf("%dGiB", n/gib)
	}
	return fmt.Sprintf("%dMiB", n/mib)
}

// sizeGB is the smallest whole number of GiB that holds n bytes.
func sizeGB(n int64) int { return int((n + gib - 1) / gib) }
