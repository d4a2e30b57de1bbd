// Package searchattr declares, once, the custom search attributes of imagevol's provision
// workflows: the workflows set them (workflows.Search*), and imagevol-migrate, the dev server
// and the tests register them on a namespace (Types, Ensure). It needs only the Temporal SDK and
// API, so the binaries that register them do not link the Temporal server.
package searchattr

import (
	"context"
	"fmt"
	"log/slog"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// The search attributes, all keywords, so the Temporal UI can filter provisions, e.g. the
// failed ones of one image.
var (
	ImageID     = temporal.NewSearchAttributeKeyKeyword("ImageID")
	Host        = temporal.NewSearchAttributeKeyKeyword("Host")
	ProjectID   = temporal.NewSearchAttributeKeyKeyword("ProjectID")
	CacheResult = temporal.NewSearchAttributeKeyKeyword("CacheResult")
	Phase       = temporal.NewSearchAttributeKeyKeyword("Phase")
)

// Keys returns every custom search attribute.
func Keys() []temporal.SearchAttributeKey {
	return []temporal.SearchAttributeKey{ImageID, Host, ProjectID, CacheResult, Phase}
}

// Types maps each custom search attribute's name to its type, as a namespace registers them.
func Types() map[string]enumspb.IndexedValueType {
	m := map[string]enumspb.IndexedValueType{}
	for _, k := range Keys() {
		m[k.GetName()] = k.GetValueType()
	}
	return m
}

// Ensure adds to a namespace, through the operator API, the custom search attributes it lacks
// (a database made by an older version, or a server that starts without them, like
// temporaltest's). An attribute registered with another type is logged, not changed.
func Ensure(ctx context.Context, c client.Client, namespace string, logger *slog.Logger) error {
	resp, err := c.OperatorService().ListSearchAttributes(ctx,
		&operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes: %w", err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range Types() {
		got, ok := resp.GetCustomAttributes()[name]
		switch {
		case !ok:
			missing[name] = typ
		case got != typ:
			logger.Warn("search attribute has an unexpected type", "name", name, "type", got, "want", typ)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        namespace,
		SearchAttributes: missing,
	}); err != nil {
		return fmt.Errorf("add search attributes: %w", err)
	}
	logger.Info("added missing search attributes", "namespace", namespace, "count", len(missing))
	return nil
}
