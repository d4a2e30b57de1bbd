// Package searchattr registers the custom search attributes of imagevol's provision and fill
// workflows (declared in package contract) on a namespace: imagevol-migrate, the dev server and
// the tests use it (Types, Ensure). It needs only the Temporal SDK and API, so the binaries
// that register them do not link the Temporal server.
//
// Of imagevol's packages it imports only contract.
package searchattr

import (
	"context"
	"fmt"
	"log/slog"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/imagevol/imagevol/contract"
)

// Types maps each custom search attribute's name to its type, as a namespace registers them.
func Types() map[string]enumspb.IndexedValueType {
	m := map[string]enumspb.IndexedValueType{}
	for _, k := range contract.SearchAttributes() {
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
