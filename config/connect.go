package config

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/imagevol/imagevol/imagesource/glance"
	"github.com/imagevol/imagevol/models"
)

// Services are the connections every imagevol process opens: database, Glance and Temporal.
type Services struct {
	Store    *models.Store
	Glance   *glance.Client
	Temporal client.Client
}

// Connect opens the database (applying migrations), the Glance client and the Temporal client.
// The Temporal client reports the SDK's metrics to metricsHandler; nil reports none.
func (c Common) Connect(ctx context.Context, logger *slog.Logger, metricsHandler client.MetricsHandler) (*Services, error) {
	// Checked before the database is opened: a bad certificate path fails fast. nil (no TLS
	// configured) leaves the connection exactly as before, plain TCP.
	tlsCfg, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	store, err := models.Open(ctx, c.DBDSN, c.DBFile())
	if err != nil {
		return nil, err
	}
	images, err := c.glanceClient(ctx)
	if err != nil {
		store.Close()
		return nil, err
	}
	tc, err := client.Dial(client.Options{
		HostPort: c.TemporalAddress, Namespace: c.Namespace, Logger: sdklog.NewStructuredLogger(logger),
		MetricsHandler: metricsHandler, ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg},
		Interceptors: c.Interceptors,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("connect to temporal at %s: %w", c.TemporalAddress, err)
	}
	return &Services{Store: store, Glance: images, Temporal: tc}, nil
}

// glanceClient is the Glance client: from the Keystone catalog of GlanceCloud when it is set
// (authenticating now, within 30 s, and again whenever its token expires), else at GlanceURL
// with the static GlanceToken.
func (c Common) glanceClient(ctx context.Context) (*glance.Client, error) {
	if c.GlanceCloud == nil {
		return glance.New(c.GlanceURL, c.GlanceToken)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	images, err := glance.NewFromKeystone(ctx, c.GlanceCloud.AuthOptions(), c.GlanceCloud.RegionName)
	if err != nil {
		return nil, fmt.Errorf("config: glance.cloud (%s): %w", c.GlanceCloud.File, err)
	}
	return images, nil
}

// Close closes every connection.
func (s *Services) Close() error {
	s.Temporal.Close()
	return s.Store.Close()
}
