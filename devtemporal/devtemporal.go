// Package devtemporal holds the settings an in-process Temporal server needs for imagevol, shared
// by the dev server command and the tests: the dynamic config that removes the default ~50 ms
// wait on every dispatch hop, and the custom search attributes provisions are tagged with.
package devtemporal

import (
	enumspb "go.temporal.io/api/enums/v1"
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
