// Command imagevol-worker runs the Temporal workers of one storage host: the steps that touch
// its Ceph pool on the queue imagevol.host.<host>, and workflow tasks on the shared queue.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/imagevol/imagevol/activities"
	"github.com/imagevol/imagevol/config"
	"github.com/imagevol/imagevol/storage/rbd"
	"github.com/imagevol/imagevol/worker"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(logger)
	if err := run(logger); err != nil {
		logger.Error("worker failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	common := config.LoadCommon()
	enabled, err := config.EnvBool("IMAGE_VOLUME_CACHE_ENABLED", true)
	if err != nil {
		return err
	}
	maxSize, err := config.EnvInt("IMAGE_VOLUME_CACHE_MAX_SIZE_GB", 0)
	if err != nil {
		return err
	}
	maxCount, err := config.EnvInt("IMAGE_VOLUME_CACHE_MAX_COUNT", 0)
	if err != nil {
		return err
	}
	quotaVolumes, err := config.EnvInt("CINDER_INTERNAL_TENANT_QUOTA_VOLUMES", 0)
	if err != nil {
		return err
	}
	quotaGB, err := config.EnvInt("CINDER_INTERNAL_TENANT_QUOTA_GIGABYTES", 0)
	if err != nil {
		return err
	}
	var cfg activities.Config
	flag.StringVar(&cfg.Host, "host", config.Env("IMAGEVOL_HOST", "node1"), "storage host name (task queue imagevol.host.<host>)")
	flag.StringVar(&cfg.Pool, "pool", config.Env("IMAGEVOL_POOL", "volumes"), "RBD pool of this host")
	flag.StringVar(&cfg.ClusterName, "cluster", config.Env("IMAGEVOL_CLUSTER", ""), "name of the Ceph cluster the pool is in (default: its fsid); hosts of one cluster share their cache")
	flag.StringVar(&cfg.CephConf, "ceph-conf", config.Env("CEPH_CONF", "/etc/ceph/ceph.conf"), "ceph.conf path")
	flag.BoolVar(&cfg.ImageVolumeCacheEnabled, "image_volume_cache_enabled", enabled, "cache images as volumes")
	flag.IntVar(&cfg.ImageVolumeCacheMaxSizeGB, "image_volume_cache_max_size_gb", maxSize, "cache capacity in GiB (0 = unlimited)")
	flag.IntVar(&cfg.ImageVolumeCacheMaxCount, "image_volume_cache_max_count", maxCount, "cache entries (0 = unlimited)")
	flag.StringVar(&cfg.CinderInternalTenantProject, "cinder_internal_tenant_project_id", config.Env("CINDER_INTERNAL_TENANT_PROJECT_ID", "imagevol-internal"), "project owning cache volumes")
	flag.StringVar(&cfg.CinderInternalTenantUser, "cinder_internal_tenant_user_id", config.Env("CINDER_INTERNAL_TENANT_USER_ID", "imagevol-internal"), "user owning cache volumes")
	flag.IntVar(&cfg.InternalQuotaVolumes, "internal_quota_volumes", quotaVolumes, "volumes the internal project may hold (0 = unlimited)")
	flag.IntVar(&cfg.InternalQuotaGB, "internal_quota_gigabytes", quotaGB, "GiB the internal project may hold (0 = unlimited)")
	flag.StringVar(&cfg.FlattenPolicy, "flatten", config.Env("IMAGEVOL_FLATTEN", activities.FlattenNever), "flatten policy: never, always or depth>N")
	flag.Parse()
	if _, err := activities.ShouldFlatten(cfg.FlattenPolicy, 1); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger = logger.With("host", cfg.Host)

	svc, err := common.Connect(ctx, logger)
	if err != nil {
		return err
	}
	defer svc.Close()
	cluster, err := rbd.Connect(cfg.CephConf)
	if err != nil {
		return err
	}
	defer cluster.Close()
	if cfg.ClusterName == "" {
		if cfg.ClusterName, err = cluster.FSID(); err != nil {
			return err
		}
	}
	acts := &activities.Activities{Store: svc.Store, Storage: cluster, Images: svc.Glance, Temporal: svc.Temporal, Config: cfg, Logger: logger}
	return worker.Run(ctx, svc.Temporal, acts, worker.Options{})
}
