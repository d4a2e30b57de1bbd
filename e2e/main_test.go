//go:build e2e

// Package e2e tests imagevol end to end against the real parts: Ceph RBD, Glance, MySQL
// (MariaDB) through gorm, and an in-process Temporal server. Its files build only with the "e2e"
// tag (and go-ceph's "pacific"), so that `go test ./...` runs without the stack. Run it through
// `make test`, which starts Ceph and Glance, exports CEPH_CONF, GLANCE_URL and IMAGEVOL_TEST_DSN
// and sets both tags.
package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/temporal"
	"go.temporal.io/server/temporaltest"

	"github.com/imagevol/imagevol/devtemporal"
	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/models"
	"github.com/imagevol/imagevol/searchattr"
	"github.com/imagevol/imagevol/storage/librbd"
)

// env is the stack shared by every test of the package: one Temporal, one Ceph, one Glance, one
// database created for this run.
type env struct {
	temporal client.Client
	store    *models.Store
	ceph     *librbd.Cluster
	glance   *glance.Client
	pool     string
	pool2    string // a second pool, for a second host of the same cluster
	fsid     string
	dsn      string
	// frontend and namespace let worker processes join the in-process Temporal server.
	frontend  string
	namespace string
}

var stack *env

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	need := map[string]string{}
	for _, k := range []string{"CEPH_CONF", "GLANCE_URL", "IMAGEVOL_TEST_DSN"} {
		if need[k] = os.Getenv(k); need[k] == "" {
			fmt.Fprintf(os.Stderr, "e2e: %s is not set; run these tests through `make test`, which starts Ceph, Glance and MySQL\n", k)
			return 1
		}
	}
	ctx := context.Background()

	// A database of its own for this run, dropped at the end.
	root, err := sql.Open("mysql", need["IMAGEVOL_TEST_DSN"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer root.Close()
	dbName := fmt.Sprintf("imagevol_e2e_%d", time.Now().UnixNano())
	if _, err := root.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: create database:", err)
		return 1
	}
	defer root.ExecContext(ctx, "DROP DATABASE "+dbName)
	dsn := need["IMAGEVOL_TEST_DSN"] + dbName
	store, err := models.Open(ctx, dsn, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer store.Close()

	ceph, err := librbd.Connect(need["CEPH_CONF"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer ceph.Close()
	gl, err := glance.New(need["GLANCE_URL"], "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}

	dc := devtemporal.DynamicConfig()
	// temporaltest sets this one itself; keep it, since our client replaces its settings.
	dc[dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key()] = []dynamicconfig.ConstrainedValue{{Value: true}}
	ts := temporaltest.NewServer(temporaltest.WithBaseServerOptions(temporal.WithDynamicConfigClient(dc)))
	defer ts.Stop()

	fsid, err := ceph.FSID()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// temporaltest's namespace starts without imagevol's search attributes.
	if err := searchattr.Ensure(ctx, ts.GetDefaultClient(), ts.GetDefaultNamespace(), slog.Default()); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	stack = &env{temporal: ts.GetDefaultClient(), store: store, ceph: ceph, glance: gl, pool: "volumes", pool2: "volumes2", fsid: fsid, dsn: dsn,
		frontend: ts.GetFrontendHostPort(), namespace: ts.GetDefaultNamespace()}
	code := m.Run()
	if err := stack.removeAllVolumes(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cleanup:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
