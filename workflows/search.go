package workflows

import "github.com/imagevol/imagevol/searchattr"

// Search attributes of provision workflows, declared in package searchattr and registered on the
// namespace from there, so the Temporal UI can filter provisions — e.g. the failed ones of one
// image. The gateway sets ImageID, Host, ProjectID and Phase when it starts a provision; the
// workflow sets CacheResult and moves Phase along.
var (
	SearchImageID     = searchattr.ImageID
	SearchHost        = searchattr.Host
	SearchProjectID   = searchattr.ProjectID
	SearchCacheResult = searchattr.CacheResult
	SearchPhase       = searchattr.Phase
)

// Phases a provision's Phase search attribute goes through.
const (
	PhaseCreating  = "creating"
	PhaseFilling   = "filling" // waiting on the cluster's fill of the image
	PhaseAvailable = "available"
	PhaseError     = "error"
)
