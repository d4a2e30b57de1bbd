// Package contract is what the parts of imagevol agree on to run a provision: the task queues,
// the workflows' registered names and IDs, the options they are started with, their inputs and
// results, the steps' inputs and results, and the error types that cross from a step to the
// gateway. The gateway (starter), the worker, the workflows and the activities import it;
// nothing outside it builds a workflow ID or a queue name.
//
// It may import only the Temporal SDK's client and temporal packages and imagevol's leaf
// packages (imagesource, storage, models for names of RBD images); never activities, workflows,
// starter, worker or config.
package contract
