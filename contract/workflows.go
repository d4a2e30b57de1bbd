package contract

import (
	"strconv"
	"strings"
	"time"

	enums "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// Registered names of the workflows. The worker registers the functions of package workflows
// under their Go names; everything else starts them by these names.
const (
	CreateVolumeWorkflow = "CreateVolumeFromImage" // one run per user volume
	FillWorkflow         = "FillCache"             // one run per image content and cluster
	DeleteVolumeWorkflow = "DeleteVolume"
	WarmCacheWorkflow    = "WarmCache"
	EvictEntryWorkflow   = "EvictCacheEntry"
	ReconcileWorkflow    = "ReconcileCache"
	ExtendVolumeWorkflow = "ExtendVolume"
)

// Workflow IDs that are not random. A provision's workflow ID is its volume's ID.
const (
	deletePrefix = "imagevol-delete-"
	extendPrefix = "imagevol-extend-"
	fillPrefix   = "imagevol-fill-"
	warmPrefix   = "imagevol-warm-"
	evictPrefix  = "imagevol-evict-"
	// ReconcileScheduleID is the Temporal Schedule that runs ReconcileCache.
	ReconcileScheduleID = "imagevol-reconcile"
	// reconcileRunID is the ID (before the Schedule's timestamp suffix) of its runs.
	reconcileRunID = "imagevol-reconcile-run"
)

// FillWorkflowID is the one workflow ID under which an image's content is filled into a Ceph
// cluster's cache: concurrent misses anywhere in the cluster start, or join, the same run.
func FillWorkflowID(cluster, imageID, contentHash string) string {
	_, hexDigest, _ := strings.Cut(contentHash, ":")
	if len(hexDigest) > 16 {
		hexDigest = hexDigest[:16]
	}
	return fillPrefix + imageID + "-" + hexDigest + "@" + cluster
}

// DeleteWorkflowID is the ID of the deletion of a volume: one at a time per volume.
func DeleteWorkflowID(volumeID string) string { return deletePrefix + volumeID }

// DeletedVolume is the volume a deletion's workflow ID names; ok is false for other IDs.
func DeletedVolume(workflowID string) (volumeID string, ok bool) {
	return strings.CutPrefix(workflowID, deletePrefix)
}

// ExtendWorkflowID is the ID of the extension of a volume: one at a time per volume.
func ExtendWorkflowID(volumeID string) string { return extendPrefix + volumeID }

// Signals between a fill and the workflows waiting on it.
const (
	// FillJoinSignal registers a FillWaiter with a fill's run.
	FillJoinSignal = "fill-join"
	// FillDoneSignal carries a FillDone from a fill to each workflow registered with it.
	FillDoneSignal = "fill-done"
)

// MemoFill is the memo key naming the fill a provision is waiting on ("" when none).
const MemoFill = "fill"

// MemoFilledBy is the memo key naming the fill whose cache entry a provision was cloned from,
// kept after the wait ends (MemoFill is cleared), so that a volume still names its fill.
const MemoFilledBy = "filled_by"

// MemoRequestID is the memo key of the ID of the gateway request that started a provision run
// (its X-OpenStack-Request-Id, req-<uuid>), to find the run of a request and the request of a run.
const MemoRequestID = "request_id"

// Search attributes of provision and fill workflows, registered on the namespace, so the
// Temporal UI can filter provisions — e.g. the failed ones of one image — and the fills of an
// image with them. The gateway sets ImageID, Host, ProjectID and Phase when it starts a
// provision; the workflow sets CacheResult and moves Phase along. A fill starts with ImageID,
// Host (the host it fills on) and Phase (FillSearch), and moves its Phase along.
var (
	SearchImageID     = temporal.NewSearchAttributeKeyKeyword("ImageID")
	SearchHost        = temporal.NewSearchAttributeKeyKeyword("Host")
	SearchProjectID   = temporal.NewSearchAttributeKeyKeyword("ProjectID")
	SearchCacheResult = temporal.NewSearchAttributeKeyKeyword("CacheResult")
	SearchPhase       = temporal.NewSearchAttributeKeyKeyword("Phase")
)

// SearchAttributes lists every search attribute imagevol's workflows use, for registering them
// on a namespace.
func SearchAttributes() []temporal.SearchAttributeKey {
	return []temporal.SearchAttributeKey{SearchImageID, SearchHost, SearchProjectID, SearchCacheResult, SearchPhase}
}

// Phases a provision's Phase search attribute goes through.
const (
	PhaseCreating  = "creating"
	PhaseFilling   = "filling" // waiting on the cluster's fill of the image
	PhaseAvailable = "available"
	PhaseError     = "error"
)

// Phases a fill's Phase search attribute goes through: PhaseFilling from its start (reserving
// its slot), downloading, importing, then PhaseAvailable (the entry is ready), PhaseNotCached
// (the cache had no room for it) or PhaseError.
const (
	PhaseDownloading = "downloading"
	PhaseImporting   = "importing"
	PhaseNotCached   = "not_cached"
)

// ProvisionOptions start the provision of a volume made on host. Its ID is the volume's, and may
// be used again only after a failed run: a retry. It runs on the host's own queue, whose workers
// run its workflow tasks as well as its steps: a cache hit is then one local step of a workflow
// task there, with no task dispatched in between, and the steps of a miss are handed to the
// worker that schedules them (eager activity dispatch).
func ProvisionOptions(volumeID, host string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                    volumeID,
		TaskQueue:             HostQueue(host),
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
	}
}

