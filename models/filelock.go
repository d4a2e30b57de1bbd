package models

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// withFileLock runs fn holding an exclusive flock(2) on path, which it creates if needed. The
// lock belongs to the open file, not the process: it excludes other goroutines of this process
// as well as other processes sharing the embedded database, and the kernel drops it when its
// holder dies, so a crashed gateway or worker never leaves it taken.
func withFileLock(ctx context.Context, path string, fn func() error) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("models: lock file: %w", err)
	}
	defer f.Close() // closing the file releases the lock
	// flock cannot be interrupted by a context, so poll a non-blocking attempt instead of
	// blocking: the wait then ends with ctx.
	wait := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("models: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("models: lock %s: %w", path, context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
	return fn()
}
