package config

import (
	"context"
	"fmt"
	"log/slog"

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
	images, err := glance.New(c.GlanceURL, c.GlanceToken)
	if err != nil {
		store.Close()
		return nil, err
	}
	tc, err := client.Dial(client.Options{
		HostPort: c.TemporalAddress, Namespace: c.Namespace, Logger: sdklog.NewStructuredLogger(logger),
		MetricsHandler: metricsHandler, ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg},
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("connect to temporal at %s: %w", c.TemporalAddress, err)
	}
	return &Services{Store: store, Glance: images, Temporal: tc}, nil
}

// Close closes every connection.
func (s *Services) Close() error {
	s.Temporal.Close()
	return s.Store.Close()
}
