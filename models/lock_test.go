package models

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Environment of the child processes these tests start from the test binary itself.
const (
	childMode = "IMAGEVOL_MODELS_CHILD" // "migrate" or "reserve"
	childFile = "IMAGEVOL_MODELS_CHILD_FILE"
	childN    = "IMAGEVOL_MODELS_CHILD_N"
)

func TestMain(m *testing.M) {
	switch os.Getenv(childMode) {
	case "":
		os.Exit(m.Run())
	case "migrate":
		os.Exit(childMigrate(os.Getenv(childFile)))
	case "reserve":
		n, _ := strconv.Atoi(os.Getenv(childN))
		os.Exit(childReserve(os.Getenv(childFile), n))
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(2)
	}
}

// childMigrate opens (and so migrates) the SQLite file, as a gateway or a worker does at start.
func childMigrate(file string) int {
	s, err := Open(context.Background(), "sqlite:"+file, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s.Close()
	return 0
}

// childReserve increments a counter file n times, each time reading and rewriting it under the
// reservation lock: any two processes inside the lock at once lose an increment.
func childReserve(file string, n int) int {
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+file, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	counter := file + ".counter"
	for i := 0; i < n; i++ {
		err := s.WithReservationLock(ctx, func() error {
			b, err := os.ReadFile(counter)
			if err != nil {
				return err
			}
			v, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				return err
			}
			return os.WriteFile(counter, []byte(strconv.Itoa(v+1)), 0o600)
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// runChildren starts n copies of the test binary in the given mode at once and returns the
// error output of those that failed.
func runChildren(t *testing.T, n int, env ...string) []string {
	t.Helper()
	var (
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
	)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), env...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if out, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out))))
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return failures
}

// A gateway and workers starting at once all migrate a fresh SQLite file: ten processes, fifty
// rounds, and every one of them must succeed and leave each migration applied exactly once.
func TestSQLiteMigrationAcrossProcesses(t *testing.T) {
	rounds := 50
	if testing.Short() {
		rounds = 5
	}
	for round := 0; round < rounds; round++ {
		file := filepath.Join(t.TempDir(), "imagevol.db")
		if failures := runChildren(t, 10, childMode+"=migrate", childFile+"="+file); len(failures) > 0 {
			t.Fatalf("round %d: %d of 10 processes failed to migrate; first: %s", round, len(failures), failures[0])
		}
		s, err := Open(context.Background(), "sqlite:"+file, "")
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := s.db.Model(&schemaMigration{}).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		s.Close()
		if int(n) != len(migrations) {
			t.Fatalf("round %d: %d rows in schema_migrations, want %d", round, n, len(migrations))
		}
	}
}

// The reservation lock holds between processes sharing one SQLite file (two storage hosts on one
// machine's embedded default): concurrent read-modify-write cycles under it lose no update.
func TestSQLiteReservationLockAcrossProcesses(t *testing.T) {
	file := filepath.Join(t.TempDir(), "imagevol.db")
	if err := os.WriteFile(file+".counter", []byte("0"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), "sqlite:"+file, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	const procs, each = 4, 200
	if failures := runChildren(t, procs, childMode+"=reserve", childFile+"="+file, childN+"="+strconv.Itoa(each)); len(failures) > 0 {
		t.Fatalf("%d processes failed; first: %s", len(failures), failures[0])
	}
	b, err := os.ReadFile(file + ".counter")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(procs*each) {
		t.Fatalf("counter %s after %d locked increments: the lock let processes in together", got, procs*each)
	}
}
