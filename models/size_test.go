package models

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
)

func TestGiBToBytes(t *testing.T) {
	cases := []struct {
		gb   int64
		want int64
		err  bool
	}{
		{0, 0, false},
		{1, 1 << 30, false},
		{1000, 1000 << 30, false},
		{MaxSizeGiB, MaxSizeGiB << 30, false},
		{MaxSizeGiB + 1, 0, true},
		{17179869185, 0, true}, // 2^34+1 GiB = 2^64 + 2^30 bytes: wraps to 1 GiB unchecked
		{math.MaxInt64, 0, true},
		{-1, 0, true},
	}
	for _, c := range cases {
		got, err := GiBToBytes(c.gb)
		if (err != nil) != c.err || got != c.want || (err != nil && !errors.Is(err, ErrSizeOverflow)) {
			t.Errorf("GiBToBytes(%d) = %d, %v; want %d, error %v", c.gb, got, err, c.want, c.err)
		}
	}
	if GiBToBytesCapped(17179869185) != math.MaxInt64 || GiBToBytesCapped(2) != 2<<30 || GiBToBytesCapped(-3) != 0 {
		t.Error("GiBToBytesCapped")
	}
}

func TestExceedsGiB(t *testing.T) {
	cases := []struct {
		bytes, gb int64
		want      bool
	}{
		{0, 0, false},
		{1, 0, true},
		{1 << 30, 1, false},
		{1<<30 + 1, 1, true},
		{2 << 30, 17179869185, false}, // the size that wraps to 1 GiB when multiplied
		{math.MaxInt64, MaxSizeGiB, true},
		{math.MaxInt64, MaxSizeGiB + 1, false},
		{5 << 30, -1, true},
	}
	for _, c := range cases {
		if got := ExceedsGiB(c.bytes, c.gb); got != c.want {
			t.Errorf("ExceedsGiB(%d, %d) = %v, want %v", c.bytes, c.gb, got, c.want)
		}
	}
	for bytes, want := range map[int64]int{0: 0, 1: 1, 1 << 30: 1, 1<<30 + 1: 2, math.MaxInt64: int(MaxSizeGiB + 1), -5: 0} {
		if got := GiBCeil(bytes); got != want {
			t.Errorf("GiBCeil(%d) = %d, want %d", bytes, got, want)
		}
	}
}

// Concurrent creates of one project never pass its quota: the count and the insert are one
// step. (The e2e tests run the same on MySQL, where a named lock does it.)
func TestCreateVolumeWithinQuota(t *testing.T) {
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "db"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errFull := errors.New("full")
	const limit, tries = 3, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for i := 0; i < tries; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := &Volume{ID: fmt.Sprint("v", i), ProjectID: "p", SizeGB: 1, ImageID: "i", Host: "h", Status: StatusCreating}
			err := s.CreateVolumeWithin(context.Background(), v, func(u ProjectUsage) error {
				if u.Volumes >= limit {
					return errFull
				}
				return nil
			})
			switch {
			case err == nil:
				mu.Lock()
				created++
				mu.Unlock()
			case !errors.Is(err, errFull):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	u, err := s.ProjectUsage(context.Background(), "p")
	if err != nil || created != limit || u.Volumes != limit {
		t.Fatalf("created %d, usage %+v (%v); want %d", created, u, err, limit)
	}
}
