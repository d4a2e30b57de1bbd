// Package devtemporal holds the settings an in-process Temporal server needs for imagevol, shared
// by the dev server command and the tests: the dynamic config that removes the default ~50 ms
// wait on every dispatch hop. The custom search attributes provisions are tagged with are
// declared in package contract and registered by package searchattr, without the server's
// packages.
//
// It imports none of imagevol's packages.
package devtemporal

import (
	"go.temporal.io/server/common/dynamicconfig"
)

// DynamicConfig raises the transfer queue's poll rate (default 20/s makes each hop wait ~50 ms),
// keeps task queues to one partition (with the faster poll alone, partitions stall ~2 s) and
// turns eager activity dispatch on.
func DynamicConfig() dynamicconfig.StaticClient {
	one := []dynamicconfig.ConstrainedValue{{Value: 1}}
	return dynamicconfig.StaticClient{
		dynamicconfig.TransferProcessorMaxPollRPS.Key():         []dynamicconfig.ConstrainedValue{{Value: 10000}},
		dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  one,
		dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): one,
		// A step scheduled on the queue of the workflow task that schedules it goes back in
		// that task's response to its worker (eager dispatch), when the worker has a free slot.
		dynamicconfig.EnableActivityEagerExecution.Key(): []dynamicconfig.ConstrainedValue{{Value: true}},
	}
}
