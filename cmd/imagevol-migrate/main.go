// Command imagevol-migrate applies imagevol's schema migrations to its database as a step of
// its own — before the gateway and workers start, from a systemd ExecStartPre or a Kubernetes
// Job — and prints the versions the database then has. Running it again changes nothing.
//
//	imagevol-migrate [--config FILE] [--dsn DSN] [--timeout 2m] [--temporal-setup [--retention 168h]]
//
// The DSN is --dsn, else database.dsn of the config (IMAGEVOL_DB_DSN): a MySQL DSN
// user:pass@tcp(host:3306)/db, or sqlite:PATH; empty means the SQLite file under
// database.run_dir. On MySQL the migrations run under GET_LOCK('imagevol_migrate'), the same
// lock the gateway and workers take, so any number of them may start at once.
//
// With --temporal-setup it then also prepares the Temporal cluster at temporal.address: it
// registers the namespace temporal.namespace (with --retention) if it does not exist and adds the
// five Keyword search attributes provisions are tagged with (ImageID, Host, ProjectID,
// CacheResult, Phase) that it lacks, and waits until the frontend accepts queries on them.
//
// It imports config, models, searchattr and cmd/internal/cli; it links neither go-ceph nor the
// Temporal server (cmd/deps_test.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/imagevol/imagevol/cmd/internal/cli"
	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/models"
)

func main() {
	// --version answers before anything else: no config read, nothing dialled.
	if cli.PrintVersion(os.Stdout, "imagevol-migrate", os.Args[1:]) {
		return
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagevol-migrate:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("imagevol-migrate", flag.ContinueOnError)
	configPath := fs.String("config", config.Env("IMAGEVOL_CONFIG", ""), "YAML config file (IMAGEVOL_CONFIG)")
	dsn := fs.String("dsn", "", "database: user:pass@tcp(host:3306)/db or sqlite:PATH (default: database.dsn, IMAGEVOL_DB_DSN)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long (the lock wait included)")
	temporalSetup := fs.Bool("temporal-setup", false, "also register the Temporal namespace (temporal.namespace) if missing and the search attributes provisions use")
	retention := fs.Duration("retention", 7*24*time.Hour, "with --temporal-setup: how long a namespace it registers keeps finished workflows' histories")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	file, err := config.LoadFile(*configPath)
	if err != nil {
		return err
	}
	common := file.Common()
	if *dsn != "" {
		common.DBDSN = *dsn
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	target, err := describe(common.DBDSN, common.DBFile())
	if err != nil {
		return err
	}
	before, err := applied(ctx, common.DBDSN, common.DBFile())
	if err != nil {
		return err
	}
	store, err := models.Open(ctx, common.DBDSN, common.DBFile())
	if err != nil {
		return err
	}
	if err := store.Close(); err != nil {
		return err
	}
	after, err := appliedList(ctx, common.DBDSN, common.DBFile())
	if err != nil {
		return err
	}
	if len(after) == 0 {
		return errors.New("no migration recorded after migrating")
	}

	// "new" is what this run found missing and then recorded: applied by this process, or by
	// a gateway or worker that held the lock first.
	fmt.Fprintf(out, "database %s\n", target)
	fresh := 0
	for _, m := range after {
		mark := ""
		if _, ok := before[m.Version]; !ok {
			mark, fresh = "  (new)", fresh+1
		}
		fmt.Fprintf(out, "  %3d  %-50s %s%s\n", m.Version, m.Name, m.AppliedAt.UTC().Format(time.RFC3339), mark)
	}
	fmt.Fprintf(out, "schema at version %d; %d new, %d already applied\n", after[len(after)-1].Version, fresh, len(after)-fresh)
	if *temporalSetup {
		return setupTemporal(ctx, common, *retention, out)
	}
	return nil
}

// describe names the database without its password.
func describe(dsn, defaultFile string) (string, error) {
	if dsn == "" {
		return "sqlite " + defaultFile, nil
	}
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		return "sqlite " + path, nil
	}
	mc, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("bad MySQL DSN: %w", err)
	}
	return fmt.Sprintf("mysql %s/%s (user %s)", mc.Addr, mc.DBName, mc.User), nil
}

// migrationRow is one row of schema_migrations.
type migrationRow struct {
	Version   int
	Name      string
	AppliedAt time.Time
}

// applied reads schema_migrations by version. models.Store keeps its connection to itself,
// so this opens one of its own; a database without the table (or a SQLite file not yet
// created) has none applied.
func applied(ctx context.Context, dsn, defaultFile string) (map[int]migrationRow, error) {
	out := map[int]migrationRow{}
	rows, err := appliedList(ctx, dsn, defaultFile)
	for _, r := range rows {
		out[r.Version] = r
	}
	return out, err
}

func appliedList(ctx context.Context, dsn, defaultFile string) ([]migrationRow, error) {
	if dsn == "" {
		dsn = "sqlite:" + defaultFile
	}
	cfg := &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)}
	var dialector gorm.Dialector
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		dialector = sqlite.Open(path)
	} else {
		mc, err := mysqldrv.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("bad MySQL DSN: %w", err)
		}
		mc.ParseTime, mc.Loc = true, time.UTC
		dialector = mysql.Open(mc.FormatDSN())
	}
	db, err := gorm.Open(dialector, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	db = db.WithContext(ctx)
	if !db.Migrator().HasTable("schema_migrations") {
		return nil, nil
	}
	var rows []migrationRow
	if err := db.Table("schema_migrations").Order("version").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return rows, nil
}
