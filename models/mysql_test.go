//go:build mysql

// The tests of this file need a MySQL (or MariaDB) server, named by IMAGEVOL_TEST_DSN: they build
// only with the "mysql" tag, which `make test` sets, and fail without the server. Without the
// tag, the tests of the other files run on the embedded SQLite store only.
package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
)

func init() {
	dialects["mysql"] = func(t *testing.T) *Store { s, _ := mysqlStore(t); return s }
}

// mysqlStore opens a Store on a MySQL database of its own, dropped when the test ends. The
// server is IMAGEVOL_TEST_DSN's (a DSN without a database name, as `make test` exports it).
func mysqlStore(t *testing.T) (*Store, *sql.DB) {
	t.Helper()
	dsn := os.Getenv("IMAGEVOL_TEST_DSN")
	if dsn == "" {
		t.Fatal("IMAGEVOL_TEST_DSN is not set: the mysql tag needs a MySQL server to test against (make test sets it)")
	}
	root, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	name := fmt.Sprintf("imagevol_models_%d", time.Now().UnixNano())
	if _, err := root.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = root.Exec("DROP DATABASE " + name) })
	s, err := Open(context.Background(), dsn+name, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, root
}

// The reservation lock is released even when the caller's context expires while it is held:
// the release does not run on that context, so the pooled session does not keep the lock and
// the next reservation takes it at once.
func TestReservationLockReleasedAfterContextExpired(t *testing.T) {
	s, root := mysqlStore(t)
	lock := s.lockName(reservationLock)
	ctx, cancel := context.WithCancel(context.Background())
	held := false
	err := s.WithReservationLock(ctx, func() error {
		var holder sql.NullInt64
		if err := root.QueryRow("SELECT IS_USED_LOCK(?)", lock).Scan(&holder); err != nil {
			return err
		}
		held = holder.Valid
		cancel() // the activity's context ends while the lock is held
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) || !held {
		t.Fatalf("locked function: err = %v, lock seen held = %v", err, held)
	}
	var holder sql.NullInt64
	if err := root.QueryRow("SELECT IS_USED_LOCK(?)", lock).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if holder.Valid {
		t.Fatalf("IS_USED_LOCK(%q) = connection %d after the locked function returned, want NULL", lock, holder.Int64)
	}
	// Another reservation takes it without waiting for GET_LOCK's timeout.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	ran := false
	if err := s.WithReservationLock(ctx2, func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("next reservation: ran %v, err %v", ran, err)
	}
}
