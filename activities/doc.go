// Package activities holds every provisioning step that touches the world — the cache rows in the
// database, the image service, the Ceph cluster — as methods on Activities, which carries their
// dependencies. Workflows reference them through a nil *Activities. Steps that touch Ceph run on
// the storage host's own task queue; every step treats "already done" as success, so a retried
// attempt converges on the same end state.
//
// Of imagevol's packages it may import contract, config, models, storage (and storage/rbd for
// fencing), imagesource, importer, sandbox and metrics; never workflows, worker or starter.
package activities
