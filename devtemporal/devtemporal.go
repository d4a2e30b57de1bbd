// Package devtemporal holds the settings an in-process Temporal server needs for imagevol, shared
// by the dev server command and the tests: the dynamic config that removes the default ~50 ms
// wait on every dispatch hop, and the custom search attributes provisions are tagged with.
//
// Of imagevol's packages it imports only contract.
package devtemporal

import (
	"context"
	"fmt"
	"log/slog"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/common/dynamicconfig"
)

// DynamicConfig raises the transfer queue's poll rate (default 20/s makes each hop wait ~50 ms)
// and keeps task queues to one partition (with the faster poll alone, partitions stall ~2 s).
func DynamicConfig() dynamicconfig.StaticClient {
	one := []dynamicconfig.ConstrainedValue{{Value: 1}}
	return dynamicconfig.StaticClient{
		dynamicconfig.TransferProcessorMaxPollRPS.Key():         []dynamicconfig.ConstrainedValue{{Value: 10000}},
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  one,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): one,
	}
}

// SearchAttributes are the custom search attributes of provision workflows.
func SearchAttributes() map[string]enumspb.IndexedValueType {
	kw := enumspb.INDEXED_VALUE_TYPE_KEYWORD
	return map[string]enumspb.IndexedValueType{
		"ImageID": kw, "Host": kw, "CacheResult": kw, "ProjectID": kw, "Phase": kw,
	}
}

// EnsureSearchAttributes adds to a namespace the custom search attributes it lacks (a database
// made by an older version, or a server that starts without them, like temporaltest's).
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string, logger *slog.Logger) error {
	resp, err := c.OperatorService().ListSearchAttributes(ctx,
		&operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes: %w", err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range SearchAttributes() {
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