// ProvisionSearch are the search attributes a provision starts with.
func ProvisionSearch(imageID, host, projectID string) temporal.SearchAttributes {
	return temporal.NewSearchAttributes(
		SearchImageID.ValueSet(imageID), SearchHost.ValueSet(host),
		SearchProjectID.ValueSet(projectID), SearchPhase.ValueSet(PhaseCreating),
	)
}

// DeleteOptions start the deletion of a volume; asking again joins the run under way.
func DeleteOptions(volumeID string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       DeleteWorkflowID(volumeID),
		TaskQueue:                WorkflowQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}
}

// ExtendOptions start the extension of a volume; asking again while one runs joins it, and a
// finished one leaves the ID free for the next extension.
func ExtendOptions(volumeID string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       ExtendWorkflowID(volumeID),
		TaskQueue:                WorkflowQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}
}

// FillOptions start the cluster's one fill of an image: a run already under way is joined
// (USE_EXISTING), and a finished one may run again (it then finds the entry ready at once).
// Child workflows cannot carry a conflict policy, so the fill is a workflow of its own. A run it
// starts carries the search attributes of FillSearch(imageID, host); a run joined keeps its own.
// It runs on the queue of the host it fills on, as provisions do: its steps, scheduled there, go
// straight back to the worker that schedules them (eager dispatch).
func FillOptions(fillID, imageID, host string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       fillID,
		TaskQueue:                HostQueue(host),
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowRunTimeout:       6 * time.Hour,
		TypedSearchAttributes:    FillSearch(imageID, host),
	}
}

// FillSearch are the search attributes a fill starts with: its image, the host it fills on, and
// PhaseFilling. Filtering the Temporal UI by ImageID shows an image's fills beside its provisions.
func FillSearch(imageID, host string) temporal.SearchAttributes {
	return temporal.NewSearchAttributes(
		SearchImageID.ValueSet(imageID), SearchHost.ValueSet(host), SearchPhase.ValueSet(PhaseFilling),
	)
}

// WarmOptions start a pre-warm; nonce (a UUID) makes its ID unique.
func WarmOptions(nonce string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{ID: warmPrefix + nonce, TaskQueue: WorkflowQueue}
}

// EvictOptions start the eviction of a cache entry; asking again joins the run under way.
func EvictOptions(entryID uint) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       evictPrefix + strconv.FormatUint(uint64(entryID), 10),
		TaskQueue:                WorkflowQueue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}
}

// ReconcileAction is what the reconcile Schedule starts: ReconcileCache over hosts.
func ReconcileAction(hosts []string) *client.ScheduleWorkflowAction {
	return &client.ScheduleWorkflowAction{
		ID:        reconcileRunID,
		Workflow:  ReconcileWorkflow,
		Args:      []any{ReconcileInput{Hosts: hosts}},
		TaskQueue: WorkflowQueue,
	}
}
